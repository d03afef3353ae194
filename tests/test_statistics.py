"""Statistical tests of the paper's propositions and of the noise, with fixed seeds.

Every test is deterministic (fixed seeds, so it passes or fails the same way on every run) and
states its level: a hypothesis test passes when p > LEVEL = 1e-4, so that with other seeds it would
fail by chance about once in 10^4 runs. Each test also checks that it has power: the same
statistic computed against a slightly wrong hypothesis is rejected.

Maddison, Mnih & Teh (2017), Proposition 1: for X ~ Concrete(alpha, lambda),
  (a) reparameterization: X = softmax((log alpha + G) / lambda), G iid Gumbel;
  (b) rounding: P(X_k > X_i for all i != k) = alpha_k / sum_i alpha_i;
  (c) zero temperature: P(lim_{lambda -> 0} X_k = 1) = alpha_k / sum_i alpha_i;
  (d) convex eventually: if lambda <= 1 / (n - 1), the density p(x) is log-convex in x.
The densities are checked to integrate to 1 and to give the distribution of the samples (n = 2
and n = 3, numerically with scipy). The binary special case (Section 3.4 / Prop. 2 as we read
it): X ~ BinConcrete(alpha, lambda) iff (X, 1 - X) ~ Concrete((alpha, 1), lambda), so rounding
and zero temperature hold with P(X > 1/2) = alpha / (1 + alpha).
"""

import math

import numpy as np
import pytest
import torch

scipy = pytest.importorskip("scipy")
from scipy import integrate, stats  # noqa: E402

import concrete_ext as ce  # noqa: E402

LEVEL = 1e-4
EULER_GAMMA = 0.5772156649015329


def _rows(logits, n_samples):
    return torch.as_tensor(logits, dtype=torch.float64).expand(n_samples, len(logits))


def _chisquare(counts, probs):
    counts = np.asarray(counts, dtype=np.float64)
    return stats.chisquare(counts, counts.sum() * np.asarray(probs, dtype=np.float64)).pvalue


# ---- Proposition 1 (b): rounding -------------------------------------------------------------
LOGITS5 = [0.3, -1.2, 1.1, 0.0, -0.4]


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
@pytest.mark.parametrize("op", ["concrete_sample", "exp_concrete_sample"])
def test_rounding_is_temperature_free(op, temperature):
    # argmax of a Concrete sample is distributed as alpha_k / sum alpha at every temperature.
    n = 200_000
    probs = torch.softmax(torch.tensor(LOGITS5, dtype=torch.float64), 0).numpy()
    x = getattr(ce, op)(_rows(LOGITS5, n).float(), temperature, seed=101)
    counts = torch.bincount(x.argmax(-1), minlength=5).numpy()
    assert _chisquare(counts, probs) > LEVEL
    # Power: the tempered probabilities softmax(logits / 1.05) are rejected.
    wrong = torch.softmax(torch.tensor(LOGITS5, dtype=torch.float64) / 1.05, 0).numpy()
    assert _chisquare(counts, wrong) < LEVEL


@pytest.mark.parametrize("fn", ["gumbel_max_sample", "gumbel_softmax_hard"])
def test_gumbel_max_trick(fn):
    n = 200_000
    logits = _rows(LOGITS5, n).float()
    if fn == "gumbel_max_sample":
        y = ce.gumbel_max_sample(logits, seed=7)
    else:
        y = ce.gumbel_softmax(logits, 0.5, hard=True, seed=7)
    assert (y.sum(-1) == 1).all()
    counts = y.sum(0).numpy()
    probs = torch.softmax(torch.tensor(LOGITS5, dtype=torch.float64), 0).numpy()
    assert _chisquare(counts, probs) > LEVEL
    assert _chisquare(counts, np.roll(probs, 1) * 0.02 + probs * 0.98) < LEVEL


def test_rounding_with_masked_categories():
    # A masked category is never the argmax; the others share its mass in proportion.
    n = 100_000
    logits = torch.tensor(LOGITS5, dtype=torch.float64)
    logits[2] = -math.inf
    x = ce.concrete_sample(_rows(logits, n), 0.7, seed=3)
    counts = torch.bincount(x.argmax(-1), minlength=5).numpy()
    assert counts[2] == 0
    keep = [0, 1, 3, 4]
    probs = torch.softmax(logits[keep], 0).numpy()
    assert _chisquare(counts[keep], probs) > LEVEL


# ---- Proposition 1 (c): zero temperature ------------------------------------------------------
def test_zero_temperature_limit_per_draw():
    # For a fixed draw (seed), the sample tends to the Gumbel-max vertex as lambda -> 0:
    # 1 - max_k x_k <= (n - 1) exp(-gap / lambda), gap = the margin of the best a_k + g_k.
    logits = torch.tensor(LOGITS5, dtype=torch.float64).expand(2000, 5)
    vertex = ce.gumbel_max_sample(logits, seed=12)
    g = ce.noise("gumbel", (2000, 5), dtype=torch.float64, seed=12)
    top2 = (logits + g).topk(2, -1).values
    gap = top2[:, 0] - top2[:, 1]
    previous = None
    for lam in [1.0, 0.3, 0.1, 0.03, 0.01]:
        x = ce.concrete_sample(logits, lam, seed=12)
        dist = 1 - x.max(-1).values
        assert (dist <= 4 * torch.exp(-gap / lam) * (1 + 1e-9) + 1e-15).all()
        assert torch.equal(x.argmax(-1), vertex.argmax(-1))
        if previous is not None:
            assert (dist <= previous + 1e-15).all()  # monotone in lambda for a fixed draw
        previous = dist


def test_zero_temperature_vertex_frequencies():
    # The mass within 1e-6 of a vertex grows to 1 as lambda -> 0 (a sample is that close when its
    # Gumbel-max margin exceeds 13.8 lambda), and the vertices are hit with alpha / sum alpha.
    n = 100_000
    fractions = []
    for lam in (0.1, 0.01, 0.001):
        x = ce.concrete_sample(_rows(LOGITS5, n), lam, seed=5)
        near_vertex = x.max(-1).values > 1 - 1e-6
        fractions.append(near_vertex.float().mean().item())
    assert fractions[0] < fractions[1] < fractions[2] and fractions[2] > 0.98, fractions
    counts = torch.bincount(x.argmax(-1)[near_vertex], minlength=5).numpy()
    probs = torch.softmax(torch.tensor(LOGITS5, dtype=torch.float64), 0).numpy()
    assert _chisquare(counts, probs) > LEVEL
    # At temperature 5 the samples are nowhere near the vertices.
    x = ce.concrete_sample(_rows(LOGITS5, 1000), 5.0, seed=5)
    assert (x.max(-1).values < 0.9).all()


# ---- Proposition 1 (d): convex eventually ----------------------------------------------------
def _log_density_on_segments(n, lam, seed):
    """log p(x) of Concrete(alpha, lam) along 200 random segments in the open simplex."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=gen, dtype=torch.float64)
    x0 = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample((200,))
    x1 = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample((200,))
    s = torch.linspace(0.02, 0.98, 97, dtype=torch.float64)[:, None, None]
    x = (1 - s) * x0 + s * x1  # (97, 200, n)
    lp = ce.concrete_log_prob(x, logits.expand_as(x), lam)  # (97, 200)
    return lp, (s[1, 0, 0] - s[0, 0, 0]).item()


@pytest.mark.parametrize("n", [2, 3, 4])
def test_log_convex_at_low_temperature(n):
    torch.manual_seed(0)  # the Dirichlet segment ends
    lam = 1.0 / (n - 1)
    lp, h = _log_density_on_segments(n, lam, seed=n)
    second = (lp[2:] - 2 * lp[1:-1] + lp[:-2]) / h**2
    assert (second >= -1e-6 * (1 + lp[1:-1].abs())).all()
    # Above the bound the density has an interior mode: log p is not convex on every segment.
    lp, h = _log_density_on_segments(n, 3.0, seed=n)
    second = (lp[2:] - 2 * lp[1:-1] + lp[:-2]) / h**2
    assert (second < -1e-3).any()


# ---- densities integrate to 1, and give the distribution of the samples ----------------------
TEMPERATURES = [0.3, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("lam", TEMPERATURES)
def test_binary_densities_integrate_to_one(lam):
    a = 0.7
    logit_density = lambda y: math.exp(
        ce.logit_binary_concrete_log_prob(  # noqa: E731
            torch.tensor([y], dtype=torch.float64), torch.tensor([a], dtype=torch.float64), lam
        )[0]
    )
    total, err = integrate.quad(logit_density, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-12)
    assert abs(total - 1) < 1e-8

    # On (0, 1), through the substitution x = sigmoid(y) (the density has endpoint
    # singularities x^(lam - 1) for lam < 1). Near 1, x is not representable: there the density
    # is evaluated at 1 - x under the mirrored logit, p(x; a) = p(1 - x; -a).
    def x_density(y):
        sign = 1.0 if y <= 0 else -1.0
        x = torch.sigmoid(torch.tensor([sign * y], dtype=torch.float64))
        lp = ce.binary_concrete_log_prob(x, torch.tensor([sign * a], dtype=torch.float64), lam)
        return math.exp(lp[0]) * (x * (1 - x)).item()

    # (|y| <= 700: beyond, min(x, 1 - x) underflows and the tail mass is below e^-200.)
    total, _ = integrate.quad(
        x_density, -700, 700, epsabs=1e-12, epsrel=1e-12, limit=400, points=[0.0]
    )
    assert abs(total - 1) < 1e-8


def _alr_grid(n_side, half_width):
    z = torch.linspace(-half_width, half_width, n_side, dtype=torch.float64)
    return z, (z[1] - z[0]).item()


def _log_simplex_from_alr(z):
    """y = log softmax([z, 0]): the point of the log-simplex with additive log-ratios z."""
    zz = torch.cat([z, torch.zeros(z.shape[:-1] + (1,), dtype=z.dtype)], -1)
    return torch.log_softmax(zz, -1)


@pytest.mark.parametrize("lam", TEMPERATURES)
def test_categorical_densities_integrate_to_one_n2(lam):
    # In additive log-ratio coordinates z = y_1 - y_2 the ExpConcrete density kappa(y) is the
    # density of z (the Jacobian of z -> y on the log-simplex is 1 there); the Concrete density
    # p(x) integrates over x_1 in (0, 1) with dx_1 = x_1 x_2 dz.
    logits = torch.tensor([0.4, -0.3], dtype=torch.float64)

    def kappa(z):
        y = _log_simplex_from_alr(torch.tensor([[z]], dtype=torch.float64))
        return math.exp(ce.exp_concrete_log_prob(y, logits.expand_as(y), lam)[0])

    def p_times_jacobian(z):
        y = _log_simplex_from_alr(torch.tensor([[z]], dtype=torch.float64))
        x = y.exp()
        return math.exp(ce.concrete_log_prob(x, logits.expand_as(x), lam)[0]) * x.prod().item()

    # (|z| <= 700: beyond, x_k = e^-|z| underflows and the tail mass is below e^-200.)
    for f in (kappa, p_times_jacobian):
        total, _ = integrate.quad(f, -700, 700, epsabs=1e-12, epsrel=1e-12, limit=400, points=[0.0])
        assert abs(total - 1) < 1e-8, total


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_categorical_densities_integrate_to_one_n3(lam):
    # 2-D integral over the alr plane on a fine grid (Simpson's rule; the integrand is analytic
    # and decays like exp(-lam |z|), so the truncation and the rule are both far below 1e-6).
    logits = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    z, h = _alr_grid(1201, 40.0 / lam)
    zz = torch.stack(torch.meshgrid(z, z, indexing="ij"), -1)
    y = _log_simplex_from_alr(zz)
    kappa = ce.exp_concrete_log_prob(y, logits.expand_as(y), lam).exp()
    p_j = (ce.concrete_log_prob(y.exp(), logits.expand_as(y), lam) + y.sum(-1)).exp()
    for dens in (kappa, p_j):
        total = integrate.simpson(integrate.simpson(dens.numpy(), dx=h, axis=1), dx=h)
        assert abs(total - 1) < 1e-6, total


@pytest.mark.parametrize("lam", [0.3, 1.0, 2.0])
def test_binary_ecdf_matches_integrated_density(lam):
    # n = 2: the empirical CDF of BinaryConcrete samples against the CDF obtained by integrating
    # the density numerically (which also matches the closed form sigmoid(lam logit x - a)).
    a, n = 0.6, 20_000
    y_grid = torch.linspace(-60 / lam, 60 / lam, 24001, dtype=torch.float64)
    dens = ce.logit_binary_concrete_log_prob(y_grid, torch.full_like(y_grid, a), lam).exp()
    cdf_grid = integrate.cumulative_trapezoid(dens.numpy(), y_grid.numpy(), initial=0.0)
    closed = torch.sigmoid(lam * y_grid - a).numpy()
    assert np.abs(cdf_grid - closed).max() < 1e-5

    def cdf_x(x):
        x = np.clip(np.asarray(x, dtype=np.float64), 1e-300, 1 - 1e-16)
        return np.interp(np.log(x) - np.log1p(-x), y_grid.numpy(), cdf_grid)

    x = ce.binary_concrete_sample(torch.full((n,), a, dtype=torch.float64), lam, seed=17)
    assert stats.kstest(x.numpy(), cdf_x).pvalue > LEVEL
    # The Concrete with n = 2 and logits (a, 0) has the same first coordinate (Prop. 2).
    x2 = ce.concrete_sample(torch.tensor([a, 0.0], dtype=torch.float64).expand(n, 2), lam, seed=18)[
        :, 0
    ]
    assert stats.kstest(x2.numpy(), cdf_x).pvalue > LEVEL
    # Power: the CDF of a slightly different location is rejected.
    wrong = torch.sigmoid(lam * y_grid - a - 0.1).numpy()
    assert (
        stats.kstest(
            x.numpy(),
            lambda t: np.interp(
                np.log(np.clip(t, 1e-300, 1 - 1e-16)) - np.log1p(-np.clip(t, 1e-300, 1 - 1e-16)),
                y_grid.numpy(),
                wrong,
            ),
        ).pvalue
        < LEVEL
    )


@pytest.mark.slow
@pytest.mark.parametrize("lam", [0.5, 1.5])
def test_ecdf_matches_integrated_density_n3(lam):
    # n = 3: the marginal CDF of X_1, P(X_1 <= t), integrated numerically from the ExpConcrete
    # density over the alr plane: X_1 <= t iff z_1 <= logit(t) + log(1 + e^{z_2}).
    logits = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    z, h = _alr_grid(1601, 40.0 / lam)
    zz = torch.stack(torch.meshgrid(z, z, indexing="ij"), -1)  # [i, j] = (z1_i, z2_j)
    y = _log_simplex_from_alr(zz)
    dens = ce.exp_concrete_log_prob(y, logits.expand_as(y), lam).exp().numpy()
    inner = integrate.cumulative_trapezoid(dens, dx=h, axis=0, initial=0.0)  # over z1, per z2
    z_np = z.numpy()

    def cdf(t):
        t = np.clip(np.asarray(t, dtype=np.float64), 1e-300, 1 - 1e-16)
        bound = (np.log(t) - np.log1p(-t))[:, None] + np.log1p(np.exp(z_np))[None, :]
        idx = np.clip((bound - z_np[0]) / h, 0, len(z_np) - 1.000001)
        i0 = idx.astype(np.int64)
        frac = idx - i0
        cols = np.arange(len(z_np))[None, :]
        vals = inner[i0, cols] * (1 - frac) + inner[i0 + 1, cols] * frac
        return integrate.simpson(vals, dx=h, axis=1)

    assert abs(cdf(np.array([1 - 1e-15]))[0] - 1) < 1e-5
    n = 20_000
    x1 = ce.concrete_sample(logits.expand(n, 3), lam, seed=23)[:, 0].numpy()
    assert stats.kstest(x1, cdf).pvalue > LEVEL
    other = ce.concrete_sample(
        torch.tensor([0.6, -0.2, 0.1], dtype=torch.float64).expand(n, 3), lam, seed=23
    )[:, 0].numpy()
    assert stats.kstest(other, cdf).pvalue < LEVEL


# ---- the binary special case (Prop. 2 as we read it) -----------------------------------------
def test_binary_concrete_is_the_two_category_concrete():
    # X ~ BinConcrete(alpha, lam) iff (X, 1 - X) ~ Concrete((alpha, 1), lam): the densities agree.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, generator=gen, dtype=torch.float64)
    lam = 0.2 + 2 * torch.rand(500, generator=gen, dtype=torch.float64)
    x = ce.binary_concrete_sample(a, lam, seed=4)
    xx = torch.stack([x, 1 - x], -1)
    aa = torch.stack([a, torch.zeros_like(a)], -1)
    ok = (x > 1e-12) & (x < 1 - 1e-12)
    assert ok.float().mean() > 0.95
    assert torch.allclose(
        ce.binary_concrete_log_prob(x, a, lam)[ok],
        ce.concrete_log_prob(xx, aa, lam)[ok],
        rtol=1e-9,
        atol=1e-9,
    )
    # The logistic form is the ExpConcrete log-ratio: y = log x - log(1 - x).
    assert torch.allclose(
        ce.logit_binary_concrete_log_prob(torch.logit(x), a, lam)[ok],
        ce.exp_concrete_log_prob(xx.log(), aa, lam)[ok],
        rtol=1e-9,
        atol=1e-9,
    )


@pytest.mark.parametrize("lam", [0.1, 1.0, 3.0])
def test_binary_rounding(lam):
    # P(X > 1/2) = alpha / (1 + alpha) = sigmoid(a) at every temperature (binomial test).
    a, n = -0.8, 100_000
    x = ce.binary_concrete_sample(torch.full((n,), a, dtype=torch.float32), lam, seed=31)
    k = int((x > 0.5).sum())
    p = 1 / (1 + math.exp(-a))
    assert stats.binomtest(k, n, p).pvalue > LEVEL
    assert stats.binomtest(k, n, 1 / (1 + math.exp(-a - 0.05))).pvalue < LEVEL


def test_binary_zero_temperature():
    a, n = 0.4, 100_000
    x = ce.binary_concrete_sample(torch.full((n,), a, dtype=torch.float64), 1e-4, seed=8)
    at_vertex = (x < 1e-8) | (x > 1 - 1e-8)
    assert at_vertex.float().mean() > 0.99
    k = int((x[at_vertex] > 0.5).sum())
    assert stats.binomtest(k, int(at_vertex.sum()), 1 / (1 + math.exp(-a))).pvalue > LEVEL


# ---- noise moments and distributions ---------------------------------------------------------
N_NOISE = 1 << 20


def _z(sample_stat, expected, se):
    return abs(sample_stat - expected) / se


Z_LEVEL = stats.norm.isf(LEVEL / 2)  # two-sided normal quantile at the level: 3.89


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_noise(dtype):
    g = ce.noise("gumbel", (N_NOISE,), dtype=dtype, seed=2718).double().numpy()
    var = math.pi**2 / 6
    assert _z(g.mean(), EULER_GAMMA, math.sqrt(var / N_NOISE)) < Z_LEVEL
    # Var of the sample variance: (mu4 - sigma^4) / n with excess kurtosis 12/5 for the Gumbel.
    assert _z(g.var(), var, var * math.sqrt((2 + 2.4) / N_NOISE)) < Z_LEVEL
    assert stats.kstest(g, stats.gumbel_r.cdf).pvalue > LEVEL
    assert stats.kstest(g, stats.gumbel_r(loc=0.01).cdf).pvalue < LEVEL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logistic_noise(dtype):
    v = ce.noise("logistic", (N_NOISE,), dtype=dtype, seed=3141).double().numpy()
    var = math.pi**2 / 3
    assert _z(v.mean(), 0.0, math.sqrt(var / N_NOISE)) < Z_LEVEL
    assert _z(v.var(), var, var * math.sqrt((2 + 1.2) / N_NOISE)) < Z_LEVEL
    assert stats.kstest(v, stats.logistic.cdf).pvalue > LEVEL
    assert stats.kstest(v, stats.logistic(scale=1.01).cdf).pvalue < LEVEL
    # Symmetric: the median is 0.
    assert _z(np.median(v), 0.0, 1 / (2 * stats.logistic.pdf(0) * math.sqrt(N_NOISE))) < Z_LEVEL


@pytest.mark.parametrize("kind,dist", [("uniform", stats.uniform), ("exponential", stats.expon)])
def test_uniform_and_exponential_noise(kind, dist):
    v = ce.noise(kind, (N_NOISE,), dtype=torch.float32, seed=1618).double().numpy()
    assert stats.kstest(v, dist.cdf).pvalue > LEVEL
    assert _z(v.mean(), dist.mean(), dist.std() / math.sqrt(N_NOISE)) < Z_LEVEL


def test_noise_draws_are_independent():
    # Neighbouring draws (same Philox group and across groups) are uncorrelated, and the noise of
    # nearby offsets is not the same stream shifted.
    u = ce.noise("uniform", (N_NOISE,), dtype=torch.float64, seed=99).numpy()
    for lag in (1, 2, 3, 4, 5):
        r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
        assert abs(r) * math.sqrt(N_NOISE) < Z_LEVEL
    v = ce.noise("uniform", (N_NOISE,), dtype=torch.float64, seed=99, offset=1).numpy()
    assert abs(np.corrcoef(u, v)[0, 1]) * math.sqrt(N_NOISE) < Z_LEVEL
    assert abs(np.corrcoef(u[4:], v[:-4])[0, 1]) * math.sqrt(N_NOISE) < Z_LEVEL
