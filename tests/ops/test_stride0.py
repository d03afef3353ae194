"""Inputs broadcast over sample dims (stride 0, as the distributions' rsample((S,)) passes them):
every op, forward and backward, on every CPU backend gives bit for bit what the same inputs copied
out contiguous give (the compiled kernels read such inputs without copying them), and the compiled
kernels do not copy them (an input of a huge virtual size costs nothing)."""

from __future__ import annotations

import pytest
import torch

import concrete_ext  # noqa: F401
from concrete_ext import _ops
from concrete_ext import functional as F
from concrete_ext.distributions import (
    BinaryConcrete,
    Concrete,
    ExpConcrete,
    LogitBinaryConcrete,
)
from concrete_ext.testing import (
    STRIDE0_MODES,
    assert_bit_equal,
    contiguous_args,
    example_args,
    stride0_args,
)

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = sorted(
    name
    for (ns, name), sig in _ops.SIGNATURES.items()
    if ns == _ops.NAMESPACE and not sig.row.composite and name != "noise_like"
)


def op_args(namespace, name, dtype, dim, device="cpu"):
    sig = _ops.SIGNATURES[(namespace, name)]
    kw = dict(dtype=dtype, dim=dim, seed=1234, offset=5, device=device)
    if name == "gumbel_top_k":  # example_args knows no k: gumbel_max_sample's arguments and k = 3
        args = example_args(_ops.SIGNATURES[(namespace, "gumbel_max_sample")], **kw)
        return sig, (args[0], 3) + tuple(args[1:])
    return sig, example_args(sig, **kw)


def check_stride0(namespace, name, dtype, dim, mode, device="cpu"):
    sig, args = op_args(namespace, name, dtype, dim, device)
    wide = stride0_args(args, mode)
    assert_bit_equal(sig.op(*wide), sig.op(*contiguous_args(wide)))


NAMESPACES = [
    pytest.param(
        (_ops.NAMESPACE, "cpu"),
        id="compiled",
        marks=pytest.mark.skipif(not _ops.has_compiled("cpu"), reason="no compiled CPU kernels"),
    ),
    pytest.param((_ops.PYTHON_NAMESPACE, "cpu"), id="python"),
    # The CUDA kernels read broadcast inputs in place too (host/tensors.h reads_periodic).
    pytest.param(
        (_ops.NAMESPACE, "cuda"),
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(
                not (torch.cuda.is_available() and _ops.has_compiled("cuda")),
                reason="needs a CUDA device and the compiled CUDA kernels",
            ),
        ],
    ),
]


@pytest.mark.parametrize("mode", STRIDE0_MODES)
@pytest.mark.parametrize("dim", [-2, -1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_stride0_inputs_give_the_contiguous_result(namespace, name, dtype, dim, mode):
    ns, device = namespace
    check_stride0(ns, name, dtype, dim, mode, device)


# The compiled kernels of each device.
COMPILED_DEVICES = [
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(not _ops.has_compiled("cpu"), reason="no compiled CPU kernels"),
    ),
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(
                not (torch.cuda.is_available() and _ops.has_compiled("cuda")),
                reason="needs a CUDA device and the compiled CUDA kernels",
            ),
        ],
    ),
]


# ---- many rows: blocks whose period ends inside them (the compiled CPU kernels gather those; on
# CUDA, flat periods that are and are not a multiple of a vectorised chunk) ----------------------
@pytest.mark.parametrize("device", COMPILED_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n", [1, 3, 16, 100, 1500])
def test_periods_that_end_inside_a_block(n, dtype, device):
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(7, n, generator=g).to(dtype).to(device)
    tau = (torch.rand(7, generator=g) + 0.3).to(dtype).to(device)
    value = torch.randn(5, 7, n, generator=g).to(dtype).log_softmax(-1).to(device)
    wide, wide_tau = logits.expand(5, 7, n), tau.expand(5, 7)
    ops = torch.ops.concrete_ext
    for fn in (
        lambda a, t: ops.exp_concrete_sample(a, t, -1, 3, 1, None),
        lambda a, t: ops.gumbel_softmax_hard(a, t, -1, 3, 1, None),
        lambda a, t: ops.exp_concrete_log_prob(value, a, t, -1),
        lambda a, t: ops.relaxed_kl_sample(a, t, a * 0.5, t, -1, 3, 1, None),
        lambda a, t: ops.categorical_sample(a, t, -1, 3, 1, None),
        # k > 64: on CUDA the kernel writes every score and the host sorts them
        lambda a, t: ops.gumbel_top_k(a, min(a.shape[-1], 70), -1, 3, 1, None),
        lambda a, t: ops.logit_binary_concrete_sample(a, a[..., :1] * 0 + 0.5, 3, 1, None),
        lambda a, t: ops.logit_binary_concrete_log_prob(
            value,
            a,
            t[..., None],
        ),
    ):
        assert_bit_equal(fn(wide, wide_tau), fn(wide.contiguous(), wide_tau.contiguous()))


# ---- no copy: a stride-0 input of a huge virtual size ------------------------------------------
@pytest.mark.parametrize("device", COMPILED_DEVICES)
def test_broadcast_logits_are_not_copied(device):
    # 10^6 x 1024 fp32 logits would be 4 GiB copied out; the log-density reads 1024 of them for a
    # value of one row broadcast the same way, and the result is 10^6 floats.
    big = (10**6, 1024)
    logits = torch.randn(1, 1024).log_softmax(-1).to(device).expand(big)
    value = torch.randn(1, 1024).log_softmax(-1).to(device).expand(big)
    tau = torch.tensor([0.7], device=device).expand(10**6)
    lp = F.exp_concrete_log_prob(value, logits, tau)
    assert lp.shape == (10**6,)
    assert torch.equal(lp, lp[:1].expand(10**6))
    # the index sampler: 10^6 int64 out of 4 GiB of virtual logits
    idx = F.categorical_sample(logits, seed=7)
    assert idx.shape == (10**6,) and bool((idx >= 0).all())
    assert torch.equal(idx[:1000], F.categorical_sample(logits[:1000].contiguous(), seed=7))


# ---- gradients through broadcast logits ---------------------------------------------------------
@pytest.mark.parametrize("log_space", [True, False])
def test_gradients_through_broadcast_logits(log_space):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g, dtype=torch.float64)
    tau = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    sample = F.exp_concrete_sample if log_space else F.concrete_sample
    density = F.exp_concrete_log_prob if log_space else F.concrete_log_prob
    grads = []
    for copy in (False, True):
        a = base.clone().requires_grad_()
        t = tau.clone().requires_grad_()
        wide, wide_t = a.expand(5, 4, 6), t.expand(5, 4)
        if copy:
            wide, wide_t = wide.contiguous(), wide_t.contiguous()
        y = sample(wide, wide_t, seed=3)
        lp = density(y.detach(), wide, wide_t)
        w = torch.arange(y.numel(), dtype=y.dtype).view_as(y).sin()
        ((y * w).sum() + lp.sum()).backward()
        grads.append((y, lp, a.grad, t.grad))
    for u, v in zip(*grads):
        assert_bit_equal(u, v)


# ---- the distributions' rsample((S,)) ----------------------------------------------------------
SAMPLERS = {
    ExpConcrete: F.exp_concrete_sample,
    Concrete: F.concrete_sample,
    LogitBinaryConcrete: F.logit_binary_concrete_sample,
    BinaryConcrete: F.binary_concrete_sample,
}


@pytest.mark.parametrize("cls", list(SAMPLERS))
def test_rsample_many_samples_matches_copied_parameters(cls):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 8, generator=g)
    tau = torch.rand(3, 1, generator=g) + 0.5
    d = cls(tau, logits=logits)
    base = d.base_dist if cls in (Concrete, BinaryConcrete) else d
    a, t = base._shaped((64,))
    assert a.stride(0) == 0  # rsample hands the op broadcast parameters
    x = d.rsample((64,), generator=torch.Generator().manual_seed(5))
    rest = (-1,) if cls in (ExpConcrete, Concrete) else ()
    y = SAMPLERS[cls](a.contiguous(), t.contiguous(), *rest, torch.Generator().manual_seed(5))
    assert x.shape == (64, 3, 8)
    assert_bit_equal(x, y)
