"""Triton kernels of the fused relaxed-KL pass (paper Eq. 28; formulas: csrc/include/concrete_ext/
math/exp_concrete.h): y ~ ExpConcrete(a_q, tau_q) with log kappa_q(y) and log kappa_p(y) in one
pass, and its backward. The densities are those of densities.py (log kappa over the categories q
does not mask); launch as in exp_concrete.py (single-pass tiles for n <= CONFIG.max_tile_n, else one
row per program in chunks, the noise regenerated from (seed, offset) in the second pass).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _layout
from . import common as cm
from . import rows as rw
from .densities import _log_kappa

INF = tl.constexpr(float("inf"))


# ---- kernels --------------------------------------------------------------------------------------
@triton.jit
def _relaxed_kl_kernel(
    aq_ptr,
    ap_ptr,
    y_ptr,
    lq_ptr,
    lp_ptr,
    tq_ptr,
    tq_period,
    tp_ptr,
    tp_period,
    state_ptr,
    rows,
    n,
    q_period,
    p_period,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
    RUN: tl.constexpr,
):
    """y ~ ExpConcrete(a_q, tau_q): y_k = z_k - LSE(z), z_k = (a_q,k + G_k) / tau_q; then
    log kappa_q(y) and log kappa_p(y) at y rounded to the output dtype, both over the categories
    q does not mask (w^p_k = a_p,k - tau_p y_k there). q_period, p_period: the logits' rows
    (row r reads row r % period)."""
    row0, r, row_ok = rw.program_rows(rows, R)
    ra = r % q_period
    rp = r % p_period
    tq = rw.load_tau(tq_ptr, tq_period, r, row_ok, FP64)
    tp = rw.load_tau(tp_ptr, tp_period, r, row_ok, FP64)
    inv = 1.0 / tq
    seed, lo, hi = cm.load_state(state_ptr)
    y_ty = y_ptr.dtype.element_ty
    if ONE_CHUNK:
        z, a, idx, m = rw.perturbed(
            aq_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, 0, R, C, RUN, FP64
        )
        ip, _, _ = rw.chunk(rp, row_ok, n, 0, C)
        zs = z - tl.max(z, axis=1)[:, None]
        yo = (zs - tl.log(tl.sum(tl.exp(zs), axis=1))[:, None]).to(y_ty)
        tl.store(y_ptr + idx, yo, mask=m)
        masked = a == -INF
        wq = tl.where(masked, -INF, a - tq[:, None] * cm.to_acc(yo, FP64))
        wp = tl.where(
            masked, -INF, rw.load_acc(ap_ptr, ip, m, 0.0, FP64) - tp[:, None] * cm.to_acc(yo, FP64)
        )
        mq = tl.max(wq, axis=1)
        lse_q = mq + tl.log(tl.sum(tl.exp(wq - mq[:, None]), axis=1))
        mp = tl.max(wp, axis=1)
        lse_p = mp + tl.log(tl.sum(tl.exp(wp - mp[:, None]), axis=1))
        count = tl.sum(tl.where(masked, 0, 1), axis=1)
        sum_q = tl.sum(tl.where(masked, 0.0, wq), axis=1)
        sum_p = tl.sum(tl.where(masked, 0.0, wp), axis=1)
    else:
        mx = rw.full_rows(-INF, R, FP64)
        s = rw.full_rows(0.0, R, FP64)
        for c0 in range(0, n, C):
            z, a, idx, m = rw.perturbed(
                aq_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, c0, R, C, RUN, FP64
            )
            mx, s = cm.lse_update(mx, s, z)
        ls = tl.log(s)
        mq = rw.full_rows(-INF, R, FP64)
        sq = rw.full_rows(0.0, R, FP64)
        mp = rw.full_rows(-INF, R, FP64)
        sp = rw.full_rows(0.0, R, FP64)
        sum_q = rw.full_rows(0.0, R, FP64)
        sum_p = rw.full_rows(0.0, R, FP64)
        count = tl.zeros([R], tl.int32)
        for c0 in range(0, n, C):
            z, a, idx, m = rw.perturbed(
                aq_ptr, seed, lo, hi, row0, r, ra, row_ok, inv, n, c0, R, C, RUN, FP64
            )
            ip, _, _ = rw.chunk(rp, row_ok, n, c0, C)
            yo = (z - mx[:, None] - ls[:, None]).to(y_ty)
            tl.store(y_ptr + idx, yo, mask=m)
            masked = a == -INF
            wq = tl.where(masked, -INF, a - tq[:, None] * cm.to_acc(yo, FP64))
            wp = tl.where(
                masked,
                -INF,
                rw.load_acc(ap_ptr, ip, m, 0.0, FP64) - tp[:, None] * cm.to_acc(yo, FP64),
            )
            mq, sq = cm.lse_update(mq, sq, wq)
            mp, sp = cm.lse_update(mp, sp, wp)
            count += tl.sum(tl.where(masked, 0, 1), axis=1)
            sum_q += tl.sum(tl.where(masked, 0.0, wq), axis=1)
            sum_p += tl.sum(tl.where(masked, 0.0, wp), axis=1)
        lse_q = mq + tl.log(sq)
        lse_p = mp + tl.log(sp)
    out_ty = lq_ptr.dtype.element_ty
    tl.store(lq_ptr + r, _log_kappa(count, tq, sum_q, lse_q, FP64).to(out_ty), mask=row_ok)
    tl.store(lp_ptr + r, _log_kappa(count, tp, sum_p, lse_p, FP64).to(out_ty), mask=row_ok)


@triton.jit
def _kl_chunk(y_ptr, aq_ptr, ap_ptr, idx, iq, ip, m, tq, tp, FP64: tl.constexpr):
    """(y, y with 0 where q masks, the mask, w^q, w^p) of one chunk of the relaxed-KL backward;
    iq, ip: the chunk's element indices in the q and p logits (rows r % their period)."""
    aq = rw.load_acc(aq_ptr, iq, m, -INF, FP64)
    masked = aq == -INF
    y = rw.load_acc(y_ptr, idx, m, -INF, FP64)
    ys = tl.where(masked, 0.0, y)
    wq = tl.where(masked, -INF, aq - tq[:, None] * ys)
    wp = tl.where(masked, -INF, rw.load_acc(ap_ptr, ip, m, 0.0, FP64) - tp[:, None] * ys)
    return y, ys, masked, wq, wp


@triton.jit
def _kl_dy(
    gy_ptr,
    idx,
    m,
    masked,
    wq,
    wp,
    lse_q,
    lse_p,
    count,
    gq,
    gp,
    tq,
    tp,
    HAS_GY: tl.constexpr,
    FP64: tl.constexpr,
):
    """(c^q, c^p, dY) of one chunk: c = 1 - n softmax(w) (0 where masked) and the total gradient
    on y, dY_k = gy_k - g_q tau_q c^q_k - g_p tau_p c^p_k (0 where masked)."""
    nf = cm.to_acc(count, FP64)[:, None]
    cq = tl.where(masked, 0.0, 1.0 - nf * tl.exp(wq - lse_q[:, None]))
    cp = tl.where(masked, 0.0, 1.0 - nf * tl.exp(wp - lse_p[:, None]))
    d = -(gq * tq)[:, None] * cq - (gp * tp)[:, None] * cp
    if HAS_GY:
        d += rw.load_acc(gy_ptr, idx, m, 0.0, FP64)
    return cq, cp, tl.where(masked, 0.0, d)


@triton.jit
def _relaxed_kl_backward_kernel(
    gy_ptr,
    glq_ptr,
    glp_ptr,
    y_ptr,
    aq_ptr,
    ap_ptr,
    gaq_ptr,
    gtq_ptr,
    gap_ptr,
    gtp_ptr,
    tq_ptr,
    tq_period,
    tp_ptr,
    tp_period,
    rows,
    n,
    q_period,
    p_period,
    HAS_GY: tl.constexpr,
    HAS_GQ: tl.constexpr,
    HAS_GP: tl.constexpr,
    WANT_AQ: tl.constexpr,
    WANT_TQ: tl.constexpr,
    WANT_AP: tl.constexpr,
    WANT_TP: tl.constexpr,
    WANT_LOGITS: tl.constexpr,
    FP64: tl.constexpr,
    R: tl.constexpr,
    C: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
):
    """Backward of the relaxed-KL pass with upstream (gy, g_q, g_p), dY from _kl_dy, x = exp(y):
    dz_k = dY_k - x_k sum_j dY_j,  d a_q,k = dz_k / tau_q + g_q c^q_k,  d a_p,k = g_p c^p_k,
    d tau_q = -(1/tau_q) (sum dY y - (sum x y)(sum dY)) + g_q ((n-1)/tau_q - sum_k y_k c^q_k),
    d tau_p = g_p ((n-1)/tau_p - sum_k y_k c^p_k). The q and p logits: row r at r % their period."""
    row0, r, row_ok = rw.program_rows(rows, R)
    rq = r % q_period
    rp = r % p_period
    tq = rw.load_tau(tq_ptr, tq_period, r, row_ok, FP64)
    tp = rw.load_tau(tp_ptr, tp_period, r, row_ok, FP64)
    zero = rw.full_rows(0.0, R, FP64)
    gq = zero
    gp = zero
    if HAS_GQ:
        gq = cm.to_acc(tl.load(glq_ptr + r, mask=row_ok, other=0.0), FP64)
    if HAS_GP:
        gp = cm.to_acc(tl.load(glp_ptr + r, mask=row_ok, other=0.0), FP64)
    # Pass 1: LSE(w^q), LSE(w^p) and the number of unmasked categories.
    if ONE_CHUNK:
        idx, m, k = rw.chunk(r, row_ok, n, 0, C)
        iq, _, _ = rw.chunk(rq, row_ok, n, 0, C)
        ip, _, _ = rw.chunk(rp, row_ok, n, 0, C)
        y, ys, masked, wq, wp = _kl_chunk(y_ptr, aq_ptr, ap_ptr, idx, iq, ip, m, tq, tp, FP64)
        mq = tl.max(wq, axis=1)
        lse_q = mq + tl.log(tl.sum(tl.exp(wq - mq[:, None]), axis=1))
        mp = tl.max(wp, axis=1)
        lse_p = mp + tl.log(tl.sum(tl.exp(wp - mp[:, None]), axis=1))
        count = tl.sum(tl.where(masked, 0, 1), axis=1)
    else:
        mq = rw.full_rows(-INF, R, FP64)
        sq = zero
        mp = rw.full_rows(-INF, R, FP64)
        sp = zero
        count = tl.zeros([R], tl.int32)
        for c0 in range(0, n, C):
            idx, m, k = rw.chunk(r, row_ok, n, c0, C)
            iq, _, _ = rw.chunk(rq, row_ok, n, c0, C)
            ip, _, _ = rw.chunk(rp, row_ok, n, c0, C)
            y, ys, masked, wq, wp = _kl_chunk(y_ptr, aq_ptr, ap_ptr, idx, iq, ip, m, tq, tp, FP64)
            mq, sq = cm.lse_update(mq, sq, wq)
            mp, sp = cm.lse_update(mp, sp, wp)
            count += tl.sum(tl.where(masked, 0, 1), axis=1)
        lse_q = mq + tl.log(sq)
        lse_p = mp + tl.log(sp)
    # Pass 2: the row sums.
    if ONE_CHUNK:
        cq, cp, d = _kl_dy(
            gy_ptr, idx, m, masked, wq, wp, lse_q, lse_p, count, gq, gp, tq, tp, HAS_GY, FP64
        )
        sdy = tl.sum(d, axis=1)
        sdyy = tl.sum(d * ys, axis=1)
        sxy = tl.sum(tl.exp(y) * ys, axis=1)
        syq = tl.sum(ys * cq, axis=1)
        syp = tl.sum(ys * cp, axis=1)
    else:
        sdy = zero
        sdyy = zero
        sxy = zero
        syq = zero
        syp = zero
        for c0 in range(0, n, C):
            idx, m, k = rw.chunk(r, row_ok, n, c0, C)
            iq, _, _ = rw.chunk(rq, row_ok, n, c0, C)
            ip, _, _ = rw.chunk(rp, row_ok, n, c0, C)
            y, ys, masked, wq, wp = _kl_chunk(y_ptr, aq_ptr, ap_ptr, idx, iq, ip, m, tq, tp, FP64)
            cq, cp, d = _kl_dy(
                gy_ptr, idx, m, masked, wq, wp, lse_q, lse_p, count, gq, gp, tq, tp, HAS_GY, FP64
            )
            sdy += tl.sum(d, axis=1)
            sdyy += tl.sum(d * ys, axis=1)
            sxy += tl.sum(tl.exp(y) * ys, axis=1)
            syq += tl.sum(ys * cq, axis=1)
            syp += tl.sum(ys * cp, axis=1)
    # Pass 3: the logits gradients.
    inv = 1.0 / tq
    if WANT_LOGITS:  # WANT_AQ or WANT_AP
        if ONE_CHUNK:
            dz = tl.where(y > -INF, d - tl.exp(y) * sdy[:, None], 0.0)
            if WANT_AQ:
                gaq = dz * inv[:, None] + gq[:, None] * cq
                tl.store(gaq_ptr + idx, gaq.to(gaq_ptr.dtype.element_ty), mask=m)
            if WANT_AP:
                tl.store(gap_ptr + idx, (gp[:, None] * cp).to(gap_ptr.dtype.element_ty), mask=m)
        else:
            for c0 in range(0, n, C):
                idx, m, k = rw.chunk(r, row_ok, n, c0, C)
                iq, _, _ = rw.chunk(rq, row_ok, n, c0, C)
                ip, _, _ = rw.chunk(rp, row_ok, n, c0, C)
                y, ys, masked, wq, wp = _kl_chunk(
                    y_ptr, aq_ptr, ap_ptr, idx, iq, ip, m, tq, tp, FP64
                )
                cq, cp, d = _kl_dy(
                    gy_ptr,
                    idx,
                    m,
                    masked,
                    wq,
                    wp,
                    lse_q,
                    lse_p,
                    count,
                    gq,
                    gp,
                    tq,
                    tp,
                    HAS_GY,
                    FP64,
                )
                dz = tl.where(y > -INF, d - tl.exp(y) * sdy[:, None], 0.0)
                if WANT_AQ:
                    gaq = dz * inv[:, None] + gq[:, None] * cq
                    tl.store(gaq_ptr + idx, gaq.to(gaq_ptr.dtype.element_ty), mask=m)
                if WANT_AP:
                    tl.store(gap_ptr + idx, (gp[:, None] * cp).to(gap_ptr.dtype.element_ty), mask=m)
    nf = cm.to_acc(count, FP64)
    if WANT_TQ:
        gtq = -inv * (sdyy - sxy * sdy) + gq * ((nf - 1.0) / tq - syq)
        tl.store(gtq_ptr + r, gtq, mask=row_ok)
    if WANT_TP:
        tl.store(gtp_ptr + r, gp * ((nf - 1.0) / tp - syp), mask=row_ok)


# ---- launchers and ops ----------------------------------------------------------------------------
def _launch_kw(launch: cm.RowLaunch, fp64: bool) -> dict:
    return dict(
        FP64=fp64, R=launch.R, C=launch.C, ONE_CHUNK=launch.one_chunk, num_warps=launch.num_warps
    )


def relaxed_kl_sample_op(
    q_logits: Tensor,
    q_temperature: Tensor,
    p_logits: Tensor,
    p_temperature: Tensor,
    dim: int,
    rng_state: Tensor,
) -> Tuple[Tensor, Tensor, Tensor]:
    cm.check_floating(q_logits, "q_logits")
    cm.check_same(p_logits, q_logits, "p_logits", "q_logits")
    d = cm.category_dim(q_logits, dim, "q_logits")
    bshape = cm.batch_shape(q_logits, d)
    acc = cm.acc_dtype(q_logits.dtype)
    dev = q_logits.device
    tq, sq = cm.prepare_temperature(q_temperature, bshape, dev, acc, "q_temperature")
    tp, sp = cm.prepare_temperature(p_temperature, bshape, dev, acc, "p_temperature")
    y = _layout.empty_rows_like(q_logits, d)
    log_q = q_logits.new_empty(bshape)
    log_p = q_logits.new_empty(bshape)
    aq = cm.to_rows(q_logits, d, periodic=True)
    rows, n = cm.count_rows(q_logits, d), aq.shape[1]
    if rows == 0:
        return y, log_q, log_p
    ap = cm.to_rows(p_logits, d, periodic=True)
    launch = cm.row_launch(rows, n, acc == torch.float64)
    cm.launch(_relaxed_kl_kernel)[launch.grid](
        aq,
        ap,
        cm.rows_of(y, d),
        log_q.view(-1),
        log_p.view(-1),
        tq,
        sq,
        tp,
        sp,
        rng_state,
        rows,
        n,
        aq.shape[0],
        ap.shape[0],
        RUN=launch.run,
        **_launch_kw(launch, acc == torch.float64),
    )
    return y, log_q, log_p


def relaxed_kl_sample_backward_op(
    grad_sample: Optional[Tensor],
    grad_log_q: Optional[Tensor],
    grad_log_p: Optional[Tensor],
    sample: Tensor,
    q_logits: Tensor,
    q_temperature: Tensor,
    p_logits: Tensor,
    p_temperature: Tensor,
    dim: int,
    output_mask: List[bool],
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    cm.check_same(sample, q_logits, "sample", "q_logits")
    cm.check_same(p_logits, q_logits, "p_logits", "q_logits")
    d = cm.category_dim(q_logits, dim, "q_logits")
    bshape = cm.batch_shape(q_logits, d)
    acc = cm.acc_dtype(q_logits.dtype)
    dev = q_logits.device
    tq, sq = cm.prepare_temperature(q_temperature, bshape, dev, acc, "q_temperature")
    tp, sp = cm.prepare_temperature(p_temperature, bshape, dev, acc, "p_temperature")
    want = [bool(b) for b in output_mask]
    gaq = _layout.empty_rows_like(q_logits, d) if want[0] else q_logits.new_empty([0])
    gtq = q_logits.new_empty(bshape if want[1] else [0], dtype=acc)
    gap = _layout.empty_rows_like(q_logits, d) if want[2] else q_logits.new_empty([0])
    gtp = q_logits.new_empty(bshape if want[3] else [0], dtype=acc)
    y = cm.to_rows(sample, d)
    rows, n = y.shape
    if rows == 0:
        return gaq, gtq, gap, gtp

    def per_row(g: Optional[Tensor], name: str) -> Optional[Tensor]:
        if g is None:
            return None
        if list(g.shape) != bshape:
            raise ValueError(
                f"{name} has shape {tuple(g.shape)} but the log-density has shape {tuple(bshape)}"
            )
        return g.to(acc).contiguous().view(-1)

    gy = None
    if grad_sample is not None:
        cm.check_same(grad_sample, sample, "grad_sample", "sample")
        gy = cm.to_rows(grad_sample, d)
    glq, glp = per_row(grad_log_q, "grad_log_q"), per_row(grad_log_p, "grad_log_p")
    fill, fill_acc = cm.dummy(dev, q_logits.dtype), cm.dummy(dev, acc)
    aq = cm.to_rows(q_logits, d, periodic=True)
    ap = cm.to_rows(p_logits, d, periodic=True)
    launch = cm.row_launch(rows, n, acc == torch.float64)
    cm.launch(_relaxed_kl_backward_kernel)[launch.grid](
        gy if gy is not None else fill,
        glq if glq is not None else fill_acc,
        glp if glp is not None else fill_acc,
        y,
        aq,
        ap,
        cm.rows_of(gaq, d) if want[0] else fill,
        gtq if want[1] else fill_acc,
        cm.rows_of(gap, d) if want[2] else fill,
        gtp if want[3] else fill_acc,
        tq,
        sq,
        tp,
        sp,
        rows,
        n,
        aq.shape[0],
        ap.shape[0],
        HAS_GY=gy is not None,
        HAS_GQ=glq is not None,
        HAS_GP=glp is not None,
        WANT_AQ=want[0],
        WANT_TQ=want[1],
        WANT_AP=want[2],
        WANT_TP=want[3],
        WANT_LOGITS=want[0] or want[2],
        **_launch_kw(launch, acc == torch.float64),
    )
    return gaq, gtq, gap, gtp


# The host functions, by op name, with the signature of torch.ops.concrete_ext_triton.<name>.
HOST = {
    "relaxed_kl_sample": relaxed_kl_sample_op,
    "relaxed_kl_sample_backward": relaxed_kl_sample_backward_op,
}
