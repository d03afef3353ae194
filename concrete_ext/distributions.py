"""torch.distributions classes backed by the fused ops.

``Concrete`` (on the simplex) and ``ExpConcrete`` (its log, on the log-simplex) follow
torch.distributions.RelaxedOneHotCategorical / ExpRelaxedCategorical; ``BinaryConcrete`` (on (0, 1))
and ``LogitBinaryConcrete`` (its logit, on R) follow RelaxedBernoulli / LogitRelaxedBernoulli.
The constructor is ``(temperature, probs=None, logits=None, validate_args=None)``; a tensor
temperature is part of the batch shape and receives gradients. ``rsample``/``sample`` also take
``generator=`` keyword-only.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all, lazy_property

from . import functional as F

__all__ = ["Concrete", "ExpConcrete", "BinaryConcrete", "LogitBinaryConcrete"]


class _LogSimplex(constraints.Constraint):
    """Vectors y with logsumexp(y) = 0 (entries may be -inf): the log of a point of the simplex."""

    event_dim = 1

    def check(self, value: Tensor) -> Tensor:
        # y = z - LSE(z) cancels: at low temperature |z| reaches 1e7 and the rounding error of y,
        # hence of LSE(y), scales with it (relative tolerance on the largest finite |y_k|).
        v = value.double()
        scale = torch.where(v.isfinite(), v.abs(), 0.0).amax(-1).clamp(min=1.0)
        tol = max(1e-5, 64 * torch.finfo(value.dtype).eps) * scale
        lse = torch.logsumexp(v, dim=-1)
        return (value < math.inf).all(-1) & (lse.abs() <= tol)

    def __repr__(self):
        return "LogSimplex()"


log_simplex = _LogSimplex()


def _check_param(param, name: str) -> None:
    if isinstance(param, Tensor) and not param.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {param.dtype}")


def _check_finite_temperature(temperature: Tensor) -> None:
    """With validate_args: constraints.positive lets +inf through; a temperature must be finite."""
    if not torch.compiler.is_compiling() and temperature.numel() and \
            bool(torch.isinf(temperature.detach()).any()):
        raise ValueError("Expected parameter temperature to be positive and finite, but found inf")


def _broadcast_shape(a, b, what: str) -> torch.Size:
    try:
        return torch.broadcast_shapes(a, b)
    except RuntimeError:
        raise ValueError(f"{what}: shapes {tuple(a)} and {tuple(b)} do not broadcast") from None


def _into_open_interval(value: Tensor, upper: bool = True) -> Tensor:
    """value with exact 0 (and 1 when `upper`) moved to tiny (1 - eps/2): the representable ends
    of the open unit interval. Values outside [0, 1] are left alone (validate_args refuses them)."""
    if not value.is_floating_point():
        return value
    info = torch.finfo(value.dtype)
    value = torch.where(value == 0, info.tiny, value)
    return torch.where(value == 1, 1 - info.eps / 2, value) if upper else value


def _as_temperature(temperature, like: Tensor) -> Tensor:
    if isinstance(temperature, Tensor):
        _check_param(temperature, "temperature")
        return temperature
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a positive float or a tensor, got "
                        f"{type(temperature).__name__}")
    return torch.tensor(float(temperature), dtype=like.dtype, device=like.device)


class _CategoricalConcrete(Distribution):
    arg_constraints = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
        "temperature": constraints.positive,
    }
    has_rsample = True

    def __init__(self, temperature, probs: Optional[Tensor] = None, logits: Optional[Tensor] = None,
                 validate_args: Optional[bool] = None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            _check_param(probs, "probs")
            if probs.dim() < 1:
                raise ValueError("`probs` parameter must be at least one-dimensional.")
            self.probs = probs / probs.sum(-1, keepdim=True)
            param = self.probs
        else:
            _check_param(logits, "logits")
            if logits.dim() < 1:
                raise ValueError("`logits` parameter must be at least one-dimensional.")
            self.logits = logits - logits.logsumexp(dim=-1, keepdim=True)
            param = self.logits
        self.temperature = _as_temperature(temperature, param)
        self._num_events = param.shape[-1]
        batch_shape = _broadcast_shape(param.shape[:-1], self.temperature.shape,
                                       "temperature does not broadcast to the batch shape")
        super().__init__(batch_shape, param.shape[-1:], validate_args=validate_args)
        if self._validate_args:
            _check_finite_temperature(self.temperature)

    @lazy_property
    def logits(self) -> Tensor:  # noqa: F811 - set in __init__ when given
        return torch.log(self.probs)

    @lazy_property
    def probs(self) -> Tensor:  # noqa: F811
        return torch.softmax(self.logits, dim=-1)

    @property
    def param_shape(self):
        return self.batch_shape + self.event_shape

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.temperature = self.temperature.expand(batch_shape)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(batch_shape + self.event_shape)
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(batch_shape + self.event_shape)
        new._num_events = self._num_events
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _shaped(self, sample_shape):
        shape = self._extended_shape(sample_shape)
        return self.logits.expand(shape), self.temperature.expand(shape[:-1])

    def sample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def _log_prob_args(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
        if self._validate_args:
            self._validate_sample(value)
        # The value broadcasts against the whole batch shape, which includes the temperature's.
        shape = _broadcast_shape(value.shape, self.batch_shape + self.event_shape,
                                 "value does not broadcast to batch_shape + event_shape")
        return value, self.logits.expand(shape), self.temperature.expand(shape[:-1])


class ExpConcrete(_CategoricalConcrete):
    """ExpConcrete(temperature, probs/logits): the log of a Concrete sample (paper, Appendix C).

    Its log-density is the stable one to optimise at low temperature (Appendix C.3).
    """

    support = log_simplex

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        logits, t = self._shaped(sample_shape)
        return F.exp_concrete_sample(logits, t, -1, generator)

    def log_prob(self, value: Tensor) -> Tensor:
        value, logits, t = self._log_prob_args(value)
        return F.exp_concrete_log_prob(value, logits, t, -1)


class Concrete(_CategoricalConcrete):
    """Concrete(temperature, probs/logits) on the simplex (paper, Definition 1); the Gumbel-Softmax
    distribution. Same API as torch.distributions.RelaxedOneHotCategorical."""

    support = constraints.simplex

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        logits, t = self._shaped(sample_shape)
        return F.concrete_sample(logits, t, -1, generator)

    def log_prob(self, value: Tensor) -> Tensor:
        value, logits, t = self._log_prob_args(value)
        # A sample whose small entries rounded to exactly 0 lies on the boundary of the simplex,
        # where the density's formula is inf - inf: evaluate it at the nearest interior point,
        # as torch.distributions clamps probabilities (clamp_probs). Masked categories (-inf
        # logits) are left out of the density whatever their value.
        return F.concrete_log_prob(_into_open_interval(value, upper=False), logits, t, -1)


class _BinaryConcrete(Distribution):
    arg_constraints = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
        "temperature": constraints.positive,
    }
    has_rsample = True

    def __init__(self, temperature, probs: Optional[Tensor] = None, logits: Optional[Tensor] = None,
                 validate_args: Optional[bool] = None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        param = probs if probs is not None else logits
        _check_param(param, "probs" if probs is not None else "logits")
        if not isinstance(param, Tensor):
            param = torch.tensor(float(param))
        temperature = _as_temperature(temperature, param)
        _broadcast_shape(param.shape, temperature.shape,
                         "temperature does not broadcast with the parameter")
        param, self.temperature = broadcast_all(param, temperature)
        if probs is not None:
            self.probs = param
        else:
            self.logits = param
        super().__init__(param.shape, torch.Size(), validate_args=validate_args)
        if self._validate_args:
            _check_finite_temperature(self.temperature)

    @lazy_property
    def logits(self) -> Tensor:  # noqa: F811
        return torch.log(self.probs) - torch.log1p(-self.probs)

    @lazy_property
    def probs(self) -> Tensor:  # noqa: F811
        return torch.sigmoid(self.logits)

    @property
    def param_shape(self):
        return self.batch_shape

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.temperature = self.temperature.expand(batch_shape)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(batch_shape)
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(batch_shape)
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _shaped(self, sample_shape):
        shape = self._extended_shape(sample_shape)
        return self.logits.expand(shape), self.temperature.expand(shape)

    def sample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def _log_prob_args(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
        if self._validate_args:
            self._validate_sample(value)
        shape = _broadcast_shape(value.shape, self.logits.shape,
                                 "value does not broadcast to the batch shape")
        return value, self.logits, self.temperature.expand(shape)


class LogitBinaryConcrete(_BinaryConcrete):
    """The logit of a BinaryConcrete sample: (logits + L) / temperature with L ~ Logistic(0, 1)
    (paper, Eq. 26); same API as torch.distributions.LogitRelaxedBernoulli."""

    support = constraints.real

    @property
    def mean(self) -> Tensor:
        return self.logits / self.temperature

    @property
    def variance(self) -> Tensor:
        return (math.pi**2 / 3) / self.temperature**2

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        logits, t = self._shaped(sample_shape)
        return F.logit_binary_concrete_sample(logits, t, generator)

    def log_prob(self, value: Tensor) -> Tensor:
        value, logits, t = self._log_prob_args(value)
        return F.logit_binary_concrete_log_prob(value, logits, t)


class BinaryConcrete(_BinaryConcrete):
    """BinaryConcrete(temperature, probs/logits) on (0, 1) (paper, Eq. 16 and 17); same API as
    torch.distributions.RelaxedBernoulli."""

    support = constraints.unit_interval

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        logits, t = self._shaped(sample_shape)
        return F.binary_concrete_sample(logits, t, generator)

    def log_prob(self, value: Tensor) -> Tensor:
        value, logits, t = self._log_prob_args(value)
        # Samples that rounded to exactly 0 or 1 (low temperature, large logits) are evaluated at
        # the nearest interior point, as torch's RelaxedBernoulli does (clipped sigmoid): the
        # formula is inf - inf there.
        return F.binary_concrete_log_prob(_into_open_interval(value), logits, t)
