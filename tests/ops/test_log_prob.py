"""exp_concrete_log_prob (log kappa on the log-simplex, Appendix C.3) and concrete_log_prob (on the
simplex): forward and backward (value, logits, temperature) against the fp64 reference, against
torch.distributions to 1e-10 in fp64, finite at low temperature where the simplex density is not,
masked categories left out, broadcasting of value against logits, sizes, layouts; gradcheck,
opcheck, torch.compile."""

import math

import pytest
import torch
from torch.distributions import RelaxedOneHotCategorical
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import concrete_ext as ce
from concrete_ext import reference as R
from concrete_ext.testing import (
    DTYPES,
    INF,
    assert_matches_reference,
    backend_params,
    batch_shape,
    compare_with_reference,
    make_logits,
    make_temperature,
    requires_cuda,
    temperature_variants,
    use_backend,
)

OPS = {
    "exp_concrete_log_prob": (ce.exp_concrete_log_prob, R.exp_concrete_log_prob),
    "concrete_log_prob": (ce.concrete_log_prob, R.concrete_log_prob),
}
ALL = ["value", "logits", "temperature"]


def _value(op, logits, dim, temperature=1.0, seed=3):
    """A point of the support: an ExpConcrete sample (log space) or its exponential."""
    y = R.exp_concrete_sample(logits, temperature, dim, seed=seed)
    return y if op == "exp_concrete_log_prob" else y.exp()


def _fns(op):
    kf, rf = OPS[op]
    return (
        lambda value, logits, temperature, dim=-1: kf(value, logits, temperature, dim),
        lambda value, logits, temperature, dim=-1: rf(value, logits, temperature, dim),
    )


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tname", ["float", "scalar", "per_row", "broadcast"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_matches_reference(op, dtype, tname, dim):
    shape = (3, 5, 4)
    logits = make_logits(shape, seed=dim + 40, scale=1.0)
    t = temperature_variants(batch_shape(shape, dim))[tname]
    value = _value(op, logits, dim, temperature=1.5)
    grads = ALL if isinstance(t, torch.Tensor) else ALL[:2]
    compare_with_reference(
        *_fns(op), dict(value=value, logits=logits, temperature=t, dim=dim), dtype, grads
    )


@pytest.mark.parametrize("device_backend", backend_params("exp_concrete_log_prob"))
@pytest.mark.parametrize("op", OPS)
def test_matches_reference_on_each_backend(device_backend, op):
    logits = make_logits((8, 33), seed=2, scale=1.0)
    t = make_temperature((8,), seed=3)
    with use_backend(device_backend):
        compare_with_reference(
            *_fns(op),
            dict(value=_value(op, logits, -1, 2.0), logits=logits, temperature=t),
            torch.float32,
            ALL,
            device=device_backend[0],
            # The temperature gradient sums a row's terms of both signs: fp32 itself limits it
            # (Triton sums in fp32, 7e-5 off here, as the reference run in fp32; the compiled
            # CPU kernels sum in double).
            grad_rule_2x=True,
        )


@pytest.mark.parametrize("device_backend", backend_params("exp_concrete_log_prob"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "rows,n", [(17, 1), (17, 2), (17, 3), (17, 7), (5, 129), (3, 4097), (2, 131072), (3000, 7)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sizes(device_backend, op, rows, n, dtype):
    logits = make_logits((rows, n), seed=n, scale=1.0)
    t = make_temperature((rows,), seed=n)
    value = _value(op, logits, -1, 2.0)
    if dtype == torch.float32 and op == "concrete_log_prob" and n >= 4097:
        # x = exp(y) of a long row goes subnormal in fp32 (log x loses digits): hold the value
        # in log space to a few ulps instead.
        value = value.clamp(min=1e-30)
    # Log-densities of long rows are sums of n terms (about -30 n): the table's rtol applies to
    # them, and the temperature gradient sums n terms of both signs (rounding grows like n).
    factor = max(1.0, n / 64) if dtype == torch.float32 else max(1.0, math.sqrt(n) / 8)
    with use_backend(device_backend):
        (lp,), _ = compare_with_reference(
            *_fns(op),
            dict(value=value, logits=logits, temperature=t),
            dtype,
            ALL,
            grad_tol_factor=factor,
            device=device_backend[0],
        )
    if n == 1:  # a single category: the point mass, log density 0
        assert (lp == 0).all()


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("n", [2, 3, 10])
def test_equals_torch_distributions(op, temperature, n):
    logits = make_logits((64, n), seed=n, scale=2.0)
    t = torch.tensor(temperature, dtype=torch.float64)
    value = _value(op, logits, -1, temperature, seed=5)
    ours = OPS[op][0](value, logits, temperature)
    if op == "exp_concrete_log_prob":
        theirs = ExpRelaxedCategorical(t, logits=logits).log_prob(value)
    else:
        theirs = RelaxedOneHotCategorical(t, logits=logits).log_prob(value)
    fin = torch.isfinite(theirs)
    assert fin.float().mean() > 0.5  # the comparison covers most rows
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours[fin], theirs[fin], rtol=1e-10, atol=1e-10), (
        (ours[fin] - theirs[fin]).abs().max()
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_finite_at_low_temperature_where_the_simplex_density_is_not(dtype):
    # ExpConcrete samples at temperature 0.05: exp(y) underflows to 0 for many categories (in
    # fp64 too, with logits spread over +-30), so torch's density on the simplex
    # (RelaxedOneHotCategorical) is not finite there; the log-space density is finite
    # everywhere, and equals torch's ExpRelaxedCategorical to 1e-10 (relative) in fp64 wherever
    # that is finite.
    n, t = 10, 0.05
    logits = make_logits((400, n), seed=1, scale=10.0).to(dtype)
    y = ce.exp_concrete_sample(logits, t, seed=2)
    ours = ce.exp_concrete_log_prob(y, logits, t)
    assert torch.isfinite(ours).all()
    tt = torch.tensor(t, dtype=dtype)
    simplex = RelaxedOneHotCategorical(tt, logits=logits).log_prob(y.exp())
    assert (~torch.isfinite(simplex)).float().mean() > 0.1
    y64, logits64 = y.double(), logits.double()
    theirs = ExpRelaxedCategorical(torch.tensor(t, dtype=torch.float64), logits=logits64).log_prob(
        y64
    )
    fin = torch.isfinite(theirs)
    assert fin.all()
    ours64 = ce.exp_concrete_log_prob(y64, logits64, t)
    assert torch.allclose(ours64, theirs, rtol=1e-10, atol=1e-10)
    if dtype == torch.float32:
        # log kappa here is a sum of terms of magnitude |logits| + t |y| ~ 60 that cancel to
        # a few hundred: fp32 holds it to the table's tolerance relative to the terms.
        assert_matches_reference(
            ours, ours64, name="fp32 log kappa at t = 0.05", dtype=torch.float32, scale=60 * n
        )


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_masked_categories_are_left_out(op, dtype):
    logits = make_logits((4, 6), seed=8, scale=1.0)
    keep = torch.tensor([True, False, True, True, False, True])
    logits[:, ~keep] = -INF
    t = make_temperature((4,), seed=1)
    value = _value(op, logits, -1, 1.0)
    kf, rf = OPS[op]
    (lp,), g = compare_with_reference(
        *_fns(op), dict(value=value, logits=logits, temperature=t), dtype, ALL
    )
    assert torch.isfinite(lp).all()
    assert (g["value"][:, ~keep] == 0).all() and (g["logits"][:, ~keep] == 0).all()
    # The density of the face of the unmasked categories ...
    if dtype == torch.float64:
        reduced = kf(value[:, keep], logits[:, keep], t)
        assert torch.allclose(lp, reduced, rtol=1e-13, atol=1e-13)
        # ... whatever the value holds at the masked categories.
        other = value.clone()
        other[:, ~keep] = 0.25
        assert torch.equal(kf(other, logits, t), lp)


@pytest.mark.parametrize("op", OPS)
def test_value_broadcasts_against_logits(op):
    # A batch of samples (sample_shape 5) against one set of logits, and a per-sample temperature.
    logits = make_logits((3, 4), seed=1, scale=1.0)
    value = _value(op, logits.expand(5, 3, 4), -1, 1.0, seed=9)
    t = make_temperature((5, 3), seed=2)
    (lp,), g = compare_with_reference(
        *_fns(op), dict(value=value, logits=logits, temperature=t), torch.float64, ALL
    )
    assert lp.shape == (5, 3) and g["logits"].shape == (3, 4)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous(op, layout):
    base = make_logits((10, 12), seed=4, scale=1.0)
    logits, dim = (base.t(), 0) if layout == "transposed" else (base[1::2, ::3], -1)
    value = _value(op, logits.contiguous(), dim, 1.0)
    value = value.t().contiguous().t() if layout == "transposed" else value
    t = make_temperature(batch_shape(logits.shape, dim), seed=1)
    compare_with_reference(
        *_fns(op), dict(value=value, logits=logits, temperature=t, dim=dim), torch.float64, ALL
    )


@pytest.mark.parametrize("op", OPS)
def test_empty_batch(op):
    logits = torch.zeros(0, 5, requires_grad=True)
    value = torch.full((0, 5), 0.2, requires_grad=True)
    t = torch.tensor(0.5, requires_grad=True)
    lp = OPS[op][0](value, logits, t)
    assert lp.shape == (0,)
    lp.sum().backward()
    assert logits.grad.shape == (0, 5) and value.grad.shape == (0, 5) and t.grad.item() == 0.0


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", ["2d", "3d_dim0", "masked"])
def test_gradcheck(op, case):
    if case == "3d_dim0":
        logits, dim = make_logits((3, 2, 4), seed=1, scale=1.0), 0
    else:
        logits, dim = make_logits((3, 5), seed=2, scale=1.0), -1
        if case == "masked":
            logits[1, 2] = -INF
    value = _value(op, logits, dim, 1.0)
    t = make_temperature(batch_shape(logits.shape, dim), seed=3)
    inputs = tuple(x.clone().requires_grad_() for x in (value, logits, t))
    kf = OPS[op][0]
    assert torch.autograd.gradcheck(
        lambda v, a, tau: kf(v, a, tau, dim), inputs, eps=1e-6, atol=1e-7, rtol=1e-6
    )


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(op, requires_grad):
    logits = make_logits((4, 6), seed=1, dtype=torch.float32)
    value = _value(op, logits, -1, 1.0).requires_grad_(requires_grad)
    t = make_temperature((4,), seed=2, dtype=torch.float32).requires_grad_(requires_grad)
    opo = getattr(torch.ops.concrete_ext, op).default
    torch.library.opcheck(opo, (value, logits.requires_grad_(requires_grad), t, -1))
    torch.library.opcheck(
        opo, (value.detach().t().contiguous().t(), logits.detach(), torch.tensor(0.7), -1)
    )


@pytest.mark.parametrize("op", OPS)
def test_opcheck_backward_op(op):
    logits = make_logits((4, 6), seed=1)
    value = _value(op, logits, -1, 1.0)
    g = make_temperature((4,), seed=5)
    bw = getattr(torch.ops.concrete_ext, op + "_backward").default
    for mask in ([True, True, True], [False, True, False], [True, False, False]):
        torch.library.opcheck(bw, (g, value, logits, make_temperature((4,), seed=3), -1, mask))


@pytest.mark.parametrize("op", OPS)
def test_compile_fullgraph(op):
    kf = OPS[op][0]
    fn = lambda v, a, t: kf(v, a, t, -1).sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    logits = make_logits((5, 6), seed=1, dtype=torch.float32)
    value = _value(op, logits, -1, 1.0)
    t = make_temperature((5,), seed=2, dtype=torch.float32)
    res = []
    for f in (fn, compiled):
        ins = [x.clone().requires_grad_() for x in (value, logits, t)]
        out = f(*ins)
        out.backward()
        res.append([out.detach()] + [x.grad for x in ins])
    for e, c in zip(*res):
        assert torch.equal(e, c)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_matches_cpu(op):
    logits = make_logits((64, 129), seed=1, dtype=torch.float32)
    value = _value(op, logits, -1, 2.0)
    t = make_temperature((64,), seed=2, dtype=torch.float32)
    kf = OPS[op][0]
    assert_matches_reference(
        kf(value.cuda(), logits.cuda(), t.cuda()),
        kf(value, logits, t).double(),
        name="cuda vs cpu",
        dtype=torch.float32,
    )
