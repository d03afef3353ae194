"""relaxed_kl_sample: one fused pass giving y ~ ExpConcrete(q), log kappa_q(y) and log kappa_p(y)
(the single-sample relaxed KL term of Eq. 28). Forward and backward (q_logits, q_temperature,
p_logits, p_temperature, through all three outputs) against the fp64 reference on the same seed,
consistency with exp_concrete_sample / exp_concrete_log_prob, broadcasting of p against q, masked
categories, sizes, layouts; gradcheck, opcheck, torch.compile."""

import math

import pytest
import torch

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
    use_backend,
)

SEED, OFFSET = 99, 4
GRADS = ["q_logits", "q_temperature", "p_logits", "p_temperature"]
NAMES = ["y", "log_q", "log_p"]


def _fns(seed=SEED, offset=OFFSET):
    def kernel(q_logits, q_temperature, p_logits, p_temperature, dim=-1):
        return ce.relaxed_kl_sample(
            q_logits, q_temperature, p_logits, p_temperature, dim, seed=seed, offset=offset
        )

    def ref(q_logits, q_temperature, p_logits, p_temperature, dim=-1):
        return R.relaxed_kl_sample(
            q_logits, q_temperature, p_logits, p_temperature, dim, seed=seed, offset=offset
        )

    return kernel, ref


def _inputs(shape, dim=-1, temps="per_row", seed=0):
    b = batch_shape(shape, dim)
    if temps == "float":
        tq, tp = 0.66, 1.5
    elif temps == "scalar":
        tq, tp = torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    else:
        tq, tp = make_temperature(b, seed=seed + 1), make_temperature(b, seed=seed + 2)
    return dict(
        q_logits=make_logits(shape, seed=seed + 3, scale=1.0),
        q_temperature=tq,
        p_logits=make_logits(shape, seed=seed + 4, scale=1.0),
        p_temperature=tp,
        dim=dim,
    )


def _grads(inputs):
    return [k for k in GRADS if isinstance(inputs[k], torch.Tensor)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("temps", ["float", "scalar", "per_row"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_matches_reference(dtype, temps, dim):
    inputs = _inputs((3, 4, 5), dim, temps, seed=dim + 5)
    compare_with_reference(*_fns(), inputs, dtype, _grads(inputs), names=NAMES)


@pytest.mark.parametrize("device_backend", backend_params("relaxed_kl_sample"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_matches_reference_on_each_backend(device_backend, dtype):
    inputs = _inputs((6, 33))
    with use_backend(device_backend):
        compare_with_reference(*_fns(), inputs, dtype, GRADS, names=NAMES, device=device_backend[0])


@pytest.mark.parametrize("device_backend", backend_params("relaxed_kl_sample"))
@pytest.mark.parametrize(
    "rows,n", [(17, 1), (17, 2), (17, 3), (17, 7), (5, 129), (3, 4097), (2, 131072)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sizes(device_backend, rows, n, dtype):
    inputs = _inputs((rows, n), seed=n)
    # log kappa of a long row is a sum of n terms (see test_log_prob.test_sizes).
    factor = max(1.0, n / 64) if dtype == torch.float32 else max(1.0, math.sqrt(n) / 8)
    with use_backend(device_backend):
        outs, _ = compare_with_reference(
            *_fns(),
            inputs,
            dtype,
            GRADS,
            names=NAMES,
            tol_factor=factor,
            grad_tol_factor=factor,
            device=device_backend[0],
        )
    outs = [o.cpu() for o in outs]
    if n == 1:
        assert (outs[0] == 0).all() and (outs[1] == 0).all() and (outs[2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_consistent_with_sample_and_log_prob(dtype):
    inputs = {
        k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in _inputs((40, 6)).items()
    }
    ql, tq, pl, tp = (inputs[k] for k in GRADS)
    y, lq, lp = ce.relaxed_kl_sample(ql, tq, pl, tp, seed=SEED, offset=OFFSET)
    # The same draw as exp_concrete_sample, bit for bit ...
    assert torch.equal(y, ce.exp_concrete_sample(ql, tq, seed=SEED, offset=OFFSET))
    # ... and the densities of that y (as returned, in dtype) under q and under p.
    eq = ce.exp_concrete_log_prob(y, ql, tq)
    ep = ce.exp_concrete_log_prob(y, pl, tp)
    assert_matches_reference(lq, eq.double(), eq, name="log_q", dtype=dtype)
    assert_matches_reference(lp, ep.double(), ep, name="log_p", dtype=dtype)


def test_equal_distributions_give_zero_kl():
    ql = make_logits((30, 7), seed=1)
    t = make_temperature((30,), seed=2)
    y, lq, lp = ce.relaxed_kl_sample(ql, t, ql.clone(), t.clone(), seed=3)
    assert torch.equal(lq, lp)


def test_p_broadcasts_against_q():
    # One prior (p: (n,) logits, scalar temperature) for a batch of posteriors.
    q = make_logits((6, 5), seed=1)
    p = make_logits((5,), seed=2)
    inputs = dict(
        q_logits=q,
        q_temperature=make_temperature((6,), seed=3),
        p_logits=p,
        p_temperature=torch.tensor(0.8, dtype=torch.float64),
    )
    outs, g = compare_with_reference(*_fns(), inputs, torch.float64, GRADS, names=NAMES)
    assert g["p_logits"].shape == (5,) and g["p_temperature"].shape == ()
    y, _, lp = outs
    assert torch.allclose(lp, ce.exp_concrete_log_prob(y, p.expand(6, 5), 0.8), rtol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_masked_categories(dtype):
    inputs = _inputs((5, 6), seed=2)
    keep = torch.tensor([True, True, False, True, False, True])
    inputs["q_logits"][:, ~keep] = -INF
    outs, g = compare_with_reference(*_fns(), inputs, dtype, GRADS, names=NAMES)
    y, lq, lp = outs
    assert (y[:, ~keep] == -INF).all() and torch.isfinite(y[:, keep]).all()
    assert torch.isfinite(lq).all() and torch.isfinite(lp).all()
    for k in ("q_logits", "p_logits"):
        assert (g[k][:, ~keep] == 0).all()
    # p's logits at the categories q masks are left out of log_p.
    other = dict(inputs)
    other["p_logits"] = inputs["p_logits"].clone()
    other["p_logits"][:, ~keep] = 123.0
    kernel, _ = _fns()
    cast = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in other.items()}
    assert torch.equal(kernel(**cast)[2], lp)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous(layout):
    base_q, base_p = make_logits((8, 10), seed=1), make_logits((8, 10), seed=2)
    if layout == "transposed":
        q, p, dim = base_q.t(), base_p.t(), 0
    else:
        q, p, dim = base_q[::2, 1::2], base_p[1::2, ::2], -1
    b = batch_shape(q.shape, dim)
    inputs = dict(
        q_logits=q,
        q_temperature=make_temperature(b, seed=3),
        p_logits=p,
        p_temperature=make_temperature(b, seed=4),
        dim=dim,
    )
    outs, _ = compare_with_reference(*_fns(), inputs, torch.float64, GRADS, names=NAMES)
    kernel, _ = _fns()
    contiguous = {
        k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()
    }
    for a, c in zip(outs, kernel(**contiguous)):
        assert torch.equal(a, c)


def test_empty_batch():
    q = torch.zeros(0, 4, requires_grad=True)
    p = torch.zeros(0, 4, requires_grad=True)
    tq, tp = torch.tensor(0.5, requires_grad=True), torch.tensor(0.7, requires_grad=True)
    y, lq, lp = ce.relaxed_kl_sample(q, tq, p, tp, seed=1)
    assert y.shape == (0, 4) and lq.shape == (0,) and lp.shape == (0,)
    (y.sum() + lq.sum() - lp.sum()).backward()
    assert q.grad.shape == (0, 4) and tq.grad.item() == 0 and tp.grad.item() == 0


@pytest.mark.parametrize("case", ["2d", "3d_dim1", "masked"])
def test_gradcheck(case):
    if case == "3d_dim1":
        inputs = _inputs((2, 3, 3), dim=1, seed=1)
    else:
        inputs = _inputs((3, 4), seed=2)
        if case == "masked":
            inputs["q_logits"][0, 1] = -INF
    dim = inputs["dim"]
    keep = inputs["q_logits"] != -INF
    tensors = tuple(inputs[k].clone().requires_grad_() for k in GRADS)

    def fn(ql, tq, pl, tp):
        y, lq, lp = ce.relaxed_kl_sample(ql, tq, pl, tp, dim, seed=5, offset=1)
        return torch.where(keep, y, 0.0), lq, lp

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    inputs = _inputs((4, 6))
    args = [inputs[k].float().requires_grad_(requires_grad) for k in GRADS]
    opo = torch.ops.concrete_ext.relaxed_kl_sample.default
    torch.library.opcheck(opo, (*args, -1, 17, 3, None))
    torch.library.opcheck(
        opo, (args[0], torch.tensor(0.5), args[2], torch.tensor(2.0), 0, 17, 0, None)
    )


def test_opcheck_backward_op():
    inputs = _inputs((4, 6))
    ql, tq, pl, tp = (inputs[k] for k in GRADS)
    y, _, _ = ce.relaxed_kl_sample(ql, tq, pl, tp, seed=1)
    gy, g4 = make_logits((4, 6), seed=9), make_temperature((4,), seed=9)
    bw = torch.ops.concrete_ext.relaxed_kl_sample_backward.default
    for grads, mask in [
        ((gy, g4, g4), [True, True, True, True]),
        ((None, g4, None), [True, False, False, True]),
        ((gy, None, None), [False, True, True, False]),
    ]:
        torch.library.opcheck(bw, (*grads, y, ql, tq, pl, tp, -1, mask))


@pytest.mark.parametrize("seeded", [True, False])
def test_compile_fullgraph(seeded, fresh_default_generator):
    kw = dict(seed=6, offset=2) if seeded else {}

    def fn(ql, tq, pl, tp):
        y, lq, lp = ce.relaxed_kl_sample(ql, tq, pl, tp, **kw)
        return y, (lq - lp).mean()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    inputs = _inputs((5, 6))
    res = []
    for f in (fn, compiled):
        ts = [inputs[k].float().requires_grad_() for k in GRADS]
        torch.manual_seed(13)
        y, kl = f(*ts)
        kl.backward()
        res.append([y.detach(), kl.detach()] + [t.grad for t in ts])
    for e, c in zip(*res):
        assert torch.equal(e, c)


@pytest.mark.cuda
@requires_cuda
def test_cuda_matches_cpu():
    inputs = _inputs((64, 129))
    ts = [inputs[k].float() for k in GRADS]
    cpu = ce.relaxed_kl_sample(*ts, seed=3, offset=1)
    cuda = ce.relaxed_kl_sample(*[t.cuda() for t in ts], seed=3, offset=1)
    for name, c, g in zip(NAMES, cpu, cuda):
        assert_matches_reference(g, c.double(), name=name, dtype=torch.float32)
