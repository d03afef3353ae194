"""The Python kernels (namespace concrete_ext_python, built from each table row's reference forward
and vjp formula; they serve the CPU when _C is missing) agree with the compiled CPU kernels, op by
op, forward and backward, in value, dtype, shape and strides."""

import pytest
import torch

import concrete_ext  # noqa: F401
from concrete_ext import _ops
from concrete_ext.testing import example_args

pytestmark = pytest.mark.skipif(
    not _ops.has_compiled("cpu"), reason="needs the compiled CPU kernels"
)

NAMES = sorted(
    name
    for (ns, name), sig in _ops.SIGNATURES.items()
    if ns == _ops.NAMESPACE and not sig.row.composite
)


def _close(x, y, dtype):
    if isinstance(x, (tuple, list)):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            _close(u, v, dtype)
        return
    assert (x.shape, x.dtype, x.stride()) == (y.shape, y.dtype, y.stride())
    if x.dtype == torch.int64:
        assert torch.equal(x, y)
        return
    tol = {torch.float64: (1e-9, 1e-10), torch.float32: (1e-4, 1e-5)}.get(dtype, (3e-2, 3e-2))
    torch.testing.assert_close(x, y, rtol=tol[0], atol=tol[1], equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("name", NAMES)
def test_python_kernels_match_the_compiled_kernels(name, dim, dtype):
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"{_ops.NAMESPACE}::{name}", "CPU"):
        pytest.skip(f"this build of concrete_ext._C has no CPU kernel for {name}")
    sig = _ops.SIGNATURES[(_ops.NAMESPACE, name)]
    if name == "gumbel_top_k":  # example_args knows no k: gumbel_max_sample's arguments and k = 3
        args = example_args(
            _ops.SIGNATURES[(_ops.NAMESPACE, "gumbel_max_sample")],
            dtype=dtype,
            dim=dim,
            seed=1234,
            offset=5,
        )
        args = (args[0], 3) + tuple(args[1:])
    else:
        args = example_args(sig, dtype=dtype, dim=dim, seed=1234, offset=5)
    ours = sig.op(*args)
    theirs = _ops.SIGNATURES[(_ops.PYTHON_NAMESPACE, name)].op(*args)
    _close(theirs, ours, dtype)
