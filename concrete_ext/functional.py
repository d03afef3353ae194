"""The public functional API (re-exported at the top level of concrete_ext).

Each function checks its arguments, turns the temperature into what the ops take, picks a backend
(``_backend.select``) and runs the op through ``_autograd.call`` (compiled CPU/CUDA kernels, Triton,
the Python kernels) or calls the reference. Every function works under autograd to any order,
forward-mode AD, ``torch.func`` (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap), ``torch.compile``
and ``torch.export``. Random functions take ``generator`` (default: torch's default generator of the
tensor's device) or, keyword-only, an explicit ``seed`` and ``offset``: with a seed the noise is a
pure function of (seed, offset, element index), the same on every backend.

The checks are cheap by design (they run on every call): a Python float temperature is checked
and turned into a tensor once per value, a CPU tensor temperature is read once.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _autograd, _backend
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
    "categorical_sample",
    "gumbel_top_k",
    "noise",
    "straight_through",
]

Temperature = Union[float, Tensor]
_FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# ---- argument handling ----------------------------------------------------------------------------
def _check_tensor(t, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float32, float64, float16 or "
            f"bfloat16), got {t.dtype}"
        )
    return t


def _category_dim(t: Tensor, dim, name: str = "logits") -> int:
    """The wrapped category dim of a row op (checked here, before any backend, so the reference
    and Triton backends refuse the same input as the compiled kernels, with the same message)."""
    if type(dim) is not int:
        try:
            if isinstance(dim, bool):
                raise TypeError
            dim = operator.index(dim)
        except TypeError:
            raise TypeError(f"dim must be an int, got {type(dim).__name__}") from None
    nd = t.dim()
    if nd < 1:
        raise ValueError(f"{name} must have at least one dimension (the categories)")
    if not -nd <= dim < nd:
        raise IndexError(f"dim {dim} is out of range for {name} with {nd} dimensions")
    d = dim % nd
    if t.shape[d] == 0:
        raise ValueError(f"{name} has no categories: size 0 along dim {dim}")
    return d


def _batch_shape(t: Tensor, d: int):
    return t.shape[:d] + t.shape[d + 1 :]


def _check_range(lo: float, hi: float, fp64: bool, like_dtype, name: str, what) -> None:
    """lo..hi (the temperature's extremes) positive, finite, and neither 0 nor inf in the
    precision the op computes in (float64 for float64 logits, else float32): a temperature of
    1e-46 is positive in Python but 0 in float32, and its samples would be NaN."""
    if not (lo > 0 and hi < math.inf):  # NaN fails both comparisons
        raise ValueError(f"{name} must be positive and finite, got {what()}")
    acc = torch.float64 if fp64 else torch.float32
    info = torch.finfo(acc)
    if lo < info.tiny or hi > info.max:
        raise ValueError(
            f"{name} {lo if lo < info.tiny else hi:g} is out of the range of "
            f"{acc} ([{info.tiny:g}, {info.max:g}]), the precision {like_dtype} "
            "ops compute in"
        )


def host_range(t: Tensor) -> Optional[Tuple[float, float]]:
    """(min, max) of a plain CPU tensor, read on the host in one pass; None where that is not
    cheap or not possible (another device would sync, an empty tensor, tracing, a transform)."""
    if t.device.type != "cpu" or type(t) not in (Tensor, torch.nn.Parameter) or t.numel() == 0:
        return None
    if torch.compiler.is_compiling() or _autograd.transforms_active():
        return None
    v = t.detach()
    if v.numel() == 1:
        x = v.item()
        return x, x
    lo, hi = torch.aminmax(v)
    return lo.item(), hi.item()


def _check_temperature_values(t: Tensor, like: Tensor, name: str) -> None:
    """Positive and finite (see _check_range), checked only where reading the values is cheap
    (host_range: a CUDA temperature would need a device sync; the distributions check those with
    validate_args)."""
    r = host_range(t)
    if r is None:
        return
    lo, hi = r
    v = t.detach()
    if lo > 0 and hi < math.inf and (like.dtype == torch.float64 or 1.2e-38 < lo and hi < 3.4e38):
        return  # the common case, decided without building the message

    def what():
        return "a tensor holding " + (
            "NaN" if v.isnan().any() else f"{float(v.min())}" if float(v.min()) <= 0 else "inf"
        )

    _check_range(lo, hi, like.dtype == torch.float64, like.dtype, name, what)


def _broadcasts(shape, to) -> bool:
    if len(shape) > len(to):
        return False
    return all(a == 1 or a == b for a, b in zip(reversed(shape), reversed(to)))


def _temperature_shape(t: Tensor, like: Tensor, d: Optional[int], name: str) -> Tensor:
    """A temperature tensor in the form the ops take: one value, or a tensor broadcasting to the
    batch shape (row ops: the logits' shape without `dim`; binary ops: the logits' shape). For row
    ops torch's form is accepted too: a tensor broadcasting against the logits with size 1 along
    `dim` (e.g. (4, 1) for (4, 5) logits), which is squeezed to the batch form."""
    if t.numel() == 1:
        return t
    shape = like.shape if d is None else _batch_shape(like, d)
    if _broadcasts(t.shape, shape):
        return t
    if d is not None and _broadcasts(t.shape, like.shape):
        at = d - (like.dim() - t.dim())  # the temperature's dim aligned with `dim`
        if at >= 0 and t.shape[at] == 1:
            return t.squeeze(at)
        if at >= 0:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} varies along the category dim "
                f"{d} of the logits ({tuple(like.shape)}): a temperature is one "
                "value per distribution"
            )
    raise ValueError(
        f"{name} of shape {tuple(t.shape)} does not broadcast to the batch shape "
        f"{tuple(shape)}"
        + (
            f" (nor to the logits' shape {tuple(like.shape)} with size 1 along dim {d})"
            if d is not None
            else ""
        )
    )


_FLOAT_TEMPERATURES: Dict[Tuple[float, bool], Tensor] = {}


def _float_temperature(temperature, like: Tensor, name: str) -> Tensor:
    fp64 = like.dtype == torch.float64
    key = (temperature, fp64)
    if type(temperature) is float:
        t = _FLOAT_TEMPERATURES.get(key)
        if t is not None:
            return t
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"{name} must be a positive float or a tensor, got {type(temperature).__name__}"
        )
    try:
        value = float(temperature)
    except OverflowError:  # an int beyond float64
        value = math.inf
    _check_range(value, value, fp64, like.dtype, name, lambda: temperature)
    # The ops read a 0-d float64 CPU tensor on the host (no device copy); one per value is kept,
    # as nothing writes to it. Compiled code makes its own (a cached tensor would be a guard).
    t = torch.tensor(value, dtype=torch.float64)
    if not torch.compiler.is_compiling():
        if len(_FLOAT_TEMPERATURES) > 4096:
            _FLOAT_TEMPERATURES.clear()
        _FLOAT_TEMPERATURES[key] = t
    return t


def _temperature(
    temperature: Temperature, like: Tensor, d: Optional[int], name: str = "temperature"
) -> Tensor:
    """A tensor the ops accept: Python numbers become a float64 CPU scalar (read on the host).

    A tensor must be floating, on the logits' device (or a single value on the CPU), broadcast as
    _temperature_shape says, and hold positive finite values (checked on the CPU only). `d` is the
    category dim of a row op, None for binary ops."""
    if not isinstance(temperature, Tensor):
        return _float_temperature(temperature, like, name)
    if not temperature.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {temperature.dtype}")
    if temperature.device != like.device and not (
        temperature.numel() == 1 and temperature.device.type == "cpu"
    ):
        raise ValueError(
            f"{name} is on {temperature.device} but the logits are on "
            f"{like.device} (a temperature on another device must be a single "
            "value on the CPU)"
        )
    temperature = _temperature_shape(temperature, like, d, name)
    _check_temperature_values(temperature, like, name)
    return temperature


def _seed(seed: Optional[int], offset: int) -> Tuple[Optional[int], int]:
    """(seed as a signed int64, offset) for the op schema; seeds are taken modulo 2**64."""
    if seed is None and offset == 0 and type(offset) is int:
        return None, 0
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**63:
        raise ValueError(f"offset must be an int in [0, 2**63), got {offset!r}")
    if seed is None:
        raise ValueError("offset is only meaningful with an explicit seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    seed %= 2**64
    return (seed - 2**64 if seed >= 2**63 else seed), offset


def _check_generator(generator, device: torch.device):
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is for {generator.device} but the logits are on {device}")


def _torch_layout(out: Tensor, like: Tensor) -> Tensor:
    """A row op's output in the layout torch's functions return: contiguous, or contiguous in the
    logits' memory format when that is channels-last. The kernels write their rows with the
    category dim innermost, which is that layout whenever `dim` is innermost in the logits'
    memory; otherwise this is one transposing copy (the kernels also read such logits through one)."""
    if out.is_contiguous():
        return out
    fmt = torch.contiguous_format
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        fmt = torch.channels_last
    elif like.dim() == 5 and like.is_contiguous(memory_format=torch.channels_last_3d):
        fmt = torch.channels_last_3d
    return out if out.is_contiguous(memory_format=fmt) else out.contiguous(memory_format=fmt)


def _run(op_name: str, device: torch.device, args: tuple, reference_fn):
    """Run op `op_name` on the chosen backend with the op's arguments, or the reference."""
    name = _backend.select(op_name, device)
    if name == "reference":
        return reference_fn()
    return _autograd.call(_backend.impl(op_name, name), *args)


def _random_call(
    op_name: str, device: torch.device, op_args: tuple, reference_fn, generator, seed, offset
):
    """The common tail of every random op: check the generator and the seed, then run the op with
    `op_args` followed by (seed, offset, generator), or the reference as
    reference_fn(seed=..., offset=..., generator=...)."""
    if generator is not None:
        _check_generator(generator, device)
    s, o = _seed(seed, offset)
    return _run(
        op_name,
        device,
        op_args + (s, o, generator),
        lambda: reference_fn(seed=seed, offset=offset, generator=generator),
    )


# ---- categorical ---------------------------------------------------------------------------------
def exp_concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    dim: int = -1,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """y ~ ExpConcrete(logits, temperature): log of a Concrete sample, on the log-simplex.

    y = (logits + G) / tau - logsumexp((logits + G) / tau) along `dim`, G ~ Gumbel(0, 1).
    Categories with -inf logits get exactly -inf. Differentiable in logits and temperature.
    """
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, _category_dim(logits, dim))
    return _torch_layout(
        _random_call(
            "exp_concrete_sample",
            logits.device,
            (logits, t, dim),
            functools.partial(ref.exp_concrete_sample, logits, t, dim),
            generator,
            seed,
            offset,
        ),
        logits,
    )


def concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    dim: int = -1,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """x ~ Concrete(logits, temperature) on the simplex: softmax((logits + G) / tau) along `dim`."""
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, _category_dim(logits, dim))
    return _torch_layout(
        _random_call(
            "concrete_sample",
            logits.device,
            (logits, t, dim),
            functools.partial(ref.concrete_sample, logits, t, dim),
            generator,
            seed,
            offset,
        ),
        logits,
    )


def gumbel_softmax(
    logits: Tensor,
    tau: Temperature = 1.0,
    hard: bool = False,
    eps: float = 1e-10,
    dim: int = -1,
    *,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """Drop-in for torch.nn.functional.gumbel_softmax (same positional arguments; `eps` is unused
    there too), fused, with a generator and a tensor temperature.

    hard=True returns the one-hot of the sampled category in the forward pass and the gradient of
    the soft sample in backward (straight-through); the soft sample is recomputed from the saved
    (seed, offset) instead of being kept.
    """
    del eps  # deprecated and unused, as in torch.nn.functional.gumbel_softmax
    _check_tensor(logits, "logits")
    # errors name the argument `tau`, as the caller wrote it
    t = _temperature(tau, logits, _category_dim(logits, dim), "tau")
    if not hard:
        out = _random_call(
            "concrete_sample",
            logits.device,
            (logits, t, dim),
            functools.partial(ref.concrete_sample, logits, t, dim),
            generator,
            seed,
            offset,
        )
    else:
        out = _random_call(
            "gumbel_softmax_hard",
            logits.device,
            (logits, t, dim),
            functools.partial(ref.gumbel_softmax, logits, t, True, dim),
            generator,
            seed,
            offset,
        )
        out = out if isinstance(out, Tensor) else out[0]  # the op also returns its rng_state
    return _torch_layout(out, logits)


def gumbel_max_sample(
    logits: Tensor,
    dim: int = -1,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """One-hot of argmax_k(logits_k + G_k): a draw of Discrete(alpha) (zero temperature)."""
    _check_tensor(logits, "logits")
    _category_dim(logits, dim)
    return _torch_layout(
        _random_call(
            "gumbel_max_sample",
            logits.device,
            (logits, dim),
            functools.partial(ref.gumbel_max_sample, logits, dim),
            generator,
            seed,
            offset,
        ),
        logits,
    )


def categorical_sample(
    logits: Tensor,
    temperature: Temperature = 1.0,
    dim: int = -1,
    *,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """One draw of Categorical(softmax(logits / temperature)) per row, as int64 indices of the
    batch shape (Gumbel-max: argmax_k (logits_k / temperature + G_k), ties to the lower index).

    It is the zero-temperature end of the Concrete sample: for the same (seed, offset) the index is
    that of ``gumbel_max_sample(logits / temperature)``'s one-hot, so a discrete draw and a relaxed
    one can share their noise. It reads the logits once and writes one integer per row. A -inf
    logit masks its category; a row whose logits are all -inf gives -1."""
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, _category_dim(logits, dim))
    return _random_call(
        "categorical_sample",
        logits.device,
        (logits, t, dim),
        functools.partial(ref.categorical_sample, logits, t, dim),
        generator,
        seed,
        offset,
    )


def gumbel_top_k(
    logits: Tensor,
    k: int,
    dim: int = -1,
    *,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """k categories drawn without replacement from Categorical(softmax(logits)) per row, as int64
    indices of shape (batch..., k): the k largest logits_k + G_k in decreasing order (the
    Gumbel-top-k trick; ties to the lower index, -inf logits last). Its first column is
    ``categorical_sample(logits)`` for the same (seed, offset)."""
    _check_tensor(logits, "logits")
    d = _category_dim(logits, dim)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= logits.shape[d]:
        raise ValueError(f"k must be in [1, {logits.shape[d]}] (the number of categories), got {k}")
    return _random_call(
        "gumbel_top_k",
        logits.device,
        (logits, k, dim),
        functools.partial(ref.gumbel_top_k, logits, k, dim),
        generator,
        seed,
        offset,
    )


def broadcast_shape(a: Sequence[int], b: Sequence[int]) -> Optional[torch.Size]:
    """The broadcast of two shapes, or None if they do not broadcast (torch.broadcast_shapes
    without its Python reference machinery, which costs more than a small op)."""
    if len(a) < len(b):
        a, b = b, a
    out = list(a)
    off = len(a) - len(b)
    for i, m in enumerate(b):
        n = out[off + i]
        if n == m or m == 1:
            continue
        if n != 1:
            return None
        out[off + i] = m
    return torch.Size(out)


def _broadcast_value(value: Tensor, logits: Tensor, name: str = "value"):
    _check_tensor(value, name)
    if value.device != logits.device:
        raise ValueError(f"{name} is on {value.device} but the logits are on {logits.device}")
    if value.dtype != logits.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but the logits have {logits.dtype}")
    if value.shape == logits.shape:
        return value, logits
    try:
        return torch.broadcast_tensors(value, logits)
    except RuntimeError as e:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast with logits of "
            f"shape {tuple(logits.shape)}"
        ) from e


def _interior(value: Tensor, upper: bool) -> Tensor:
    """value with exact 0 (and 1 when `upper`) moved to the nearest representable point of the open
    interval (tiny, 1 - eps/2): the density is evaluated there, as the distribution classes and
    torch's relaxed distributions (clamp_probs) do; the formula is inf - inf at the ends."""
    if _inside_already(value, upper):
        return value
    info = torch.finfo(value.dtype)
    value = torch.where(value == 0, info.tiny, value)
    return torch.where(value == 1, 1 - info.eps / 2, value) if upper else value


def _inside_already(value: Tensor, upper: bool) -> bool:
    """Whether a value has no 0 (and no 1 when `upper`) and no NaN, found by one read
    (host_range) instead of the four passes of the replacement; False where that read is not
    cheap (see host_range)."""
    r = host_range(value)
    return r is not None and r[0] > 0 and (not upper or r[1] < 1)  # False for NaN


def _density_call(op_name: str, reference_fn, value, logits, temperature, *dim, interior=None):
    """Every log-density: check, broadcast value and logits, route, call (dim for row ops)."""
    _check_tensor(logits, "logits")
    value, logits = _broadcast_value(value, logits)
    d = _category_dim(logits, dim[0]) if dim else None
    t = _temperature(temperature, logits, d)
    if interior is not None:
        value = _interior(value, interior)
    return _run(
        op_name,
        logits.device,
        (value, logits, t) + dim,
        lambda: reference_fn(value, logits, t, *dim),
    )


def exp_concrete_log_prob(
    value: Tensor, logits: Tensor, temperature: Temperature, dim: int = -1
) -> Tensor:
    """log kappa(value): the ExpConcrete log-density of a point on the log-simplex; reduces `dim`.

    Computed in log space (Appendix C.3), finite at low temperature where the simplex density
    underflows. Masked (-inf) categories are left out.
    """
    return _density_call(
        "exp_concrete_log_prob", ref.exp_concrete_log_prob, value, logits, temperature, dim
    )


def concrete_log_prob(
    value: Tensor, logits: Tensor, temperature: Temperature, dim: int = -1
) -> Tensor:
    """log p(x) of Concrete(logits, temperature) at a point x of the simplex; reduces `dim`.

    An entry of x that is exactly 0 (a sample whose small entries rounded to 0) is evaluated at
    the smallest positive normal number instead, as the Concrete class does."""
    return _density_call(
        "concrete_log_prob", ref.concrete_log_prob, value, logits, temperature, dim, interior=False
    )


def relaxed_kl_sample(
    q_logits: Tensor,
    q_temperature: Temperature,
    p_logits: Tensor,
    p_temperature: Temperature,
    dim: int = -1,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    density_dtype: Optional[torch.dtype] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One fused pass: y ~ ExpConcrete(q), log kappa_q(y) and log kappa_p(y).

    The single-sample relaxed KL estimate of Eq. 28 is ``log_q - log_p``. p_logits broadcast to
    q_logits; categories masked in q are left out of both densities.

    By default the densities are those of the returned sample, in the logits' dtype. For float16
    and bfloat16 logits that sample is rounded to 16 bits, and the densities can overflow or lose
    most of their digits at low temperature; ``density_dtype=torch.float32`` runs the op in float32
    and returns the densities in float32 (of the float32 sample, before it is rounded to the
    logits' dtype), with the sample in the logits' dtype. The noise is the same either way.
    """
    _check_tensor(q_logits, "q_logits")
    if density_dtype is not None and density_dtype != q_logits.dtype:
        if (
            density_dtype not in _FLOATING
            or torch.finfo(density_dtype).bits < torch.finfo(q_logits.dtype).bits
        ):
            raise ValueError(
                f"density_dtype must be a floating dtype at least as wide as the "
                f"logits' ({q_logits.dtype}), got {density_dtype}"
            )
        up = lambda t: (
            t.to(density_dtype) if isinstance(t, Tensor) and t.dtype == q_logits.dtype else t
        )
        y, lq, lp = relaxed_kl_sample(
            up(q_logits),
            up(q_temperature),
            up(p_logits),
            up(p_temperature),
            dim,
            generator,
            seed=seed,
            offset=offset,
        )
        return y.to(q_logits.dtype), lq, lp
    p_logits, q_logits = _broadcast_value(p_logits, q_logits, "p_logits")
    d = _category_dim(q_logits, dim, "q_logits")
    tq = _temperature(q_temperature, q_logits, d, "q_temperature")
    tp = _temperature(p_temperature, q_logits, d, "p_temperature")
    y, log_q, log_p = _random_call(
        "relaxed_kl_sample",
        q_logits.device,
        (q_logits, tq, p_logits, tp, dim),
        functools.partial(ref.relaxed_kl_sample, q_logits, tq, p_logits, tp, dim),
        generator,
        seed,
        offset,
    )
    return _torch_layout(y, q_logits), log_q, log_p


# ---- binary --------------------------------------------------------------------------------------
def logit_binary_concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """y = (logits + L) / temperature, L ~ Logistic(0, 1): BinConcrete in logit space (Eq. 26)."""
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, None)
    return _random_call(
        "logit_binary_concrete_sample",
        logits.device,
        (logits, t),
        functools.partial(ref.logit_binary_concrete_sample, logits, t),
        generator,
        seed,
        offset,
    )


def binary_concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    hard: bool = False,
) -> Tensor:
    """x = sigmoid((logits + L) / temperature) in (0, 1): BinConcrete (Eq. 16).

    hard=True returns the Bernoulli draw 1[x > 1/2] in the forward pass and the gradient of x in
    backward (straight-through); the soft sample is kept on the result as ``result.soft``."""
    _check_tensor(logits, "logits")
    t = _temperature(temperature, logits, None)
    x = _random_call(
        "binary_concrete_sample",
        logits.device,
        (logits, t),
        functools.partial(ref.binary_concrete_sample, logits, t),
        generator,
        seed,
        offset,
    )
    return straight_through(x, (x > 0.5).to(x.dtype)) if hard else x


def straight_through(soft: Tensor, hard: Tensor) -> Tensor:
    """`hard` in value, `soft` in gradient: hard - soft.detach() + soft, with the soft value kept
    as the result's attribute ``soft`` (what the straight-through distributions' log_prob reads)."""
    out = hard - soft.detach() + soft
    if not torch.compiler.is_compiling():  # a traced tensor takes no attribute
        out.soft = soft
    return out


def logit_binary_concrete_log_prob(
    value: Tensor, logits: Tensor, temperature: Temperature
) -> Tensor:
    """log density of y = logit of a BinConcrete sample: log tau - tau y + a - 2 softplus(a - tau y)."""
    return _density_call(
        "logit_binary_concrete_log_prob",
        ref.logit_binary_concrete_log_prob,
        value,
        logits,
        temperature,
    )


def binary_concrete_log_prob(value: Tensor, logits: Tensor, temperature: Temperature) -> Tensor:
    """log density of BinConcrete at x in (0, 1) (Eq. 17), computed in logit space. A value of
    exactly 0 or 1 (a sample that rounded there) is evaluated at the nearest representable point
    inside (0, 1), as the BinaryConcrete class and torch's RelaxedBernoulli do."""
    return _density_call(
        "binary_concrete_log_prob",
        ref.binary_concrete_log_prob,
        value,
        logits,
        temperature,
        interior=True,
    )


# ---- noise ---------------------------------------------------------------------------------------
def noise(
    kind: str,
    size,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    offset: int = 0,
) -> Tensor:
    """Noise of the package's random-number contract: "uniform", "exponential", "gumbel",
    "logistic" (in `dtype`; from 64-bit draws when `dtype` is float64, 32-bit otherwise, exactly
    the noise the ops of that dtype use) or "bits" (the raw 32-bit Philox draws, as int64)."""
    if kind not in ("bits", "uniform", "exponential", "gumbel", "logistic"):
        raise ValueError(
            f"noise kind must be one of 'bits', 'uniform', 'exponential', 'gumbel', "
            f"'logistic', got {kind!r}"
        )
    like = torch.empty(size, dtype=dtype, device=device)

    def reference_noise(seed, offset, generator):
        sd, off = ref.resolve_seed(seed, offset, generator, like.device)
        return ref.noise(like.shape, kind, sd, off, dtype=dtype, device=like.device)

    return _random_call(
        "noise_like", like.device, (like, kind), reference_noise, generator, seed, offset
    )
