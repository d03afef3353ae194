"""concrete_sample (x on the simplex) and exp_concrete_sample (y = log x on the log-simplex):
forward and backward against the fp64 reference on the same seed, every dtype, temperature form,
dim, size, layout, masked categories, empty batches; gradcheck, opcheck, torch.compile; CUDA
against CPU and CUDA-graph replay (skipped without a GPU)."""

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
    forward_backward,
    make_logits,
    make_temperature,
    requires_cuda,
    temperature_variants,
    use_backend,
)

OPS = {
    "exp_concrete_sample": (ce.exp_concrete_sample, R.exp_concrete_sample),
    "concrete_sample": (ce.concrete_sample, R.concrete_sample),
}
SEED, OFFSET = 20240531, 3


def _fns(op, seed=SEED, offset=OFFSET):
    kf, rf = OPS[op]

    def kernel(logits, temperature, dim=-1):
        return kf(logits, temperature, dim, seed=seed, offset=offset)

    def ref(logits, temperature, dim=-1):
        return rf(logits, temperature, dim, seed=seed, offset=offset)

    return kernel, ref


def _grad_names(temperature):
    return ["logits", "temperature"] if isinstance(temperature, torch.Tensor) else ["logits"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tname", ["float", "scalar", "per_row", "broadcast"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_matches_reference(op, dtype, tname, dim):
    shape = (3, 5, 4)
    logits = make_logits(shape, seed=dim + 10)
    temperature = temperature_variants(batch_shape(shape, dim))[tname]
    kernel, ref = _fns(op)
    compare_with_reference(
        kernel,
        ref,
        dict(logits=logits, temperature=temperature, dim=dim),
        dtype,
        _grad_names(temperature),
    )


@pytest.mark.parametrize("device_backend", backend_params("concrete_sample"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_reference_on_each_backend(device_backend, op, dtype):
    device = device_backend[0]
    logits = make_logits((6, 33), seed=3)
    t = make_temperature((6,), seed=4)
    kernel, ref = _fns(op)
    with use_backend(device_backend):
        compare_with_reference(
            kernel,
            ref,
            dict(logits=logits, temperature=t),
            dtype,
            ["logits", "temperature"],
            device=device,
        )


@pytest.mark.parametrize("op", OPS)
def test_temperature_of_another_dtype(op):
    # fp32 logits with an fp64 per-row temperature: the math runs in fp32, the temperature's
    # gradient comes back in the temperature's dtype.
    logits = make_logits((6, 9), seed=3, dtype=torch.float32)
    t = make_temperature((6,), seed=4)  # float64
    kernel, ref = _fns(op)
    up = [torch.linspace(-1, 1, 54).reshape(6, 9)]  # not constant along a row
    (y,), g = forward_backward(
        kernel, dict(logits=logits, temperature=t), ["logits", "temperature"], up
    )
    with R.noise_as(torch.float32):  # the fp32 call's draws
        (e,), ge = forward_backward(
            ref, dict(logits=logits.double(), temperature=t), ["logits", "temperature"], up
        )
    assert y.dtype == torch.float32 and g["temperature"].dtype == torch.float64
    assert_matches_reference(y, e, dtype=torch.float32)
    assert_matches_reference(g["logits"], ge["logits"], dtype=torch.float32)
    assert_matches_reference(g["temperature"], ge["temperature"], dtype=torch.float32)


# Rows x n: the big rows kept to few rows. 131072 = 2^17 is the size of a large vocabulary.
SIZES = [(33, 1), (33, 2), (33, 3), (33, 7), (9, 129), (3, 4097), (2, 131072), (10000, 7)]


@pytest.mark.parametrize("device_backend", backend_params("concrete_sample"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("rows,n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sizes(device_backend, op, rows, n, dtype):
    logits = make_logits((rows, n), seed=n)
    t = make_temperature((rows,), seed=n + 1)
    kernel, ref = _fns(op)
    # The temperature gradient sums n terms of both signs: fp32 rounding grows like sqrt(n).
    factor = max(1.0, math.sqrt(n) / 8)
    with use_backend(device_backend):
        outs, _ = compare_with_reference(
            kernel,
            ref,
            dict(logits=logits, temperature=t),
            dtype,
            ["logits", "temperature"],
            grad_tol_factor=factor,
            device=device_backend[0],
        )
    y = outs[0].double().cpu()
    total = y.exp().sum(-1) if op == "exp_concrete_sample" else y.sum(-1)
    # The row sum is accumulated in the working precision: about sqrt(n) roundings.
    atol = 8 * math.sqrt(n) * torch.finfo(dtype).eps
    assert (total - 1).abs().max().item() <= atol
    if n == 1:  # a single category is certain: x = 1, y = 0 exactly
        assert (y == (0.0 if op == "exp_concrete_sample" else 1.0)).all()


@pytest.mark.parametrize("op", OPS)
def test_samples_are_on_the_simplex_and_agree(op):
    logits = make_logits((50, 6), seed=5)
    x = ce.concrete_sample(logits, 0.4, seed=8)
    y = ce.exp_concrete_sample(logits, 0.4, seed=8)
    assert (x >= 0).all() and torch.allclose(x.sum(-1), torch.ones(50, dtype=x.dtype), atol=1e-12)
    assert torch.allclose(torch.logsumexp(y, -1), torch.zeros(50, dtype=y.dtype), atol=1e-12)
    # The same seed gives the same point: x = exp(y).
    assert torch.allclose(y.exp(), x, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded", "permuted"])
def test_non_contiguous(op, layout):
    base = make_logits((8, 12, 5), seed=2)
    if layout == "transposed":
        logits, dim = base[0].t(), 0  # (12, 8) with stride (1, 12)
    elif layout == "sliced":
        logits, dim = base[:, ::3, 1:], -1  # (8, 4, 4)
    elif layout == "expanded":
        logits, dim = base[0, 0].expand(6, 5), -1  # stride 0 over rows: each row gets its own noise
    else:
        logits, dim = base.permute(2, 0, 1), 1
    assert not logits.is_contiguous()
    bshape = batch_shape(logits.shape, dim)
    t = (
        make_temperature(list(reversed(bshape)), seed=3).t()
        if len(bshape) == 2
        else make_temperature(bshape, seed=3)
    )
    kernel, ref = _fns(op)
    compare_with_reference(
        kernel,
        ref,
        dict(logits=logits, temperature=t, dim=dim),
        torch.float64,
        ["logits", "temperature"],
    )
    # Noise depends on the logical index only: the contiguous copy gives identical bits.
    a = kernel(logits, t, dim)
    b = kernel(logits.contiguous(), t.contiguous(), dim)
    assert torch.equal(a, b)
    if layout == "expanded":
        assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,dim", [((0, 5), -1), ((2, 0, 5), -1), ((4, 0), 0), ((0, 3), 1)])
def test_empty_batch(op, shape, dim):
    logits = torch.zeros(shape, dtype=torch.float32, requires_grad=True)
    t = torch.tensor(0.5, requires_grad=True)
    kf, _ = OPS[op]
    y = kf(logits, t, dim, seed=1)
    assert y.shape == logits.shape and y.dtype == logits.dtype
    y.sum().backward()
    assert logits.grad.shape == logits.shape
    assert t.grad is not None and t.grad.item() == 0.0


@pytest.mark.parametrize("op", OPS)
def test_no_categories_raises(op):
    kf, _ = OPS[op]
    with pytest.raises(ValueError, match="categories"):
        kf(torch.zeros(3, 0), 0.5, -1, seed=1)


@pytest.mark.parametrize("device_backend", backend_params("concrete_sample"))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_categories(device_backend, op, dtype):
    logits = make_logits((6, 7), seed=9)
    logits[0, 3] = -INF
    logits[1, :3] = -INF
    logits[2, :] = -INF
    logits[2, 5] = 0.3  # one category left: x = 1, y = 0 exactly, no gradient
    logits[3, ::2] = -INF
    t = make_temperature((6,), seed=2)
    kernel, ref = _fns(op)
    with use_backend(device_backend):
        outs, grads = compare_with_reference(
            kernel,
            ref,
            dict(logits=logits, temperature=t),
            dtype,
            ["logits", "temperature"],
            device=device_backend[0],
        )
    y, gl, gt = outs[0].cpu(), grads["logits"].cpu(), grads["temperature"].cpu()
    masked = logits.to(dtype) == -INF
    zero = -INF if op == "exp_concrete_sample" else 0.0
    assert (y[masked] == zero).all()
    assert (gl[masked] == 0).all()
    one = 0.0 if op == "exp_concrete_sample" else 1.0
    assert y[2, 5].item() == one and (gl[2] == 0).all() and gt[2].item() == 0.0
    assert (
        torch.isfinite(y[~masked]).all() and torch.isfinite(gl).all() and torch.isfinite(gt).all()
    )


@pytest.mark.parametrize("device_backend", backend_params("concrete_sample"))
@pytest.mark.parametrize("op", OPS)
def test_all_masked_row_is_nan(device_backend, op):
    logits = make_logits((3, 4), seed=1)
    logits[1] = -INF
    with use_backend(device_backend):
        y = OPS[op][0](logits.to(device_backend[0]), 0.5, seed=4).cpu()
    assert torch.isnan(y[1]).all()
    assert torch.isfinite(y[0]).all() and torch.isfinite(y[2]).all()
    assert_matches_reference(y, OPS[op][1](logits, 0.5, seed=4))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", ["2d", "3d_dim1", "masked"])
def test_gradcheck(op, case):
    if case == "3d_dim1":
        logits, dim = make_logits((2, 4, 3), seed=1), 1
    else:
        logits, dim = make_logits((3, 5), seed=2), -1
        if case == "masked":
            logits[0, 1] = -INF
    t = make_temperature(batch_shape(logits.shape, dim), seed=3)
    logits.requires_grad_()
    t.requires_grad_()
    kf, _ = OPS[op]
    keep = logits.detach() != -INF

    def fn(a, tau):
        # Masked outputs are constants (-inf in log space, where finite differences give NaN).
        return torch.where(keep, kf(a, tau, dim, seed=77, offset=1), 0.0)

    assert torch.autograd.gradcheck(fn, (logits, t), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck(op, requires_grad, dtype):
    logits = make_logits((4, 6), seed=1, dtype=dtype).requires_grad_(requires_grad)
    t = make_temperature((4,), seed=2, dtype=dtype).requires_grad_(requires_grad)
    opo = getattr(torch.ops.concrete_ext, op).default
    torch.library.opcheck(opo, (logits, t, -1, 1234, 5, None))
    # A 0-d CPU temperature (read on the host) and dim 0.
    torch.library.opcheck(opo, (logits, torch.tensor(0.5, dtype=dtype), 0, 99, 0, None))


@pytest.mark.parametrize("op", OPS)
def test_opcheck_backward_op(op):
    s = OPS[op][0](make_logits((4, 6), seed=1), 0.5, seed=3)
    g = make_logits((4, 6), seed=2)
    bw = getattr(torch.ops.concrete_ext, op + "_backward").default
    for want_t in (False, True):
        torch.library.opcheck(bw, (g, s, make_temperature((4,), seed=3), -1, want_t))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("seeded", [True, False])
def test_compile_fullgraph(op, seeded, fresh_default_generator):
    kf, _ = OPS[op]
    if seeded:
        fn = lambda a, t: kf(a, t, -1, seed=5, offset=2)  # noqa: E731
    else:
        fn = lambda a, t: kf(a, t, -1)  # noqa: E731  (generator=None: the default generator)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    logits = make_logits((5, 6), seed=1, dtype=torch.float32)
    t = make_temperature((5,), seed=2, dtype=torch.float32)
    results = []
    for f in (fn, compiled):
        a, tt = logits.clone().requires_grad_(), t.clone().requires_grad_()
        torch.manual_seed(11)
        y = f(a, tt)
        (y * torch.linspace(-1, 1, 6)).sum().backward()
        results.append((y.detach(), a.grad, tt.grad))
    for e, c in zip(*results):
        assert torch.equal(e, c)


def test_compile_inductor(fresh_default_generator):
    def fn(a, t):
        return (ce.concrete_sample(a, t, seed=9) * 2).sum(-1) + ce.exp_concrete_sample(a, t).sum(-1)

    compiled = torch.compile(fn, fullgraph=True)
    logits = make_logits((4, 5), seed=1, dtype=torch.float32)
    t = torch.tensor(0.7)
    torch.manual_seed(3)
    e = fn(logits, t)
    torch.manual_seed(3)
    c = compiled(logits, t)
    assert torch.allclose(e, c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_generator_reproducibility(op, fresh_default_generator):
    kf, _ = OPS[op]
    logits = make_logits((4, 9), seed=1)
    a = kf(logits, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, kf(logits, 0.5, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(a, kf(logits, 0.5, generator=torch.Generator().manual_seed(4)))
    torch.manual_seed(3)
    b = kf(logits, 0.5)
    torch.manual_seed(3)
    assert torch.equal(b, kf(logits, 0.5))
    assert not torch.equal(b, kf(logits, 0.5))
    # The seed the generator hands out is a plain (seed, offset 0) call.
    g = torch.Generator().manual_seed(3)
    s = R.resolve_seed(None, 0, g, "cpu")[0]
    assert torch.equal(a, kf(logits, 0.5, seed=s))


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_matches_cpu(op):
    kf, _ = OPS[op]
    logits = make_logits((64, 129), seed=1, dtype=torch.float32)
    t = make_temperature((64,), seed=2, dtype=torch.float32)
    cpu, gc = forward_backward(
        lambda a, tau: kf(a, tau, seed=42, offset=7),
        dict(a=logits, tau=t),
        ["a", "tau"],
        [torch.ones(64, 129)],
    )
    cuda, gg = forward_backward(
        lambda a, tau: kf(a, tau, seed=42, offset=7),
        dict(a=logits.cuda(), tau=t.cuda()),
        ["a", "tau"],
        [torch.ones(64, 129, device="cuda")],
    )
    assert_matches_reference(cuda[0], cpu[0].double(), name="cuda vs cpu", dtype=torch.float32)
    for k in ("a", "tau"):
        assert_matches_reference(gg[k], gc[k].double(), name=f"grad {k}", dtype=torch.float32)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_graph_replay_gives_fresh_noise(op):
    kf, _ = OPS[op]
    logits = make_logits((32, 10), seed=1, dtype=torch.float32).cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside the graph
        for _ in range(2):
            kf(logits, 0.5)
            torch.rand(8, device="cuda")
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = kf(logits, 0.5)
        u = torch.rand(8, device="cuda")
    outs = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        outs.append((y.clone(), u.clone()))
    # Like torch.rand in the same graph, every replay draws fresh noise ...
    assert not torch.equal(outs[0][1], outs[1][1])
    assert not torch.equal(outs[0][0], outs[1][0]) and not torch.equal(outs[1][0], outs[2][0])
    # ... and each replay is a valid sample.
    for yy, _ in outs:
        total = yy.exp().sum(-1) if op == "exp_concrete_sample" else yy.sum(-1)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    # Reseeding the generator before a replay repeats it, as it does for torch.rand.
    torch.cuda.manual_seed(5)
    graph.replay()
    first = (y.clone(), u.clone())
    torch.cuda.manual_seed(5)
    graph.replay()
    assert torch.equal(first[1], u) == torch.equal(first[0], y)
