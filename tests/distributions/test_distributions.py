"""concrete_ext.distributions: Concrete, ExpConcrete, BinaryConcrete, LogitBinaryConcrete with the
torch.distributions API: constructor checks, batch / event shapes (a tensor temperature is part of
the batch shape), expand, support, arg_constraints, rsample (differentiable) and sample (not),
log_prob shapes and values against torch.distributions, mean / variance, validate_args errors."""

import math

import pytest
import torch
from torch.distributions import RelaxedBernoulli, RelaxedOneHotCategorical, constraints
from torch.distributions.relaxed_bernoulli import LogitRelaxedBernoulli
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import concrete_ext as ce
from concrete_ext.distributions import BinaryConcrete, Concrete, ExpConcrete, LogitBinaryConcrete
from concrete_ext.testing import INF, make_logits, make_temperature

CATEGORICAL = [Concrete, ExpConcrete]
BINARY = [BinaryConcrete, LogitBinaryConcrete]
ALL = CATEGORICAL + BINARY
TORCH_PEER = {
    Concrete: RelaxedOneHotCategorical,
    ExpConcrete: ExpRelaxedCategorical,
    BinaryConcrete: RelaxedBernoulli,
    LogitBinaryConcrete: LogitRelaxedBernoulli,
}


def _param(cls, shape=(3, 4), seed=0):
    logits = make_logits(shape if cls in CATEGORICAL else shape, seed=seed)
    return logits


@pytest.mark.parametrize("cls", ALL)
def test_probs_or_logits_not_both_not_neither(cls):
    logits = _param(cls)
    with pytest.raises(ValueError, match="probs.*logits|logits.*probs"):
        cls(0.5)
    with pytest.raises(ValueError, match="probs.*logits|logits.*probs"):
        cls(0.5, probs=torch.softmax(logits, -1), logits=logits)


@pytest.mark.parametrize("cls", ALL)
def test_probs_and_logits_give_the_same_distribution(cls):
    logits = _param(cls)
    probs = torch.softmax(logits, -1) if cls in CATEGORICAL else torch.sigmoid(logits)
    a, b = cls(0.7, logits=logits), cls(0.7, probs=probs)
    assert torch.allclose(a.probs, b.probs, rtol=1e-12) and torch.allclose(
        a.logits, b.logits, rtol=1e-12, atol=1e-12
    )
    x = a.sample((2,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a.log_prob(x), b.log_prob(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", CATEGORICAL)
def test_categorical_shapes(cls):
    logits = make_logits((3, 5), seed=1)
    d = cls(0.5, logits=logits)
    assert d.batch_shape == (3,) and d.event_shape == (5,)
    # A tensor temperature is part of the batch shape ...
    d = cls(make_temperature((2, 1), seed=1), logits=logits)
    assert d.batch_shape == (2, 3) and d.event_shape == (5,)
    x = d.rsample((4,))
    assert x.shape == (4, 2, 3, 5)
    assert d.log_prob(x).shape == (4, 2, 3)
    # ... also when the logits have no batch dimensions, and a value of event shape broadcasts.
    d = cls(make_temperature((6,), seed=2), logits=make_logits((5,), seed=3))
    assert d.batch_shape == (6,)
    x = d.rsample()
    assert x.shape == (6, 5)
    assert d.log_prob(x[0]).shape == (6,)
    assert torch.allclose(
        d.log_prob(x[0])[0], cls(d.temperature[0], logits=d.logits).log_prob(x[0]), rtol=1e-12
    )


@pytest.mark.parametrize("cls", BINARY)
def test_binary_shapes(cls):
    d = cls(0.5, logits=make_logits((3, 5), seed=1))
    assert d.batch_shape == (3, 5) and d.event_shape == ()
    d = cls(make_temperature((2, 1, 1), seed=1), logits=make_logits((3, 5), seed=1))
    assert d.batch_shape == (2, 3, 5)
    x = d.rsample((4,))
    assert x.shape == (4, 2, 3, 5) and d.log_prob(x).shape == (4, 2, 3, 5)
    assert cls(0.5, logits=torch.tensor(0.3, dtype=torch.float64)).batch_shape == ()


@pytest.mark.parametrize("cls", ALL)
def test_expand(cls):
    logits = make_logits((3, 4), seed=2)
    d = cls(make_temperature((3, 1) if cls in BINARY else (3,), seed=2), logits=logits)
    new_batch = (2,) + tuple(d.batch_shape)
    e = d.expand(new_batch)
    assert type(e) is cls and e.batch_shape == new_batch and e.event_shape == d.event_shape
    x = e.rsample(generator=torch.Generator().manual_seed(1))
    assert x.shape == new_batch + tuple(d.event_shape)
    lp = e.log_prob(x)
    assert lp.shape == new_batch
    assert torch.allclose(lp, d.log_prob(x), rtol=1e-12, atol=1e-12)


def test_support_and_constraints():
    assert Concrete.support is constraints.simplex
    assert BinaryConcrete.support is constraints.unit_interval
    assert LogitBinaryConcrete.support is constraints.real
    assert ExpConcrete.support.event_dim == 1
    for cls in ALL:
        assert cls.arg_constraints["temperature"] is constraints.positive
        assert cls.has_rsample
    # The log-simplex: entries may be -inf (a masked category), logsumexp must be 0.
    s = ExpConcrete.support
    y = torch.log(
        torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.4, 0.6], [0.3, 0.3, 0.3]], dtype=torch.float64)
    )
    assert s.check(y).tolist() == [True, True, False]
    assert not s.check(torch.tensor([[INF, 0.0]])).any()


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_temperature_validated(cls, bad):
    logits = _param(cls)
    with pytest.raises(ValueError, match="temperature"):
        cls(bad, logits=logits, validate_args=True)
    with pytest.raises(ValueError, match="temperature"):
        cls(
            torch.tensor([0.5, bad, 1.0]).reshape(3, 1)
            if cls in BINARY
            else torch.tensor([0.5, bad, 1.0]),
            logits=logits.float(),
            validate_args=True,
        )
    cls(bad, logits=logits, validate_args=False)  # not checked when validation is off


@pytest.mark.parametrize("cls", ALL)
def test_validate_args_rejects_values_outside_the_support(cls):
    d = cls(0.5, logits=make_logits((2, 3), seed=1), validate_args=True)
    bad = {
        Concrete: torch.tensor([[0.5, 0.6, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64),
        ExpConcrete: torch.log(
            torch.tensor([[0.5, 0.6, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
        ),
        BinaryConcrete: torch.tensor([[0.5, 1.5, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64),
        LogitBinaryConcrete: torch.tensor(
            [[0.5, math.nan, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64
        ),
    }[cls]
    with pytest.raises(ValueError, match="support"):
        d.log_prob(bad)
    d.log_prob(d.sample())  # its own samples are inside


@pytest.mark.parametrize("cls", ALL)
def test_rsample_is_differentiable_and_sample_is_not(cls):
    logits = _param(cls).requires_grad_()
    t = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    d = cls(t, logits=logits)
    x = d.rsample((3,), generator=torch.Generator().manual_seed(0))
    w = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).reshape(x.shape)
    (torch.where(torch.isfinite(x), x, 0.0) * w).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert t.grad is not None and t.grad.abs() > 0
    s = d.sample((3,), generator=torch.Generator().manual_seed(0))
    assert not s.requires_grad
    assert torch.equal(s, x.detach())


@pytest.mark.parametrize("cls", ALL)
def test_rsample_matches_the_functional_api(cls):
    logits = _param(cls)
    d = cls(0.6, logits=logits)
    x = d.rsample((2,), generator=torch.Generator().manual_seed(5))
    fn = {
        Concrete: ce.concrete_sample,
        ExpConcrete: ce.exp_concrete_sample,
        BinaryConcrete: ce.binary_concrete_sample,
        LogitBinaryConcrete: ce.logit_binary_concrete_sample,
    }[cls]
    expected = fn(d.logits.expand(x.shape), 0.6, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(x, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_log_prob_equals_torch_distributions(cls, temperature):
    logits = make_logits((16, 4), seed=3)
    t = torch.tensor(temperature, dtype=torch.float64)
    ours, theirs = cls(t, logits=logits), TORCH_PEER[cls](t, logits=logits)
    x = ours.sample((3,), generator=torch.Generator().manual_seed(1))
    if cls is BinaryConcrete:  # torch clamps x to [tiny, 1 - eps] first
        x = x.clamp(1e-6, 1 - 1e-6)
    a, b = ours.log_prob(x), theirs.log_prob(x)
    fin = torch.isfinite(b)
    assert fin.float().mean() > 0.9
    assert torch.allclose(a[fin], b[fin], rtol=1e-10, atol=1e-10)


def test_log_prob_with_masked_categories():
    logits = make_logits((3, 5), seed=4)
    logits[:, 2] = -INF
    d = ExpConcrete(0.5, logits=logits, validate_args=True)
    y = d.sample((4,))
    assert (y[..., 2] == -INF).all()
    lp = d.log_prob(y)
    assert torch.isfinite(lp).all()
    keep = [0, 1, 3, 4]
    assert torch.allclose(
        lp, ExpConcrete(0.5, logits=logits[:, keep]).log_prob(y[..., keep]), rtol=1e-12
    )


def test_logit_binary_concrete_mean_and_variance():
    logits = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    t = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    d = LogitBinaryConcrete(t, logits=logits)
    assert torch.allclose(d.mean, logits / t)
    assert torch.allclose(d.variance, math.pi**2 / 3 / t**2)
    assert torch.allclose(d.stddev, d.variance.sqrt())
    # Against the moments of 2^18 samples (fixed seed): within 6 standard errors.
    n = 1 << 18
    y = d.sample((n,), generator=torch.Generator().manual_seed(2))
    se_mean = d.stddev / math.sqrt(n)
    assert ((y.mean(0) - d.mean).abs() < 6 * se_mean).all()
    # Var of the sample variance of a logistic: (mu4 - sigma^4) / n, mu4 = 4.2 sigma^4.
    se_var = d.variance * math.sqrt(3.2 / n)
    assert ((y.var(0) - d.variance).abs() < 6 * se_var).all()
    with pytest.raises(NotImplementedError):
        Concrete(0.5, logits=logits).mean


def test_distributions_carry_the_dtype():
    for dtype in (torch.float32, torch.float64):
        for cls in ALL:
            d = cls(0.5, logits=make_logits((2, 3), seed=1).to(dtype))
            assert d.temperature.dtype == dtype
            x = d.rsample()
            assert x.dtype == dtype and d.log_prob(x).dtype == dtype
