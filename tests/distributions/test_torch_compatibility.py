"""Drop-in compatibility with torch's semantics, checked against torch's composite on the same
inputs: output layout, zero probabilities, temperature shapes, dtype promotion, and the classes
being torch's subclasses (the README's compatibility section lists the deliberate differences)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch.distributions.relaxed_bernoulli import LogitRelaxedBernoulli
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import concrete_ext as ce
from concrete_ext.distributions import BinaryConcrete, Concrete, ExpConcrete, LogitBinaryConcrete
from concrete_ext.testing import make_logits

PEERS = {
    Concrete: D.RelaxedOneHotCategorical,
    ExpConcrete: ExpRelaxedCategorical,
    BinaryConcrete: D.RelaxedBernoulli,
    LogitBinaryConcrete: LogitRelaxedBernoulli,
}


# ---- 1. layout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize(
    "shape,dim",
    [((2, 3, 4, 4), 1), ((2, 3, 4, 4), 0), ((2, 3, 4, 4), -1), ((5, 7), 0), ((5, 7), 1)],
)
def test_outputs_have_torch_layout(shape, dim, hard):
    x = make_logits(shape, seed=1, dtype=torch.float32)
    ours = ce.gumbel_softmax(x, 0.5, hard=hard, dim=dim)
    theirs = F.gumbel_softmax(x, 0.5, hard=hard, dim=dim)
    assert ours.stride() == theirs.stride() and ours.is_contiguous()
    ours.view(shape[0], -1)  # what clients do with it
    for fn in (ce.concrete_sample, ce.exp_concrete_sample):
        assert fn(x, 0.5, dim).is_contiguous()
    assert ce.gumbel_max_sample(x, dim).is_contiguous()
    assert ce.relaxed_kl_sample(x, 0.5, x, 0.5, dim)[0].is_contiguous()


def test_transposed_input_gives_contiguous_output_with_the_same_values():
    x = make_logits((7, 5), seed=2, dtype=torch.float32).t()
    out = ce.concrete_sample(x, 0.5, 0, seed=3)
    assert out.is_contiguous()
    assert torch.equal(out, ce.concrete_sample(x.contiguous(), 0.5, 0, seed=3))


def test_channels_last_input_keeps_its_memory_format_without_a_copy():
    """The category dim is innermost in memory: the kernel writes the output in place, contiguous
    in the input's memory format (torch would return NCHW-contiguous)."""
    x = make_logits((2, 3, 4, 4), seed=1).to(memory_format=torch.channels_last)
    out = ce.gumbel_softmax(x, 0.5, dim=1)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_gradients_flow_through_the_layout_change():
    x = make_logits((2, 3, 4), seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ce.concrete_sample(a, 0.7, 1, seed=1), (x,))


# ---- 2. zero probabilities -------------------------------------------------------------------------
def test_zero_probability_category_is_masked_with_finite_gradients():
    p = torch.tensor([0.5, 0.5, 0.0], requires_grad=True)
    x = Concrete(torch.tensor(0.5), probs=p).rsample(generator=torch.Generator().manual_seed(0))
    assert x[2] == 0.0
    (x * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad[2] == 0.0
    # torch's own gradient is finite too (it clamps probabilities)
    q = torch.tensor([0.5, 0.5, 0.0], requires_grad=True)
    (
        D.RelaxedOneHotCategorical(torch.tensor(0.5), probs=q).rsample() * torch.arange(3.0)
    ).sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("cls", [ExpConcrete, Concrete])
def test_zero_probability_log_prob_gradient_is_finite(cls):
    p = torch.tensor([[0.2, 0.8, 0.0], [0.1, 0.3, 0.6]], dtype=torch.float64, requires_grad=True)
    d = cls(torch.tensor(0.7, dtype=torch.float64), probs=p)
    y = d.sample(generator=torch.Generator().manual_seed(1))
    lp = d.log_prob(y)
    assert torch.isfinite(lp).all()
    (g,) = torch.autograd.grad(lp.sum(), p)
    assert torch.isfinite(g).all() and g[0, 2] == 0.0


def test_binary_probabilities_zero_and_one():
    p = torch.tensor([0.0, 0.5, 1.0], requires_grad=True)
    x = BinaryConcrete(torch.tensor(0.5), probs=p).rsample(
        generator=torch.Generator().manual_seed(0)
    )
    assert x[0] == 0.0 and x[2] == 1.0
    x.sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad[0] == 0.0 and p.grad[2] == 0.0
    assert p.grad[1] > 0


# ---- 3. temperature shapes -------------------------------------------------------------------------
def test_temperature_shapes_as_torch():
    probs = torch.tensor([0.2, 0.3, 0.5])
    ours = Concrete(torch.tensor([0.5]), probs=probs)
    theirs = D.RelaxedOneHotCategorical(torch.tensor([0.5]), probs=probs)
    assert ours.rsample().shape == theirs.rsample().shape == (3,)
    assert ours.batch_shape == theirs.batch_shape == ()
    x = make_logits((4, 5), seed=1, dtype=torch.float32)
    tau = torch.full((4, 1), 0.5)
    assert ce.gumbel_softmax(x, tau=tau).shape == F.gumbel_softmax(x, tau=tau).shape
    # the same temperature in torch's form and in batch form: the same sample
    per_row = torch.linspace(0.3, 1.2, 4)
    assert torch.equal(
        ce.concrete_sample(x, per_row[:, None], seed=1), ce.concrete_sample(x, per_row, seed=1)
    )
    d = Concrete(per_row[:, None], logits=x)
    assert d.batch_shape == (4,) and d.rsample().shape == (4, 5)


def test_temperatures_torch_would_take_per_category_are_refused():
    x = make_logits((4, 5), seed=1, dtype=torch.float32)
    with pytest.raises(ValueError, match="varies along the category dim"):
        ce.gumbel_softmax(x, tau=torch.full((1, 5), 0.5))


def test_batch_form_still_accepted():
    d = Concrete(torch.full((6,), 0.5), logits=make_logits((5,), seed=3))
    assert d.batch_shape == (6,) and d.rsample().shape == (6, 5)


# ---- 4. dtype promotion ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", list(PEERS))
def test_log_prob_promotes_dtypes_as_torch(cls):
    logits = make_logits((3, 4), seed=2, dtype=torch.float32)
    ours, theirs = (
        cls(torch.tensor(0.6), logits=logits),
        PEERS[cls](torch.tensor(0.6), logits=logits),
    )
    x = ours.sample(generator=torch.Generator().manual_seed(2)).double()
    if cls is BinaryConcrete:
        x = x.clamp(1e-4, 1 - 1e-4)
    a, b = ours.log_prob(x), theirs.log_prob(x)
    assert a.dtype == b.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- 5. torch's classes -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", list(PEERS))
def test_classes_are_torch_subclasses(cls):
    d = cls(torch.tensor(0.5), logits=make_logits((3, 4), seed=1, dtype=torch.float32))
    assert isinstance(d, PEERS[cls])
    if cls in (Concrete, BinaryConcrete):
        assert isinstance(d, D.TransformedDistribution)
        assert isinstance(
            d.base_dist, ExpRelaxedCategorical if cls is Concrete else LogitRelaxedBernoulli
        )
        assert len(d.transforms) == 1
    assert torch.equal(d.temperature, torch.tensor(0.5))
    for attr in ("logits", "probs", "batch_shape", "event_shape"):
        getattr(d, attr)


def test_kl_registered_on_torch_classes_dispatches_to_ours():
    from torch.distributions import kl

    @kl.register_kl(D.RelaxedOneHotCategorical, D.RelaxedOneHotCategorical)
    def _kl(p, q):
        return torch.zeros(p.batch_shape)

    try:
        p = Concrete(torch.tensor(0.5), logits=make_logits((2, 3), seed=1, dtype=torch.float32))
        assert kl.kl_divergence(p, p).shape == (2,)
    finally:
        del kl._KL_REGISTRY[(D.RelaxedOneHotCategorical, D.RelaxedOneHotCategorical)]
        kl._KL_MEMOIZE.clear()


def test_a_library_subclass_of_ours_works():
    """Libraries subclass torch's classes (straight-through variants): ours subclass the same way."""

    class StraightThrough(Concrete):
        def rsample(self, sample_shape=torch.Size(), *, generator=None):
            soft = super().rsample(sample_shape, generator=generator)
            hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
            return hard - soft.detach() + soft

    logits = make_logits((2, 3), seed=1, dtype=torch.float32).requires_grad_()
    d = StraightThrough(torch.tensor(0.5), logits=logits)
    x = d.rsample(generator=torch.Generator().manual_seed(0))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    (x * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert d.expand((4, 2)).batch_shape == (4, 2)


# ---- 6. second order through the classes (the transform matrix covers the functional API) ------
@pytest.mark.parametrize("cls", list(PEERS))
def test_second_order_gradients_through_the_classes(cls):
    logits = make_logits((3, 4), seed=5).requires_grad_()
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    value = cls(t.detach(), logits=logits.detach()).sample(
        generator=torch.Generator().manual_seed(4)
    )  # a fixed point of the support

    def f(logits, t):
        d = cls(t, logits=logits)
        x = d.rsample(generator=torch.Generator().manual_seed(3))
        return (torch.where(torch.isfinite(x), x, 0.0) * 1.3).sum() + d.log_prob(value).sum()

    assert torch.autograd.gradgradcheck(f, (logits, t))
    (gt,) = torch.autograd.grad(f(logits, t), t, create_graph=True)
    (gtt,) = torch.autograd.grad(gt, t)
    assert gtt != 0
