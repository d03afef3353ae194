"""categorical_sample and gumbel_top_k: the shared-noise identities with gumbel_max_sample, the
laws they sample (chi-square against the exact probabilities, including the ordered-pair law of
top-2), masking, any dim, generators, errors; on every backend that serves them here."""

from __future__ import annotations

import math

import pytest
import torch

import concrete_ext as ce
from concrete_ext.testing import backend_params, make_logits, make_temperature, use_backend

scipy_stats = pytest.importorskip("scipy.stats")

CAT = backend_params("categorical_sample", python=True)
TOPK = backend_params("gumbel_top_k", python=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape,dim", [((40, 7), -1), ((3, 9, 5), 1), ((6, 4, 2), 0), ((5, 1), -1), ((3, 300), -1)]
)
@pytest.mark.parametrize("device_backend", CAT)
def test_categorical_sample_is_the_gumbel_max_index(device_backend, shape, dim, dtype):
    device = device_backend[0]
    a = make_logits(shape, seed=1, dtype=dtype).to(device)
    a[(0,) * len(shape)] = -math.inf  # masked: a row of one category has no distribution
    d = dim % len(shape)
    bshape = [s for i, s in enumerate(shape) if i != d]
    for t in (1.0, 0.4, make_temperature(bshape, seed=2, dtype=torch.float32).to(device)):
        with use_backend(device_backend):
            got = ce.categorical_sample(a, t, dim, seed=11, offset=3)
        scaled = (
            a
            if isinstance(t, float) and t == 1.0
            else (a.float() / (t if isinstance(t, float) else t.unsqueeze(d))).to(dtype)
        )
        expect = ce.gumbel_max_sample(scaled, dim, seed=11, offset=3).argmax(dim)
        expect = torch.where((a == -math.inf).all(d), -1, expect)  # (its one-hot is NaN)
        assert got.dtype == torch.int64 and got.shape == expect.shape
        assert torch.equal(got, expect), (t, (got != expect).sum())


@pytest.mark.parametrize("device_backend", TOPK)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_top_k_is_the_sorted_perturbed_logits_and_starts_with_the_categorical_draw(
    device_backend, dtype
):
    device = device_backend[0]
    a = make_logits((7, 11), seed=3, dtype=dtype).to(device)
    a[0, :3] = -math.inf
    with use_backend(device_backend):
        top = ce.gumbel_top_k(a, 11, seed=5, offset=1)
        first = ce.categorical_sample(a, seed=5, offset=1)
        top3 = ce.gumbel_top_k(a, 3, seed=5, offset=1)
    assert top.shape == (7, 11) and top3.shape == (7, 3)
    assert torch.equal(top[:, 0], first) and torch.equal(top[:, :3], top3)
    assert torch.equal(top.sort(-1).values, torch.arange(11, device=device).expand(7, 11))
    # masked categories come last, in index order
    assert top[0, -3:].tolist() == [0, 1, 2]


@pytest.mark.parametrize("device_backend", TOPK)
def test_top_k_any_dim(device_backend):
    device = device_backend[0]
    a = make_logits((4, 6, 3), seed=4).to(device)
    with use_backend(device_backend):
        got = ce.gumbel_top_k(a, 2, dim=1, seed=2)
        moved = ce.gumbel_top_k(a.movedim(1, -1).contiguous(), 2, seed=2)
    assert got.shape == (4, 3, 2) and torch.equal(got, moved)


@pytest.mark.parametrize("device_backend", CAT)
def test_categorical_frequencies_chi_square(device_backend):
    device = device_backend[0]
    p = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.5], dtype=torch.float64)
    n = 20000
    logits = p.log().expand(n, 5).to(device)
    with use_backend(device_backend):
        draws = ce.categorical_sample(logits, seed=123)
        hot = ce.categorical_sample(logits * 2.0, 2.0, seed=124)  # the same law
    for d in (draws, hot):
        counts = torch.bincount(d.cpu(), minlength=5).double()
        stat, pvalue = scipy_stats.chisquare(counts.numpy(), (n * p).numpy())
        assert pvalue > 1e-4, (counts, pvalue)


@pytest.mark.parametrize("device_backend", TOPK)
def test_top_two_ordered_pair_law(device_backend):
    """P(first = i, second = j) = p_i p_j / (1 - p_i) for sampling without replacement."""
    device = device_backend[0]
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    n = 40000
    with use_backend(device_backend):
        top = ce.gumbel_top_k(p.log().expand(n, 4).to(device), 2, seed=9).cpu()
    pairs = top[:, 0] * 4 + top[:, 1]
    counts = torch.bincount(pairs, minlength=16).double().view(4, 4)
    expect = (p[:, None] * p[None, :] / (1 - p[:, None])).fill_diagonal_(0) * n
    keep = expect > 0
    assert counts[~keep].sum() == 0
    stat, pvalue = scipy_stats.chisquare(counts[keep].numpy(), expect[keep].numpy())
    assert pvalue > 1e-4, (counts, pvalue)


@pytest.mark.parametrize("device_backend", CAT)
def test_masking_and_empty_rows(device_backend):
    device = device_backend[0]
    a = torch.tensor(
        [[0.0, -math.inf, 5.0], [-math.inf, -math.inf, -math.inf], [-math.inf, 2.0, -math.inf]],
        device=device,
    )
    with use_backend(device_backend):
        for seed in range(20):
            got = ce.categorical_sample(a, seed=seed)
            assert got[0] != 1 and got[1] == -1 and got[2] == 1


@pytest.mark.parametrize("device_backend", CAT)
def test_generators_reproduce(device_backend):
    device = device_backend[0]
    a = make_logits((16, 9), seed=6).to(device)
    with use_backend(device_backend):
        x = ce.categorical_sample(a, generator=torch.Generator(device).manual_seed(4))
        y = ce.categorical_sample(a, generator=torch.Generator(device).manual_seed(4))
        z = ce.categorical_sample(a, generator=torch.Generator(device).manual_seed(5))
        k1 = ce.gumbel_top_k(a, 3, generator=torch.Generator(device).manual_seed(4))
    assert torch.equal(x, y) and not torch.equal(x, z)
    assert torch.equal(k1[:, 0], x)


def test_errors():
    a = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="k must be in"):
        ce.gumbel_top_k(a, 5)
    with pytest.raises(ValueError, match="k must be in"):
        ce.gumbel_top_k(a, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        ce.gumbel_top_k(a, 2.0)
    with pytest.raises(TypeError, match="logits"):
        ce.categorical_sample(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="temperature"):
        ce.categorical_sample(a, 0.0)


# ---- the compiled kernels against the Python kernels, bit for bit ----------------------------------
# Every case calls torch.ops.concrete_ext.<op> (the compiled CPU kernel when the build has it) and
# torch.ops.concrete_ext_python.<op> (the reference's formulas) with the same arguments; the int64
# results must be equal. The CPU kernels skip the noise of the elements that cannot win (a bound on
# the noise from the Philox draw), so long rows exercise that pruning as well.
needs_cpu_kernels = pytest.mark.skipif(
    not torch._C._dispatch_has_kernel_for_dispatch_key("concrete_ext::categorical_sample", "CPU")
    or not __import__("concrete_ext")._ops.has_compiled("cpu"),
    reason="needs the compiled CPU kernels of the index samplers",
)
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
_T1 = torch.tensor(1.0, dtype=torch.float64)


def _both(name, *args):
    ours = getattr(torch.ops.concrete_ext, name).default(*args)
    theirs = getattr(torch.ops.concrete_ext_python, name).default(*args)
    assert (ours.shape, ours.dtype, ours.stride()) == (theirs.shape, theirs.dtype, theirs.stride())
    assert torch.equal(ours, theirs), (name, (ours != theirs).sum().item(), ours.shape)
    return ours


def _logits(shape, dtype, seed, kind):
    a = make_logits(shape, seed=seed, dtype=torch.float64, scale=2.0)
    if kind == "masked":
        g = torch.Generator().manual_seed(seed + 7)
        a = a.masked_fill(torch.rand(shape, generator=g) < 0.3, -math.inf)
        a[(0,) * (len(shape) - 1)] = -math.inf  # one row of no category
    elif kind == "nan":
        g = torch.Generator().manual_seed(seed + 8)
        a = a.masked_fill(torch.rand(shape, generator=g) < 0.2, math.nan)
        a[(0,) * (len(shape) - 1)] = math.nan  # a row of NaN only: no category
    elif kind == "ties":  # few distinct values: equal logits everywhere
        a = (a * 2).round() / 2
    elif kind == "inf":
        a[(0,) * (len(shape) - 1)][::3] = math.inf
    return a.to(dtype)


@needs_cpu_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["plain", "masked", "nan", "ties", "inf"])
@pytest.mark.parametrize(
    "shape,dim",
    [((33, 7), -1), ((5, 3000), 1), ((3, 2, 9000), -1), ((300, 4, 5), 0), ((4, 5000, 2), 1)],
)
def test_compiled_categorical_matches_the_python_kernel(shape, dim, kind, dtype):
    d = dim % len(shape)
    bshape = [s for i, s in enumerate(shape) if i != d]
    a = _logits(shape, dtype, 3, kind)
    temps = [_T1, torch.tensor(0.37, dtype=torch.float64), make_temperature(bshape, seed=4)]
    for i, t in enumerate(temps):
        for seed in (0, 12345):
            got = _both("categorical_sample", a, t, dim, seed, i, None)
            if kind in ("masked", "nan") and d == len(shape) - 1:
                assert (got.flatten()[0] == -1).item()  # the row of no category


@needs_cpu_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["plain", "masked", "nan", "ties"])
@pytest.mark.parametrize(
    "shape,dim,ks",
    [
        ((33, 7), -1, (1, 3, 7)),
        ((5, 3000), 1, (1, 8, 64, 65, 3000)),
        ((3, 70, 2), 1, (1, 64, 70)),
        ((6, 2, 20000), -1, (1, 5, 40)),
    ],
)
def test_compiled_top_k_matches_the_python_kernel(shape, dim, ks, kind, dtype):
    a = _logits(shape, dtype, 5, kind)
    for k in ks:
        got = _both("gumbel_top_k", a, k, dim, 77, 2, None)
        first = torch.ops.concrete_ext.categorical_sample.default(a, _T1, dim, 77, 2, None)
        assert torch.equal(torch.where(first >= 0, got[..., 0], -1), first)


@needs_cpu_kernels
def test_compiled_index_samplers_on_non_contiguous_logits():
    base = make_logits((40, 600), seed=9, dtype=torch.float32)
    for a in (base[:, ::2], base.t(), base[::3, 100:], base.unsqueeze(0).expand(3, 40, 600)):
        for dim in range(a.dim()):
            _both("categorical_sample", a, torch.tensor(0.8, dtype=torch.float64), dim, 5, 0, None)
            _both("gumbel_top_k", a, min(4, a.shape[dim]), dim, 5, 0, None)
            assert torch.equal(
                torch.ops.concrete_ext.gumbel_top_k.default(a, 2, dim, 5, 0, None),
                torch.ops.concrete_ext.gumbel_top_k.default(a.contiguous(), 2, dim, 5, 0, None),
            )


@needs_cpu_kernels
def test_compiled_index_samplers_on_long_rows_many_seeds():
    """Rows of an LLM vocabulary: the pruned kernel, the Python kernel and gumbel_max_sample's argmax
    (the compiled kernel computing every noise) agree for many seeds."""
    for dtype in (torch.float32, torch.bfloat16):
        a = make_logits((4, 50000), seed=11, dtype=dtype, scale=3.0)
        for seed in range(6):
            got = _both("categorical_sample", a, _T1, -1, seed, 0, None)
            hot = torch.ops.concrete_ext.gumbel_max_sample.default(a, -1, seed, 0, None)
            assert torch.equal(got, hot.argmax(-1))
            _both("gumbel_top_k", a, 8, -1, seed, 0, None)
    # logits that increase along the row: every element beats the running best (nothing pruned)
    a = torch.linspace(0, 40, 30000).expand(2, 30000).contiguous()
    _both("categorical_sample", a, _T1, -1, 3, 0, None)
    _both("gumbel_top_k", a, 16, -1, 3, 0, None)


@needs_cpu_kernels
def test_compiled_index_samplers_generator_matches_the_python_kernel():
    a = make_logits((16, 300), seed=6, dtype=torch.float32)
    for name, extra in (("categorical_sample", (_T1,)), ("gumbel_top_k", (5,))):
        ours = getattr(torch.ops.concrete_ext, name).default(
            a, *extra, -1, None, 0, torch.Generator().manual_seed(21)
        )
        theirs = getattr(torch.ops.concrete_ext_python, name).default(
            a, *extra, -1, None, 0, torch.Generator().manual_seed(21)
        )
        assert torch.equal(ours, theirs)
    torch.manual_seed(3)
    x = ce.categorical_sample(a)
    torch.manual_seed(3)
    assert torch.equal(ce.categorical_sample(a), x)


@needs_cpu_kernels
def test_compiled_index_samplers_do_not_depend_on_the_thread_count():
    a = make_logits((64, 3000), seed=13, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        res = []
        for n in (1, 2):
            torch.set_num_threads(n)
            res.append(
                (
                    ce.categorical_sample(a, 0.7, seed=1),
                    ce.gumbel_top_k(a, 9, seed=1),
                    ce.gumbel_top_k(a, 100, seed=1),
                )
            )
    finally:
        torch.set_num_threads(threads)
    for x, y in zip(*res):
        assert torch.equal(x, y)


@needs_cpu_kernels
def test_noise_bound_of_the_pruning():
    """The bound csrc/cpu/index.cpp prunes with, on 2^22 draws and the noise the CPU kernels compute
    from them (the full 2^32 range: csrc/tests/check_gumbel_bound.cpp)."""
    x = torch.empty(1 << 22)
    bits = torch.ops.concrete_ext.noise_like.default(x, "bits", 17, 0, None)
    g = torch.ops.concrete_ext.noise_like.default(x, "gumbel", 17, 0, None)
    q = ((~bits) & 0xFFFFFFFF) >> 8
    e = torch.where(q > 0, torch.floor(torch.log2(q.double().clamp_min(1))), -127.0)
    bound = 0.693147182 * (24 - e) + 0.01
    assert bool((g.double() <= bound).all())
    assert float((g.double() - bound).max()) < -0.009
