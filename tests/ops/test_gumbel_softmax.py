"""gumbel_softmax (soft: the Concrete sample; hard: straight-through one-hot) and gumbel_max_sample
(the zero-temperature sample): forward and backward against the fp64 reference on the same seed,
the straight-through gradient equal to the soft sample's, no rows x n soft tensor kept for
backward, masked categories, layouts, sizes, opcheck, torch.compile; CUDA against CPU and
CUDA-graph replay (skipped without a GPU)."""

import inspect

import pytest
import torch
import torch.nn.functional as F

import concrete_ext as ce
from concrete_ext import reference as R
from concrete_ext.testing import (
    DTYPES,
    INF,
    LOW_PRECISION,
    assert_matches_reference,
    backend_params,
    batch_shape,
    cast_inputs,
    forward_backward,
    make_logits,
    make_temperature,
    random_upstream,
    requires_cuda,
    temperature_variants,
    tensors_equal,
    upcast,
    use_backend,
)

SEED, OFFSET = 777, 5


def _clear_rows(logits64: torch.Tensor, dim: int, seed: int, offset: int, dtype, rel: float = 1e-4):
    """Rows whose two best scores a_k + g_k (exact, fp64, from the draws of a `dtype` call) are
    further apart than the fp32 math of the kernels can blur: there the kernels must pick the
    reference's category."""
    a = logits64.movedim(dim, -1)
    g = R.noise(a.shape, "gumbel", seed, offset, torch.float64, draw_bits=R.draw_bits_of(dtype))
    s = (a + g).nan_to_num(nan=-INF)
    if a.shape[-1] < 2:
        return torch.ones(a.shape[:-1], dtype=torch.bool)
    top = s.topk(2, dim=-1).values
    gap = top[..., 0] - top[..., 1]
    return gap > rel * top[..., 0].abs().clamp(min=1)


def _check_one_hot(actual, expected64, logits64, dim, seed, offset, min_clear=0.9):
    assert actual.shape == expected64.shape
    a = actual.detach().double().cpu().movedim(dim, -1)
    e = expected64.movedim(dim, -1)
    fin = torch.isfinite(e).all(-1)
    assert torch.equal(torch.isnan(a).all(-1), ~fin), "NaN rows differ"
    assert ((a[fin] == 0) | (a[fin] == 1)).all() and (a[fin].sum(-1) == 1).all()
    clear = _clear_rows(logits64, dim, seed, offset, actual.dtype) & fin
    assert clear.float().mean().item() >= min_clear * fin.float().mean().item()
    assert torch.equal(a[clear], e[clear])


def _hard(seed=SEED, offset=OFFSET):
    def kernel(logits, temperature, dim=-1):
        return ce.gumbel_softmax(logits, temperature, hard=True, dim=dim, seed=seed, offset=offset)

    def ref(logits, temperature, dim=-1):
        return R.gumbel_softmax(logits, temperature, True, dim, seed=seed, offset=offset)

    return kernel, ref


def _compare_hard(inputs, dtype, grad_names, device="cpu"):
    kernel, ref = _hard()
    low = cast_inputs(inputs, dtype, device)
    outs, _ = forward_backward(kernel, low, ())
    up = random_upstream(outs)
    (y,), gk = forward_backward(kernel, low, grad_names, up)
    with R.noise_as(dtype):
        (y64,), g64 = forward_backward(ref, upcast(cast_inputs(low, dtype)), grad_names, up)
    glow = None
    if dtype in LOW_PRECISION:
        _, glow = forward_backward(ref, cast_inputs(low, dtype), grad_names, up)
    assert y.dtype == dtype and y.device.type == device
    _check_one_hot(y, y64, low["logits"].double().cpu(), inputs.get("dim", -1), SEED, OFFSET)
    for g in grad_names:
        assert gk[g].dtype == low[g].dtype and gk[g].shape == low[g].shape
        assert_matches_reference(
            gk[g], g64[g], glow[g] if glow else None, name=f"grad of {g}", dtype=dtype
        )
    return y, gk


def test_signature_is_a_drop_in_for_torch():
    ours = list(inspect.signature(ce.gumbel_softmax).parameters.values())
    theirs = list(inspect.signature(F.gumbel_softmax).parameters.values())
    assert [(p.name, p.default) for p in ours[: len(theirs)]] == [
        (p.name, p.default) for p in theirs
    ]
    # Positional use as with torch: (logits, tau, hard, eps, dim).
    logits = make_logits((4, 3, 5), seed=1)
    y = ce.gumbel_softmax(logits, 0.5, True, 1e-10, 1, seed=3)
    assert (y.sum(1) == 1).all()


@pytest.mark.parametrize("dim", [0, -1])
def test_soft_is_the_concrete_sample(dim):
    logits = make_logits((6, 5), seed=2)
    for tau in (0.3, torch.tensor(1.7, dtype=torch.float64)):
        assert torch.equal(
            ce.gumbel_softmax(logits, tau, dim=dim, seed=4, offset=1),
            ce.concrete_sample(logits, tau, dim, seed=4, offset=1),
        )
    torch.manual_seed(0)
    a = ce.gumbel_softmax(logits)
    torch.manual_seed(0)
    assert torch.equal(a, ce.concrete_sample(logits, 1.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tname", ["float", "scalar", "per_row", "broadcast"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_hard_matches_reference(dtype, tname, dim):
    shape = (6, 5, 7)
    logits = make_logits(shape, seed=dim + 20)
    t = temperature_variants(batch_shape(shape, dim))[tname]
    names = ["logits", "temperature"] if isinstance(t, torch.Tensor) else ["logits"]
    _compare_hard(dict(logits=logits, temperature=t, dim=dim), dtype, names)


@pytest.mark.parametrize("device_backend", backend_params("gumbel_softmax_hard"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_hard_on_each_backend(device_backend, dtype):
    with use_backend(device_backend):
        _compare_hard(
            dict(logits=make_logits((16, 9), seed=3), temperature=make_temperature((16,), seed=4)),
            dtype,
            ["logits", "temperature"],
            device=device_backend[0],
        )


@pytest.mark.parametrize("device_backend", backend_params("gumbel_softmax_hard"))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize(
    "rows,n", [(33, 1), (33, 2), (33, 3), (33, 7), (9, 129), (3, 4097), (2, 131072), (5000, 7)]
)
def test_hard_sizes(device_backend, dtype, rows, n):
    with use_backend(device_backend):
        _compare_hard(
            dict(
                logits=make_logits((rows, n), seed=n), temperature=make_temperature((rows,), seed=n)
            ),
            dtype,
            ["logits", "temperature"],
            device=device_backend[0],
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_hard_is_argmax_of_soft_and_its_gradient(dtype):
    # Same seed: the one-hot marks the soft sample's largest entry, and the straight-through
    # gradient is the soft sample's gradient.
    logits = make_logits((40, 6), seed=5, dtype=dtype)
    t = make_temperature((40,), seed=6, dtype=dtype)
    up = [torch.randn(40, 6, generator=torch.Generator().manual_seed(1), dtype=dtype)]
    (h,), gh = forward_backward(
        lambda a, tau: ce.gumbel_softmax(a, tau, hard=True, seed=9),
        dict(a=logits, tau=t),
        ["a", "tau"],
        up,
    )
    (s,), gs = forward_backward(
        lambda a, tau: ce.concrete_sample(a, tau, seed=9), dict(a=logits, tau=t), ["a", "tau"], up
    )
    assert torch.equal(h.argmax(-1), s.argmax(-1))
    for k in ("a", "tau"):
        assert_matches_reference(gh[k], gs[k].double(), name=f"grad {k}", dtype=dtype)


def test_hard_keeps_no_soft_tensor_for_backward():
    rows, n = 16, 50
    logits = make_logits((rows, n), seed=1, dtype=torch.float32).requires_grad_()
    t = torch.tensor(0.5, requires_grad=True)
    saved = []

    def pack(x):
        saved.append(tuple(x.shape))
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        y = ce.gumbel_softmax(logits, t, hard=True, seed=1)
    # Only the logits themselves are rows x n (the soft sample is recomputed in backward).
    assert sum(1 for s in saved if s == (rows, n)) == 1, saved
    y.sum().backward()
    assert logits.grad is not None and t.grad is not None


@pytest.mark.parametrize("device_backend", backend_params("gumbel_softmax_hard"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hard_masked_categories(device_backend, dtype):
    logits = make_logits((8, 6), seed=7)
    logits[0, :5] = -INF  # one category left: always chosen, no gradient
    logits[1, ::2] = -INF
    logits[2] = -INF  # no distribution: NaN
    logits[3, 2] = -INF
    t = make_temperature((8,), seed=2)
    kernel, ref = _hard()
    low = cast_inputs(dict(logits=logits, temperature=t), dtype)
    masked = low["logits"] == -INF
    with use_backend(device_backend):
        (y,), g = forward_backward(
            kernel,
            cast_inputs(low, dtype, device_backend[0]),
            ["logits", "temperature"],
            [torch.ones(8, 6, dtype=dtype)],
        )
    y, g = y.cpu(), {k: v.cpu() for k, v in g.items()}
    assert torch.isnan(y[2]).all()
    ok = torch.ones(8, dtype=torch.bool)
    ok[2] = False
    assert (y[ok][masked[ok]] == 0).all()
    assert y[0, 5].item() == 1
    assert (g["logits"][ok][masked[ok]] == 0).all()
    assert (g["logits"][0] == 0).all()
    with R.noise_as(dtype):
        (y64,), _ = forward_backward(ref, upcast(low), (), None)
    _check_one_hot(y, y64, low["logits"].double(), -1, SEED, OFFSET)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_hard_non_contiguous(layout):
    base = make_logits((9, 14), seed=3)
    logits, dim = (base.t(), 0) if layout == "transposed" else (base[::2, 1::3], -1)
    assert not logits.is_contiguous()
    t = make_temperature(batch_shape(logits.shape, dim), seed=1)
    y, _ = _compare_hard(
        dict(logits=logits, temperature=t, dim=dim), torch.float64, ["logits", "temperature"]
    )
    assert torch.equal(
        y, ce.gumbel_softmax(logits.contiguous(), t, hard=True, dim=dim, seed=SEED, offset=OFFSET)
    )


@pytest.mark.parametrize("shape,dim", [((0, 5), -1), ((3, 0, 4), -1), ((3, 0), 0)])
def test_hard_empty_batch(shape, dim):
    logits = torch.zeros(shape, requires_grad=True)
    t = torch.tensor(0.5, requires_grad=True)
    y = ce.gumbel_softmax(logits, t, hard=True, dim=dim, seed=1)
    assert y.shape == logits.shape
    y.sum().backward()
    assert logits.grad.shape == logits.shape and t.grad.item() == 0.0


# ---- Gumbel-max ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gumbel_max_matches_reference(dtype, dim):
    logits = make_logits((5, 6, 7), seed=dim + 30).to(dtype)
    y = ce.gumbel_max_sample(logits, dim, seed=SEED, offset=OFFSET)
    assert y.dtype == dtype
    with R.noise_as(dtype):
        e = R.gumbel_max_sample(logits.double(), dim, seed=SEED, offset=OFFSET)
    _check_one_hot(y, e, logits.double(), dim, SEED, OFFSET)
    if dtype == torch.float64:
        assert torch.equal(y, e)
    # The same draw as the straight-through sample's forward.
    assert torch.equal(
        y, ce.gumbel_softmax(logits, 0.5, hard=True, dim=dim, seed=SEED, offset=OFFSET)
    )


@pytest.mark.parametrize("device_backend", backend_params("gumbel_max_sample"))
@pytest.mark.parametrize("rows,n", [(33, 1), (33, 2), (33, 3), (9, 129), (3, 4097), (2, 131072)])
def test_gumbel_max_sizes(device_backend, rows, n):
    logits = make_logits((rows, n), seed=n, dtype=torch.float32)
    with use_backend(device_backend):
        y = ce.gumbel_max_sample(logits.to(device_backend[0]), seed=1).cpu()
    with R.noise_as(torch.float32):
        e = R.gumbel_max_sample(logits.double(), seed=1)
    _check_one_hot(y, e, logits.double(), -1, 1, 0)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_gumbel_max_non_contiguous(layout):
    base = make_logits((9, 14), seed=3)
    if layout == "transposed":
        logits, dim = base.t(), 0
    elif layout == "sliced":
        logits, dim = base[::2, 1::3], -1
    else:
        logits, dim = base[0].expand(20, 14), -1
    y = ce.gumbel_max_sample(logits, dim, seed=2)
    assert torch.equal(y, R.gumbel_max_sample(logits, dim, seed=2))
    assert torch.equal(y, ce.gumbel_max_sample(logits.contiguous(), dim, seed=2))


@pytest.mark.parametrize("device_backend", backend_params("gumbel_max_sample"))
def test_gumbel_max_masked_and_empty(device_backend):
    logits = make_logits((200, 5), seed=4)
    logits[:, 1] = -INF
    logits[7] = -INF
    logits[8, :4] = -INF
    with use_backend(device_backend):
        y = ce.gumbel_max_sample(logits.to(device_backend[0]), seed=3).cpu()
        assert ce.gumbel_max_sample(torch.zeros(0, 4, device=device_backend[0]), seed=1).shape == (
            0,
            4,
        )
    assert torch.isnan(y[7]).all()
    rest = torch.arange(200) != 7
    assert (y[rest][:, 1] == 0).all() and (y[8, 4] == 1)
    assert tensors_equal(y, R.gumbel_max_sample(logits, seed=3))  # NaN row included


def test_gumbel_max_is_not_differentiable():
    logits = make_logits((3, 4), seed=1).requires_grad_()
    y = ce.gumbel_max_sample(logits, seed=1)
    assert not y.requires_grad


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    logits = make_logits((4, 6), seed=1, dtype=torch.float32).requires_grad_(requires_grad)
    t = make_temperature((4,), seed=2, dtype=torch.float32).requires_grad_(requires_grad)
    ops = torch.ops.concrete_ext
    torch.library.opcheck(ops.gumbel_softmax_hard.default, (logits, t, -1, 321, 2, None))
    torch.library.opcheck(
        ops.gumbel_softmax_hard.default, (logits, torch.tensor(0.3), 0, 5, 0, None)
    )
    torch.library.opcheck(ops.gumbel_max_sample.default, (logits, -1, 321, 2, None))
    torch.library.opcheck(ops.gumbel_max_sample.default, (logits, 0, 1, 0, None))


def test_opcheck_hard_backward():
    logits = make_logits((4, 6), seed=1)
    _, state = torch.ops.concrete_ext.gumbel_softmax_hard(logits, torch.tensor(0.5), -1, 3, 1, None)
    assert state.tolist() == [3, 1]
    g = make_logits((4, 6), seed=2)
    for want_t in (False, True):
        torch.library.opcheck(
            torch.ops.concrete_ext.gumbel_softmax_hard_backward.default,
            (g, logits, make_temperature((4,), seed=3), state, -1, want_t),
        )


@pytest.mark.parametrize("seeded", [True, False])
def test_compile_fullgraph(seeded, fresh_default_generator):
    kw = dict(seed=8, offset=1) if seeded else {}

    def fn(a, t):
        return ce.gumbel_softmax(a, t, hard=True, **kw), ce.gumbel_max_sample(a.detach(), **kw)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    logits = make_logits((6, 7), seed=1, dtype=torch.float32)
    t = make_temperature((6,), seed=2, dtype=torch.float32)
    res = []
    for f in (fn, compiled):
        a, tt = logits.clone().requires_grad_(), t.clone().requires_grad_()
        torch.manual_seed(4)
        h, m = f(a, tt)
        (h * torch.arange(7.0)).sum().backward()
        res.append((h.detach(), m, a.grad, tt.grad))
    for e, c in zip(*res):
        assert torch.equal(e, c)


def test_compile_inductor_hard(fresh_default_generator):
    fn = lambda a, t: (ce.gumbel_softmax(a, t, hard=True) * torch.arange(5.0)).sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True)
    logits = make_logits((4, 5), seed=1, dtype=torch.float32)
    grads = []
    for f in (fn, compiled):
        a, t = logits.clone().requires_grad_(), torch.tensor(0.6, requires_grad=True)
        torch.manual_seed(7)
        f(a, t).backward()
        grads.append((a.grad, t.grad))
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-7)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@requires_cuda
def test_cuda_matches_cpu():
    logits = make_logits((64, 129), seed=1, dtype=torch.float32)
    t = make_temperature((64,), seed=2, dtype=torch.float32)
    fn = lambda a, tau: ce.gumbel_softmax(a, tau, hard=True, seed=42, offset=7)  # noqa: E731
    (c,), gc = forward_backward(fn, dict(a=logits, tau=t), ["a", "tau"], [torch.ones(64, 129)])
    (g,), gg = forward_backward(
        fn, dict(a=logits.cuda(), tau=t.cuda()), ["a", "tau"], [torch.ones(64, 129)]
    )
    _check_one_hot(g.cpu(), c.double(), logits.double(), -1, 42, 7, min_clear=0.95)
    for k in ("a", "tau"):
        assert_matches_reference(gg[k], gc[k].double(), name=f"grad {k}", dtype=torch.float32)
    assert torch.equal(
        ce.gumbel_max_sample(logits.cuda(), seed=3).cpu(), ce.gumbel_max_sample(logits, seed=3)
    )


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_replay_gives_fresh_noise():
    logits = torch.zeros(64, 10, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            ce.gumbel_max_sample(logits)
            ce.gumbel_softmax(logits, 0.5, hard=True)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        m = ce.gumbel_max_sample(logits)
        h = ce.gumbel_softmax(logits, 0.5, hard=True)
    outs = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        outs.append((m.clone(), h.clone()))
    for i in range(2):  # 64 uniform categorical rows: a repeat by chance has probability 10^-64
        assert not torch.equal(outs[i][0], outs[i + 1][0])
        assert not torch.equal(outs[i][1], outs[i + 1][1])
