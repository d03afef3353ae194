"""L_m and its streamed evaluation: exact identities and agreement with enumeration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from zoo_helpers import exact_bound, exact_log_likelihood, perturbed, relative_variance

from concrete_ext.zoo.evaluate import estimate_bound, partial_log_sums, plan
from concrete_ext.zoo.model import SBN, bound
from concrete_ext.zoo.noise import NoiseSource


def ignore_z(model: SBN) -> SBN:
    """Decoder weights zero (p(x | z) = p(x)), conditional priors constant, and q(z | x) equal to
    the prior layer by layer: every importance weight is then exactly p(x)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in list(model.gen) + list(model.inf):
            for mod in net:
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.zero_()
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g))
        n = len(model.latent)
        model.prior_logits.copy_(torch.randn(model.prior_logits.shape, generator=g))
        model.inf[0][-1].bias.copy_(model.prior_logits)
        for i in range(1, n):  # q(z_i | .) logits = p(z_i | z_{i-1}) logits
            model.inf[i][-1].bias.copy_(model.gen[i - 1][-1].bias)
    return model


def independent_log_px(model: SBN, x: torch.Tensor) -> torch.Tensor:
    b = model.gen[-1][-1].bias
    return (
        x * torch.nn.functional.logsigmoid(b) + (1 - x) * torch.nn.functional.logsigmoid(-b)
    ).sum(-1)


@pytest.mark.parametrize(
    "arch,arity", [("4H-6V", 2), ("4H~4H~6V", 2), ("4H~4H~6V", 4), ("6H-6V", 8)]
)
@pytest.mark.parametrize("m", [1, 5, 50])
def test_decoder_ignoring_z_gives_log_px_exactly(arch, arity, m):
    model = ignore_z(SBN(arch, arity)).eval()
    x = torch.tensor([[1.0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]])
    log_px = independent_log_px(model, x)
    disc = bound(model.log_weights_discrete(x, m, NoiseSource(seed=1)).log_w)
    torch.testing.assert_close(disc, log_px, atol=2e-5, rtol=0)
    # the relaxation too, when prior and posterior temperatures are equal
    model.prior_temperature = model.posterior_temperature
    relaxed = bound(model.log_weights_relaxed(x, m, NoiseSource(seed=2)).log_w)
    torch.testing.assert_close(relaxed, log_px, atol=2e-5, rtol=0)
    # and the streamed evaluation, with work units small enough to split the samples in chunks
    est = estimate_bound(model, x.numpy(), m, seed=3, rows=3, progress=False)
    np.testing.assert_allclose(est.per_example, log_px.detach().double().numpy(), atol=2e-5, rtol=0)


def test_streamed_estimate_converges_to_exact_log_likelihood():
    """On a tiny model, L_m over many samples approaches log p(x) (enumerated) from below, and
    E[L_m] (enumerated) increases with m: L_1 <= L_2 <= L_3 <= log p(x) (Burda et al. 2016)."""
    model = perturbed(SBN("3H-2H-4V", 2), seed=11)
    x = torch.tensor([1.0, 0.0, 1.0, 1.0])
    log_px = exact_log_likelihood(model, x).item()
    exact = [exact_bound(model, x, m).item() for m in (1, 2, 3)]
    assert exact[0] < exact[1] < exact[2] < log_px
    m = 20000
    est = estimate_bound(model, x.unsqueeze(0).numpy(), m, seed=0, rows=4096, progress=False)
    # log of a mean of m weights: standard deviation about sqrt(Var[w] / E[w]^2 / m) (delta
    # method), bias about half its square; allow 5 standard deviations
    sd = math.sqrt(relative_variance(model, x) / m)
    assert abs(est.mean - log_px) < 5 * sd + sd**2, (est.mean, log_px, sd)


def test_sharded_units_combine_to_the_same_estimate():
    model = perturbed(SBN("3H~4V", 2), seed=12)
    x = np.random.RandomState(0).randint(0, 2, size=(7, 4))
    full = partial_log_sums(model, x, 300, seed=5, rows=64, progress=False)
    parts = [
        partial_log_sums(model, x, 300, seed=5, rows=64, shard=(r, 3), progress=False)
        for r in range(3)
    ]
    combined = torch.logsumexp(torch.stack(parts), 0)
    torch.testing.assert_close(combined, full, atol=1e-12, rtol=1e-12)
    assert plan(300, 64) == (1, 64)


def test_evaluation_is_deterministic_and_leaves_training_mode():
    model = perturbed(SBN("3H-4V", 2), seed=13).train()
    x = np.ones((3, 4))
    a = estimate_bound(model, x, 50, seed=1, progress=False)
    b = estimate_bound(model, x, 50, seed=1, progress=False)
    c = estimate_bound(model, x, 50, seed=2, progress=False)
    assert a.mean == b.mean and a.mean != c.mean
    assert model.training


def test_centering_updates_in_training_and_freezes_in_eval():
    model = SBN("4H-4H-6V", 2)
    x = torch.ones(8, 6)
    before = model.center_1.clone()
    model.eval()
    model.log_weights_discrete(x, 3, NoiseSource(seed=0))
    assert torch.equal(model.center_1, before)
    model.train()
    w = model.log_weights_relaxed(x, 3, NoiseSource(seed=0))
    assert not torch.equal(model.center_1, before)
    assert not model.center_1.requires_grad
    # the average is 0.9 old + 0.1 batch mean of the layer's activity
    model2 = SBN("4H-4H-6V", 2)
    model2.load_state_dict(model.state_dict())
    model2.center_1.zero_()
    model2.train()
    noise = NoiseSource(seed=4)
    logits = model2.inf[-1](x).unsqueeze(1).expand(8, 3, -1)
    _, act = model2.latent[1].sample_discrete(logits, noise())
    model2.center_1.zero_()
    model2.log_weights_discrete(x, 3, NoiseSource(seed=4))
    torch.testing.assert_close(model2.center_1, 0.1 * act.reshape(-1, 4).mean(0))
    assert math.isfinite(w.log_w.sum().item())
