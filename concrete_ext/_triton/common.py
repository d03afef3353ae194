"""Shared pieces of the Triton kernels: the random-number contract (Philox4x32-10 and the noise
transforms of csrc/include/concrete_ext/philox.h), scalar helpers, and the host-side preparation
(rows view, temperature, seed state, launch configuration).

Random numbers (docs/ARCHITECTURE.md, "Random numbers"). Element i of a call (seed, offset) takes word i % 4 of

    philox4x32_10(counter = (offset lo, offset hi, (i // 4) lo, (i // 4) hi), key = (seed lo, seed hi))

``tl.philox(seed, c0, c1, c2, c3)`` splits the 64-bit seed into exactly that key, so the draws equal
Random123's (checked against its known-answer vectors in tests/triton). The seed and offset are
read inside the kernel from an int64 tensor ``state = [seed, offset]`` on the device, so a CUDA graph
replays fresh noise and torch.compile does not bake a constant seed into the graph.

Noise from a 32-bit draw r, computed in T = float32 (fp32/fp16/bf16 ops) or float64 (fp64 ops):

    U = (r + 1/2) 2^-32                       for r < 2^31 (lower half)
    V = 1 - U = (2^32 - 1 - r + 1/2) 2^-32    for r >= 2^31 (exact; U itself would round to 1)
    E = -log U  (lower),  -log1p(-V) (upper)  ~ Exponential(1)
    G = -log E                                ~ Gumbel(0, 1)
    L = log U - log1p(-U) (lower),  -(log V - log1p(-V)) (upper)   ~ Logistic(0, 1)

with log1p(-v) by Goldberg's trick log(w) v / (w - 1), w = fl(1 - v), as philox.h writes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

NAMESPACE = "concrete_ext_triton"

# ---- Philox draws ---------------------------------------------------------------------------------


@triton.jit
def load_state(state_ptr):
    """(seed, offset lo, offset hi) of a call from its int64 state tensor [seed, offset]."""
    seed = tl.load(state_ptr)
    off = tl.load(state_ptr + 1)
    return seed, off.to(tl.uint32), (off >> 32).to(tl.uint32)


@triton.jit
def philox_group(seed, off_lo, off_hi, group):
    """The four 32-bit words of Philox group `group` (int64 tensor): philox(counter, key) with
    counter = (off_lo, off_hi, group lo, group hi) and key = (seed lo, seed hi)."""
    g_lo = group.to(tl.uint32)
    g_hi = (group >> 32).to(tl.uint32)
    zero = tl.zeros_like(g_lo)
    return tl.philox(seed, off_lo + zero, off_hi + zero, g_lo, g_hi)


@triton.jit
def draws_at(seed, off_lo, off_hi, idx, FP64: tl.constexpr):
    """Draw of each element index `idx` (int64 tensor, any shape): word idx % 4 of group idx // 4;
    FP64: the 64-bit draw, words 2 (idx % 2) (low) and 2 (idx % 2) + 1 (high) of group idx // 2.
    One Philox call per element; used where the indices of a tile are not one aligned run."""
    if FP64:
        c0, c1, c2, c3 = philox_group(seed, off_lo, off_hi, idx >> 1)
        odd = (idx & 1) == 1
        return join64(tl.where(odd, c2, c0), tl.where(odd, c3, c1))
    else:
        c0, c1, c2, c3 = philox_group(seed, off_lo, off_hi, idx >> 2)
        w = idx & 3
        return tl.where(w == 0, c0, tl.where(w == 1, c1, tl.where(w == 2, c2, c3)))


@triton.jit
def join64(lo, hi):
    """The 64-bit draw lo + 2^32 hi of two 32-bit words."""
    return lo.to(tl.uint64) | (hi.to(tl.uint64) << 32)


@triton.jit
def draws_run(seed, off_lo, off_hi, first, N: tl.constexpr, FP64: tl.constexpr):
    """Draws of the N consecutive elements first .. first + N - 1 (first % 4 == 0, N a power of two,
    at least 4): one Philox call per group of four (of two for FP64's 64-bit draws), the words
    interleaved in element order."""
    if FP64:
        g = (first >> 1) + tl.arange(0, N // 2).to(tl.int64)
        c0, c1, c2, c3 = philox_group(seed, off_lo, off_hi, g)
        return join64(tl.reshape(tl.join(c0, c2), [N]), tl.reshape(tl.join(c1, c3), [N]))
    else:
        g = (first >> 2) + tl.arange(0, N // 4).to(tl.int64)
        c0, c1, c2, c3 = philox_group(seed, off_lo, off_hi, g)
        return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [N])


@triton.jit
def draws_tile(
    seed,
    off_lo,
    off_hi,
    idx,
    first,
    R: tl.constexpr,
    C: tl.constexpr,
    RUN: tl.constexpr,
    FP64: tl.constexpr,
):
    """Draws of an [R, C] tile of element indices `idx`. RUN: the tile is the aligned run
    first, first + 1, ..., first + R C - 1 in row-major order (first % 4 == 0), so one Philox call
    serves four elements (two for FP64); otherwise each element computes its own group."""
    if RUN:
        return tl.reshape(draws_run(seed, off_lo, off_hi, first, R * C, FP64), [R, C])
    else:
        return draws_at(seed, off_lo, off_hi, idx, FP64)


# ---- draw -> noise (philox.h) ---------------------------------------------------------------------


@triton.jit
def to_acc(x, FP64: tl.constexpr):
    """x in the op's math type: float64 for fp64 ops, float32 otherwise."""
    if FP64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def lower_half(r, FP64: tl.constexpr):
    """Whether draw r is in the lower half (U < 1/2): r < 2^31, or r < 2^63 for 64-bit draws."""
    if FP64:
        return (r >> 63) == 0
    else:
        return r < 0x80000000


@triton.jit
def lower_uniform(r, FP64: tl.constexpr):
    """U = (r + 1/2) 2^-32 (used for r < 2^31); (r + 1/2) 2^-64 for 64-bit draws (r < 2^63)."""
    if FP64:
        return (r.to(tl.float64) + 0.5) * 5.421010862427522e-20
    else:
        return (r.to(tl.float32) + 0.5) * 2.3283064365386963e-10


@triton.jit
def upper_complement(r, FP64: tl.constexpr):
    """1 - U = (2^32 - 1 - r + 1/2) 2^-32 (used for r >= 2^31); the 2^64 analogue for 64-bit draws."""
    if FP64:
        return ((r ^ 0xFFFFFFFFFFFFFFFF).to(tl.float64) + 0.5) * 5.421010862427522e-20
    else:
        return ((r ^ 0xFFFFFFFF).to(tl.float32) + 0.5) * 2.3283064365386963e-10


@triton.jit
def log1m(v):
    """log(1 - v) for v in (0, 1/2] by Goldberg's trick: log(w) v / (1 - w), w = fl(1 - v)."""
    w = 1.0 - v
    return tl.where(w == 1.0, -v, tl.log(w) * (v / (1.0 - w)))


@triton.jit
def log1p(v):
    """log(1 + v) for v > -1 by Goldberg's trick: log(w) v / (w - 1), w = fl(1 + v)."""
    w = 1.0 + v
    d = w - 1.0
    return tl.where(d == 0.0, v, tl.log(w) * (v / d))


@triton.jit
def uniform_from_bits(r, FP64: tl.constexpr):
    """U strictly inside (0, 1): lower half (r + 1/2) 2^-32, upper half 1 - V; the values that
    round to 1 are clamped to 1 - 2^-24 (fp32) or 1 - 2^-53 (fp64, 64-bit draws)."""
    u = tl.where(lower_half(r, FP64), lower_uniform(r, FP64), 1.0 - upper_complement(r, FP64))
    if FP64:
        # A constant made in fp64 (tl.full), not a Python float that tl.minimum would take as fp32.
        u = tl.minimum(u, tl.full(u.shape, 0.99999999999999988898, tl.float64))
    else:
        u = tl.minimum(u, 0.999999940395355224609375)
    return u


@triton.jit
def exponential_from_bits(r, FP64: tl.constexpr):
    """E = -log U: lower half -log U, upper half -log1p(-V) = -log(s) V / (1 - s), s = fl(1 - V)."""
    lower = lower_half(r, FP64)
    v = upper_complement(r, FP64)
    s = tl.where(lower, lower_uniform(r, FP64), 1.0 - v)
    l = -tl.log(s)
    return tl.where(lower, l, tl.where(s == 1.0, v, l * (v / (1.0 - s))))


@triton.jit
def gumbel_from_bits(r, FP64: tl.constexpr):
    """G = -log(E) = -log(-log U) ~ Gumbel(0, 1)."""
    return -tl.log(exponential_from_bits(r, FP64))


@triton.jit
def logistic_from_bits(r, FP64: tl.constexpr):
    """L = log U - log(1 - U): with u = min(U, 1 - U), l = log u - log1m(u), L = l (lower), -l (upper)."""
    lower = lower_half(r, FP64)
    u = tl.where(lower, lower_uniform(r, FP64), upper_complement(r, FP64))
    l = tl.log(u) - log1m(u)
    return tl.where(lower, l, -l)


# ---- scalar helpers (math/softmax.h) --------------------------------------------------------------


@triton.jit
def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|)."""
    e = tl.exp(tl.where(x > 0.0, -x, x))
    return tl.where(x > 0.0, x, 0.0) + log1p(e)


@triton.jit
def sigmoid(x):
    """1 / (1 + e^-x), with e = e^-|x|: 1 / (1 + e) for x > 0, e / (1 + e) otherwise."""
    e = tl.exp(tl.where(x > 0.0, -x, x))
    r = 1.0 / (1.0 + e)
    return tl.where(x > 0.0, r, e * r)


@triton.jit
def log_factorial_minus_one(count, FP64: tl.constexpr):
    """log((count - 1)!) = lgamma(count) for an int32 tensor of counts >= 1 (0 gives +inf, so a row
    with no category gets NaN as in the reference): the exact sum of log k, k = 2 .. count - 1, for
    count <= 32, else Stirling's series with terms to 1/(1680 x^7) (error below 1e-17 relative)."""
    k = tl.arange(0, 32)
    logs = tl.log(to_acc(tl.maximum(k, 1), FP64))
    c = count[:, None]
    small = tl.sum(tl.where((k[None, :] >= 2) & (k[None, :] < c), logs[None, :], 0.0), axis=1)
    x = to_acc(tl.maximum(count, 1), FP64)
    ix = 1.0 / x
    ix2 = ix * ix
    series = ix * (1.0 / 12.0 - ix2 * (1.0 / 360.0 - ix2 * (1.0 / 1260.0 - ix2 * (1.0 / 1680.0))))
    stirling = (x - 0.5) * tl.log(x) - x + 0.91893853320467274178 + series
    out = tl.where(count <= 32, small, stirling)
    return tl.where(count == 0, float("inf"), out)


@triton.jit
def safe_max(m):
    """The running maximum with -inf replaced by 0, so that exp(v - m) is 0 (not NaN) for v = -inf."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def lse_update(m, s, v):
    """One step of an online log-sum-exp over axis 1: the state (m, s) = (max, sum e^(v - max)) of
    the rows seen so far combined with the [R, C] chunk v; -inf entries contribute nothing."""
    m_new = tl.maximum(m, tl.max(v, axis=1))
    ms = safe_max(m_new)
    kept = tl.where(m > float("-inf"), s * tl.exp(m - ms), 0.0)
    return m_new, kept + tl.sum(tl.exp(v - ms[:, None]), axis=1)


# ---- host side ------------------------------------------------------------------------------------
def is_interpreted(kernel) -> bool:
    """Whether `kernel` was defined under TRITON_INTERPRET=1 (an InterpretedFunction)."""
    return type(kernel).__name__ == "InterpretedFunction"


def wrap_triton(kernel):
    """The launcher of a compiled kernel: the kernel itself. The ops are opaque to torch.compile
    (their fake kernels come from the op table), so kernels are only launched on real tensors;
    benchmarks/triton_compile_check.py replaces this to compile every variant without a GPU."""
    return kernel


def launch(kernel):
    """kernel, to launch as kernel[grid](...) (an interpreted kernel directly)."""
    return kernel if is_interpreted(kernel) else wrap_triton(kernel)


@dataclasses.dataclass
class LaunchConfig:
    """Launch parameters shared by the launchers. Row ops whose rows fit one tile of at most
    `max_tile_n` categories run single-pass, `tile_elems` elements (many rows) per program; longer
    rows run one row per program in chunks of `chunk` categories, the noise regenerated in each pass.
    Elementwise ops take `block` elements per program."""

    tile_elems: int = 4096
    max_tile_n: int = 8192
    chunk: int = 2048
    block: int = 1024


CONFIG = LaunchConfig()


@contextlib.contextmanager
def launch_config(**overrides):
    """Temporarily change the launch configuration (tests use it to force the looped path)."""
    global CONFIG
    saved = CONFIG
    CONFIG = dataclasses.replace(saved, **overrides)
    try:
        yield CONFIG
    finally:
        CONFIG = saved


@dataclasses.dataclass(frozen=True)
class RowLaunch:
    """How a row op is launched: R rows x C categories per program, single-pass or looped."""

    grid: Tuple[int]
    R: int
    C: int
    one_chunk: bool
    run: bool  # the noise of a tile (or chunk) is one aligned run of elements
    num_warps: int


def row_launch(rows: int, n: int, fp64: bool = False) -> RowLaunch:
    cfg = CONFIG
    cn = triton.next_power_of_2(n)
    if cn <= cfg.max_tile_n:
        elems = cfg.tile_elems // (2 if fp64 else 1)
        r = max(1, min(triton.next_power_of_2(rows), elems // cn))
        warps = min(16, max(1, (r * cn) // 512))
        return RowLaunch((triton.cdiv(rows, r),), r, cn, True, n % 4 == 0 and cn == n, warps)
    c = min(cfg.chunk, cn)
    return RowLaunch((rows,), 1, c, False, n % 4 == 0 and c % 4 == 0, 8 if c >= 1024 else 4)


def elem_launch(numel: int) -> Tuple[Tuple[int], int, int]:
    """(grid, BLOCK, num_warps) of an elementwise op; BLOCK is a multiple of 4 (aligned noise runs)."""
    block = max(4, min(CONFIG.block, triton.next_power_of_2(max(numel, 1))))
    return (triton.cdiv(numel, block),), block, max(1, min(8, block // 256))


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_floating(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float32, float64, float16 or "
            f"bfloat16), got {t.dtype}"
        )


def check_same(t: Tensor, ref: Tensor, name: str, ref_name: str, shape: bool = True) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}")
    if shape and t.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} but {ref_name} has shape {tuple(ref.shape)}"
        )


def category_dim(t: Tensor, dim: int, name: str) -> int:
    if t.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension (the categories)")
    if not -t.dim() <= dim < t.dim():
        raise IndexError(f"dim {dim} is out of range for {name} with {t.dim()} dimensions")
    d = dim % t.dim()
    if t.shape[d] < 1:
        raise ValueError(f"{name} has no categories: size 0 along dim {dim}")
    return d


def batch_shape(t: Tensor, d: int) -> list:
    return [s for i, s in enumerate(t.shape) if i != d]


def drop_broadcast_dims(t: Tensor, max_dims: int) -> Tensor:
    """t without its leading broadcast dims: t[0, ..., 0] over the longest prefix of at most
    `max_dims` dims that have stride 0 (or size 1); a view (the compiled host code's twin)."""
    k = 0
    while k < max_dims and (t.stride(k) == 0 or t.shape[k] == 1):
        k += 1
    return t if k == 0 else t.as_strided(t.shape[k:], t.stride()[k:], t.storage_offset())


def to_rows(t: Tensor, d: int, periodic: bool = False) -> Tensor:
    """t as a contiguous (rows, n) tensor with the category dim last. With `periodic`, leading
    dims broadcast with stride 0 are not copied out: the result holds the distinct rows only, P of
    them, and the kernel reads row r at row r % P (P = its shape[0], passed as the input's period)."""
    n = t.shape[d]
    moved = t.movedim(d, -1)
    if periodic and t.numel() > 0:
        moved = drop_broadcast_dims(moved, moved.dim() - 1)
    return moved.contiguous().view(-1, n)


def to_elems(t: Tensor, periodic: bool = False) -> Tensor:
    """t flat and contiguous; with `periodic`, only its distinct elements (read at i % numel)."""
    if periodic and t.numel() > 0 and not t.is_contiguous():
        t = drop_broadcast_dims(t, t.dim())
    return t.contiguous().view(-1)


def count_rows(t: Tensor, d: int) -> int:
    """The number of rows of t's (rows, n) layout."""
    return t.numel() // t.shape[d] if t.shape[d] else 0


def rows_of(out: Tensor, d: int) -> Tensor:
    """The (rows, n) view of an output allocated with _layout.empty_rows_like(., d)."""
    return out.movedim(d, -1).view(-1, out.shape[d])


def prepare_temperature(
    temperature: Tensor,
    shape: Sequence[int],
    device: torch.device,
    acc: torch.dtype,
    name: str = "temperature",
) -> Tuple[Tensor, int]:
    """(values, period): the temperature as the kernels read it, tau(i) = values[i % period], in
    the op's math type on the op's device: one value (period 1) or one per row / element, where
    the leading dims of `shape` it broadcasts over are not copied out (period = its distinct
    values; the number of rows / elements when it has one value for each).

    A single value on the CPU (a host scalar) is allowed with device tensors; in eager mode it is
    written on the device with torch.full (no copy, no sync, capturable in a CUDA graph)."""
    check_floating(temperature, name)
    if temperature.numel() == 1 and temperature.device.type == "cpu" and device.type != "cpu":
        return torch.full((1,), temperature.item(), dtype=acc, device=device), 1
    if temperature.device != device:
        raise ValueError(
            f"{name} is on {temperature.device} but the op's tensors are on {device} "
            "(a temperature on another device must be a single value on the CPU)"
        )
    try:
        ok = torch.broadcast_shapes(temperature.shape, tuple(shape)) == torch.Size(shape)
    except RuntimeError:
        ok = False
    if not ok and temperature.numel() != 1:
        raise ValueError(
            f"{name} of shape {tuple(temperature.shape)} does not broadcast to the "
            f"batch shape {tuple(shape)}"
        )
    if temperature.numel() == 1:
        return temperature.to(acc).reshape(1), 1
    expanded = temperature.expand(tuple(shape))
    values = drop_broadcast_dims(expanded, expanded.dim()).to(acc).contiguous().view(-1)
    return values, values.numel()


def rng_state(
    seed: Optional[int], offset: int, generator: Optional[torch.Generator], device: torch.device
) -> Tensor:
    """The int64 state [seed, offset] of a call, on `device`.

    With an explicit seed it holds (seed, offset). Otherwise the seed is drawn from `generator`
    (default: the default generator of `device`) exactly as reference.resolve_seed draws it, but
    kept on the device: no host sync, fresh values on every CUDA-graph replay, and a graph node
    (not a constant) under torch.compile."""
    if seed is None:
        gdev = generator.device if generator is not None else device
        s = torch.randint(
            -(2**63), 2**63 - 1, (1,), generator=generator, dtype=torch.int64, device=gdev
        )
        if torch.device(gdev).type == "cpu":
            # As reference.resolve_seed: + 2**63 (mod 2**64, i.e. flip the top bit) gives the seed
            # the CPU kernels draw from the same generator state.
            s = torch.bitwise_xor(s, torch.tensor(-(2**63), dtype=torch.int64))
        return torch.cat([s.to(device), torch.zeros(1, dtype=torch.int64, device=device)])
    state = torch.empty(2, dtype=torch.int64, device=device)
    state[0] = seed
    state[1] = offset
    return state


def dummy(device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """A placeholder pointer argument for an output the kernel does not write (constexpr-off)."""
    return torch.empty(1, dtype=dtype, device=device)
