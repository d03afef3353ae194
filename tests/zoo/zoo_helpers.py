"""Test helpers: exact quantities of tiny SBNs by enumerating every latent configuration, and
randomly perturbed tiny models.

Written independently of the model's sampling code: only the networks (model.inf, model.gen, the
prior logits and the centering buffers) are shared, the probabilities are recomputed here.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F


def layer_states(units: int, arity: int):
    """(states, activities): every configuration of one layer.

    binary: states = activities = all vectors in {-1, 1}^units, shape (K, units);
    n-ary:  states = one-hot (K, nodes, n), activities = corners (K, units).
    """
    if arity == 2:
        acts = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=units)))
        return acts, acts
    bits = int(round(math.log2(arity)))
    nodes = units // bits
    combos = torch.tensor(list(itertools.product(range(arity), repeat=nodes)))  # (K, nodes)
    onehot = F.one_hot(combos, arity).to(torch.float32)
    corner = torch.stack(
        [2.0 * ((torch.arange(arity) >> b) & 1) - 1 for b in range(bits)]
    )  # (bits, n)
    acts = (onehot @ corner.t()).flatten(-2)
    return onehot, acts


def _log_prob(state, logits, arity):
    if arity == 2:
        return F.logsigmoid(state * logits).sum(-1)
    a = logits.unflatten(-1, (state.shape[-2], arity))
    return (state * torch.log_softmax(a, -1)).sum((-1, -2))


def joint_table(model, x):
    """(log_p, log_q) over all K joint latent configurations for one example x (pixels,)."""
    n = len(model.latent)
    per_layer = [layer_states(layer.units, model.arity) for layer in model.latent]
    sizes = [len(s[0]) for s in per_layer]
    idx = torch.tensor(list(itertools.product(*[range(k) for k in sizes])))  # (K, n)
    states = [per_layer[i][0][idx[:, i]] for i in range(n)]
    acts = [per_layer[i][1][idx[:, i]] for i in range(n)]
    K = idx.shape[0]
    log_q = torch.zeros(K)
    for i in reversed(range(n)):
        if i == n - 1:
            logits = model.inf[i](x).expand(K, -1)
        else:
            centre = getattr(model, f"center_{i + 1}")
            logits = model.inf[i](acts[i + 1] - centre)
        log_q = log_q + _log_prob(states[i], logits, model.arity)
    log_p = _log_prob(states[0], model.prior_logits.expand(K, -1), model.arity)
    for i in range(n - 1):
        log_p = log_p + _log_prob(states[i + 1], model.gen[i](acts[i]), model.arity)
    out = model.gen[-1](acts[-1])
    log_p = log_p + (x * out - F.softplus(out)).sum(-1)
    return log_p, log_q


def relative_variance(model, x):
    """Var_q[w] / E_q[w]^2 of the importance weights w = p(x, z) / q(z | x)."""
    log_p, log_q = joint_table(model, x)
    q, w = torch.exp(log_q), torch.exp(log_p - log_q)
    mean = (q * w).sum()
    return ((q * w * w).sum() / mean**2 - 1).item()


def exact_log_likelihood(model, x):
    log_p, _ = joint_table(model, x)
    return torch.logsumexp(log_p, 0)


def exact_bound(model, x, m):
    """E[L_m] exactly: sum over all K^m draws of prod q * log mean w."""
    log_p, log_q = joint_table(model, x)
    return expected_log_mean(log_p - log_q, log_q, m)


def expected_log_mean(log_w, log_q, m):
    """E[log (1/m) sum_i w_i] for m independent draws from q over a table of K configurations,
    by summing over all K^m draws."""
    K = log_w.shape[0]
    draws = torch.tensor(list(itertools.product(range(K), repeat=m)))  # (K^m, m)
    prob = torch.exp(log_q[draws].sum(-1))
    value = torch.logsumexp(log_w[draws], -1) - math.log(m)
    return (prob * value).sum()


def conditional_table(model, x):
    """(log p(x_bottom | z), log p(z | x_top)) over all K joint latent configurations of a
    ConditionalSBN, for one image x (context + target pixels)."""
    n = len(model.latent)
    top, bottom = x[: model.context_size], x[model.context_size :]
    per_layer = [layer_states(layer.units, model.arity) for layer in model.latent]
    idx = torch.tensor(list(itertools.product(*[range(len(s[0])) for s in per_layer])))
    states = [per_layer[i][0][idx[:, i]] for i in range(n)]
    acts = [per_layer[i][1][idx[:, i]] for i in range(n)]
    log_prior = _log_prob(states[0], model.gen[0](top).expand(idx.shape[0], -1), model.arity)
    for i in range(1, n):
        log_prior = log_prior + _log_prob(states[i], model.gen[i](acts[i - 1]), model.arity)
    out = model.gen[-1](acts[-1])
    log_lik = (bottom * out - F.softplus(out)).sum(-1)
    return log_lik, log_prior


def exact_sp_bound(model, x, m):
    """E[L_m^SP] exactly (the prior p(z | x_top) is the proposal, w = p(x_bottom | z))."""
    log_lik, log_prior = conditional_table(model, x)
    return expected_log_mean(log_lik, log_prior, m)


def exact_conditional_log_likelihood(model, x):
    """log p(x_bottom | x_top) by enumeration."""
    log_lik, log_prior = conditional_table(model, x)
    return torch.logsumexp(log_lik + log_prior, 0)


# ---- Monte Carlo gradients against exact ones ------------------------------------------------------
Z_MAX = 5.0
GROUPS = 40


def flat_grad(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


def mc_gradient(loss_fn, params, x, n, groups=GROUPS, seed=0):
    """(mean, standard error) of the gradient of loss_fn(x_batch, noise) over ``groups`` groups of
    n copies of the example x, each group with its own seeded noise."""
    from concrete_ext.zoo.noise import NoiseSource, mix64

    xs = x.expand(n, -1)
    gs = torch.stack(
        [flat_grad(loss_fn(xs, NoiseSource(seed=mix64(seed, g))), params) for g in range(groups)]
    )
    return gs.mean(0), gs.std(0) / math.sqrt(groups)


def z_scores(mean, se, reference):
    return (mean - reference).abs() / se.clamp_min(1e-12)


def assert_unbiased(mean, se, reference, what):
    z = z_scores(mean, se, reference)
    assert (reference.abs() > 10 * se).sum() >= 3, f"{what}: reference gradient not resolved"
    assert z.max() < Z_MAX, f"{what}: max |z| = {z.max():.2f} (z = {z.tolist()})"


def log_logistic(y, a, t):
    """Density of Y = (a + L) / t, L ~ Logistic (Appendix C.3.2), written out for the tests."""
    return math.log(t) - t * y + a - 2 * F.softplus(a - t * y)


def linear64(module, x):
    """A one-layer conditioning network applied in float64 (gradients reach its float32 weights)."""
    lin = module[0]
    return x @ lin.weight.double().t() + lin.bias.double()


def quadrature_log_mean(log_density, log_w, dy, m):
    """E[log (1/m) sum_i w(y_i)] for y_1..y_m iid with the density on a uniform grid of spacing dy
    (trapezoid rule; the density must vanish at the ends), m in {1, 2}."""
    wq = torch.exp(log_density) * dy
    if m == 1:
        return (wq * log_w).sum()
    pair = torch.logaddexp(log_w.unsqueeze(1), log_w.unsqueeze(0)) - math.log(2)
    return (wq.unsqueeze(1) * wq.unsqueeze(0) * pair).sum()


def assert_resume_is_exact(tmp_path, config, dataset, stop_at=14):
    """Train ``config`` straight to config.steps in tmp_path/a; in tmp_path/b stop at ``stop_at``,
    resume in a new Trainer and finish; the final training states must be equal bit for bit."""
    from concrete_ext.zoo import runs
    from concrete_ext.zoo.train import TrainConfig, Trainer

    Trainer(config, str(tmp_path / "a"), progress=False, dataset=dataset).run()
    first = TrainConfig.from_dict({**config.to_dict(), "steps": stop_at})
    Trainer(first, str(tmp_path / "b"), progress=False, dataset=dataset).run()
    resumed = Trainer(None, str(tmp_path / "b"), resume=True, progress=False, dataset=dataset)
    assert resumed.step == stop_at
    resumed.config.steps = config.steps
    resumed.run()
    a = runs.load_checkpoint(str(tmp_path / "a" / runs.CHECKPOINT))
    b = runs.load_checkpoint(str(tmp_path / "b" / runs.CHECKPOINT))
    assert a["step"] == b["step"] == config.steps
    for part in ("model", "estimator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k])
    assert torch.equal(a["noise_gen"], b["noise_gen"]) and torch.equal(a["data_gen"], b["data_gen"])


def perturbed(model, seed: int, scale: float = 0.7):
    """Parameters and centering averages drawn from ``seed`` alone (whatever the global RNG did
    before), eval mode (centering frozen)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.startswith("center_"):
                b.copy_(torch.rand(b.shape, generator=g) - 0.5)
    model.eval()
    return model
