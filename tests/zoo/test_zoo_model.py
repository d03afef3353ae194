"""The notation, the n-ary layers on the hypercube corners, and the model's set-up (Appendix D)."""

from __future__ import annotations

import pytest
import torch

from concrete_ext.zoo.arch import parse_arch
from concrete_ext.zoo.layers import StochasticLayer, corners
from concrete_ext.zoo.model import DEFAULT_TEMPERATURES, SBN
from concrete_ext.zoo.noise import NoiseSource


@pytest.mark.parametrize(
    "text,sizes,links",
    [
        ("200H-784V", (200, 784), ("-",)),
        ("200H~784V", (200, 784), ("~",)),
        ("200H-200H-784V", (200, 200, 784), ("-", "-")),
        ("200H~200H~784V", (200, 200, 784), ("~", "~")),
        ("240H~240H~784V", (240, 240, 784), ("~", "~")),
        ("(200H – 200H ∼784V)", (200, 200, 784), ("-", "~")),
    ],
)
def test_parse_notation(text, sizes, links):
    a = parse_arch(text)
    assert a.sizes == sizes and a.links == links and a.is_density_model
    assert parse_arch(str(a)) == a


def test_parse_conditional_and_errors():
    a = parse_arch("392V-240H-240H-392V")
    assert a.is_conditional_model and not a.is_density_model and a.is_linear
    with pytest.raises(ValueError, match="position"):
        parse_arch("200X-784V")
    with pytest.raises(ValueError, match="link"):
        parse_arch("200H*784V")
    with pytest.raises(ValueError, match="not a density model"):
        SBN("392V-240H-240H-392V")


def test_corners_are_the_hypercube():
    c = corners(8)
    assert c.shape == (3, 8)
    assert set(map(tuple, c.t().tolist())) == {
        (a, b, d) for a in (-1.0, 1.0) for b in (-1.0, 1.0) for d in (-1.0, 1.0)
    }
    assert corners(2).tolist() == [[-1.0, 1.0]]


@pytest.mark.parametrize("arity", [2, 4, 8])
def test_layer_states_and_relaxation(arity):
    layer = StochasticLayer(24, arity)
    assert layer.nodes * layer.bits == 24
    logits = torch.randn(5, 3, layer.params)
    state, act = layer.sample_discrete(logits, {"seed": 1})
    assert act.shape == (5, 3, 24) and set(act.unique().tolist()) <= {-1.0, 1.0}
    lp = layer.log_prob_discrete(state, logits)
    assert lp.shape == (5, 3) and (lp <= 0).all()
    y, lq = layer.sample_relaxed(logits, 0.5, {"seed": 2})
    relaxed = layer.activity_relaxed(y)
    assert relaxed.shape == (5, 3, 24) and (relaxed.abs() < 1).all()
    torch.testing.assert_close(layer.log_prob_relaxed(y, logits, 0.5), lq)


def test_discrete_sampling_frequencies():
    """Binary units are +1 with probability sigmoid(a); 4-ary nodes take state k w.p. softmax."""
    n = 200000
    a = torch.tensor([-1.0, 0.3, 2.0])
    s, _ = StochasticLayer(3, 2).sample_discrete(a.expand(n, 3), {"seed": 3})
    freq = (s > 0).float().mean(0)
    assert (freq - torch.sigmoid(a)).abs().max() < 5 * 0.5 / n**0.5
    logits = torch.tensor([0.5, -1.0, 0.0, 1.5])
    d, act = StochasticLayer(2, 4).sample_discrete(logits.expand(n, 4), {"seed": 4})
    assert (d.reshape(n, 4).mean(0) - torch.softmax(logits, 0)).abs().max() < 5 * 0.5 / n**0.5


def test_initialisation_d3():
    mean = torch.full((6,), 0.25)
    mean[0] = 0.0  # an always-off pixel gets a finite bias
    model = SBN("4H~4H~6V", 2, pixel_mean=mean.numpy())
    bias = model.gen[-1][-1].bias
    torch.testing.assert_close(bias[1:], torch.full((5,), float(torch.logit(torch.tensor(0.25)))))
    assert torch.isfinite(bias[0]) and bias[0] < -6
    others = [
        m.bias
        for net in list(model.gen) + list(model.inf)
        for m in net
        if isinstance(m, torch.nn.Linear) and m is not model.gen[-1][-1]
    ]
    assert all(torch.equal(b, torch.zeros_like(b)) for b in others)
    assert torch.equal(model.prior_logits, torch.zeros(4))
    w = model.gen[0][0].weight  # Glorot uniform: |w| <= sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= (6 / (4 + 4)) ** 0.5 and w.std() > 0
    # '~' links: two tanh layers of the preceding stochastic layer's size, in both networks
    assert [m.out_features for m in model.gen[1] if isinstance(m, torch.nn.Linear)] == [4, 4, 6]
    assert [m.out_features for m in model.inf[1] if isinstance(m, torch.nn.Linear)] == [4, 4, 4]


@pytest.mark.parametrize("arity", [2, 4, 8])
def test_default_temperatures_d5(arity):
    model = SBN("240H~240H~784V", arity)
    assert (model.posterior_temperature, model.prior_temperature) == DEFAULT_TEMPERATURES[arity]
    x = torch.bernoulli(torch.full((3, 784), 0.2))
    w = model.log_weights_relaxed(x, 2, NoiseSource(seed=0))
    assert w.log_p.shape == (3, 2) and torch.isfinite(w.log_w).all()
    w = model.log_weights_discrete(x, 2, NoiseSource(seed=0))
    assert torch.isfinite(w.log_w).all()


def test_nary_layer_size_must_divide():
    with pytest.raises(ValueError, match="8-ary"):
        SBN("200H~784V", 8)
