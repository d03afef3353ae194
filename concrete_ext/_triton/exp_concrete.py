"""Triton kernels of the categorical sampling ops (formulas: csrc/include/concrete_ext/math/
exp_concrete.h and gumbel_max.h): Concrete / ExpConcrete samples and their backward, the
straight-through Gumbel-softmax (forward one-hot, backward recomputing the soft sample from the
saved [seed, offset]) and Gumbel-max.

Launch (common.row_launch): rows of up to CONFIG.max_tile_n categories are processed single-pass,
R rows x C = next_pow2(n) categories per program (R = tile_elems / C, many rows per program for
small n); longer rows one row per program in chunks of C, the row statistics in a first pass
(online log-sum-exp) and the noise regenerated from (seed, offset) in the later passes.
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _layout
from . import common as cm
from . import rows as rw

INF = tl.constexpr(float("inf"))


# ---- kernels --------------------------------------------------------------------------------------
@triton.jit
def _sample_kernel(
    a_ptr,
    out_ptr,
    tau_ptr,
    tau_period,
    state_ptr,
    rows,
    n,
    a_period,
    LOG_SPACE: tl.constexpr,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    RUN: tl.constexpr,
):
    """Concrete / ExpConcrete sample of each row: z_k = (a_k + G_k) / tau,
    y_k = z_k - LSE(z) (LOG_SPACE) or x_k = softmax(z)_k = exp(z_k - max z) / sum_j exp(z_j - max z).
    Masked categories (a = -inf) give y = -inf, x = 0; a row of all -inf gives NaN."""
    row0, r, row_ok = rw.program_rows(rows, R)
    ra = r % a_period
    inv = 1.0 / rw.load_tau(tau_ptr, tau_period, r, row_ok, FP64)
    seed, lo, hi = cm.load_state(state_ptr)
    out_ty = out_ptr.dtype.element_ty
    if ONE_CHUNK:
        z, a, idx, m = rw.perturbed(
            a_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, 0, R, C, RUN, FP64
        )
        zs = z - tl.max(z, axis=1)[:, None]
        e = tl.exp(zs)
        s = tl.sum(e, axis=1)
        if LOG_SPACE:
            y = zs - tl.log(s)[:, None]
        else:
            y = e / s[:, None]
        tl.store(out_ptr + idx, y.to(out_ty), mask=m)
    else:
        mx = rw.full_rows(-INF, R, FP64)
        s = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            z, a, idx, m = rw.perturbed(
                a_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, c0, R, C, RUN, FP64
            )
            mx, s = cm.lse_update(mx, s, z)
        ls = tl.log(s)
        for c0 in range(0, n, C):
            z, a, idx, m = rw.perturbed(
                a_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, c0, R, C, RUN, FP64
            )
            zs = z - mx[:, None]
            if LOG_SPACE:
                y = zs - ls[:, None]
            else:
                y = tl.exp(zs) / s[:, None]
            tl.store(out_ptr + idx, y.to(out_ty), mask=m)


@triton.jit
def _dz_term(g, v, row_sum, LOG_SPACE: tl.constexpr):
    """(dz_k, the k-th term of sum_k dz_k log x_k) from the upstream gradient g, the saved sample v
    (y or x) and the row sum (sum of unmasked dy, or sum_j x_j dx_j):
      log space: dz = dy - x sum_j dy_j (0 where y = -inf), term dz y;
      simplex:   dz = x (dx - sum_j x_j dx_j), term dz log x (0 where x = 0)."""
    if LOG_SPACE:
        live = v > -INF
        dz = tl.where(live, g - tl.exp(v) * row_sum[:, None], 0.0)
        return dz, tl.where(live, dz * v, 0.0)
    else:
        dz = v * (g - row_sum[:, None])
        return dz, tl.where(v > 0.0, dz * tl.log(v), 0.0)


@triton.jit
def _row_sum_term(g, v, LOG_SPACE: tl.constexpr):
    """Per-element term of the row sum _dz_term needs: dy (unmasked) or x dx."""
    if LOG_SPACE:
        return tl.where(v > -INF, g, 0.0)
    else:
        return v * g


@triton.jit
def _sample_backward_kernel(
    g_ptr,
    s_ptr,
    da_ptr,
    gt_ptr,
    tau_ptr,
    tau_period,
    rows,
    n,
    LOG_SPACE: tl.constexpr,
    WANT_T: tl.constexpr,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
):
    """Backward of the samples from the saved sample only (sum_k dz_k = 0, so z may be replaced by
    y): d a_k = dz_k / tau and d tau = -(1/tau) sum_k dz_k y_k (dz from _dz_term)."""
    row0, r, row_ok = rw.program_rows(rows, R)
    inv = 1.0 / rw.load_tau(tau_ptr, tau_period, r, row_ok, FP64)
    if LOG_SPACE:
        pad = -INF
    else:
        pad = 0.0
    da_ty = da_ptr.dtype.element_ty
    if ONE_CHUNK:
        idx, m, k = rw.chunk(r, row_ok, n, 0, C)
        v = rw.load_acc(s_ptr, idx, m, pad, FP64)
        g = rw.load_acc(g_ptr, idx, m, 0.0, FP64)
        row_sum = tl.sum(_row_sum_term(g, v, LOG_SPACE), axis=1)
        dz, term = _dz_term(g, v, row_sum, LOG_SPACE)
        tl.store(da_ptr + idx, (dz * inv[:, None]).to(da_ty), mask=m)
        acc = tl.sum(term, axis=1)
    else:
        row_sum = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            idx, m, k = rw.chunk(r, row_ok, n, c0, C)
            v = rw.load_acc(s_ptr, idx, m, pad, FP64)
            g = rw.load_acc(g_ptr, idx, m, 0.0, FP64)
            row_sum += tl.sum(_row_sum_term(g, v, LOG_SPACE), axis=1)
        acc = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            idx, m, k = rw.chunk(r, row_ok, n, c0, C)
            v = rw.load_acc(s_ptr, idx, m, pad, FP64)
            g = rw.load_acc(g_ptr, idx, m, 0.0, FP64)
            dz, term = _dz_term(g, v, row_sum, LOG_SPACE)
            tl.store(da_ptr + idx, (dz * inv[:, None]).to(da_ty), mask=m)
            acc += tl.sum(term, axis=1)
    if WANT_T:
        tl.store(gt_ptr + r, -inv * acc, mask=row_ok)


@triton.jit
def _argmax_chunk(
    a_ptr,
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
):
    """(max_k (a_k + G_k), its lowest index) over one chunk; NaN never wins (counted as -inf), and
    a chunk of all -inf gives (-inf, its first index). ra: the rows of a that rows r read."""
    idx, m, k = rw.chunk(r, row_ok, n, c0, C)
    ia, _, _ = rw.chunk(ra, row_ok, n, c0, C)
    a = rw.load_acc(a_ptr, ia, m, -INF, FP64)
    v = a + rw.gumbel_chunk(seed, lo, hi, idx, row0, n, c0, R, C, RUN, FP64)
    v = tl.where(v == v, v, -INF)
    best = tl.max(v, axis=1)
    first = tl.min(tl.where(v == best[:, None], k[None, :], n), axis=1)
    return best, first


@triton.jit
def _argmax_kernel(
    a_ptr,
    out_ptr,
    state_ptr,
    rows,
    n,
    a_period,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    RUN: tl.constexpr,
):
    """One-hot of argmax_k (a_k + G_k) per row (Gumbel-max, paper Prop. 1c), ties to the lowest
    index, NaN never wins; a row where no category beats -inf (all logits -inf) has no
    distribution and samples NaN, as the Concrete samples do (and the CPU and CUDA kernels)."""
    row0, r, row_ok = rw.program_rows(rows, R)
    ra = r % a_period
    seed, lo, hi = cm.load_state(state_ptr)
    if ONE_CHUNK:
        best, pick = _argmax_chunk(a_ptr, seed, lo, hi, row0, r, ra, row_ok, n, 0, R, C, RUN, FP64)
    else:
        best = rw.full_rows(-INF, R, FP64)
        pick = tl.zeros([R], tl.int32)
        for c0 in range(0, n, C):
            cb, ci = _argmax_chunk(a_ptr, seed, lo, hi, row0, r, ra, row_ok, n, c0, R, C, RUN, FP64)
            better = cb > best
            best = tl.where(better, cb, best)
            pick = tl.where(better, ci, pick)
    live = best > -INF
    out_ty = out_ptr.dtype.element_ty
    for c0 in range(0, n, C):
        idx, m, k = rw.chunk(r, row_ok, n, c0, C)
        one_hot = (k[None, :] == pick[:, None]).to(tl.float32)
        val = tl.where(live[:, None], one_hot, float("nan"))
        tl.store(out_ptr + idx, val.to(out_ty), mask=m)


@triton.jit
def _hard_backward_kernel(
    g_ptr,
    a_ptr,
    da_ptr,
    gt_ptr,
    tau_ptr,
    tau_period,
    state_ptr,
    rows,
    n,
    a_period,
    WANT_T: tl.constexpr,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    RUN: tl.constexpr,
):
    """Straight-through backward: the gradient of the soft sample x = softmax((a + G) / tau),
    recomputed from the saved (seed, offset): dz_k = x_k (g_k - sum_j x_j g_j), d a_k = dz_k / tau,
    d tau = -(1/tau) sum_k dz_k (z_k - max z) over x_k > 0."""
    row0, r, row_ok = rw.program_rows(rows, R)
    ra = r % a_period
    inv = 1.0 / rw.load_tau(tau_ptr, tau_period, r, row_ok, FP64)
    seed, lo, hi = cm.load_state(state_ptr)
    da_ty = da_ptr.dtype.element_ty
    if ONE_CHUNK:
        z, a, idx, m = rw.perturbed(
            a_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, 0, R, C, RUN, FP64
        )
        zs = z - tl.max(z, axis=1)[:, None]
        e = tl.exp(zs)
        x = e / tl.sum(e, axis=1)[:, None]
        g = rw.load_acc(g_ptr, idx, m, 0.0, FP64)
        sxg = tl.sum(x * g, axis=1)
        dz = x * (g - sxg[:, None])
        tl.store(da_ptr + idx, (dz * inv[:, None]).to(da_ty), mask=m)
        acc = tl.sum(tl.where(x > 0.0, dz * zs, 0.0), axis=1)
    else:
        mx = rw.full_rows(-INF, R, FP64)
        s = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            z, a, idx, m = rw.perturbed(
                a_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, c0, R, C, RUN, FP64
            )
            mx, s = cm.lse_update(mx, s, z)
        sxg = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            z, a, idx, m = rw.perturbed(
                a_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, c0, R, C, RUN, FP64
            )
            x = tl.exp(z - mx[:, None]) / s[:, None]
            sxg += tl.sum(x * rw.load_acc(g_ptr, idx, m, 0.0, FP64), axis=1)
        acc = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            z, a, idx, m = rw.perturbed(
                a_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, c0, R, C, RUN, FP64
            )
            zs = z - mx[:, None]
            x = tl.exp(zs) / s[:, None]
            dz = x * (rw.load_acc(g_ptr, idx, m, 0.0, FP64) - sxg[:, None])
            tl.store(da_ptr + idx, (dz * inv[:, None]).to(da_ty), mask=m)
            acc += tl.sum(tl.where(x > 0.0, dz * zs, 0.0), axis=1)
    if WANT_T:
        tl.store(gt_ptr + r, -inv * acc, mask=row_ok)


# ---- launchers ------------------------------------------------------------------------------------
def _launch_kw(launch: cm.RowLaunch, fp64: bool, run: bool = True) -> dict:
    kw = dict(
        FP64=fp64, R=launch.R, C=launch.C, ONE_CHUNK=launch.one_chunk, num_warps=launch.num_warps
    )
    if run:
        kw["RUN"] = launch.run
    return kw


def _sample(
    logits: Tensor, temperature: Tensor, dim: int, rng_state: Tensor, log_space: bool
) -> Tensor:
    cm.check_floating(logits, "logits")
    d = cm.category_dim(logits, dim, "logits")
    acc = cm.acc_dtype(logits.dtype)
    tau, period = cm.prepare_temperature(temperature, cm.batch_shape(logits, d), logits.device, acc)
    out = _layout.empty_rows_like(logits, d)
    x = cm.to_rows(logits, d, periodic=True)
    rows, n = cm.count_rows(logits, d), x.shape[1]
    if rows == 0:
        return out
    launch = cm.row_launch(rows, n, acc == torch.float64)
    cm.launch(_sample_kernel)[launch.grid](
        x,
        cm.rows_of(out, d),
        tau,
        period,
        rng_state,
        rows,
        n,
        x.shape[0],
        LOG_SPACE=log_space,
        **_launch_kw(launch, acc == torch.float64),
    )
    return out


def _sample_backward(
    grad: Tensor,
    sample: Tensor,
    temperature: Tensor,
    dim: int,
    temperature_grad: bool,
    log_space: bool,
) -> Tuple[Tensor, Tensor]:
    d = cm.category_dim(sample, dim, "sample")
    cm.check_same(grad, sample, "grad", "sample")
    acc = cm.acc_dtype(sample.dtype)
    bshape = cm.batch_shape(sample, d)
    tau, period = cm.prepare_temperature(temperature, bshape, sample.device, acc)
    grad_logits = _layout.empty_rows_like(sample, d)
    grad_tau = sample.new_empty(bshape if temperature_grad else [0], dtype=acc)
    s = cm.to_rows(sample, d)
    rows, n = s.shape
    if rows == 0:
        return grad_logits, grad_tau.zero_()
    launch = cm.row_launch(rows, n, acc == torch.float64)
    cm.launch(_sample_backward_kernel)[launch.grid](
        cm.to_rows(grad, d),
        s,
        cm.rows_of(grad_logits, d),
        grad_tau if temperature_grad else cm.dummy(sample.device, acc),
        tau,
        period,
        rows,
        n,
        LOG_SPACE=log_space,
        WANT_T=temperature_grad,
        **_launch_kw(launch, acc == torch.float64, run=False),
    )
    return grad_logits, grad_tau


def _argmax(logits: Tensor, d: int, rng_state: Tensor) -> Tensor:
    out = _layout.empty_rows_like(logits, d)
    x = cm.to_rows(logits, d, periodic=True)
    rows, n = cm.count_rows(logits, d), x.shape[1]
    if rows == 0:
        return out
    fp64 = logits.dtype == torch.float64
    launch = cm.row_launch(rows, n, fp64)
    cm.launch(_argmax_kernel)[launch.grid](
        x, cm.rows_of(out, d), rng_state, rows, n, x.shape[0], **_launch_kw(launch, fp64)
    )
    return out


# ---- ops ------------------------------------------------------------------------------------------
def exp_concrete_sample_op(
    logits: Tensor, temperature: Tensor, dim: int, rng_state: Tensor
) -> Tensor:
    return _sample(logits, temperature, dim, rng_state, True)


def concrete_sample_op(logits: Tensor, temperature: Tensor, dim: int, rng_state: Tensor) -> Tensor:
    return _sample(logits, temperature, dim, rng_state, False)


def exp_concrete_sample_backward_op(
    grad: Tensor, sample: Tensor, temperature: Tensor, dim: int, temperature_grad: bool
) -> Tuple[Tensor, Tensor]:
    return _sample_backward(grad, sample, temperature, dim, temperature_grad, True)


def concrete_sample_backward_op(
    grad: Tensor, sample: Tensor, temperature: Tensor, dim: int, temperature_grad: bool
) -> Tuple[Tensor, Tensor]:
    return _sample_backward(grad, sample, temperature, dim, temperature_grad, False)


def gumbel_softmax_hard_op(
    logits: Tensor, temperature: Tensor, dim: int, rng_state: Tensor
) -> Tuple[Tensor, Tensor]:
    """(one-hot of argmax_k (logits_k + G_k), a copy of rng_state: what the backward recomputes G
    from)."""
    cm.check_floating(logits, "logits")
    d = cm.category_dim(logits, dim, "logits")
    # Validated here although the forward value does not depend on it, so that a bad temperature
    # fails at the call, not in backward.
    cm.prepare_temperature(
        temperature, cm.batch_shape(logits, d), logits.device, cm.acc_dtype(logits.dtype)
    )
    return _argmax(logits, d, rng_state), rng_state.clone()


def gumbel_softmax_hard_backward_op(
    grad: Tensor,
    logits: Tensor,
    temperature: Tensor,
    rng_state: Tensor,
    dim: int,
    temperature_grad: bool,
) -> Tuple[Tensor, Tensor]:
    d = cm.category_dim(logits, dim, "logits")
    cm.check_same(grad, logits, "grad", "logits")
    if (
        rng_state.numel() != 2
        or rng_state.dtype != torch.int64
        or rng_state.device != logits.device
    ):
        raise ValueError("rng_state must be the int64 [seed, offset] tensor the forward returned")
    acc = cm.acc_dtype(logits.dtype)
    bshape = cm.batch_shape(logits, d)
    tau, period = cm.prepare_temperature(temperature, bshape, logits.device, acc)
    grad_logits = _layout.empty_rows_like(logits, d)
    grad_tau = logits.new_empty(bshape if temperature_grad else [0], dtype=acc)
    x = cm.to_rows(logits, d, periodic=True)
    rows, n = cm.count_rows(logits, d), x.shape[1]
    if rows == 0:
        return grad_logits, grad_tau.zero_()
    launch = cm.row_launch(rows, n, acc == torch.float64)
    cm.launch(_hard_backward_kernel)[launch.grid](
        cm.to_rows(grad, d),
        x,
        cm.rows_of(grad_logits, d),
        grad_tau if temperature_grad else cm.dummy(logits.device, acc),
        tau,
        period,
        rng_state,
        rows,
        n,
        x.shape[0],
        WANT_T=temperature_grad,
        **_launch_kw(launch, acc == torch.float64),
    )
    return grad_logits, grad_tau


def gumbel_max_sample_op(logits: Tensor, dim: int, rng_state: Tensor) -> Tensor:
    cm.check_floating(logits, "logits")
    return _argmax(logits, cm.category_dim(logits, dim, "logits"), rng_state)


# The host functions, by op name, with the signature of torch.ops.concrete_ext_triton.<name>.
HOST = {
    "exp_concrete_sample": exp_concrete_sample_op,
    "concrete_sample": concrete_sample_op,
    "exp_concrete_sample_backward": exp_concrete_sample_backward_op,
    "concrete_sample_backward": concrete_sample_backward_op,
    "gumbel_softmax_hard": gumbel_softmax_hard_op,
    "gumbel_softmax_hard_backward": gumbel_softmax_hard_backward_op,
    "gumbel_max_sample": gumbel_max_sample_op,
}
