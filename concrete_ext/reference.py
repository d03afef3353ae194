"""Plain-PyTorch reference of every op: the ground truth the kernels are tested against.

Every function works in any floating dtype (float64 in the tests), differentiates through autograd,
and reproduces the random-number contract of docs/ARCHITECTURE.md exactly: for a given
(seed, offset) its 32-bit Philox draws equal the kernels' bit for bit (integer tensor ops), and its
noise is computed from them in float64 and rounded to the working dtype. float64 ops draw 64 bits
per element (two words of the same stream, ``philox_draws64``); the others 32.

Conventions shared with the kernels:

* a category whose logit is ``-inf`` is masked: its sample is exactly 0 (``-inf`` in log space),
  it gets no gradient and it is left out of the densities;
* a row whose logits are all ``-inf`` samples NaN;
* the element ``k`` of row ``r`` (rows enumerate ``logits.movedim(dim, -1)`` in row-major order)
  has linear index ``i = r * n + k``; binary ops use the row-major index of the element.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "philox4x32_10",
    "philox_bits",
    "philox_draws64",
    "noise_from_bits",
    "draw_bits_of",
    "noise_as",
    "noise",
    "concrete_sample",
    "exp_concrete_sample",
    "gumbel_softmax",
    "gumbel_max_sample",
    "categorical_sample",
    "gumbel_top_k",
    "exp_concrete_log_prob",
    "concrete_log_prob",
    "binary_concrete_sample",
    "logit_binary_concrete_sample",
    "logit_binary_concrete_log_prob",
    "binary_concrete_log_prob",
    "relaxed_kl_sample",
]

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_HALF = 0x80000000
_TWO_M32 = 2.0**-32
_TWO_M64 = 2.0**-64

Temperature = Union[float, Tensor]


# ---- Philox4x32-10 on int64 tensors --------------------------------------------------------------
def _mulhilo(a: Tensor, m: int) -> Tuple[Tensor, Tensor]:
    """(hi, lo) 32-bit halves of a * m for uint32 values held in int64 (no 64-bit overflow)."""
    m_lo, m_hi = m & 0xFFFF, m >> 16
    p1 = a * m_lo  # < 2^48
    p2 = a * m_hi  # < 2^48
    t = p1 + ((p2 & 0xFFFF) << 16)  # < 2^49
    return ((p2 >> 16) + (t >> 32)) & _MASK32, t & _MASK32


def philox4x32_10(c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, k0: int, k1: int):
    """Random123's philox4x32_R(10, ctr, key) on int64 tensors holding uint32 values."""
    for r in range(10):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        if r < 9:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def _as_unsigned(v: int, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not -(2**63) <= v < 2**64:
        raise ValueError(f"{name} must fit in 64 bits, got {v}")
    return v % 2**64


def philox_bits(numel: int, seed: int, offset: int = 0, device=None) -> Tensor:
    """The 32-bit draws of elements 0 .. numel-1 of the call (seed, offset), as int64.

    key = (seed low, seed high); counter = (offset low, offset high, i // 4 low, i // 4 high);
    element i takes word i % 4.
    """
    seed, offset = _as_unsigned(seed, "seed"), _as_unsigned(offset, "offset")
    groups = (numel + 3) // 4
    g = torch.arange(groups, dtype=torch.int64, device=device)
    c0 = torch.full_like(g, offset & _MASK32)
    c1 = torch.full_like(g, offset >> 32)
    out = philox4x32_10(c0, c1, g & _MASK32, g >> 32, seed & _MASK32, seed >> 32)
    return torch.stack(out, dim=1).reshape(-1)[:numel]


def philox_draws64(numel: int, seed: int, offset: int = 0, device=None) -> Tensor:
    """The 64-bit draws of an fp64 op's elements 0 .. numel-1 for the call (seed, offset): element i
    takes the 32-bit draws 2i (low half) and 2i + 1 (high half) of ``philox_bits``, i.e. words
    2 (i % 2) and 2 (i % 2) + 1 of group i // 2. Held in int64 as the two's complement of the
    unsigned value (negative for draws >= 2^63)."""
    w = philox_bits(2 * numel, seed, offset, device=device)
    lo, hi = w[0::2], w[1::2]
    hi = torch.where(hi >= _HALF, hi - 2**32, hi)  # the signed high word: no int64 overflow
    return hi * 2**32 + lo


def noise_from_bits(bits: Tensor, kind: str, draw_bits: int = 32) -> Tensor:
    """The noise of the random-number contract (docs/ARCHITECTURE.md, "Random numbers") from draws,
    in float64: 32-bit draws (int64 holding uint32), or ``draw_bits=64`` (``philox_draws64``).

    U = (r + 1/2) 2^-w; the upper half (r >= 2^(w-1)) works with V = 1 - U, computed from the
    integer 2^w - 1 - r, so nothing is lost near 1. The integers are rounded to float64 first (round
    to nearest), as the kernels convert them.
    """
    if draw_bits == 32:
        lower = bits < _HALF
        u = (bits.to(torch.float64) + 0.5) * _TWO_M32
        v = ((_MASK32 - bits).to(torch.float64) + 0.5) * _TWO_M32
    elif draw_bits == 64:
        lower = bits >= 0  # r < 2^63
        u = (bits.to(torch.float64) + 0.5) * _TWO_M64
        v = ((~bits).to(torch.float64) + 0.5) * _TWO_M64  # 2^64 - 1 - r, below 2^63 where used
    else:
        raise ValueError(f"draw_bits must be 32 or 64, got {draw_bits}")
    if kind == "bits":
        return bits
    if kind == "uniform":
        return torch.where(lower, u, 1.0 - v)
    e = torch.where(lower, -torch.log(u), -torch.log1p(-v))
    if kind == "exponential":
        return e
    if kind == "gumbel":
        return -torch.log(e)
    if kind == "logistic":
        return torch.where(lower, torch.log(u) - torch.log1p(-u), torch.log1p(-v) - torch.log(v))
    raise ValueError(
        f"noise kind must be one of 'bits', 'uniform', 'exponential', 'gumbel', "
        f"'logistic', got {kind!r}"
    )


_NOISE_DTYPE: list = [None]  # set by noise_as(): the op dtype whose draws the references take


def draw_bits_of(dtype: torch.dtype) -> int:
    """Bits per draw of an op whose working dtype is `dtype`: 64 for float64, else 32 (inside
    ``noise_as(d)``: those of an op of dtype d, whatever `dtype` is)."""
    dtype = _NOISE_DTYPE[-1] or dtype
    return 64 if dtype == torch.float64 else 32


@contextlib.contextmanager
def noise_as(dtype: torch.dtype):
    """Inside, the references draw the noise an op of `dtype` draws (32-bit draws unless `dtype` is
    float64), whatever dtype they compute in: the float64 reference of a float32 call."""
    _NOISE_DTYPE.append(dtype)
    try:
        yield
    finally:
        _NOISE_DTYPE.pop()


def _below_one(dtype: torch.dtype) -> float:
    return 1.0 - torch.finfo(dtype).eps / 2


def _above_zero(dtype: torch.dtype) -> float:
    """The smallest positive (subnormal) value of dtype: float16 rounds U < 2^-25 to 0."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps


def noise(
    shape,
    kind: str,
    seed: int,
    offset: int = 0,
    dtype=torch.float32,
    device=None,
    draw_bits: Optional[int] = None,
) -> Tensor:
    """Noise of `shape` for the call (seed, offset): int64 32-bit draws for "bits", else `dtype`,
    from the draws an op of that dtype takes (``draw_bits_of(dtype)``) unless `draw_bits` says
    otherwise (e.g. 32 for a float64 copy of a float32 op's noise)."""
    shape = tuple(shape)
    numel = math.prod(shape)
    if kind == "bits":
        return philox_bits(numel, seed, offset, device=device).reshape(shape)
    width = draw_bits_of(dtype) if draw_bits is None else draw_bits
    bits = (philox_draws64 if width == 64 else philox_bits)(numel, seed, offset, device=device)
    out = noise_from_bits(bits, kind, width).to(dtype)
    if kind == "uniform":
        out = out.clamp(min=_above_zero(dtype), max=_below_one(dtype))
    return out.reshape(shape)


def resolve_seed(
    seed: Optional[int], offset: int, generator: Optional[torch.Generator], device
) -> Tuple[int, int]:
    """(seed, offset) of a call: the explicit pair, or a fresh seed from the generator."""
    if seed is not None:
        return _as_unsigned(seed, "seed"), _as_unsigned(offset, "offset")
    if generator is not None:
        gdev = generator.device
    else:
        gdev = torch.device(device) if device is not None else torch.device("cpu")
    s = torch.randint(
        -(2**63), 2**63 - 1, (1,), generator=generator, dtype=torch.int64, device=gdev
    ).item()
    if gdev.type == "cpu":
        # The CPU kernels take their seed from CPUGeneratorImpl::random64(). This randint over
        # the full int64 range consumes that same draw r and returns r % (2**64 - 1) - 2**63, so
        # adding 2**63 back gives the kernels' seed (for every r but 2**64 - 1): with the same
        # generator state the reference and the CPU kernels sample the same noise.
        s += 2**63
    return s % 2**64, 0


# ---- helpers ------------------------------------------------------------------------------------
def _temperature(temperature: Temperature, like: Tensor) -> Tensor:
    if isinstance(temperature, Tensor):
        return (
            temperature.to(like.dtype)
            if temperature.device == like.device
            else temperature.to(device=like.device, dtype=like.dtype)
        )
    return torch.tensor(float(temperature), dtype=like.dtype, device=like.device)


def _row_tau(temperature: Temperature, moved: Tensor) -> Tensor:
    """The temperature broadcast to the batch shape, with a trailing 1 for the category dim."""
    t = _temperature(temperature, moved)
    return t.expand(moved.shape[:-1]).unsqueeze(-1)


def _moved_noise(moved: Tensor, kind: str, seed, offset, generator) -> Tensor:
    s, o = resolve_seed(seed, offset, generator, moved.device)
    return noise(
        moved.shape, kind, s, o, torch.float64, moved.device, draw_bits_of(moved.dtype)
    ).to(moved.dtype)


def _perturbed(logits: Tensor, temperature, dim, seed, offset, generator):
    """(moved logits, masked, g, z) with z = (a + g) / tau, -inf where masked (no gradient there)."""
    a = logits.movedim(dim, -1)
    masked = a == float("-inf")
    g = _moved_noise(a, "gumbel", seed, offset, generator)
    a_safe = torch.where(masked, torch.zeros((), dtype=a.dtype, device=a.device), a)
    z = torch.where(masked, float("-inf"), (a_safe + g) / _row_tau(temperature, a))
    return a, masked, g, z


# ---- categorical ---------------------------------------------------------------------------------
def exp_concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    dim: int = -1,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """y = (a + G) / tau - LSE((a + G) / tau): ExpConcrete sample on the log-simplex."""
    _, masked, _, z = _perturbed(logits, temperature, dim, seed, offset, generator)
    y = z - torch.logsumexp(z, dim=-1, keepdim=True)
    # Masked categories are exactly -inf, except in a row of all -inf logits, which is NaN.
    masked = masked & ~masked.all(-1, keepdim=True)
    return torch.where(masked, float("-inf"), y).movedim(-1, dim)


def concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    dim: int = -1,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """x = softmax((a + G) / tau): Concrete sample on the simplex."""
    _, _, _, z = _perturbed(logits, temperature, dim, seed, offset, generator)
    return torch.softmax(z, dim=-1).movedim(-1, dim)


def _argmax_one_hot(scores: Tensor, dtype) -> Tensor:
    # torch.argmax returns the first maximal index, as the kernels do; NaN never wins. A row where
    # no score beats -inf (all logits -inf) has no distribution: its sample is NaN.
    s = torch.where(scores.isnan(), float("-inf"), scores)
    idx = torch.argmax(s, dim=-1, keepdim=True)
    out = torch.zeros_like(scores, dtype=dtype).scatter_(-1, idx, 1.0)
    empty = (s == float("-inf")).all(-1, keepdim=True)
    return torch.where(empty, float("nan"), out)


def gumbel_softmax(
    logits: Tensor,
    tau: Temperature = 1.0,
    hard: bool = False,
    dim: int = -1,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """F.gumbel_softmax with this package's noise; hard mode is straight-through."""
    a, _, g, z = _perturbed(logits, tau, dim, seed, offset, generator)
    soft = torch.softmax(z, dim=-1)
    if not hard:
        return soft.movedim(-1, dim)
    # The category is argmax(a + g), as in the kernels (the same as argmax of z for tau > 0).
    one_hot = _argmax_one_hot((a + g).detach(), soft.dtype)
    return (one_hot - soft.detach() + soft).movedim(-1, dim)


def gumbel_max_sample(
    logits: Tensor,
    dim: int = -1,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """one_hot(argmax_k(a_k + G_k)): the zero-temperature limit."""
    a = logits.movedim(dim, -1).detach()
    g = _moved_noise(a, "gumbel", seed, offset, generator)
    return _argmax_one_hot(a + g, a.dtype).movedim(-1, dim)


def _perturbed_scores(
    logits: Tensor, temperature: Temperature, dim: int, seed, offset, generator
) -> Tensor:
    """a / tau (rounded to the logits' dtype, as logits / temperature is for a float temperature)
    + G, in the math type of the kernels (float32 for 16-bit logits) and the moved layout, with
    NaN counted as -inf: the scores Gumbel-max ranks."""
    a = logits.movedim(dim, -1).detach()
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32  # the kernels' math type
    if not (isinstance(temperature, (int, float)) and temperature == 1):
        a = (a.to(acc) / _row_tau(temperature, a.to(acc))).to(a.dtype)
    s = a.to(acc) + _moved_noise(a.to(acc), "gumbel", seed, offset, generator)
    return torch.where(s.isnan(), float("-inf"), s)


def categorical_sample(
    logits: Tensor,
    temperature: Temperature = 1.0,
    dim: int = -1,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """argmax_k (a_k / tau + G_k) as int64 indices of the batch shape: a draw of
    Categorical(softmax(a / tau)) (Gumbel-max, ties to the lower index); -1 for a row with no
    category (all logits -inf). The index of gumbel_max_sample(logits / temperature)'s one-hot for
    the same (seed, offset)."""
    s = _perturbed_scores(logits, temperature, dim, seed, offset, generator)
    idx = torch.argmax(s, dim=-1)
    return torch.where((s == float("-inf")).all(-1), -1, idx)


def gumbel_top_k(
    logits: Tensor,
    k: int,
    dim: int = -1,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """The indices of the k largest a_k + G_k in decreasing order, shape (batch..., k): a draw of
    k categories without replacement (the Gumbel-top-k trick); ties to the lower index, -inf
    logits last."""
    s = _perturbed_scores(logits, 1.0, dim, seed, offset, generator)
    return torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :k]


def _log_kappa(y: Tensor, a: Tensor, tau: Tensor, masked: Tensor) -> Tensor:
    """log kappa(y) over the unmasked categories (Appendix C.3); last dim is the category."""
    zero = torch.zeros((), dtype=y.dtype, device=y.device)
    y_safe = torch.where(masked, zero, y)
    a_safe = torch.where(masked, zero, a)
    w = torch.where(masked, float("-inf"), a_safe - tau * y_safe)
    n = (~masked).sum(-1).to(y.dtype)
    t = tau.squeeze(-1)
    sum_w = torch.where(masked, zero, w).sum(-1)
    return torch.lgamma(n) + (n - 1) * torch.log(t) + sum_w - n * torch.logsumexp(w, dim=-1)


def exp_concrete_log_prob(
    value: Tensor, logits: Tensor, temperature: Temperature, dim: int = -1
) -> Tensor:
    """log kappa(value) of ExpConcrete(logits, temperature); reduces `dim`."""
    value, logits = torch.broadcast_tensors(value, logits)
    y, a = value.movedim(dim, -1), logits.movedim(dim, -1)
    return _log_kappa(y, a, _row_tau(temperature, a), a == float("-inf"))


def concrete_log_prob(
    value: Tensor, logits: Tensor, temperature: Temperature, dim: int = -1
) -> Tensor:
    """log p(x) = log kappa(log x) - sum_k log x_k of Concrete(logits, temperature)."""
    value, logits = torch.broadcast_tensors(value, logits)
    x, a = value.movedim(dim, -1), logits.movedim(dim, -1)
    masked = a == float("-inf")
    log_x = torch.log(torch.where(masked, torch.ones((), dtype=x.dtype, device=x.device), x))
    log_x = torch.where(masked, float("-inf"), log_x)
    jac = torch.where(masked, torch.zeros((), dtype=x.dtype, device=x.device), log_x).sum(-1)
    return _log_kappa(log_x, a, _row_tau(temperature, a), masked) - jac


def relaxed_kl_sample(
    q_logits: Tensor,
    q_temperature: Temperature,
    p_logits: Tensor,
    p_temperature: Temperature,
    dim: int = -1,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
):
    """(y, log kappa_q(y), log kappa_p(y)) with y ~ ExpConcrete(q): the relaxed KL term (Eq. 28).

    The densities are evaluated at y rounded to the working dtype, over the categories q does not
    mask.
    """
    q_logits, p_logits = torch.broadcast_tensors(q_logits, p_logits)
    y = exp_concrete_sample(
        q_logits, q_temperature, dim, seed=seed, offset=offset, generator=generator
    )
    ym, aq, ap = y.movedim(dim, -1), q_logits.movedim(dim, -1), p_logits.movedim(dim, -1)
    masked = aq == float("-inf")
    log_q = _log_kappa(ym, aq, _row_tau(q_temperature, aq), masked)
    log_p = _log_kappa(ym, ap, _row_tau(p_temperature, aq), masked)
    return y, log_q, log_p


# ---- binary --------------------------------------------------------------------------------------
def logit_binary_concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """y = (a + L) / tau, the logistic form of BinConcrete (Eq. 26)."""
    s, o = resolve_seed(seed, offset, generator, logits.device)
    l = noise(
        logits.shape, "logistic", s, o, torch.float64, logits.device, draw_bits_of(logits.dtype)
    ).to(logits.dtype)
    return (logits + l) / _temperature(temperature, logits)


def binary_concrete_sample(
    logits: Tensor,
    temperature: Temperature,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """x = sigmoid((a + L) / tau) in (0, 1) (Eq. 16)."""
    return torch.sigmoid(
        logit_binary_concrete_sample(
            logits, temperature, seed=seed, offset=offset, generator=generator
        )
    )


def logit_binary_concrete_log_prob(
    value: Tensor, logits: Tensor, temperature: Temperature
) -> Tensor:
    """log tau - tau y + a - 2 softplus(a - tau y)."""
    t = _temperature(temperature, logits)
    return torch.log(t) - t * value + logits - 2 * torch.nn.functional.softplus(logits - t * value)


def binary_concrete_log_prob(value: Tensor, logits: Tensor, temperature: Temperature) -> Tensor:
    """Eq. 17, computed in logit space: log p(y = logit x) - log x - log(1 - x)."""
    lx, l1x = torch.log(value), torch.log1p(-value)
    return logit_binary_concrete_log_prob(lx - l1x, logits, temperature) - lx - l1x
