"""Building blocks of the row kernels (categorical ops): the per-program rows, the temperature,
and the perturbed logits z = (a + G) / tau of one [R, C] chunk with the noise of the contract.

A program owns R consecutive rows of the (rows, n) layout and walks their categories in chunks of
C (one chunk when C >= n). Element k of row r has the linear index i = r n + k, the index the
random-number contract numbers the noise by.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import common as cm


@triton.jit
def program_rows(rows, R: tl.constexpr):
    """(first row of the program (int64), its R row indices (int64), which of them exist)."""
    row0 = tl.program_id(0).to(tl.int64) * R
    r = row0 + tl.arange(0, R).to(tl.int64)
    return row0, r, r < rows


@triton.jit
def load_tau(tau_ptr, tau_period, r, row_ok, FP64: tl.constexpr):
    """tau of each row: tau_ptr[r % tau_period] (period 1: one value for every row; a temperature
    broadcast over leading sample dims holds its distinct values only)."""
    return cm.to_acc(tl.load(tau_ptr + r % tau_period, mask=row_ok, other=1.0), FP64)


@triton.jit
def chunk(r, row_ok, n, c0, C: tl.constexpr):
    """(element indices [R, C], in-bounds mask, category indices [C]) of the chunk starting at c0."""
    k = c0 + tl.arange(0, C)
    idx = r[:, None] * n + k[None, :]
    return idx, row_ok[:, None] & (k[None, :] < n), k


@triton.jit
def load_acc(ptr, idx, mask, other, FP64: tl.constexpr):
    """ptr[idx] in the math type, `other` outside the mask."""
    return cm.to_acc(tl.load(ptr + idx, mask=mask, other=other), FP64)


@triton.jit
def gumbel_chunk(
    seed,
    off_lo,
    off_hi,
    idx,
    row0,
    n,
    c0,
    R: tl.constexpr,
    C: tl.constexpr,
    RUN: tl.constexpr,
    FP64: tl.constexpr,
):
    """Gumbel noise G_i of the chunk's elements. RUN: the chunk's indices are one aligned run
    starting at row0 n + c0 (single-chunk tiles with C == n, n % 4 == 0; or one row per program
    with n % 4 == 0), so four elements share a Philox call."""
    bits = cm.draws_tile(seed, off_lo, off_hi, idx, row0 * n + c0, R, C, RUN, FP64)
    return cm.gumbel_from_bits(bits, FP64)


@triton.jit
def perturbed(
    a_ptr,
    seed,
    off_lo,
    off_hi,
    row0,
    r,
    ra,
    row_ok,
    inv_tau,
    n,
    c0,
    R: tl.constexpr,
    C: tl.constexpr,
    RUN: tl.constexpr,
    FP64: tl.constexpr,
):
    """z = (a + G) / tau of one chunk (-inf where a = -inf and outside the rows), its logits a,
    element indices and mask. ra: the rows of a that rows r read (r % its period)."""
    idx, m, k = chunk(r, row_ok, n, c0, C)
    ia, _, _ = chunk(ra, row_ok, n, c0, C)
    a = load_acc(a_ptr, ia, m, float("-inf"), FP64)
    g = gumbel_chunk(seed, off_lo, off_hi, idx, row0, n, c0, R, C, RUN, FP64)
    return (a + g) * inv_tau[:, None], a, idx, m


@triton.jit
def full_rows(value, R: tl.constexpr, FP64: tl.constexpr):
    """An [R] vector of `value` in the math type (the start of a running row reduction)."""
    return cm.to_acc(tl.full([R], value, tl.float32), FP64)
