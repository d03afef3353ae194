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
@pytest.mark.parametrize("shape,dim", [((40, 7), -1), ((3, 9, 5), 1), ((6, 4, 2), 0), ((5, 1), -1),
                                       ((3, 300), -1)])
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
        scaled = a if isinstance(t, float) and t == 1.0 else (
            a.float() / (t if isinstance(t, float) else t.unsqueeze(d))).to(dtype)
        expect = ce.gumbel_max_sample(scaled, dim, seed=11, offset=3).argmax(dim)
        expect = torch.where((a == -math.inf).all(d), -1, expect)  # (its one-hot is NaN)
        assert got.dtype == torch.int64 and got.shape == expect.shape
        assert torch.equal(got, expect), (t, (got != expect).sum())


@pytest.mark.parametrize("device_backend", TOPK)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_top_k_is_the_sorted_perturbed_logits_and_starts_with_the_categorical_draw(
        device_backend, dtype):
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
    a = torch.tensor([[0.0, -math.inf, 5.0], [-math.inf, -math.inf, -math.inf],
                      [-math.inf, 2.0, -math.inf]], device=device)
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
