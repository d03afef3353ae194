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
    corner = torch.stack([2.0 * ((torch.arange(arity) >> b) & 1) - 1 for b in range(bits)])  # (bits, n)
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
    return ((q * w * w).sum() / mean ** 2 - 1).item()


def exact_log_likelihood(model, x):
    log_p, _ = joint_table(model, x)
    return torch.logsumexp(log_p, 0)


def exact_bound(model, x, m):
    """E[L_m] exactly: sum over all K^m draws of prod q * log mean w."""
    log_p, log_q = joint_table(model, x)
    log_w = log_p - log_q
    K = log_w.shape[0]
    draws = torch.tensor(list(itertools.product(range(K), repeat=m)))  # (K^m, m)
    prob = torch.exp(log_q[draws].sum(-1))
    value = torch.logsumexp(log_w[draws], -1) - math.log(m)
    return (prob * value).sum()


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
