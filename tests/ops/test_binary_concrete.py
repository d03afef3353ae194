"""Binary Concrete: binary_concrete_sample (x in (0, 1), Eq. 16), logit_binary_concrete_sample
(y = logit x, Eq. 26) and their log-densities (Eq. 17 and the logistic form, computed in logit
space): forward and backward against the fp64 reference on the same seed, every dtype, scalar /
per-element / broadcast temperatures, sizes, layouts, +-inf logits, empty tensors; against
torch.distributions RelaxedBernoulli / LogitRelaxedBernoulli to 1e-10 in fp64; gradcheck, opcheck,
torch.compile; CUDA against CPU and CUDA-graph replay (skipped without a GPU)."""

import pytest
import torch
from torch.distributions import RelaxedBernoulli
from torch.distributions.relaxed_bernoulli import LogitRelaxedBernoulli

import concrete_ext as ce
from concrete_ext import reference as R
from concrete_ext.testing import (
    DTYPES,
    INF,
    assert_matches_reference,
    backend_params,
    compare_with_reference,
    forward_backward,
    make_logits,
    make_temperature,
    requires_cuda,
    use_backend,
)

SAMPLES = {
    "logit_binary_concrete_sample": (
        ce.logit_binary_concrete_sample,
        R.logit_binary_concrete_sample,
    ),
    "binary_concrete_sample": (ce.binary_concrete_sample, R.binary_concrete_sample),
}
DENSITIES = {
    "logit_binary_concrete_log_prob": (
        ce.logit_binary_concrete_log_prob,
        R.logit_binary_concrete_log_prob,
    ),
    "binary_concrete_log_prob": (ce.binary_concrete_log_prob, R.binary_concrete_log_prob),
}
SEED, OFFSET = 4242, 9
SHAPE = (4, 5, 6)


# binary_concrete_sample's backward sees only the sample x, rounded to the working dtype: near
# x = 0 or 1 that rounding leaves few digits of x (1 - x) and of logit(x), so its fp32 gradients
# are held to the 2x rule (the reference in fp32 loses the same digits), not to the fp32 table.
RULE_2X = {"binary_concrete_sample": True, "logit_binary_concrete_sample": False}


def _sample_fns(op, seed=SEED, offset=OFFSET):
    kf, rf = SAMPLES[op]
    return (
        lambda logits, temperature: kf(logits, temperature, seed=seed, offset=offset),
        lambda logits, temperature: rf(logits, temperature, seed=seed, offset=offset),
    )


def _density_fns(op):
    kf, rf = DENSITIES[op]
    return (
        lambda value, logits, temperature: kf(value, logits, temperature),
        lambda value, logits, temperature: rf(value, logits, temperature),
    )


def _temperatures(shape=SHAPE):
    return {
        "float": 0.6,
        "scalar": torch.tensor(1.3, dtype=torch.float64),
        "per_element": make_temperature(shape, seed=3),
        "broadcast": make_temperature((shape[0], 1, shape[2]), seed=4),
    }


def _value(op, logits, temperature=1.0, seed=5):
    """A sample to evaluate densities at; on (0, 1) kept inside [0.02, 0.98] so that it stays
    inside the open support after rounding to bf16 (where 0.999 is 1)."""
    y = R.logit_binary_concrete_sample(logits, temperature, seed=seed)
    return y if op.startswith("logit") else torch.sigmoid(y).clamp(0.02, 0.98)


# ---- samples ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", SAMPLES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tname", ["float", "scalar", "per_element", "broadcast"])
def test_sample_matches_reference(op, dtype, tname):
    logits = make_logits(SHAPE, seed=1)
    t = _temperatures()[tname]
    grads = ["logits", "temperature"] if isinstance(t, torch.Tensor) else ["logits"]
    compare_with_reference(
        *_sample_fns(op), dict(logits=logits, temperature=t), dtype, grads, grad_rule_2x=RULE_2X[op]
    )


@pytest.mark.parametrize("device_backend", backend_params("binary_concrete_sample"))
@pytest.mark.parametrize("op", SAMPLES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_sample_matches_reference_on_each_backend(device_backend, op, dtype):
    with use_backend(device_backend):
        compare_with_reference(
            *_sample_fns(op),
            dict(logits=make_logits((7, 33), seed=2), temperature=make_temperature((7, 1), seed=3)),
            dtype,
            ["logits", "temperature"],
            device=device_backend[0],
            grad_rule_2x=RULE_2X[op],
        )


@pytest.mark.parametrize("device_backend", backend_params("binary_concrete_sample"))
@pytest.mark.parametrize("op", SAMPLES)
@pytest.mark.parametrize(
    "shape", [(1,), (2,), (3,), (7,), (129,), (4097,), (131072,), (3, 2049), (1, 1, 5)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sample_sizes(device_backend, op, shape, dtype):
    logits = make_logits(shape, seed=len(shape))
    t = make_temperature(shape, seed=7)
    with use_backend(device_backend):
        (y,), _ = compare_with_reference(
            *_sample_fns(op),
            dict(logits=logits, temperature=t),
            dtype,
            ["logits", "temperature"],
            grad_rule_2x=RULE_2X[op],
            device=device_backend[0],
        )
    if op == "binary_concrete_sample":
        assert ((y >= 0) & (y <= 1)).all()


@pytest.mark.parametrize("op", SAMPLES)
@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_sample_non_contiguous(op, layout):
    base = make_logits((9, 14), seed=3)
    if layout == "transposed":
        logits = base.t()
    elif layout == "sliced":
        logits = base[::2, 1::3]
    else:
        logits = base[0].expand(5, 14)
    t = (
        make_temperature(logits.shape, seed=2).t().contiguous().t()
        if layout == "transposed"
        else make_temperature(logits.shape, seed=2)
    )
    compare_with_reference(
        *_sample_fns(op),
        dict(logits=logits, temperature=t),
        torch.float64,
        ["logits", "temperature"],
    )
    kernel, _ = _sample_fns(op)
    # Noise follows the logical (row-major) index: the contiguous copy gives identical bits.
    assert torch.equal(kernel(logits, t), kernel(logits.contiguous(), t.contiguous()))


@pytest.mark.parametrize("op", SAMPLES)
def test_sample_empty(op):
    logits = torch.zeros(3, 0, 2, requires_grad=True)
    t = torch.tensor(0.5, requires_grad=True)
    y = SAMPLES[op][0](logits, t, seed=1)
    assert y.shape == (3, 0, 2)
    y.sum().backward()
    assert logits.grad.shape == logits.shape and t.grad.item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sample_infinite_logits(dtype):
    # logit -inf: the sample is exactly 0 (x) or -inf (y), +inf: exactly 1 (x) or +inf (y);
    # x gets zero gradient there, and neither form passes a gradient to the temperature.
    logits = make_logits((3, 4), seed=3).to(dtype)
    logits[0, 0] = -INF
    logits[1, 2] = INF
    t = make_temperature((3, 4), seed=1, dtype=dtype)
    up = [torch.ones(3, 4, dtype=dtype)]
    (x,), gx = forward_backward(
        lambda a, tau: ce.binary_concrete_sample(a, tau, seed=2),
        dict(a=logits, tau=t),
        ["a", "tau"],
        up,
    )
    (y,), gy = forward_backward(
        lambda a, tau: ce.logit_binary_concrete_sample(a, tau, seed=2),
        dict(a=logits, tau=t),
        ["a", "tau"],
        up,
    )
    assert x[0, 0].item() == 0 and x[1, 2].item() == 1
    assert y[0, 0].item() == -INF and y[1, 2].item() == INF
    for g in (gx["a"], gx["tau"], gy["tau"]):
        assert g[0, 0].item() == 0 and g[1, 2].item() == 0
    assert torch.isfinite(gy["a"]).all()
    finite = torch.isfinite(logits)
    assert torch.isfinite(x).all() and torch.isfinite(y[finite]).all()
    assert torch.isfinite(gx["a"]).all() and torch.isfinite(gx["tau"]).all()


@pytest.mark.parametrize("op", SAMPLES)
def test_sample_gradcheck(op):
    logits = make_logits((3, 4), seed=1).requires_grad_()
    t = make_temperature((3, 4), seed=2).requires_grad_()
    t_row = make_temperature((3, 1), seed=3).requires_grad_()
    kf = SAMPLES[op][0]
    assert torch.autograd.gradcheck(lambda a, tau: kf(a, tau, seed=11, offset=2), (logits, t))
    assert torch.autograd.gradcheck(lambda a, tau: kf(a, tau, seed=11, offset=2), (logits, t_row))


@pytest.mark.parametrize("op", SAMPLES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_sample_opcheck(op, requires_grad):
    logits = make_logits((4, 6), seed=1, dtype=torch.float32).requires_grad_(requires_grad)
    opo = getattr(torch.ops.concrete_ext, op).default
    for t in (
        make_temperature((4, 6), seed=2, dtype=torch.float32),
        make_temperature((4, 1), seed=2, dtype=torch.float32),
        torch.tensor(0.5),
    ):
        torch.library.opcheck(opo, (logits, t.requires_grad_(requires_grad), 99, 1, None))


@pytest.mark.parametrize("op", SAMPLES)
def test_sample_opcheck_backward_op(op):
    s = SAMPLES[op][0](make_logits((4, 6), seed=1), 0.5, seed=3)
    bw = getattr(torch.ops.concrete_ext, op + "_backward").default
    for want_t in (False, True):
        torch.library.opcheck(
            bw, (make_logits((4, 6), seed=2), s, make_temperature((4, 6), seed=3), want_t)
        )


@pytest.mark.parametrize("op", SAMPLES)
@pytest.mark.parametrize("seeded", [True, False])
def test_sample_compile_fullgraph(op, seeded, fresh_default_generator):
    kf = SAMPLES[op][0]
    kw = dict(seed=3, offset=4) if seeded else {}
    fn = lambda a, t: kf(a, t, **kw)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    logits = make_logits((5, 6), seed=1, dtype=torch.float32)
    t = make_temperature((5, 1), seed=2, dtype=torch.float32)
    res = []
    for f in (fn, compiled):
        a, tt = logits.clone().requires_grad_(), t.clone().requires_grad_()
        torch.manual_seed(21)
        y = f(a, tt)
        (y * torch.linspace(-1, 1, 6)).sum().backward()
        res.append((y.detach(), a.grad, tt.grad))
    for e, c in zip(*res):
        assert torch.equal(e, c)


@pytest.mark.parametrize("op", SAMPLES)
def test_sample_generator_reproducibility(op, fresh_default_generator):
    kf = SAMPLES[op][0]
    logits = make_logits((4, 9), seed=1)
    a = kf(logits, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, kf(logits, 0.5, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(a, kf(logits, 0.5, generator=torch.Generator().manual_seed(4)))
    torch.manual_seed(3)
    b = kf(logits, 0.5)
    torch.manual_seed(3)
    assert torch.equal(b, kf(logits, 0.5))
    with ce.backend("reference"):  # the reference draws the same seed from the generator
        torch.manual_seed(3)
        r = kf(logits, 0.5)
    assert torch.allclose(r, b, rtol=1e-12, atol=1e-12)


def test_logit_form_is_the_logit_of_the_sample():
    logits = make_logits((50,), seed=1)
    t = make_temperature((50,), seed=2)
    x = ce.binary_concrete_sample(logits, t, seed=6)
    y = ce.logit_binary_concrete_sample(logits, t, seed=6)
    assert torch.allclose(torch.sigmoid(y), x, rtol=1e-14, atol=1e-15)
    # and y = (logits + L) / t with L the package's logistic noise
    L = ce.noise("logistic", (50,), dtype=torch.float64, seed=6)
    assert torch.allclose(y, (logits + L) / t, rtol=1e-14, atol=1e-14)


# ---- log-densities ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", DENSITIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tname", ["float", "scalar", "per_element", "broadcast"])
def test_log_prob_matches_reference(op, dtype, tname):
    logits = make_logits(SHAPE, seed=2)
    t = _temperatures()[tname]
    value = _value(op, make_logits(SHAPE, seed=8), 1.5)
    grads = (
        ["value", "logits", "temperature"] if isinstance(t, torch.Tensor) else ["value", "logits"]
    )
    compare_with_reference(
        *_density_fns(op), dict(value=value, logits=logits, temperature=t), dtype, grads
    )


@pytest.mark.parametrize("device_backend", backend_params("binary_concrete_log_prob"))
@pytest.mark.parametrize("op", DENSITIES)
@pytest.mark.parametrize("shape", [(1,), (3,), (129,), (4097,), (131072,)])
def test_log_prob_sizes(device_backend, op, shape):
    value = _value(op, make_logits(shape, seed=1), 1.5)
    with use_backend(device_backend):
        compare_with_reference(
            *_density_fns(op),
            dict(
                value=value,
                logits=make_logits(shape, seed=2),
                temperature=make_temperature(shape, seed=3),
            ),
            torch.float32,
            ["value", "logits", "temperature"],
            device=device_backend[0],
        )


@pytest.mark.parametrize("op", DENSITIES)
def test_log_prob_broadcasts_and_non_contiguous(op):
    logits = make_logits((6, 5), seed=1).t()  # (5, 6), transposed
    value = _value(op, make_logits((3, 5, 6), seed=2), 1.0)[:, :, ::1]
    t = make_temperature((1, 6), seed=3)
    (lp,), g = compare_with_reference(
        *_density_fns(op),
        dict(value=value, logits=logits, temperature=t),
        torch.float64,
        ["value", "logits", "temperature"],
    )
    assert (
        lp.shape == (3, 5, 6) and g["logits"].shape == (5, 6) and g["temperature"].shape == (1, 6)
    )


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0, 4.0])
def test_log_prob_equals_torch_distributions(temperature):
    logits = make_logits((200,), seed=3, scale=2.0)
    t = torch.tensor(temperature, dtype=torch.float64)
    y = R.logit_binary_concrete_sample(logits, temperature, seed=9)
    x = torch.sigmoid(y)
    ours_y = ce.logit_binary_concrete_log_prob(y, logits, temperature)
    theirs_y = LogitRelaxedBernoulli(t, logits=logits).log_prob(y)
    fin = torch.isfinite(theirs_y)
    assert fin.all()
    assert torch.allclose(ours_y, theirs_y, rtol=1e-10, atol=1e-10)
    ours_x = ce.binary_concrete_log_prob(x, logits, temperature)
    theirs_x = RelaxedBernoulli(t, logits=logits).log_prob(x)
    # torch clamps x to [tiny, 1 - eps] before taking its logit: compare where that is a no-op.
    inside = (x > torch.finfo(x.dtype).tiny) & (x < 1 - torch.finfo(x.dtype).eps)
    fin = torch.isfinite(theirs_x) & inside
    assert fin.float().mean() > 0.8
    # torch goes through logit(x), which loses about 1e-10 relatively where x is tiny (x = 1.8e-9
    # at temperature 0.1: torch 14.704209441566, ours 14.704209443381, 50-digit mpmath
    # 14.704209443381203): 1e-8 here, 1e-10 in logit space above.
    assert torch.allclose(ours_x[fin], theirs_x[fin], rtol=1e-8, atol=1e-10)


def test_logit_log_prob_finite_where_torch_overflows():
    # LogitRelaxedBernoulli computes log1p(exp(logits - t y)), which overflows for t y < -709;
    # the softplus form stays finite (and exact: log p = log t + (logits - t y) - 2 (logits - t y)).
    logits = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    t = torch.tensor(0.05, dtype=torch.float64)
    y = torch.tensor([-2e4, -3e4, 2e4], dtype=torch.float64)
    theirs = LogitRelaxedBernoulli(t, logits=logits).log_prob(y)
    assert not torch.isfinite(theirs[:2]).any()
    ours = ce.logit_binary_concrete_log_prob(y, logits, t)
    d = logits - t * y
    expected = (
        torch.log(t)
        + d
        - 2 * torch.where(d > 0, d, torch.zeros_like(d))
        - 2 * torch.log1p(torch.exp(-d.abs()))
    )
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, expected, rtol=1e-14)
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.isfinite(
            ce.logit_binary_concrete_log_prob(y.to(dtype), logits.to(dtype), 0.05)
        ).all()


@pytest.mark.parametrize("op", DENSITIES)
def test_log_prob_gradcheck(op):
    value = _value(op, make_logits((3, 4), seed=1), 1.0).requires_grad_()
    logits = make_logits((3, 4), seed=2).requires_grad_()
    t = make_temperature((3, 1), seed=3).requires_grad_()
    kf = DENSITIES[op][0]
    assert torch.autograd.gradcheck(kf, (value, logits, t))


@pytest.mark.parametrize("op", DENSITIES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_log_prob_opcheck(op, requires_grad):
    value = _value(op, make_logits((4, 6), seed=1), 1.0).float().requires_grad_(requires_grad)
    logits = make_logits((4, 6), seed=2, dtype=torch.float32).requires_grad_(requires_grad)
    opo = getattr(torch.ops.concrete_ext, op).default
    for t in (make_temperature((4, 6), seed=2, dtype=torch.float32), torch.tensor(0.5)):
        torch.library.opcheck(opo, (value, logits, t.requires_grad_(requires_grad)))


@pytest.mark.parametrize("op", DENSITIES)
def test_log_prob_opcheck_backward_op(op):
    value = _value(op, make_logits((4, 6), seed=1), 1.0)
    bw = getattr(torch.ops.concrete_ext, op + "_backward").default
    for mask in ([True, True, True], [False, False, True], [True, False, False]):
        torch.library.opcheck(
            bw,
            (
                make_logits((4, 6), seed=5),
                value,
                make_logits((4, 6), seed=2),
                make_temperature((4, 6), seed=3),
                mask,
            ),
        )


@pytest.mark.parametrize("op", DENSITIES)
def test_log_prob_compile_fullgraph(op):
    kf = DENSITIES[op][0]
    fn = lambda v, a, t: kf(v, a, t).sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    value = _value(op, make_logits((5, 6), seed=1), 1.0).float()
    logits = make_logits((5, 6), seed=2, dtype=torch.float32)
    res = []
    for f in (fn, compiled):
        ins = [x.clone().requires_grad_() for x in (value, logits, torch.tensor(0.8))]
        out = f(*ins)
        out.backward()
        res.append([out.detach()] + [x.grad for x in ins])
    for e, c in zip(*res):
        assert torch.equal(e, c)


@pytest.mark.cuda
@requires_cuda
def test_cuda_matches_cpu():
    logits = make_logits((64, 129), seed=1, dtype=torch.float32)
    t = make_temperature((64, 1), seed=2, dtype=torch.float32)
    for op, (kf, _) in SAMPLES.items():
        assert_matches_reference(
            kf(logits.cuda(), t.cuda(), seed=5, offset=1),
            kf(logits, t, seed=5, offset=1).double(),
            name=op,
            dtype=torch.float32,
        )
    for op, (kf, _) in DENSITIES.items():
        v = _value(op, logits.double(), 1.0).float()
        assert_matches_reference(
            kf(v.cuda(), logits.cuda(), t.cuda()),
            kf(v, logits, t).double(),
            name=op,
            dtype=torch.float32,
        )


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_replay_gives_fresh_noise():
    logits = torch.zeros(1000, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            ce.binary_concrete_sample(logits, 0.5)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x = ce.binary_concrete_sample(logits, 0.5)
        y = ce.logit_binary_concrete_sample(logits, 0.5)
    outs = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        outs.append((x.clone(), y.clone()))
    for i in range(2):
        assert not torch.equal(outs[i][0], outs[i + 1][0])
        assert not torch.equal(outs[i][1], outs[i + 1][1])
