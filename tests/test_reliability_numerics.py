"""Numerical extremes, property-based (hypothesis): logits up to +-1e4, temperatures 1e-3 to 1e3,
n from 1 to 4096, fp32 / fp16 / bf16, on the compiled CPU kernels (and the reference backend in
fp32). Every sample, log-density and gradient is checked against the same computation in float64
(the reference, same inputs, same seed):

* no NaN where the float64 value is not NaN;
* finite wherever the float64 value is finite and representable in the dtype (|v| <= max / 2); in
  fp16 a value beyond 65504 may legitimately round to +-inf (e.g. an ExpConcrete coordinate of
  -(2e4 logit gap) / (1e-3 temperature));
* samples on their support: the simplex, the log-simplex, [0, 1];
* the distributions' log_prob of their own samples is finite (fp32 / fp64).

docs/RELIABILITY.md lists what these found.
"""

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import concrete_ext as ce
from concrete_ext import reference as R
from concrete_ext.distributions import BinaryConcrete, Concrete, ExpConcrete, LogitBinaryConcrete

pytestmark = pytest.mark.usefixtures("one_thread")
# RELIABILITY_EXAMPLES=600 RELIABILITY_RANDOM=1 hunts further (run once for this change: passed).
SETTINGS = settings(
    max_examples=int(os.environ.get("RELIABILITY_EXAMPLES", 40)),
    deadline=None,
    derandomize=os.environ.get("RELIABILITY_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow],
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@st.composite
def problems(draw, max_n=4096):
    """(logits float64 (rows, n), temperature, seed, dtype)."""
    n = draw(st.one_of(st.integers(1, 8), st.integers(1, max_n), st.sampled_from([max_n])))
    rows = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e3, 1e4]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    a = (scale * torch.randn(rows, n, generator=gen, dtype=torch.float64)).clamp(-1e4, 1e4)
    extreme = draw(st.sampled_from([None, 1e4, -1e4]))
    if extreme is not None:  # one category at the edge of the range, the others where they were
        a[:, draw(st.integers(0, n - 1))] = extreme
    tau = 10.0 ** draw(st.floats(-3, 3))
    return a, tau, seed, draw(st.sampled_from(DTYPES))


def _representable(dtype):
    return torch.finfo(dtype).max / 2


def check_like_float64(got, truth, name):
    """No NaN where the float64 truth has none; finite where the truth is finite and representable
    in got's dtype."""
    g = got.detach().cpu().double()
    e = truth.detach().cpu().double()
    assert g.shape == e.shape, name
    assert not e.isnan().any(), f"{name}: the float64 reference itself gives NaN"
    spurious_nan = g.isnan() & ~e.isnan()
    assert not spurious_nan.any(), f"{name}: NaN where float64 gives {e[spurious_nan][:4].tolist()}"
    must_be_finite = e.isfinite() & (e.abs() <= _representable(got.dtype))
    bad = must_be_finite & ~g.isfinite()
    assert not bad.any(), f"{name}: {g[bad][:4].tolist()} where float64 gives {e[bad][:4].tolist()}"


def _run(fn, inputs, grad_names, upstream=None):
    leaves = {
        k: (v.detach().clone().requires_grad_(k in grad_names) if torch.is_tensor(v) else v)
        for k, v in inputs.items()
    }
    outs = fn(**leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    if upstream is None:
        gen = torch.Generator().manual_seed(0)
        upstream = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
    pairs = [(o, u.to(o.dtype)) for o, u in zip(outs, upstream) if o.requires_grad]
    grads = torch.autograd.grad(
        [p[0] for p in pairs],
        [leaves[k] for k in grad_names],
        [p[1] for p in pairs],
        allow_unused=True,
    )
    return [o.detach() for o in outs], dict(zip(grad_names, grads)), upstream


def check_op(kernel_fn, ref_fn, inputs, grad_names, name, backend="cpu", skip_rows=None):
    """Runs the op in its dtype (on `backend`) and the reference in float64; checks outputs and
    gradients with check_like_float64 (all of them row-major with one row per batch row; rows
    where `skip_rows(outputs)` is True are left out). Returns the outputs."""
    with ce.backend(backend):
        outs, grads, up = _run(kernel_fn, inputs, grad_names)
    wide = {k: (v.double() if torch.is_tensor(v) else v) for k, v in inputs.items()}
    dtype = next(v.dtype for v in inputs.values() if torch.is_tensor(v))
    with R.noise_as(dtype):  # the float64 reference draws the noise of a `dtype` call
        outs64, grads64, _ = _run(ref_fn, wide, grad_names, up)
    keep = None if skip_rows is None else ~skip_rows(outs)
    pick = (lambda t: t) if keep is None else (lambda t: t[keep])
    for i, (o, e) in enumerate(zip(outs, outs64)):
        check_like_float64(pick(o), pick(e), f"{name} output {i}")
    for k in grad_names:
        if grads64[k] is not None:
            assert grads[k] is not None, f"{name}: no gradient for {k}"
            check_like_float64(pick(grads[k]), pick(grads64[k]), f"{name} grad of {k}")
    return outs


def _inputs(a, tau, dtype):
    return dict(a=a.to(dtype), t=torch.tensor(tau, dtype=torch.float64).to(dtype))


def _check_simplex(x, dtype):
    assert ((x >= 0) & (x <= 1)).all()
    err = (x.double().sum(-1) - 1).abs()
    assert (err <= 4 * x.shape[-1] * torch.finfo(dtype).eps).all(), (x.shape, err)


def _check_log_simplex(y, dtype):
    assert not y.isnan().any() and (y <= 0).all()
    lse = torch.logsumexp(y.double(), -1)
    # y = z - LSE(z) cancels: its rounding error scales with |z| ~ |y|max (up to 2.3e7 here)
    scale = y.double().abs().amax(-1).clamp(min=1)
    assert (lse.abs() <= 64 * torch.finfo(dtype).eps * scale).all(), (y.shape, lse)


# ---- categorical ---------------------------------------------------------------------------------
@SETTINGS
@given(problems(), st.sampled_from(["cpu", "reference"]))
def test_categorical_samples(problem, backend):
    a, tau, seed, dtype = problem
    if backend == "reference":
        dtype = torch.float32  # the reference computes in its dtype: fp16/bf16 are not its job
    inputs = _inputs(a, tau, dtype)
    (y,) = check_op(
        lambda a, t: ce.exp_concrete_sample(a, t, seed=seed),
        lambda a, t: R.exp_concrete_sample(a, t, seed=seed),
        inputs,
        ["a", "t"],
        "exp_concrete_sample",
        backend,
    )
    _check_log_simplex(y[y.isfinite().all(-1)], dtype)  # fp16: a coordinate below -65504 is -inf
    (x,) = check_op(
        lambda a, t: ce.concrete_sample(a, t, seed=seed),
        lambda a, t: R.concrete_sample(a, t, seed=seed),
        inputs,
        ["a", "t"],
        "concrete_sample",
        backend,
    )
    _check_simplex(x, dtype)
    (h,) = check_op(
        lambda a, t: ce.gumbel_softmax(a, t, hard=True, seed=seed),
        lambda a, t: R.gumbel_softmax(a, t, True, seed=seed),
        inputs,
        ["a", "t"],
        "gumbel_softmax_hard",
        backend,
    )
    assert (h.sum(-1) == 1).all() and ((h == 0) | (h == 1)).all()
    assert torch.equal(h.argmax(-1), x.double().argmax(-1)) or dtype != torch.float32
    with ce.backend(backend):
        g = ce.gumbel_max_sample(inputs["a"], seed=seed)
    assert (g.sum(-1) == 1).all()


@SETTINGS
@given(problems())
def test_log_densities_of_own_samples(problem):
    a, tau, seed, dtype = problem
    inputs = _inputs(a, tau, dtype)
    y = ce.exp_concrete_sample(inputs["a"], inputs["t"], seed=seed)
    keep = y.isfinite().all(-1)  # fp16: rows with a coordinate beyond -65504 hold -inf
    if keep.any():
        check_op(
            lambda v, a, t: ce.exp_concrete_log_prob(v, a, t),
            lambda v, a, t: R.exp_concrete_log_prob(v, a, t),
            dict(v=y[keep], a=inputs["a"][keep], t=inputs["t"]),
            ["v", "a", "t"],
            "exp_concrete_log_prob",
        )
    rows = inputs["a"].shape[0]
    q = dict(
        q=inputs["a"],
        tq=inputs["t"].expand(rows),
        p=inputs["a"].flip(-1),
        tp=inputs["t"].expand(rows) * 2,
    )
    # Rows whose fp16 sample holds -inf at an unmasked category are a known kernel limitation
    # (log_q, log_p and their gradients are NaN there: test_fp16_overflowed_sample_density below).
    check_op(
        lambda q, tq, p, tp: ce.relaxed_kl_sample(q, tq, p, tp, seed=seed),
        lambda q, tq, p, tp: R.relaxed_kl_sample(q, tq, p, tp, seed=seed),
        q,
        ["q", "tq", "p", "tp"],
        "relaxed_kl_sample",
        skip_rows=lambda outs: (outs[0] == -math.inf).any(-1),
    )


# ---- binary --------------------------------------------------------------------------------------
@SETTINGS
@given(problems(max_n=512), st.sampled_from(["cpu", "reference"]))
def test_binary(problem, backend):
    a, tau, seed, dtype = problem
    if backend == "reference":
        dtype = torch.float32
    inputs = _inputs(a, tau, dtype)
    (x,) = check_op(
        lambda a, t: ce.binary_concrete_sample(a, t, seed=seed),
        lambda a, t: R.binary_concrete_sample(a, t, seed=seed),
        inputs,
        ["a", "t"],
        "binary_concrete_sample",
        backend,
    )
    assert ((x >= 0) & (x <= 1)).all()
    (y,) = check_op(
        lambda a, t: ce.logit_binary_concrete_sample(a, t, seed=seed),
        lambda a, t: R.logit_binary_concrete_sample(a, t, seed=seed),
        inputs,
        ["a", "t"],
        "logit_binary_concrete_sample",
        backend,
    )
    y = torch.where(y.isfinite(), y, 0.0)  # fp16: a sample beyond 65504 is +-inf
    check_op(
        lambda v, a, t: ce.logit_binary_concrete_log_prob(v, a, t),
        lambda v, a, t: R.logit_binary_concrete_log_prob(v, a, t),
        dict(v=y, **inputs),
        ["v", "a", "t"],
        "logit_binary_concrete_log_prob",
        backend,
    )


# ---- the distributions' own samples --------------------------------------------------------------
@SETTINGS
@given(
    problems(),
    st.sampled_from([Concrete, ExpConcrete, BinaryConcrete, LogitBinaryConcrete]),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_distribution_log_prob_of_own_samples_is_finite(problem, cls, dtype):
    a, tau, seed, _ = problem
    logits = a.to(dtype).requires_grad_()
    t = torch.tensor(tau, dtype=dtype, requires_grad=True)
    d = cls(t, logits=logits, validate_args=True)  # own samples pass the support check
    x = d.rsample(generator=torch.Generator().manual_seed(seed))
    assert not x.isnan().any()
    lp = d.log_prob(x.detach())
    assert lp.isfinite().all(), (cls.__name__, lp)
    ga, gt = torch.autograd.grad(lp.sum(), (logits, t))
    assert ga.isfinite().all() and gt.isfinite().all(), cls.__name__


@pytest.mark.xfail(
    strict=True,
    reason="by design, in docs/RELIABILITY.md: an fp16 ExpConcrete "
    "coordinate below -65504 rounds to -inf and the densities of the rounded sample "
    "are NaN (the limit is -inf), with NaN gradients; density_dtype=torch.float32 "
    "is the opt-in (test below)",
)
def test_fp16_overflowed_sample_density():
    # logit gap 1e3 at temperature 0.01: y = -1e5 is not representable in fp16
    a = torch.tensor([[1000.0, 0.0, -500.0]], dtype=torch.float16, requires_grad=True)
    y, log_q, log_p = ce.relaxed_kl_sample(a, 0.01, a.detach().flip(-1), 0.01, seed=0)
    assert (y == -math.inf).any()  # the premise: the sample overflowed
    assert not log_q.isnan().any() and not log_p.isnan().any()
    assert not ce.exp_concrete_log_prob(y.detach(), a, 0.01).isnan().any()
    (g,) = torch.autograd.grad((log_q - log_p).float().sum(), a)
    assert not g.isnan().any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_relaxed_kl_densities_in_float32(dtype):
    """density_dtype=torch.float32: the same sample in the logits' dtype, and densities in float32
    of the float32 sample, within float32 tolerance of the float64 formula there, finite where the
    16-bit densities overflow, with finite gradients."""
    a = torch.tensor([[1000.0, 0.0, -500.0], [1.0, 2.0, 0.5]], dtype=dtype, requires_grad=True)
    p = a.detach().flip(-1)
    y, log_q, log_p = ce.relaxed_kl_sample(a, 0.01, p, 0.02, seed=0, density_dtype=torch.float32)
    y16, _, _ = ce.relaxed_kl_sample(a, 0.01, p, 0.02, seed=0)
    assert y.dtype == dtype and log_q.dtype == log_p.dtype == torch.float32
    assert torch.equal(y, y16)  # the noise and the sample are those of the default call
    y32, lq32, lp32 = ce.relaxed_kl_sample(a.float(), 0.01, p.float(), 0.02, seed=0)
    assert torch.equal(log_q, lq32) and torch.equal(log_p, lp32)
    from concrete_ext import reference as ref

    a64, p64 = a.detach().double(), p.double()
    expect_q = ref.exp_concrete_log_prob(y32.double().detach(), a64, 0.01)
    expect_p = ref.exp_concrete_log_prob(y32.double().detach(), p64, 0.02)
    for got, expect in ((log_q, expect_q), (log_p, expect_p)):
        assert got.isfinite().all()
        torch.testing.assert_close(
            got.double(), expect, rtol=1e-5, atol=1e-5 * expect.abs().max().item()
        )
    (g,) = torch.autograd.grad((log_q - log_p).sum(), a)
    assert g.dtype == dtype and g.isfinite().all()
    with pytest.raises(ValueError, match="density_dtype"):
        ce.relaxed_kl_sample(a, 0.01, p, 0.02, seed=0, density_dtype=torch.int32)


def test_low_temperature_samples_pass_the_log_simplex_check():
    # y = z - LSE(z) with |z| ~ 2e4 / 1e-3: the rounding error of LSE(y) is ~|z| eps (2e-4 in
    # fp32 on the reference backend), above the old absolute tolerance of 1e-5
    for backend in ("cpu", "reference"):
        with ce.backend(backend):
            y = ce.exp_concrete_sample(torch.zeros(1, 64), 1e-3, seed=16)  # LSE(y) = 1.04e-4
            d = ExpConcrete(1e-3, logits=torch.zeros(1, 64), validate_args=True)
            assert d.log_prob(y).isfinite().all()


def test_functional_densities_at_the_ends_of_the_support_agree_with_the_classes():
    """Exact 0 (and 1, binary) are evaluated at the nearest interior point, as the classes do:
    finite, and equal to the distribution's log_prob."""
    a = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    x = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    lp = ce.concrete_log_prob(x, a, 0.5)
    assert lp.isfinite().all()
    # (the class normalises its logits: the same density up to rounding)
    torch.testing.assert_close(lp, Concrete(torch.tensor(0.5), logits=a).log_prob(x))
    b = torch.tensor([0.0, 1.0, 0.25])
    la = torch.tensor([0.3, -0.2, 1.0])
    lb = ce.binary_concrete_log_prob(b, la, 0.5)
    assert lb.isfinite().all()
    torch.testing.assert_close(lb, BinaryConcrete(torch.tensor(0.5), logits=la).log_prob(b))
