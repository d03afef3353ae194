"""Straight-through distributions (hard=True) and the relaxed KL in the distribution API."""

from __future__ import annotations

import pytest
import torch

import concrete_ext as ce
from concrete_ext import reference as ref
from concrete_ext.distributions import BinaryConcrete, Concrete, ExpConcrete, LogitBinaryConcrete
from concrete_ext.testing import make_logits, make_temperature

D = torch.float64


def test_concrete_hard_is_one_hot_forward_and_relaxed_backward():
    logits = make_logits((5, 4), seed=1).requires_grad_()
    d = Concrete(torch.tensor(0.5, dtype=D), logits=logits, hard=True)
    x = d.rsample((2,), generator=torch.Generator().manual_seed(3))
    soft = Concrete(torch.tensor(0.5, dtype=D), logits=logits).rsample(
        (2,), generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(x.detach(), torch.nn.functional.one_hot(soft.argmax(-1), 4).to(D))
    assert torch.equal(x.soft, soft)
    w = torch.linspace(-1, 1, 4, dtype=D)
    (g_hard,) = torch.autograd.grad((x * w).sum(), logits)
    (g_soft,) = torch.autograd.grad((soft * w).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)
    # log_prob of a straight-through sample is that of its soft value
    torch.testing.assert_close(d.log_prob(x), Concrete(0.5, logits=logits).log_prob(soft))


def test_binary_hard_functional_and_class():
    logits = make_logits((6,), seed=2).requires_grad_()
    x = ce.binary_concrete_sample(logits, 0.5, seed=4, hard=True)
    soft = ce.binary_concrete_sample(logits, 0.5, seed=4)
    assert torch.equal(x.detach(), (soft > 0.5).to(D)) and torch.equal(x.soft, soft)
    (g,) = torch.autograd.grad(x.sum(), logits)
    (gs,) = torch.autograd.grad(soft.sum(), logits)
    torch.testing.assert_close(g, gs)
    d = BinaryConcrete(0.5, logits=logits, hard=True)
    s = d.sample((3,), generator=torch.Generator().manual_seed(1))
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(d.log_prob(s), BinaryConcrete(0.5, logits=logits).log_prob(s.soft))


@pytest.mark.parametrize("cls", [ExpConcrete, Concrete])
def test_categorical_relaxed_kl(cls):
    ql = make_logits((3, 5), seed=1).requires_grad_()
    pl = make_logits((5,), seed=2)
    tq = make_temperature((3,), seed=3)
    q, p = cls(tq, logits=ql), cls(torch.tensor(0.7, dtype=D), logits=pl)
    x, kl = q.relaxed_kl(p, (4,), generator=torch.Generator().manual_seed(5))
    assert x.shape == (4, 3, 5) and kl.shape == (4, 3)
    y = x if cls is ExpConcrete else x.log()
    # the same sample as q's own, and the difference of the two densities at it
    y_own = ExpConcrete(tq, logits=ql).rsample((4,), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(y, y_own)
    expect = q.log_prob(x) - p.log_prob(x)
    torch.testing.assert_close(kl, expect, rtol=1e-9, atol=1e-9)
    kl.sum().backward()
    assert torch.isfinite(ql.grad).all()


@pytest.mark.parametrize("cls", [LogitBinaryConcrete, BinaryConcrete])
def test_binary_relaxed_kl(cls):
    ql = make_logits((3, 5), seed=1).requires_grad_()
    q, p = cls(0.6, logits=ql), cls(0.9, logits=make_logits((3, 5), seed=2))
    x, kl = q.relaxed_kl(p, (2,), generator=torch.Generator().manual_seed(5))
    assert x.shape == kl.shape == (2, 3, 5)
    z = x if cls is LogitBinaryConcrete else torch.logit(x)
    lq = ref.logit_binary_concrete_log_prob(z, ql, 0.6)
    lp = ref.logit_binary_concrete_log_prob(z, p.logits, 0.9)
    torch.testing.assert_close(kl, lq - lp, rtol=1e-6, atol=1e-6)


def test_relaxed_kl_refuses_another_family():
    q = ExpConcrete(0.5, logits=make_logits((3,), seed=1))
    with pytest.raises(TypeError, match="ExpConcrete or a Concrete"):
        q.relaxed_kl(LogitBinaryConcrete(0.5, logits=make_logits((3,), seed=1)))
    with pytest.raises(ValueError, match="categories"):
        q.relaxed_kl(ExpConcrete(0.5, logits=make_logits((4,), seed=1)))
