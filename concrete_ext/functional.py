"""The public functional API (re-exported at the top level of concrete_ext).

Each function validates its arguments, turns the temperature into a tensor, picks a backend
(_backend.select) and calls the op ``torch.ops.concrete_ext.<name>`` (compiled CPU/CUDA kernels),
its Triton twin, or the reference. Random functions take ``generator`` (default: torch's default
generator of the tensor's device) or, keyword-only, an explicit ``seed`` and ``offset``: with a seed
the noise is a pure function of (seed, offset, element index), the same on every backend.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from . import _backend, _ops
from . import reference as ref

__all__ = [
    "gumbel_softmax",
    "concrete_sample",
    "exp_concrete_sample",
    "exp_concrete_log_prob",
    "concrete_log_prob",
    "binary_concrete_sample",
    "logit_binary_concrete_sample",
    "logit_binary_concrete_log_prob",
    "binary_concrete_log_prob",
    "relaxed_kl_sample",
    "gumbel_max_sample",
    "noise",
]

Temperature = Union[float, Tensor]


# ---- argument handling ----------------------------------------------------------------------------
def _check_tensor(t, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32, float64, float16 or "
                        f"bfloat16), got {t.dtype}")
    return t


def _category_dim(t: Tensor, dim, name: str = "logits") -> int:
    """The wrapped category dim of a row op (checked here, before any backend, so the reference
    and Triton backends refuse the same input as the compiled kernels, with the same message)."""
    try:
        if isinstance(dim, bool):
            raise TypeError
        dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"dim must be an int, got {type(dim).__name__}") from None
    if t.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension (the categories)")
    if not -t.dim() <= dim < t.dim():
        raise IndexError(f"dim {dim} is out of range for {name} with {t.dim()} dimensions")
    d = dim % t.dim()
    if t.shape[d] == 0:
        raise ValueError(f"{name} has no categories: size 0 along dim {dim}")
    return d


def _batch_shape(t: Tensor, d: int):
    return t.shape[:d] + t.shape[d + 1:]


def _check_range(lo: float, hi: float, like: Tensor, name: str, what) -> None:
    """lo..hi (the temperature's extremes) positive, finite, and neither 0 nor inf in the
    precision the op computes in (float64 for float64 logits, else float32): a temperature of
    1e-46 is positive in Python but 0 in float32, and its samples would be NaN."""
    if not (lo > 0 and hi < math.inf):  # NaN fails both comparisons
        raise ValueError(f"{name} must be positive and finite, got {what()}")
    acc = torch.float64 if like.dtype == torch.float64 else torch.float32
    info = torch.finfo(acc)
    if lo < info.tiny or hi > info.max:
        raise ValueError(f"{name} {lo if lo < info.tiny else hi:g} is out of the range of "
                         f"{acc} ([{info.tiny:g}, {info.max:g}]), the precision {like.dtype} "
                         "ops compute in")


def _check_temperature_values(t: Tensor, like: Tensor, name: str) -> None:
    """Positive and finite (see _check_range), checked only where reading the values is cheap:
    a CPU tensor, outside torch.compile / export tracing (a CUDA temperature would need a device
    sync; the distributions check those with validate_args)."""
    if (t.device.type != "cpu" or t.numel() == 0 or type(t) not in (Tensor, torch.nn.Parameter)
            or torch.compiler.is_compiling()):
        return
    v = t.detach()
    if v.numel() == 1:
        lo = hi = v.item()
    else:
        lo, hi = (x.item() for x in torch.aminmax(v))

    def what():
        return "a tensor holding " + ("NaN" if v.isnan().any() else
                                      f"{float(v.min())}" if float(v.min()) <= 0 else "inf")

    _check_range(lo, hi, like, name, what)


def _check_temperature_shape(t: Tensor, shape, name: str) -> None:
    """A temperature tensor broadcasts to `shape` (the batch shape of a row op, the shape of a
    binary op); a single value always does (the kernels read it as a scalar)."""
    if t.numel() == 1:
        return
    if len(t.shape) > len(shape) or any(
            a != 1 and a != b for a, b in zip(reversed(t.shape), reversed(shape))):
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to the batch shape "
                         f"{tuple(shape)}")


def _temperature(temperature: Temperature, like: Tensor, name: str = "temperature",
                 shape=None) -> Tensor:
    """A tensor the ops accept: Python numbers become a float64 CPU scalar (read on the host).

    A tensor must be floating, on the logits' device (or a single value on the CPU), broadcast to
    `shape` when given, and hold positive finite values (checked on the CPU only)."""
    if isinstance(temperature, Tensor):
        if not temperature.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {temperature.dtype}")
        if temperature.device != like.device and not (
                temperature.numel() == 1 and temperature.device.type == "cpu"):
            raise ValueError(f"{name} is on {temperature.device} but the logits are on "
                             f"{like.device} (a temperature on another device must be a single "
                             "value on the CPU)")
        if shape is not None:
            _check_temperature_shape(temperature, shape, name)
        _check_temperature_values(temperature, like, name)
        return temperature
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"{name} must be a positive float or a tensor, got "
                        f"{type(temperature).__name__}")
    try:
        t = float(temperature)
    except OverflowError:  # an int beyond float64
        t = math.inf
    _check_range(t, t, like, name, lambda: temperature)
    return torch.tensor(t, dtype=torch.float64)


def _seed(seed: Optional[int], offset: int) -> Tuple[Optional[int], int]:
    """(seed as a signed int64, offset) for the op schema; seeds are taken modulo 2**64."""
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**63:
        raise ValueError(f"offset must be an int in [0, 2**63), got {offset!r}")
    if seed is None:
        if offset != 0:
            raise ValueError("offset is only meaningful with an explicit seed")
        return None, 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    seed %= 2**64
    return (seed - 2**64 if seed >= 2**63 else seed), offset


def _check_generator(generator, device: torch.device):
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is for {generator.device} but the logits are on {device}")


def _route(op_name: str, device: torch.device):
    """(kind, callable) for one call: kind is 'op' or 'reference'."""
    name = _backend.select(op_name, device)
    if name == "reference":
        return "reference", None
    if name == "triton":
        from . import _triton

        return "op", _triton.KERNELS[op_name]
    return "op", _ops.op(op_name)


def _random_call(op_name: str, device: torch.device, op_args: tuple, reference_fn,
                 generator, seed, offset):
    """The common tail of every random op: check the generator and the seed, route, and call
    either the op with `op_args` followed by (seed, offset, generator), or the reference as
    reference_fn(seed=..., offset=..., generator=...)."""
    _check_generator(generator, device)
    s, o = _seed(seed, offset)
    kind, fn = _route(op_name, device)
    if kind == "reference":
        return reference_fn(seed=seed, offset=offset, generator=generator)
    return fn(*op_args, s, o, generator)


# ---- categorical ---------------------------------------------------------------------------------
def exp_concrete_sample(logits: Tensor, temperature: Temperature, dim: int = -1,
                        generator: Optional[torch.Generator] = None, *, seed: Optional[int] = None,
                        offset: int = 0) -> Tensor:
    """y ~ ExpConcrete(logits, temperature): log of a Concrete sample, on the log-simplex.

    y = (logits + G) / tau - logsumexp((logits + G) / tau) along `dim`, G ~ Gumbel(0, 1).
    Categories with -inf logits get exactly -inf. Differentiable in logits and temperature.
    """
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, shape=_batch_shape(logits, _category_dim(logits, dim)))
    return _random_call("exp_concrete_sample", logits.device, (logits, t, dim),
                        functools.partial(ref.exp_concrete_sample, logits, t, dim),
                        generator, seed, offset)


def concrete_sample(logits: Tensor, temperature: Temperature, dim: int = -1,
                    generator: Optional[torch.Generator] = None, *, seed: Optional[int] = None,
                    offset: int = 0) -> Tensor:
    """x ~ Concrete(logits, temperature) on the simplex: softmax((logits + G) / tau) along `dim`."""
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, shape=_batch_shape(logits, _category_dim(logits, dim)))
    return _random_call("concrete_sample", logits.device, (logits, t, dim),
                        functools.partial(ref.concrete_sample, logits, t, dim),
                        generator, seed, offset)


def gumbel_softmax(logits: Tensor, tau: Temperature = 1.0, hard: bool = False, eps: float = 1e-10,
                   dim: int = -1, *, generator: Optional[torch.Generator] = None,
                   seed: Optional[int] = None, offset: int = 0) -> Tensor:
    """Drop-in for torch.nn.functional.gumbel_softmax (same positional arguments; `eps` is unused
    there too), fused, with a generator and a tensor temperature.

    hard=True returns the one-hot of the sampled category in the forward pass and the gradient of
    the soft sample in backward (straight-through); the soft sample is recomputed from the saved
    (seed, offset) instead of being kept.
    """
    del eps  # deprecated and unused, as in torch.nn.functional.gumbel_softmax
    _check_tensor(logits, "logits")
    # errors name the argument `tau`, as the caller wrote it
    t = _temperature(tau, logits, "tau", _batch_shape(logits, _category_dim(logits, dim)))
    if not hard:
        return concrete_sample(logits, t, dim, generator, seed=seed, offset=offset)
    out = _random_call("gumbel_softmax_hard", logits.device, (logits, t, dim),
                       functools.partial(ref.gumbel_softmax, logits, t, True, dim),
                       generator, seed, offset)
    return out if isinstance(out, Tensor) else out[0]  # the op also returns its rng_state


def gumbel_max_sample(logits: Tensor, dim: int = -1, generator: Optional[torch.Generator] = None,
                      *, seed: Optional[int] = None, offset: int = 0) -> Tensor:
    """One-hot of argmax_k(logits_k + G_k): a draw of Discrete(alpha) (zero temperature)."""
    _check_tensor(logits, "logits")
    _category_dim(logits, dim)
    return _random_call("gumbel_max_sample", logits.device, (logits, dim),
                        functools.partial(ref.gumbel_max_sample, logits, dim),
                        generator, seed, offset)


def _broadcast_value(value: Tensor, logits: Tensor, name: str = "value"):
    _check_tensor(value, name)
    if value.device != logits.device:
        raise ValueError(f"{name} is on {value.device} but the logits are on {logits.device}")
    if value.dtype != logits.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but the logits have {logits.dtype}")
    try:
        return torch.broadcast_tensors(value, logits)
    except RuntimeError as e:
        raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast with logits of "
                         f"shape {tuple(logits.shape)}") from e


def _density_call(op_name: str, reference_fn, value, logits, temperature, *dim):
    """Every log-density: check, broadcast value and logits, route, call (dim for row ops)."""
    _check_tensor(logits, "logits")
    value, logits = _broadcast_value(value, logits)
    shape = _batch_shape(logits, _category_dim(logits, dim[0])) if dim else logits.shape
    t = _temperature(temperature, logits, shape=shape)
    kind, fn = _route(op_name, logits.device)
    return (reference_fn if kind == "reference" else fn)(value, logits, t, *dim)


def exp_concrete_log_prob(value: Tensor, logits: Tensor, temperature: Temperature,
                          dim: int = -1) -> Tensor:
    """log kappa(value): the ExpConcrete log-density of a point on the log-simplex; reduces `dim`.

    Computed in log space (Appendix C.3), finite at low temperature where the simplex density
    underflows. Masked (-inf) categories are left out.
    """
    return _density_call("exp_concrete_log_prob", ref.exp_concrete_log_prob, value, logits,
                         temperature, dim)


def concrete_log_prob(value: Tensor, logits: Tensor, temperature: Temperature,
                      dim: int = -1) -> Tensor:
    """log p(x) of Concrete(logits, temperature) at a point x of the simplex; reduces `dim`."""
    return _density_call("concrete_log_prob", ref.concrete_log_prob, value, logits, temperature,
                         dim)


def relaxed_kl_sample(q_logits: Tensor, q_temperature: Temperature, p_logits: Tensor,
                      p_temperature: Temperature, dim: int = -1,
                      generator: Optional[torch.Generator] = None, *, seed: Optional[int] = None,
                      offset: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """One fused pass: y ~ ExpConcrete(q), log kappa_q(y) and log kappa_p(y).

    The single-sample relaxed KL estimate of Eq. 28 is ``log_q - log_p``. p_logits broadcast to
    q_logits; categories masked in q are left out of both densities.
    """
    _check_tensor(q_logits, "q_logits")
    p_logits, q_logits = _broadcast_value(p_logits, q_logits, "p_logits")
    batch = _batch_shape(q_logits, _category_dim(q_logits, dim, "q_logits"))
    tq = _temperature(q_temperature, q_logits, "q_temperature", batch)
    tp = _temperature(p_temperature, q_logits, "p_temperature", batch)
    return _random_call("relaxed_kl_sample", q_logits.device, (q_logits, tq, p_logits, tp, dim),
                        functools.partial(ref.relaxed_kl_sample, q_logits, tq, p_logits, tp, dim),
                        generator, seed, offset)


# ---- binary --------------------------------------------------------------------------------------
def logit_binary_concrete_sample(logits: Tensor, temperature: Temperature,
                                 generator: Optional[torch.Generator] = None, *,
                                 seed: Optional[int] = None, offset: int = 0) -> Tensor:
    """y = (logits + L) / temperature, L ~ Logistic(0, 1): BinConcrete in logit space (Eq. 26)."""
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, shape=logits.shape)
    return _random_call("logit_binary_concrete_sample", logits.device, (logits, t),
                        functools.partial(ref.logit_binary_concrete_sample, logits, t),
                        generator, seed, offset)


def binary_concrete_sample(logits: Tensor, temperature: Temperature,
                           generator: Optional[torch.Generator] = None, *,
                           seed: Optional[int] = None, offset: int = 0) -> Tensor:
    """x = sigmoid((logits + L) / temperature) in (0, 1): BinConcrete (Eq. 16)."""
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, shape=logits.shape)
    return _random_call("binary_concrete_sample", logits.device, (logits, t),
                        functools.partial(ref.binary_concrete_sample, logits, t),
                        generator, seed, offset)


def logit_binary_concrete_log_prob(value: Tensor, logits: Tensor,
                                   temperature: Temperature) -> Tensor:
    """log density of y = logit of a BinConcrete sample: log tau - tau y + a - 2 softplus(a - tau y)."""
    return _density_call("logit_binary_concrete_log_prob", ref.logit_binary_concrete_log_prob,
                         value, logits, temperature)


def binary_concrete_log_prob(value: Tensor, logits: Tensor, temperature: Temperature) -> Tensor:
    """log density of BinConcrete at x in (0, 1) (Eq. 17), computed in logit space."""
    return _density_call("binary_concrete_log_prob", ref.binary_concrete_log_prob, value, logits,
                         temperature)


# ---- noise ---------------------------------------------------------------------------------------
def noise(kind: str, size, *, dtype: torch.dtype = torch.float32, device=None,
          generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
          offset: int = 0) -> Tensor:
    """Noise of the package's random-number contract: "uniform", "exponential", "gumbel",
    "logistic" (in `dtype`) or "bits" (the raw 32-bit Philox draws, as int64)."""
    if kind not in ("bits", "uniform", "exponential", "gumbel", "logistic"):
        raise ValueError(f"noise kind must be one of 'bits', 'uniform', 'exponential', 'gumbel', "
                         f"'logistic', got {kind!r}")
    like = torch.empty(size, dtype=dtype, device=device)

    def reference_noise(seed, offset, generator):
        sd, off = ref.resolve_seed(seed, offset, generator, like.device)
        return ref.noise(like.shape, kind, sd, off, dtype=dtype, device=like.device)

    return _random_call("noise_like", like.device, (like, kind), reference_noise, generator, seed,
                        offset)
