"""Triton kernels of the index samplers: categorical_sample (Gumbel-max, one int64 per row) and
gumbel_top_k (the k largest perturbed logits per row, in decreasing order).

The scores are those of the reference (concrete_ext.reference._perturbed_scores): a / tau rounded to
the logits' dtype, then a + G in the math type, NaN counted as -inf; ties go to the lower index.
Launch as in exp_concrete.py (single-pass tiles for n <= CONFIG.max_tile_n, else one row per program
in chunks, the noise regenerated in each pass). Top-k runs k selection passes, each excluding the
indices already taken (its cost grows as k n: it is the fallback for GPUs without compiled
kernels).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm
from . import rows as rw

INF = tl.constexpr(float("inf"))


@triton.jit
def _scores(
    a_ptr,
    tau,
    seed,
    lo,
    hi,
    row0,
    r,
    ra,
    row_ok,
    n,
    c0,
    R: tl.constexpr,
    C: tl.constexpr,
    RUN: tl.constexpr,
    FP64: tl.constexpr,
    SCALE: tl.constexpr,
):
    """(scores [R, C], category indices [C]) of one chunk; -inf outside the rows and categories.
    ra: the rows of a that rows r read (r % its period)."""
    idx, m, k = rw.chunk(r, row_ok, n, c0, C)
    ia, _, _ = rw.chunk(ra, row_ok, n, c0, C)
    a = tl.load(a_ptr + ia, mask=m, other=-INF)
    if SCALE:  # a / tau in the math type, rounded to the logits' dtype (logits / temperature)
        a = (cm.to_acc(a, FP64) / tau[:, None]).to(a_ptr.dtype.element_ty)
    v = cm.to_acc(a, FP64) + rw.gumbel_chunk(seed, lo, hi, idx, row0, n, c0, R, C, RUN, FP64)
    v = tl.where(m & (v == v), v, -INF)
    return v, k


@triton.jit
def _best(v, k, n, taken_ptr, r, row_ok, j, K: tl.constexpr, EXCLUDE: tl.constexpr):
    """(max over the chunk, its lowest index) among the categories not taken yet: the first j
    picks of the row, stored at taken_ptr + r K + 0 .. j - 1 (EXCLUDE)."""
    ok = (k[None, :] < n) & row_ok[:, None]  # [R, C] from the start: the loop keeps its shape
    if EXCLUDE:
        for p in range(0, j):
            prev = tl.load(taken_ptr + r * K + p, mask=row_ok, other=-1)
            ok = ok & (k[None, :] != prev[:, None])
    v = tl.where(ok, v, -INF)
    best = tl.max(v, axis=1)
    first = tl.min(tl.where(ok & (v == best[:, None]), k[None, :], n), axis=1)
    return best, first


@triton.jit
def _select_kernel(
    a_ptr,
    out_ptr,
    tau_ptr,
    tau_period,
    state_ptr,
    rows,
    n,
    a_period,
    K: tl.constexpr,
    FP64: tl.constexpr,
    SCALE: tl.constexpr,
    TOPK: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    RUN: tl.constexpr,
):
    """For each row: the index of the largest score (categorical_sample: -1 when every score is
    -inf), or the indices of the K largest in decreasing order (TOPK)."""
    row0, r, row_ok = rw.program_rows(rows, R)
    ra = r % a_period
    seed, lo, hi = cm.load_state(state_ptr)
    tau = rw.load_tau(tau_ptr, tau_period, r, row_ok, FP64)
    for j in range(0, K):
        if ONE_CHUNK:
            v, k = _scores(
                a_ptr, tau, seed, lo, hi, row0, r, ra, row_ok, n, 0, R, C, RUN, FP64, SCALE
            )
            best, pick = _best(v, k, n, out_ptr, r, row_ok, j, K, TOPK)
        else:
            best = rw.full_rows(-INF, R, FP64)
            pick = tl.full([R], n, tl.int32)
            for c0 in range(0, n, C):
                v, k = _scores(
                    a_ptr, tau, seed, lo, hi, row0, r, ra, row_ok, n, c0, R, C, RUN, FP64, SCALE
                )
                cb, ci = _best(v, k, n, out_ptr, r, row_ok, j, K, TOPK)
                better = (cb > best) | ((cb == best) & (ci < pick))
                best = tl.where(better, cb, best)
                pick = tl.where(better, ci, pick)
        if not TOPK:
            pick = tl.where(best > -INF, pick, -1)
        tl.store(out_ptr + r * K + j, pick.to(tl.int64), mask=row_ok)


def _select(logits: Tensor, temperature, k: int, dim: int, rng_state: Tensor, topk: bool) -> Tensor:
    cm.check_floating(logits, "logits")
    d = cm.category_dim(logits, dim, "logits")
    bshape = cm.batch_shape(logits, d)
    fp64 = logits.dtype == torch.float64
    acc = cm.acc_dtype(logits.dtype)
    out = logits.new_empty(bshape + ([k] if topk else []), dtype=torch.int64)
    if temperature is None:
        tau, period, scale = torch.ones(1, dtype=acc, device=logits.device), 1, False
    else:
        tau, period = cm.prepare_temperature(temperature, bshape, logits.device, acc)
        scale = True
    x = cm.to_rows(logits, d, periodic=True)
    rows, n = cm.count_rows(logits, d), x.shape[1]
    if rows == 0:
        return out
    launch = cm.row_launch(rows, n, fp64)
    cm.launch(_select_kernel)[launch.grid](
        x,
        out,
        tau,
        period,
        rng_state,
        rows,
        n,
        x.shape[0],
        K=k if topk else 1,
        FP64=fp64,
        SCALE=scale,
        TOPK=topk,
        R=launch.R,
        C=launch.C,
        ONE_CHUNK=launch.one_chunk,
        RUN=launch.run,
        num_warps=launch.num_warps,
    )
    return out


def categorical_sample_op(
    logits: Tensor, temperature: Tensor, dim: int, rng_state: Tensor
) -> Tensor:
    return _select(logits, temperature, 1, dim, rng_state, False)


def gumbel_top_k_op(logits: Tensor, k: int, dim: int, rng_state: Tensor) -> Tensor:
    return _select(logits, None, k, dim, rng_state, True)


# The host functions, by op name, with the signature of torch.ops.concrete_ext_triton.<name>.
HOST = {
    "categorical_sample": categorical_sample_op,
    "gumbel_top_k": gumbel_top_k_op,
}
