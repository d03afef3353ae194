"""The Triton kernels on inputs broadcast over sample dims (stride 0): bit for bit what the same
inputs copied out contiguous give, for every op, forward and backward (the kernels read broadcast
logits, values and temperatures at row r % their period instead of copying them)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from concrete_ext import _ops  # noqa: E402
from concrete_ext._triton import KERNELS  # noqa: E402
from concrete_ext._triton import common as cm  # noqa: E402
from concrete_ext.testing import (  # noqa: E402
    LOOPED,
    STRIDE0_MODES,
    assert_bit_equal,
    contiguous_args,
    example_args,
    stride0_args,
)

pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

NAMES = sorted(
    name
    for name in KERNELS
    if (_ops.TRITON_NAMESPACE, name) in _ops.SIGNATURES and name != "noise_like"
)


def _args(name, dtype, dim, device):
    sig = _ops.SIGNATURES[(_ops.TRITON_NAMESPACE, name)]
    if name == "gumbel_top_k":
        base = _ops.SIGNATURES[(_ops.TRITON_NAMESPACE, "gumbel_max_sample")]
        args = example_args(base, dtype=dtype, dim=dim, seed=1234, offset=5, device=device)
        return sig, (args[0], 3) + tuple(args[1:])
    return sig, example_args(sig, dtype=dtype, dim=dim, seed=1234, offset=5, device=device)


@pytest.mark.parametrize("path", ["tile", "looped"])
@pytest.mark.parametrize("mode", STRIDE0_MODES)
@pytest.mark.parametrize("dim", [-2, -1])
@pytest.mark.parametrize("name", NAMES)
def test_stride0_inputs_give_the_contiguous_result(name, dim, mode, path, device):
    check(name, torch.float32, dim, mode, path, device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_stride0_other_dtypes(name, dtype, device):
    check(name, dtype, -1, "lead", "tile", device)


def check(name, dtype, dim, mode, path, device):
    sig, args = _args(name, dtype, dim, device)
    wide = stride0_args(args, mode)
    with cm.launch_config(**(LOOPED if path == "looped" else {})):
        assert_bit_equal(sig.op(*wide), sig.op(*contiguous_args(wide)))
