"""Triton kernels of the categorical log-densities and their backward (formulas:
csrc/include/concrete_ext/math/exp_concrete.h; paper Appendix C.3).

With w_k = a_k - tau y_k over the n unmasked categories (a_k > -inf) and s = softmax(w):
    log kappa(y) = log((n-1)!) + (n-1) log tau + sum_k w_k - n LSE(w)
    d/da_k = 1 - n s_k,  d/dy_k = -tau (1 - n s_k),  d/dtau = (n-1)/tau - sum_k y_k (1 - n s_k)
On the simplex, log p(x) = log kappa(log x) - sum_k log x_k and d/dx_k = (d/dy_k - 1) / x_k.

Launch as in exp_concrete.py: single-pass tiles of many rows for n <= CONFIG.max_tile_n, else one
row per program in chunks (a first pass for LSE(w), later passes for the sums and the outputs).
"""

from __future__ import annotations

from typing import List, Tuple

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
def _w_chunk(v_ptr, a_ptr, iv, ia, m, tau, LOG_SPACE: tl.constexpr, FP64: tl.constexpr):
    """(w = a - tau y with -inf where masked, y, masked) of one chunk; y = v (LOG_SPACE) or log v.
    iv, ia: the chunk's element indices in v and a (rows r % their period)."""
    a = rw.load_acc(a_ptr, ia, m, -INF, FP64)
    masked = a == -INF
    if LOG_SPACE:
        y = rw.load_acc(v_ptr, iv, m, 0.0, FP64)
    else:
        y = tl.log(tl.where(masked, 1.0, rw.load_acc(v_ptr, iv, m, 1.0, FP64)))
    w = tl.where(masked, -INF, a - tau[:, None] * y)
    return w, y, masked


@triton.jit
def _log_kappa(count, tau, sum_w, lse, FP64: tl.constexpr):
    """log((n-1)!) + (n-1) log tau + sum_w - n LSE(w)."""
    nf = cm.to_acc(count, FP64)
    return cm.log_factorial_minus_one(count, FP64) + (nf - 1.0) * tl.log(tau) + sum_w - nf * lse


@triton.jit
def _log_prob_kernel(
    v_ptr,
    a_ptr,
    out_ptr,
    tau_ptr,
    tau_period,
    rows,
    n,
    v_period,
    a_period,
    LOG_SPACE: tl.constexpr,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
):
    """out[r] = log kappa(y_r) (LOG_SPACE) or log kappa(log x_r) - sum_k log x_rk, over the row's
    unmasked categories; a row with none gives NaN."""
    row0, r, row_ok = rw.program_rows(rows, R)
    rv = r % v_period
    ra = r % a_period
    tau = rw.load_tau(tau_ptr, tau_period, r, row_ok, FP64)
    if ONE_CHUNK:
        idx, m, k = rw.chunk(r, row_ok, n, 0, C)
        iv, _, _ = rw.chunk(rv, row_ok, n, 0, C)
        ia, _, _ = rw.chunk(ra, row_ok, n, 0, C)
        w, y, masked = _w_chunk(v_ptr, a_ptr, iv, ia, m, tau, LOG_SPACE, FP64)
        mx = tl.max(w, axis=1)
        lse = mx + tl.log(tl.sum(tl.exp(w - mx[:, None]), axis=1))
        count = tl.sum(tl.where(masked, 0, 1), axis=1)
        sum_w = tl.sum(tl.where(masked, 0.0, w), axis=1)
        sum_y = tl.sum(tl.where(masked, 0.0, y), axis=1)
    else:
        mx = rw.full_rows(-INF, R, FP64)
        s = rw.full_rows(0.0, R, FP64)
        sum_w = rw.full_rows(0.0, R, FP64)
        sum_y = rw.full_rows(0.0, R, FP64)
        count = tl.zeros([R], tl.int32)
        for c0 in range(0, n, C):
            idx, m, k = rw.chunk(r, row_ok, n, c0, C)
            iv, _, _ = rw.chunk(rv, row_ok, n, c0, C)
            ia, _, _ = rw.chunk(ra, row_ok, n, c0, C)
            w, y, masked = _w_chunk(v_ptr, a_ptr, iv, ia, m, tau, LOG_SPACE, FP64)
            mx, s = cm.lse_update(mx, s, w)
            count += tl.sum(tl.where(masked, 0, 1), axis=1)
            sum_w += tl.sum(tl.where(masked, 0.0, w), axis=1)
            sum_y += tl.sum(tl.where(masked, 0.0, y), axis=1)
        lse = mx + tl.log(s)
    lp = _log_kappa(count, tau, sum_w, lse, FP64)
    if not LOG_SPACE:
        lp = lp - sum_y
    tl.store(out_ptr + r, lp.to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _log_prob_grads(
    gr, tau, w, v_ptr, idx, m, masked, count, lse, LOG_SPACE: tl.constexpr, FP64: tl.constexpr
):
    """(c = 1 - n s_k (0 where masked), d value, d logits) of one chunk, gr the upstream gradient."""
    c = tl.where(masked, 0.0, 1.0 - cm.to_acc(count, FP64)[:, None] * tl.exp(w - lse[:, None]))
    dy = -gr[:, None] * tau[:, None] * c
    if LOG_SPACE:
        dv = dy
    else:
        x = rw.load_acc(v_ptr, idx, m, 1.0, FP64)
        dv = tl.where(masked, 0.0, (dy - gr[:, None]) / x)
    return c, dv, gr[:, None] * c


@triton.jit
def _log_prob_backward_kernel(
    g_ptr,
    v_ptr,
    a_ptr,
    gv_ptr,
    ga_ptr,
    gt_ptr,
    tau_ptr,
    tau_period,
    rows,
    n,
    v_period,
    a_period,
    LOG_SPACE: tl.constexpr,
    WANT_V: tl.constexpr,
    WANT_A: tl.constexpr,
    WANT_T: tl.constexpr,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
):
    """Gradients of the log-densities (module docstring), scaled by the upstream grad[r]."""
    row0, r, row_ok = rw.program_rows(rows, R)
    rv = r % v_period
    ra = r % a_period
    tau = rw.load_tau(tau_ptr, tau_period, r, row_ok, FP64)
    gr = cm.to_acc(tl.load(g_ptr + r, mask=row_ok, other=0.0), FP64)
    if ONE_CHUNK:
        idx, m, k = rw.chunk(r, row_ok, n, 0, C)
        iv, _, _ = rw.chunk(rv, row_ok, n, 0, C)
        ia, _, _ = rw.chunk(ra, row_ok, n, 0, C)
        w, y, masked = _w_chunk(v_ptr, a_ptr, iv, ia, m, tau, LOG_SPACE, FP64)
        mx = tl.max(w, axis=1)
        lse = mx + tl.log(tl.sum(tl.exp(w - mx[:, None]), axis=1))
        count = tl.sum(tl.where(masked, 0, 1), axis=1)
        c, dv, da = _log_prob_grads(gr, tau, w, v_ptr, iv, m, masked, count, lse, LOG_SPACE, FP64)
        if WANT_V:
            tl.store(gv_ptr + idx, dv.to(gv_ptr.dtype.element_ty), mask=m)
        if WANT_A:
            tl.store(ga_ptr + idx, da.to(ga_ptr.dtype.element_ty), mask=m)
        syc = tl.sum(tl.where(masked, 0.0, y * c), axis=1)
    else:
        mx = rw.full_rows(-INF, R, FP64)
        s = rw.full_rows(0.0, R, FP64)
        count = tl.zeros([R], tl.int32)
        for c0 in range(0, n, C):
            idx, m, k = rw.chunk(r, row_ok, n, c0, C)
            iv, _, _ = rw.chunk(rv, row_ok, n, c0, C)
            ia, _, _ = rw.chunk(ra, row_ok, n, c0, C)
            w, y, masked = _w_chunk(v_ptr, a_ptr, iv, ia, m, tau, LOG_SPACE, FP64)
            mx, s = cm.lse_update(mx, s, w)
            count += tl.sum(tl.where(masked, 0, 1), axis=1)
        lse = mx + tl.log(s)
        syc = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            idx, m, k = rw.chunk(r, row_ok, n, c0, C)
            iv, _, _ = rw.chunk(rv, row_ok, n, c0, C)
            ia, _, _ = rw.chunk(ra, row_ok, n, c0, C)
            w, y, masked = _w_chunk(v_ptr, a_ptr, iv, ia, m, tau, LOG_SPACE, FP64)
            c, dv, da = _log_prob_grads(
                gr, tau, w, v_ptr, iv, m, masked, count, lse, LOG_SPACE, FP64
            )
            if WANT_V:
                tl.store(gv_ptr + idx, dv.to(gv_ptr.dtype.element_ty), mask=m)
            if WANT_A:
                tl.store(ga_ptr + idx, da.to(ga_ptr.dtype.element_ty), mask=m)
            syc += tl.sum(tl.where(masked, 0.0, y * c), axis=1)
    if WANT_T:
        nf = cm.to_acc(count, FP64)
        tl.store(gt_ptr + r, gr * ((nf - 1.0) / tau - syc), mask=row_ok)


# ---- launchers ------------------------------------------------------------------------------------
def _launch_kw(launch: cm.RowLaunch, fp64: bool) -> dict:
    return dict(
        FP64=fp64, R=launch.R, C=launch.C, ONE_CHUNK=launch.one_chunk, num_warps=launch.num_warps
    )


def _log_prob(
    value: Tensor, logits: Tensor, temperature: Tensor, dim: int, log_space: bool
) -> Tensor:
    cm.check_floating(logits, "logits")
    cm.check_same(value, logits, "value", "logits")
    d = cm.category_dim(logits, dim, "logits")
    bshape = cm.batch_shape(logits, d)
    acc = cm.acc_dtype(logits.dtype)
    tau, period = cm.prepare_temperature(temperature, bshape, logits.device, acc)
    out = logits.new_empty(bshape)
    a = cm.to_rows(logits, d, periodic=True)
    rows, n = cm.count_rows(logits, d), a.shape[1]
    if rows == 0:
        return out
    v = cm.to_rows(value, d, periodic=True)
    launch = cm.row_launch(rows, n, acc == torch.float64)
    cm.launch(_log_prob_kernel)[launch.grid](
        v,
        a,
        out.view(-1),
        tau,
        period,
        rows,
        n,
        v.shape[0],
        a.shape[0],
        LOG_SPACE=log_space,
        **_launch_kw(launch, acc == torch.float64),
    )
    return out


def _log_prob_backward(
    grad: Tensor,
    value: Tensor,
    logits: Tensor,
    temperature: Tensor,
    dim: int,
    output_mask: List[bool],
    log_space: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    cm.check_same(value, logits, "value", "logits")
    d = cm.category_dim(logits, dim, "logits")
    bshape = cm.batch_shape(logits, d)
    if list(grad.shape) != bshape:
        raise ValueError(
            f"grad has shape {tuple(grad.shape)} but the log-density has shape {tuple(bshape)}"
        )
    acc = cm.acc_dtype(logits.dtype)
    tau, period = cm.prepare_temperature(temperature, bshape, logits.device, acc)
    want_v, want_a, want_t = (bool(b) for b in output_mask)
    gv = _layout.empty_rows_like(logits, d) if want_v else logits.new_empty([0])
    ga = _layout.empty_rows_like(logits, d) if want_a else logits.new_empty([0])
    gt = logits.new_empty(bshape if want_t else [0], dtype=acc)
    a = cm.to_rows(logits, d, periodic=True)
    rows, n = cm.count_rows(logits, d), a.shape[1]
    if rows == 0:
        return gv, ga, gt
    v = cm.to_rows(value, d, periodic=True)
    fill = cm.dummy(logits.device, logits.dtype)
    launch = cm.row_launch(rows, n, acc == torch.float64)
    cm.launch(_log_prob_backward_kernel)[launch.grid](
        grad.to(acc).contiguous().view(-1),
        v,
        a,
        cm.rows_of(gv, d) if want_v else fill,
        cm.rows_of(ga, d) if want_a else fill,
        gt if want_t else cm.dummy(logits.device, acc),
        tau,
        period,
        rows,
        n,
        v.shape[0],
        a.shape[0],
        LOG_SPACE=log_space,
        WANT_V=want_v,
        WANT_A=want_a,
        WANT_T=want_t,
        **_launch_kw(launch, acc == torch.float64),
    )
    return gv, ga, gt


# ---- ops ------------------------------------------------------------------------------------------
def exp_concrete_log_prob_op(
    value: Tensor, logits: Tensor, temperature: Tensor, dim: int
) -> Tensor:
    return _log_prob(value, logits, temperature, dim, True)


def concrete_log_prob_op(value: Tensor, logits: Tensor, temperature: Tensor, dim: int) -> Tensor:
    return _log_prob(value, logits, temperature, dim, False)


def exp_concrete_log_prob_backward_op(
    grad: Tensor,
    value: Tensor,
    logits: Tensor,
    temperature: Tensor,
    dim: int,
    output_mask: List[bool],
) -> Tuple[Tensor, Tensor, Tensor]:
    return _log_prob_backward(grad, value, logits, temperature, dim, output_mask, True)


def concrete_log_prob_backward_op(
    grad: Tensor,
    value: Tensor,
    logits: Tensor,
    temperature: Tensor,
    dim: int,
    output_mask: List[bool],
) -> Tuple[Tensor, Tensor, Tensor]:
    return _log_prob_backward(grad, value, logits, temperature, dim, output_mask, False)


# The host functions, by op name, with the signature of torch.ops.concrete_ext_triton.<name>.
HOST = {
    "exp_concrete_log_prob": exp_concrete_log_prob_op,
    "concrete_log_prob": concrete_log_prob_op,
    "exp_concrete_log_prob_backward": exp_concrete_log_prob_backward_op,
    "concrete_log_prob_backward": concrete_log_prob_backward_op,
}
