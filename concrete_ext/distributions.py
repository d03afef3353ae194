"""torch.distributions classes backed by the fused ops, subclasses of torch's relaxed classes.

``ExpConcrete`` (the log of a Concrete sample, on the log-simplex) is an
``ExpRelaxedCategorical``; ``Concrete`` (on the simplex) is a ``RelaxedOneHotCategorical``, a
``TransformedDistribution`` of an ExpConcrete by ``ExpTransform``; ``LogitBinaryConcrete`` (on R)
is a ``LogitRelaxedBernoulli``; ``BinaryConcrete`` (on (0, 1)) is a ``RelaxedBernoulli``, a
TransformedDistribution of a LogitBinaryConcrete by ``SigmoidTransform``. Code that subclasses,
type-checks or registers KL divergences and transforms on torch's classes takes them as they are.
What differs is what they compute and check:

* ``rsample`` and ``log_prob`` run the fused ops (``rsample``/``sample`` also take ``generator=``);
* a zero probability is a masked category (a -inf logit): its sample is exactly 0, it gets no
  gradient, and it is left out of the density, with finite gradients for every other entry
  (torch clamps probabilities away from 0 instead);
* the temperature is checked (positive and finite with ``validate_args``; a Python float is taken);
  a tensor temperature may broadcast against the logits as torch's does (size 1 along the category
  dim, e.g. ``(4, 1)`` with ``(4, 5)`` logits) or against the batch shape (one value per
  distribution, e.g. ``(4,)``): either way it is part of the batch shape, and a temperature that
  varies along the categories, which torch would accept, is refused (it is not a Concrete);
* ``log_prob`` promotes the value and the parameters to a common dtype, as torch does, and checks
  the value against the support with ``validate_args``.

The constructors are torch's: ``(temperature, probs=None, logits=None, validate_args=None)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints
from torch.distributions.relaxed_bernoulli import LogitRelaxedBernoulli, RelaxedBernoulli
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical, RelaxedOneHotCategorical
from torch.distributions.transforms import ExpTransform, SigmoidTransform

from . import functional as F

__all__ = ["Concrete", "ExpConcrete", "BinaryConcrete", "LogitBinaryConcrete", "log_simplex"]

NEG_INF = float("-inf")


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


# ---- parameters ------------------------------------------------------------------------------
def _check_param(param, name: str) -> None:
    if isinstance(param, Tensor) and not param.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {param.dtype}")


def _as_temperature(temperature, like: Tensor) -> Tensor:
    if isinstance(temperature, Tensor):
        _check_param(temperature, "temperature")
        return temperature
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"temperature must be a positive float or a tensor, got {type(temperature).__name__}"
        )
    return torch.tensor(float(temperature), dtype=like.dtype, device=like.device)


def _check_finite_temperature(temperature: Tensor) -> None:
    """With validate_args: constraints.positive lets +inf through; a temperature must be finite."""
    if (
        not torch.compiler.is_compiling()
        and temperature.numel()
        and bool(torch.isinf(temperature.detach()).any())
    ):
        raise ValueError("Expected parameter temperature to be positive and finite, but found inf")


def _broadcast_shape(a, b, what: str) -> torch.Size:
    shape = F.broadcast_shape(a, b)
    if shape is None:
        raise ValueError(f"{what}: shapes {tuple(a)} and {tuple(b)} do not broadcast")
    return shape


def _validate(dist: Distribution, checks, validate_args: Optional[bool]) -> bool:
    """Whether `dist` validates its arguments; if so, check (name, value, constraint) for each
    parameter given (the derived one is not checked twice), as torch's Distribution does."""
    validate = Distribution._validate_args if validate_args is None else validate_args
    if validate and not torch.compiler.is_compiling():
        if _plainly_valid_temperature(checks[-1][1]):
            checks = checks[:-1]
        for name, value, constraint in checks:
            valid = constraint.check(value)
            if not torch._is_all_true(valid):
                raise ValueError(
                    f"Expected parameter {name} (Tensor of shape {tuple(value.shape)}) of "
                    f"distribution {type(dist).__name__} to satisfy the constraint "
                    f"{constraint!r}, but found invalid values:\n{value}"
                )
        if checks and checks[-1][0] == "temperature":
            _check_finite_temperature(checks[-1][1])
    return validate


def _plainly_valid_temperature(t: Tensor) -> bool:
    """Whether a temperature on the CPU is positive and finite, read once (the constraint checks
    cost several small ops); False sends it through the checks that name what is wrong."""
    r = F.host_range(t)
    return r is not None and 0 < r[0] and r[1] < math.inf


def _masked_log(p: Tensor) -> Tensor:
    """log p with exact zeros mapped to -inf (masked categories) and a zero, not NaN, gradient
    there: log of a zero never enters the graph."""
    positive = p > 0
    return torch.where(positive, torch.log(torch.where(positive, p, torch.ones_like(p))), NEG_INF)


def _row_temperature(temperature: Tensor, param_shape: torch.Size) -> Tensor:
    """The temperature in batch form (one value per distribution): torch's form (broadcasting
    against the logits with size 1 along the category dim) drops that dim; a tensor that
    broadcasts against the batch shape is taken as it is."""
    shape = temperature.shape
    if len(shape) >= 1 and shape[-1] == 1 and F.broadcast_shape(shape, param_shape) is not None:
        return temperature.squeeze(-1)
    return temperature


def _promoted(value: Tensor, *params: Tensor):
    """value and the parameters in their common dtype (torch's type promotion)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
    dtype = value.dtype
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in (value, *params))


class _Sampling:
    """sample(): rsample without gradient, taking the generator too."""

    def sample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)


class _Transformed(_Sampling):
    """Concrete and BinaryConcrete: torch's TransformedDistribution of the base class (ExpConcrete,
    LogitBinaryConcrete) by one transform, as torch builds its relaxed classes, with `hard`."""

    def __init__(
        self,
        temperature,
        probs: Optional[Tensor] = None,
        logits: Optional[Tensor] = None,
        validate_args: Optional[bool] = None,
        *,
        hard: bool = False,
    ):
        base = self._base(temperature, probs, logits, validate_args=validate_args)
        # TransformedDistribution's constructor (torch's relaxed class's would build its own base),
        # without its argument checks: the base has checked the parameters, and checking them
        # again through this class's properties would compute the probabilities and check the
        # simplex and the logits a second time. Samples are still validated as the caller asked.
        super(self._torch, self).__init__(base, self._transform(), validate_args=False)
        self._validate_args = base._validate_args
        self.hard = hard

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(self._own, _instance)
        new.hard = self.hard
        return super(self._torch, self).expand(batch_shape, _instance=new)


# ---- categorical ---------------------------------------------------------------------------------
class ExpConcrete(_Sampling, ExpRelaxedCategorical):
    """ExpConcrete(temperature, probs/logits): the log of a Concrete sample (paper, Appendix C),
    an ExpRelaxedCategorical. Its log-density is the stable one to optimise at low temperature
    (Appendix C.3)."""

    arg_constraints = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
        "temperature": constraints.positive,
    }
    support = log_simplex
    has_rsample = True

    def __init__(
        self,
        temperature,
        probs: Optional[Tensor] = None,
        logits: Optional[Tensor] = None,
        validate_args: Optional[bool] = None,
    ):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        param = probs if probs is not None else logits
        _check_param(param, "probs" if probs is not None else "logits")
        if not isinstance(param, Tensor) or param.dim() < 1:
            raise ValueError(
                f"`{'probs' if probs is not None else 'logits'}` parameter must be "
                "at least one-dimensional."
            )
        self.temperature = _as_temperature(temperature, param)
        validate = _validate(
            self,
            [
                (
                    "probs" if probs is not None else "logits",
                    param,
                    self.arg_constraints["probs" if probs is not None else "logits"],
                ),
                ("temperature", self.temperature, constraints.positive),
            ],
            validate_args,
        )
        if probs is not None:
            logits = _masked_log(probs / probs.sum(-1, keepdim=True))
        self._categorical = Categorical(logits=logits, validate_args=False)
        self._row_tau = _row_temperature(self.temperature, param.shape)
        batch_shape = _broadcast_shape(
            param.shape[:-1],
            self._row_tau.shape,
            "temperature does not broadcast to the batch shape",
        )
        Distribution.__init__(self, batch_shape, param.shape[-1:], validate_args=False)
        self._validate_args = validate

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ExpConcrete, _instance)
        batch_shape = torch.Size(batch_shape)
        new.temperature = self.temperature
        new._row_tau = self._row_tau.expand(batch_shape)
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _shaped(self, sample_shape):
        shape = self._extended_shape(sample_shape)
        return self.logits.expand(shape), self._row_tau.expand(shape[:-1])

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        logits, t = self._shaped(sample_shape)
        return F.exp_concrete_sample(logits, t, -1, generator)

    def _log_prob_args(self, value, validate: bool = True):
        value, logits, t = _promoted(value, self.logits, self._row_tau)
        if validate and self._validate_args:
            self._validate_sample(value)
        # The value broadcasts against the whole batch shape, which includes the temperature's.
        shape = _broadcast_shape(
            value.shape,
            self.batch_shape + self.event_shape,
            "value does not broadcast to batch_shape + event_shape",
        )
        return value, logits.expand(shape), t.expand(shape[:-1])

    def log_prob(self, value: Tensor) -> Tensor:
        value, logits, t = self._log_prob_args(value)
        return F.exp_concrete_log_prob(value, logits, t, -1)

    def relaxed_kl(self, p: "ExpConcrete", sample_shape=torch.Size(), *, generator=None):
        """(y, log q(y) - log p(y)) with y ~ q = self: the single-sample relaxed KL estimate of
        the paper's Eq. 28, sample and both log-densities in one fused pass (relaxed_kl_sample).
        `p` is an ExpConcrete or Concrete whose batch shape broadcasts with this one's."""
        y, log_q, log_p = _relaxed_kl(self, p, sample_shape, generator)
        return y, log_q - log_p


def _relaxed_kl(q: ExpConcrete, p, sample_shape, generator):
    p = p.base_dist if isinstance(p, Concrete) else p
    if not isinstance(p, ExpConcrete):
        raise TypeError(f"p must be an ExpConcrete or a Concrete, got {type(p).__name__}")
    batch = _broadcast_shape(q.batch_shape, p.batch_shape, "the batch shapes of q and p")
    shape = torch.Size(sample_shape) + batch + q.event_shape
    if p.event_shape != q.event_shape:
        raise ValueError(f"q has {q.event_shape[0]} categories but p has {p.event_shape[0]}")
    return F.relaxed_kl_sample(
        q.logits.expand(shape),
        q._row_tau.expand(shape[:-1]),
        p.logits.expand(shape),
        p._row_tau.expand(shape[:-1]),
        -1,
        generator,
    )


class Concrete(_Transformed, RelaxedOneHotCategorical):
    """Concrete(temperature, probs/logits) on the simplex (paper, Definition 1): the
    Gumbel-Softmax distribution, a RelaxedOneHotCategorical (ExpConcrete through ExpTransform)."""

    arg_constraints = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
        "temperature": constraints.positive,
    }
    support = constraints.simplex
    has_rsample = True

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        """A point of the simplex; with ``hard=True`` the one-hot of its largest entry in value and
        the relaxed sample in gradient (straight-through), the soft value kept as ``.soft``."""
        logits, t = self.base_dist._shaped(sample_shape)
        x = F.concrete_sample(logits, t, -1, generator)
        if not self.hard:
            return x
        one_hot = torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)
        return F.straight_through(x, one_hot)

    def log_prob(self, value: Tensor) -> Tensor:
        """The density at `value`, or at its soft value when it is a straight-through sample."""
        value = getattr(value, "soft", value)
        if self._validate_args:
            self._validate_sample(value)
        value, logits, t = self.base_dist._log_prob_args(value, validate=False)
        # A sample whose small entries rounded to exactly 0 lies on the boundary of the simplex,
        # where the density's formula is inf - inf: the functional API evaluates it at the
        # nearest interior point, as torch.distributions clamps probabilities (clamp_probs).
        # Masked categories (-inf logits) are left out of the density whatever their value.
        return F.concrete_log_prob(value, logits, t, -1)

    def relaxed_kl(self, p, sample_shape=torch.Size(), *, generator=None):
        """(x, log q(x) - log p(x)) with x ~ q = self on the simplex: Eq. 28's estimate, computed
        in log space in one fused pass (the change of variables cancels in the difference)."""
        y, log_q, log_p = _relaxed_kl(self.base_dist, p, sample_shape, generator)
        return y.exp(), log_q - log_p


# ---- binary ----------------------------------------------------------------------------------
def _binary_logits(probs: Tensor) -> Tensor:
    """log(p) - log(1 - p), -inf at p = 0 and +inf at p = 1, with zero (not NaN) gradients there."""
    inside = (probs > 0) & (probs < 1)
    p = torch.where(inside, probs, torch.full_like(probs, 0.5))
    logits = torch.log(p) - torch.log1p(-p)
    return torch.where(inside, logits, torch.where(probs > 0, math.inf, NEG_INF))


class LogitBinaryConcrete(_Sampling, LogitRelaxedBernoulli):
    """The logit of a BinaryConcrete sample: (logits + L) / temperature with L ~ Logistic(0, 1)
    (paper, Eq. 26); a LogitRelaxedBernoulli."""

    arg_constraints = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
        "temperature": constraints.positive,
    }
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        temperature,
        probs: Optional[Tensor] = None,
        logits: Optional[Tensor] = None,
        validate_args: Optional[bool] = None,
    ):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        name = "probs" if probs is not None else "logits"
        param = probs if probs is not None else logits
        _check_param(param, name)
        if not isinstance(param, Tensor):
            param = torch.tensor(float(param))
        temperature = _as_temperature(temperature, param)
        validate = _validate(
            self,
            [
                (name, param, self.arg_constraints[name]),
                ("temperature", temperature, constraints.positive),
            ],
            validate_args,
        )
        shape = _broadcast_shape(
            param.shape, temperature.shape, "temperature does not broadcast with the parameter"
        )
        self.temperature = temperature  # as given, as torch keeps it; _tau has the batch shape
        self._tau = temperature.expand(shape)
        param = param.expand(shape)
        if probs is not None:
            self.probs = param
        else:
            self.logits = param
        self._param = param
        Distribution.__init__(self, shape, torch.Size(), validate_args=False)
        self._validate_args = validate

    @property
    def logits(self) -> Tensor:  # noqa: F811 - set in __init__ when given
        if "logits" not in self.__dict__:
            self.__dict__["logits"] = _binary_logits(self.probs)
        return self.__dict__["logits"]

    @logits.setter
    def logits(self, value: Tensor) -> None:
        self.__dict__["logits"] = value

    @property
    def probs(self) -> Tensor:  # noqa: F811
        if "probs" not in self.__dict__:
            self.__dict__["probs"] = torch.sigmoid(self.logits)
        return self.__dict__["probs"]

    @probs.setter
    def probs(self, value: Tensor) -> None:
        self.__dict__["probs"] = value

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LogitBinaryConcrete, _instance)
        batch_shape = torch.Size(batch_shape)
        new.temperature = self.temperature
        new._tau = self._tau.expand(batch_shape)
        for name in ("probs", "logits"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(batch_shape))
        new._param = new.__dict__.get("probs", new.__dict__.get("logits"))
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        return self.logits / self._tau

    @property
    def variance(self) -> Tensor:
        return (math.pi**2 / 3) / self._tau**2

    def _shaped(self, sample_shape):
        shape = self._extended_shape(sample_shape)
        return self.logits.expand(shape), self._tau.expand(shape)

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        logits, t = self._shaped(sample_shape)
        return F.logit_binary_concrete_sample(logits, t, generator)

    def _log_prob_args(self, value, validate: bool = True):
        value, logits, t = _promoted(value, self.logits, self._tau)
        if validate and self._validate_args:
            self._validate_sample(value)
        shape = _broadcast_shape(
            value.shape, logits.shape, "value does not broadcast to the batch shape"
        )
        return value, logits, t.expand(shape)

    def log_prob(self, value: Tensor) -> Tensor:
        value, logits, t = self._log_prob_args(value)
        return F.logit_binary_concrete_log_prob(value, logits, t)

    def relaxed_kl(self, p, sample_shape=torch.Size(), *, generator=None):
        """(z, log q(z) - log p(z)) with z ~ q = self, in logit space (Eq. 26)."""
        return _binary_relaxed_kl(self, p, sample_shape, generator)


def _binary_relaxed_kl(q: "LogitBinaryConcrete", p, sample_shape, generator):
    p = p.base_dist if isinstance(p, BinaryConcrete) else p
    if not isinstance(p, LogitBinaryConcrete):
        raise TypeError(
            f"p must be a LogitBinaryConcrete or a BinaryConcrete, got {type(p).__name__}"
        )
    shape = torch.Size(sample_shape) + _broadcast_shape(
        q.batch_shape, p.batch_shape, "the batch shapes of q and p"
    )
    z = F.logit_binary_concrete_sample(q.logits.expand(shape), q._tau.expand(shape), generator)
    log_q = F.logit_binary_concrete_log_prob(z, q.logits.expand(shape), q._tau.expand(shape))
    log_p = F.logit_binary_concrete_log_prob(z, p.logits.expand(shape), p._tau.expand(shape))
    return z, log_q - log_p


class BinaryConcrete(_Transformed, RelaxedBernoulli):
    """BinaryConcrete(temperature, probs/logits) on (0, 1) (paper, Eq. 16 and 17); a
    RelaxedBernoulli (LogitBinaryConcrete through SigmoidTransform)."""

    arg_constraints = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
        "temperature": constraints.positive,
    }
    support = constraints.unit_interval
    has_rsample = True

    def rsample(self, sample_shape=torch.Size(), *, generator=None) -> Tensor:
        """A point of (0, 1); with ``hard=True`` the Bernoulli draw 1[x > 1/2] in value and the
        relaxed sample in gradient (straight-through), the soft value kept as ``.soft``."""
        logits, t = self.base_dist._shaped(sample_shape)
        return F.binary_concrete_sample(logits, t, generator, hard=self.hard)

    def log_prob(self, value: Tensor) -> Tensor:
        """The density at `value`, or at its soft value when it is a straight-through sample."""
        value = getattr(value, "soft", value)
        if self._validate_args:
            self._validate_sample(value)
        value, logits, t = self.base_dist._log_prob_args(value, validate=False)
        # Samples that rounded to exactly 0 or 1 (low temperature, large logits) are evaluated at
        # the nearest interior point, as torch's RelaxedBernoulli does (clipped sigmoid); the
        # functional API does so.
        return F.binary_concrete_log_prob(value, logits, t)

    def relaxed_kl(self, p, sample_shape=torch.Size(), *, generator=None):
        """(x, log q(x) - log p(x)) with x ~ q = self on (0, 1), computed in logit space (the
        change of variables cancels in the difference)."""
        z, kl = _binary_relaxed_kl(self.base_dist, p, sample_shape, generator)
        return torch.sigmoid(z), kl


# What _Transformed builds each of its classes from.
Concrete._base, Concrete._transform, Concrete._torch, Concrete._own = (
    ExpConcrete,
    ExpTransform,
    RelaxedOneHotCategorical,
    Concrete,
)
BinaryConcrete._base, BinaryConcrete._transform, BinaryConcrete._torch, BinaryConcrete._own = (
    LogitBinaryConcrete,
    SigmoidTransform,
    RelaxedBernoulli,
    BinaryConcrete,
)
