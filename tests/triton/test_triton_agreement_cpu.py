"""The Triton kernels against the compiled CPU kernels (torch.ops.concrete_ext.*), called with the
same arguments and seeds: every categorical op, forward and backward ops alike (the Triton
callables take the schemas of the concrete_ext ops)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from concrete_ext import _ops  # noqa: E402
from concrete_ext._triton import KERNELS  # noqa: E402
from concrete_ext._triton import common as cm
from concrete_ext.testing import LOOPED, make_logits, make_temperature  # noqa: E402

pytestmark = [
    pytest.mark.triton,
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.skipif(
        not _ops.has_compiled("cpu"), reason="the compiled CPU kernels are not built"
    ),
]

F32 = torch.float32


def _case(n):
    a = make_logits((4, n), seed=n, dtype=F32, masked=True)
    t = make_temperature((4,), seed=1, dtype=F32)
    p = make_logits((4, n), seed=n + 1, masked=False, dtype=F32)
    y = torch.ops.concrete_ext.exp_concrete_sample(a, t, -1, 5, 2, None)
    g = torch.randn(4, n, generator=torch.Generator().manual_seed(3)).to(F32)
    gr = torch.randn(4, generator=torch.Generator().manual_seed(4)).to(F32)
    state = torch.tensor([5, 2])
    return {
        "exp_concrete_sample": (a, t, -1, 5, 2, None),
        "concrete_sample": (a, t, -1, 5, 2, None),
        "exp_concrete_sample_backward": (g, y, t, -1, True),
        "concrete_sample_backward": (g, y.exp(), t, -1, True),
        "gumbel_softmax_hard": (a, t, -1, 5, 2, None),
        "gumbel_softmax_hard_backward": (g, a, t, state, -1, True),
        "gumbel_max_sample": (a, -1, 5, 2, None),
        "exp_concrete_log_prob": (y, a, t, -1),
        "concrete_log_prob": (y.exp(), a, t, -1),
        "exp_concrete_log_prob_backward": (gr, y, a, t, -1, [True, True, True]),
        "concrete_log_prob_backward": (gr, y.exp(), a, t, -1, [True, True, True]),
        "relaxed_kl_sample": (a, t, p, torch.tensor(0.8), -1, 5, 2, None),
        "relaxed_kl_sample_backward": (
            g,
            gr,
            gr.flip(0),
            y,
            a,
            t,
            p,
            t.flip(0),
            -1,
            [True, True, True, True],
        ),
    }


def _to(x, device):
    if isinstance(x, torch.Tensor) and not (x.dim() == 0 and x.is_floating_point()):
        return x.to(device)
    return x


@pytest.mark.parametrize("path", ["tile", "looped"])
@pytest.mark.parametrize("n", [3, 20, 129])
@pytest.mark.parametrize("name", list(_case(3)))
def test_same_as_cpu(name, n, path, device):
    args = _case(n)[name]
    cpu = getattr(torch.ops.concrete_ext, name)(*args)
    with cm.launch_config(**(LOOPED if path == "looped" else {})):
        tri = KERNELS[name](*[_to(x, device) for x in args])
    cpu = cpu if isinstance(cpu, tuple) else (cpu,)
    tri = tri if isinstance(tri, tuple) else (tri,)
    assert len(cpu) == len(tri)
    for c, t in zip(cpu, tri):
        assert c.shape == t.shape and c.dtype == t.dtype, (c.shape, t.shape, c.dtype, t.dtype)
        if c.dtype == torch.int64 or name == "gumbel_max_sample":
            assert torch.equal(c, t.cpu())
        else:
            # fp32 results of sums over the row: absolute tolerance on the scale of the result.
            scale = max(1.0, c[torch.isfinite(c)].abs().max().item()) if c.numel() else 1.0
            torch.testing.assert_close(t.cpu(), c, rtol=2e-5, atol=4e-5 * scale, equal_nan=True)
