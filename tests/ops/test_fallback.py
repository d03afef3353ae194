"""The pure-PyTorch CPU kernels used when _C is missing (concrete_ext/_fallback.py) agree with the
compiled CPU kernels, op by op, forward and backward, in float64."""

import pytest
import torch

import concrete_ext  # noqa: F401
from concrete_ext import _fallback, _ops

pytestmark = pytest.mark.skipif(not _ops.has_compiled("cpu"), reason="needs the compiled CPU kernels")

SEED, OFF = 1234, 5


def _inputs(shape=(3, 4, 6), dim=1, masked=True):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(*shape, generator=g, dtype=torch.float64)
    if masked:
        a.select(dim, 0)[0] = float("-inf")
    batch = [s for i, s in enumerate(shape) if i != dim % len(shape)]
    t = torch.rand(batch, generator=g, dtype=torch.float64) + 0.3
    return a, t


def _close(x, y):
    if isinstance(x, (tuple, list)):
        for u, v in zip(x, y):
            _close(u, v)
        return
    assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
    torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("name", ["exp_concrete_sample", "concrete_sample", "gumbel_softmax_hard",
                                  "gumbel_max_sample", "relaxed_kl_sample"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_random_forward(name, dim):
    a, t = _inputs(dim=dim)
    args = {
        "gumbel_max_sample": (a, dim, SEED, OFF, None),
        "relaxed_kl_sample": (a, t, torch.randn_like(a), t * 0.7, dim, SEED, OFF, None),
    }.get(name, (a, t, dim, SEED, OFF, None))
    _close(_fallback.KERNELS[name](*args), _ops.op(name)(*args))


@pytest.mark.parametrize("log_space", [True, False])
@pytest.mark.parametrize("tg", [True, False])
def test_sample_backward(log_space, tg):
    a, t = _inputs()
    name = "exp_concrete_sample" if log_space else "concrete_sample"
    s = _ops.op(name)(a, t, 1, SEED, OFF, None)
    g = torch.randn_like(s)
    args = (g, s, t, 1, tg)
    _close(_fallback.KERNELS[name + "_backward"](*args), _ops.op(name + "_backward")(*args))


def test_hard_backward():
    a, t = _inputs()
    _, state = _ops.op("gumbel_softmax_hard")(a, t, 1, SEED, OFF, None)
    args = (torch.randn_like(a), a, t, state, 1, True)
    _close(_fallback.KERNELS["gumbel_softmax_hard_backward"](*args),
           _ops.op("gumbel_softmax_hard_backward")(*args))


@pytest.mark.parametrize("name", ["exp_concrete_log_prob", "concrete_log_prob"])
def test_log_prob(name):
    a, t = _inputs()
    v = _ops.op(name.replace("log_prob", "sample"))(a, t, 1, SEED, OFF, None)
    _close(_fallback.KERNELS[name](v, a, t, 1), _ops.op(name)(v, a, t, 1))
    g = torch.randn(t.shape, dtype=a.dtype)
    args = (g, v, a, t, 1, [True, True, True])
    _close(_fallback.KERNELS[name + "_backward"](*args), _ops.op(name + "_backward")(*args))


def test_relaxed_kl_backward():
    a, t = _inputs()
    p = torch.randn_like(a)
    y, lq, lp = _ops.op("relaxed_kl_sample")(a, t, p, t * 0.7, 1, SEED, OFF, None)
    args = (torch.randn_like(y), torch.randn_like(lq), torch.randn_like(lp), y, a, t, p, t * 0.7, 1,
            [True, True, True, True])
    _close(_fallback.KERNELS["relaxed_kl_sample_backward"](*args),
           _ops.op("relaxed_kl_sample_backward")(*args))


@pytest.mark.parametrize("logit", [True, False])
def test_binary(logit):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 7, generator=g, dtype=torch.float64)
    t = torch.rand(7, generator=g, dtype=torch.float64) + 0.3
    pre = "logit_binary_concrete" if logit else "binary_concrete"
    s = _ops.op(pre + "_sample")(a, t, SEED, OFF, None)
    _close(_fallback.KERNELS[pre + "_sample"](a, t, SEED, OFF, None), s)
    args = (torch.randn_like(s), s, t, True)
    _close(_fallback.KERNELS[pre + "_sample_backward"](*args), _ops.op(pre + "_sample_backward")(*args))
    _close(_fallback.KERNELS[pre + "_log_prob"](s, a, t), _ops.op(pre + "_log_prob")(s, a, t))
    args = (torch.randn_like(s), s, a, t.expand(5, 7).contiguous(), [True, True, True])
    _close(_fallback.KERNELS[pre + "_log_prob_backward"](*args),
           _ops.op(pre + "_log_prob_backward")(*args))


@pytest.mark.parametrize("kind", ["bits", "uniform", "exponential", "gumbel", "logistic"])
def test_noise(kind):
    like = torch.empty(3, 9, dtype=torch.float64)
    _close(_fallback.KERNELS["noise_like"](like, kind, SEED, OFF, None),
           _ops.op("noise_like")(like, kind, SEED, OFF, None))
