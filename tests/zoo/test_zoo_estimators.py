"""Unbiasedness of the gradient estimators on tiny models.

Method: the estimator's gradient is averaged over G groups of N independent draws (one backward pass
per group over N copies of an example gives that group's mean); the per-coordinate standard error
is the spread of the G group means / sqrt(G). The reference gradient is exact: enumeration of every
latent configuration for the discrete objective (VIMCO, NVIL), trapezoid quadrature for the relaxed
objective of a one-unit binary model (the integrand is analytic and decays exponentially, so the
rule is accurate to far below the Monte Carlo error), or an independent estimator (score function
with the op's densities) for the 4-ary relaxation.

Tolerance: every coordinate within Z_MAX = 5 standard errors. Under unbiasedness each |z| exceeds
5 with probability below 1e-4 (t distribution with G - 1 = 39 degrees of freedom), so with at most
~40 coordinates a false alarm has probability below 0.4%; the seeds are fixed, so the outcome is
deterministic. Each test also checks that the reference gradient is resolved (some coordinates
exceed 10 standard errors), and negative controls check that a biased estimator fails the same test.
"""

from __future__ import annotations

import math

import pytest
import torch
from zoo_helpers import (
    GROUPS,
    Z_MAX,
    assert_unbiased,
    exact_bound,
    flat_grad,
    linear64,
    perturbed,
    quadrature_log_mean,
    z_scores,
)
from zoo_helpers import log_logistic as _log_logistic
from zoo_helpers import mc_gradient as _mc_gradient

import concrete_ext as ce
from concrete_ext.zoo.estimators import NVIL, VIMCO, Concrete, vimco_learning_signals
from concrete_ext.zoo.model import SBN, bernoulli_log_prob, bound
from concrete_ext.zoo.noise import NoiseSource, mix64

X = torch.tensor([1.0, 0.0, 1.0])


def mc_gradient(loss_fn, params, n, groups=GROUPS, seed=0):
    return _mc_gradient(loss_fn, params, X, n, groups, seed)


def exact_gradient(model, m):
    params = list(model.parameters())
    return flat_grad(-exact_bound(model, X, m), params)


# ---- VIMCO and NVIL against exact enumeration ------------------------------------------------------
CASES = [("2H-3V", 2, 3), ("2H-2H-3V", 2, 2), ("2H-3V", 4, 3), ("2H~3V", 2, 2)]


@pytest.mark.parametrize("arch,arity,m", CASES)
def test_vimco_unbiased_for_discrete_objective(arch, arity, m):
    model = perturbed(SBN(arch, arity), seed=1)
    params = list(model.parameters())
    est = VIMCO()
    mean, se = mc_gradient(lambda x, nz: est(model, x, m, nz).loss, params, n=5000)
    assert_unbiased(mean, se, exact_gradient(model, m), f"VIMCO {arch} n={arity} m={m}")


def test_vimco_without_score_term_is_detected():
    """Negative control: dropping the learning-signal term biases the inference gradient."""
    model = perturbed(SBN("2H-3V", 2), seed=1)
    params = list(model.parameters())
    m = 3

    def biased(x, nz):
        return -bound(model.log_weights_discrete(x, m, nz).log_w).mean()

    mean, se = mc_gradient(biased, params, n=5000)
    assert z_scores(mean, se, exact_gradient(model, m)).max() > 3 * Z_MAX


@pytest.mark.parametrize("arch,arity", [("2H-3V", 2), ("2H-2H-3V", 2), ("2H-3V", 4)])
def test_nvil_unbiased_for_elbo(arch, arity):
    model = perturbed(SBN(arch, arity), seed=2)
    params = list(model.parameters())
    est = NVIL(3, hidden=4)
    perturbed(est, seed=3)  # random baseline network; eval mode freezes the running statistics
    est.signal_mean.fill_(3.0)  # any constant cancels in expectation
    est.signal_var.fill_(0.5)  # max(1, std) = 1: the estimator is not rescaled
    est.started.fill_(True)
    mean, se = mc_gradient(lambda x, nz: est(model, x, 1, nz).loss, params, n=5000)
    assert_unbiased(mean, se, exact_gradient(model, 1), f"NVIL {arch} n={arity}")


def test_concrete_gradient_is_biased_for_discrete_objective():
    """Negative control for the test's power: the relaxation's gradient is not the discrete one."""
    model = perturbed(SBN("2H-3V", 2), seed=1)
    params = list(model.parameters())
    est = Concrete()
    mean, se = mc_gradient(lambda x, nz: est(model, x, 2, nz).loss, params, n=5000)
    assert z_scores(mean, se, exact_gradient(model, 2)).max() > 3 * Z_MAX


def test_vimco_signals_match_direct_formula():
    log_w = torch.randn(4, 5, dtype=torch.float64) * 3 - 100
    got = vimco_learning_signals(log_w)
    m = log_w.shape[-1]
    for j in range(m):
        others = torch.cat([log_w[:, :j], log_w[:, j + 1 :]], -1)
        geo = others.mean(-1, keepdim=True)
        swapped = torch.cat([log_w[:, :j], geo, log_w[:, j + 1 :]], -1)
        w = torch.exp(log_w + 100)
        direct = torch.log(w.mean(-1)) - torch.log(torch.exp(swapped + 100).mean(-1))
        torch.testing.assert_close(got[:, j], direct)


# ---- the Concrete relaxation against the relaxed objective -----------------------------------------
def relaxed_objective_quadrature(model, x, m, half_width=40.0, points=801):
    """E over y_1..y_m ~ q of log mean_i exp(log p(x | 2 sigmoid(y_i) - 1) + log f_p - log g_q),
    one binary unit, by the trapezoid rule on [-half_width, half_width]^m (m in {1, 2})."""
    t1, t2 = model.posterior_temperature, model.prior_temperature
    y = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    dy = (y[1] - y[0]).item()
    a_q = linear64(model.inf[0], x.double()).squeeze()
    a_p = model.prior_logits.double().squeeze()
    log_q = _log_logistic(y, a_q, t1)
    act = (2 * torch.sigmoid(y) - 1).unsqueeze(-1)
    log_x = bernoulli_log_prob(x.double(), linear64(model.gen[0], act))
    log_w = log_x + _log_logistic(y, a_p, t2) - log_q
    return quadrature_log_mean(log_q, log_w, dy, m)


@pytest.mark.parametrize("m", [1, 2])
def test_concrete_unbiased_for_relaxed_objective_binary(m):
    x2 = torch.tensor([1.0, 0.0])
    model = perturbed(SBN("1H-2V", 2), seed=4)
    params = list(model.parameters())
    with torch.no_grad():  # the quadrature integrates the density: check it is normalised
        y = torch.linspace(-40, 40, 801, dtype=torch.float64)
        mass = (
            torch.exp(
                _log_logistic(
                    y, linear64(model.inf[0], x2.double()).squeeze(), model.posterior_temperature
                )
            )
            * (y[1] - y[0])
        ).sum()
        assert abs(mass.item() - 1) < 1e-9
    exact = flat_grad(-relaxed_objective_quadrature(model, x2, m), params).float()
    est = Concrete()
    xs = x2.expand(4000, -1)
    gs = torch.stack(
        [
            flat_grad(est(model, xs, m, NoiseSource(seed=mix64(5, g))).loss, params)
            for g in range(GROUPS)
        ]
    )
    mean, se = gs.mean(0), gs.std(0) / math.sqrt(GROUPS)
    assert_unbiased(mean, se, exact, f"Concrete binary m={m}")


def test_concrete_pathwise_matches_score_function_4ary():
    """4-ary (one ExpConcrete node): the pathwise gradient of the relaxed L_2 agrees with the
    score-function gradient computed from the op's density, two unbiased estimators of the same
    gradient when the density is that of the sampler."""
    model = perturbed(SBN("2H-3V", 4), seed=6)
    params = list(model.parameters())
    t1, t2, m = model.posterior_temperature, model.prior_temperature, 2
    corners = model.latent[0]._corners

    def score_function(x, nz):
        q = model.inf[0](x).unflatten(-1, (1, 4)).unsqueeze(1).expand(-1, m, -1, -1)
        p = model.prior_logits.unflatten(-1, (1, 4))
        y = ce.exp_concrete_sample(q.detach(), t1, -1, **nz())
        lq = ce.exp_concrete_log_prob(y, q, t1).sum(-1)
        lp = ce.exp_concrete_log_prob(y, p.expand_as(q), t2).sum(-1)
        act = (torch.exp(y) @ corners.t()).flatten(-2)
        f = bound(bernoulli_log_prob(x.unsqueeze(1), model.gen[0](act)) + lp - lq)
        return -((f.detach() - baseline) * lq.sum(-1) + f).mean()

    with torch.no_grad():
        baseline = Concrete()(model, X.expand(20000, -1), m, NoiseSource(seed=7)).objective.mean()
    path_mean, path_se = mc_gradient(
        lambda x, nz: Concrete()(model, x, m, nz).loss, params, n=5000, seed=8
    )
    sf_mean, sf_se = mc_gradient(score_function, params, n=20000, seed=9)
    se = torch.sqrt(path_se**2 + sf_se**2)
    assert (path_mean.abs() > 10 * se).sum() >= 3
    z = z_scores(path_mean, se, sf_mean)
    assert z.max() < Z_MAX, f"max |z| = {z.max():.2f}"
