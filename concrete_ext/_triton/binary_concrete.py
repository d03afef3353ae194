"""Triton kernels of the binary ops (formulas: csrc/include/concrete_ext/math/binary_concrete.h;
paper Eq. 16, 17, 26): BinConcrete samples on (0, 1) and in logit form, their log-densities, and
all the backward passes. Elementwise over the flattened (row-major) tensors: each program takes
BLOCK consecutive elements (a multiple of 4, so the logistic noise of four elements comes from one
Philox call); the temperature is read at i % its period (one value: period 1).

a = logit, L = Logistic(0, 1) noise, tau = temperature, t = a - tau y:
    y = (a + L) / tau,  x = sigmoid(y)
    log p(y) = log tau - tau y + a - 2 softplus(t)
    d/da = 1 - 2 sigmoid(t),  d/dy = -tau (1 - 2 sigmoid(t)),  d/dtau = 1/tau - y (1 - 2 sigmoid(t))
    log p(x) = log p(logit x) - log x - log(1 - x),  d/dx = (d/dy log p(y) + 2x - 1) / (x (1 - x))
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm

INF = tl.constexpr(float("inf"))


# ---- kernels --------------------------------------------------------------------------------------
@triton.jit
def _block(numel, BLOCK: tl.constexpr):
    """(first flat index of the program (int64), its BLOCK indices, which exist)."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    idx = start + tl.arange(0, BLOCK)
    return start, idx, idx < numel


@triton.jit
def _load(ptr, idx, mask, FP64: tl.constexpr):
    return cm.to_acc(tl.load(ptr + idx, mask=mask, other=0.5), FP64)


@triton.jit
def _sample_kernel(
    a_ptr,
    out_ptr,
    tau_ptr,
    tau_period,
    state_ptr,
    numel,
    a_period,
    LOGIT: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """y = (a + L) / tau (LOGIT) or x = sigmoid(y), L the logistic noise of the element's index;
    element i reads a at i % a_period (logits broadcast over leading dims hold their distinct
    elements only)."""
    start, idx, mask = _block(numel, BLOCK)
    seed, lo, hi = cm.load_state(state_ptr)
    noise = cm.logistic_from_bits(cm.draws_run(seed, lo, hi, start, BLOCK, FP64), FP64)
    inv = 1.0 / _load(tau_ptr, idx % tau_period, mask, FP64)
    y = (_load(a_ptr, idx % a_period, mask, FP64) + noise) * inv
    if not LOGIT:
        y = cm.sigmoid(y)
    tl.store(out_ptr + idx, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sample_backward_kernel(
    g_ptr,
    s_ptr,
    da_ptr,
    gt_ptr,
    tau_ptr,
    tau_period,
    numel,
    LOGIT: tl.constexpr,
    WANT_T: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """From the saved sample: logit form d a = dy / tau, d tau = -dy y / tau (0 where y = +-inf);
    on (0, 1) dy = dx x (1 - x) first, and saturated elements (x (1 - x) = 0) get 0."""
    start, idx, mask = _block(numel, BLOCK)
    inv = 1.0 / _load(tau_ptr, idx % tau_period, mask, FP64)
    g = _load(g_ptr, idx, mask, FP64)
    s = _load(s_ptr, idx, mask, FP64)
    if LOGIT:
        dy = g
        y = s
        live = (s < INF) & (s > -INF)
    else:
        dsig = s * (1.0 - s)
        live = dsig > 0.0
        dy = g * dsig
        y = tl.log(tl.where(live, s, 0.5)) - cm.log1p(tl.where(live, -s, -0.5))
    tl.store(da_ptr + idx, (dy * inv).to(da_ptr.dtype.element_ty), mask=mask)
    if WANT_T:
        tl.store(gt_ptr + idx, tl.where(live, -dy * y * inv, 0.0), mask=mask)


@triton.jit
def _logit_grads(y, a, tau):
    """(log p(y), d/dy, d/da, d/dtau) of the logistic form."""
    t = a - tau * y
    c = 1.0 - 2.0 * cm.sigmoid(t)
    lp = tl.log(tau) - tau * y + a - 2.0 * cm.softplus(t)
    return lp, -tau * c, c, 1.0 / tau - y * c


@triton.jit
def _log_prob_kernel(
    v_ptr,
    a_ptr,
    out_ptr,
    tau_ptr,
    tau_period,
    numel,
    v_period,
    a_period,
    LOGIT: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """log p(y) (LOGIT) or log p(x) = log p(log x - log1p(-x)) - log x - log1p(-x); v and a read at
    i % their period."""
    start, idx, mask = _block(numel, BLOCK)
    v = _load(v_ptr, idx % v_period, mask, FP64)
    if LOGIT:
        lp, dy, da, dt = _logit_grads(
            v,
            _load(a_ptr, idx % a_period, mask, FP64),
            _load(tau_ptr, idx % tau_period, mask, FP64),
        )
    else:
        lx = tl.log(v)
        l1x = cm.log1p(-v)
        lp, dy, da, dt = _logit_grads(
            lx - l1x,
            _load(a_ptr, idx % a_period, mask, FP64),
            _load(tau_ptr, idx % tau_period, mask, FP64),
        )
        lp = lp - lx - l1x
    tl.store(out_ptr + idx, lp.to(out_ptr.dtype.element_ty), mask=mask)


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
    numel,
    v_period,
    a_period,
    LOGIT: tl.constexpr,
    WANT_V: tl.constexpr,
    WANT_A: tl.constexpr,
    WANT_T: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """grad times (d value, d logit, d tau) of the log-density (module docstring)."""
    start, idx, mask = _block(numel, BLOCK)
    g = _load(g_ptr, idx, mask, FP64)
    v = _load(v_ptr, idx % v_period, mask, FP64)
    a = _load(a_ptr, idx % a_period, mask, FP64)
    tau = _load(tau_ptr, idx % tau_period, mask, FP64)
    if LOGIT:
        lp, dv, da, dt = _logit_grads(v, a, tau)
    else:
        lp, dy, da, dt = _logit_grads(tl.log(v) - cm.log1p(-v), a, tau)
        dv = (dy + 2.0 * v - 1.0) / (v * (1.0 - v))
    if WANT_V:
        tl.store(gv_ptr + idx, (g * dv).to(gv_ptr.dtype.element_ty), mask=mask)
    if WANT_A:
        tl.store(ga_ptr + idx, (g * da).to(ga_ptr.dtype.element_ty), mask=mask)
    if WANT_T:
        tl.store(gt_ptr + idx, g * dt, mask=mask)


# ---- launchers ------------------------------------------------------------------------------------
def _temperature(temperature: Tensor, like: Tensor) -> Tuple[Tensor, int]:
    return cm.prepare_temperature(temperature, like.shape, like.device, cm.acc_dtype(like.dtype))


def _sample(logits: Tensor, temperature: Tensor, rng_state: Tensor, logit: bool) -> Tensor:
    cm.check_floating(logits, "logits")
    tau, period = _temperature(temperature, logits)
    a = cm.to_elems(logits, periodic=True)
    out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if out.numel() == 0:
        return out
    grid, block, warps = cm.elem_launch(out.numel())
    cm.launch(_sample_kernel)[grid](
        a,
        out,
        tau,
        period,
        rng_state,
        out.numel(),
        a.numel(),
        LOGIT=logit,
        FP64=a.dtype == torch.float64,
        BLOCK=block,
        num_warps=warps,
    )
    return out


def _sample_backward(
    grad: Tensor, sample: Tensor, temperature: Tensor, temperature_grad: bool, logit: bool
) -> Tuple[Tensor, Tensor]:
    cm.check_same(grad, sample, "grad", "sample")
    acc = cm.acc_dtype(sample.dtype)
    tau, period = _temperature(temperature, sample)
    s = sample.contiguous()
    grad_logits = torch.empty_like(s, memory_format=torch.contiguous_format)
    grad_tau = s.new_empty(s.shape if temperature_grad else [0], dtype=acc)
    if s.numel() == 0:
        return grad_logits, grad_tau
    grid, block, warps = cm.elem_launch(s.numel())
    cm.launch(_sample_backward_kernel)[grid](
        grad.contiguous(),
        s,
        grad_logits,
        grad_tau if temperature_grad else cm.dummy(s.device, acc),
        tau,
        period,
        s.numel(),
        LOGIT=logit,
        WANT_T=temperature_grad,
        FP64=acc == torch.float64,
        BLOCK=block,
        num_warps=warps,
    )
    return grad_logits, grad_tau


def _log_prob(value: Tensor, logits: Tensor, temperature: Tensor, logit: bool) -> Tensor:
    cm.check_floating(logits, "logits")
    cm.check_same(value, logits, "value", "logits")
    tau, period = _temperature(temperature, logits)
    a = cm.to_elems(logits, periodic=True)
    v = cm.to_elems(value, periodic=True)
    out = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if out.numel() == 0:
        return out
    grid, block, warps = cm.elem_launch(out.numel())
    cm.launch(_log_prob_kernel)[grid](
        v,
        a,
        out,
        tau,
        period,
        out.numel(),
        v.numel(),
        a.numel(),
        LOGIT=logit,
        FP64=a.dtype == torch.float64,
        BLOCK=block,
        num_warps=warps,
    )
    return out


def _log_prob_backward(
    grad: Tensor,
    value: Tensor,
    logits: Tensor,
    temperature: Tensor,
    output_mask: List[bool],
    logit: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    cm.check_same(value, logits, "value", "logits")
    if grad.shape != logits.shape:
        raise ValueError(
            f"grad has shape {tuple(grad.shape)} but logits has shape {tuple(logits.shape)}"
        )
    acc = cm.acc_dtype(logits.dtype)
    tau, period = _temperature(temperature, logits)
    want_v, want_a, want_t = (bool(b) for b in output_mask)
    shape, numel = logits.shape, logits.numel()
    a = cm.to_elems(logits, periodic=True)
    v = cm.to_elems(value, periodic=True)
    gv = logits.new_empty(shape) if want_v else a.new_empty([0])
    ga = logits.new_empty(shape) if want_a else a.new_empty([0])
    gt = a.new_empty(shape if want_t else [0], dtype=acc)
    if numel == 0:
        return gv, ga, gt
    fill = cm.dummy(a.device, a.dtype)
    grid, block, warps = cm.elem_launch(numel)
    cm.launch(_log_prob_backward_kernel)[grid](
        grad.to(acc).contiguous(),
        v,
        a,
        gv if want_v else fill,
        ga if want_a else fill,
        gt if want_t else cm.dummy(a.device, acc),
        tau,
        period,
        numel,
        v.numel(),
        a.numel(),
        LOGIT=logit,
        WANT_V=want_v,
        WANT_A=want_a,
        WANT_T=want_t,
        FP64=acc == torch.float64,
        BLOCK=block,
        num_warps=warps,
    )
    return gv, ga, gt


# ---- ops ------------------------------------------------------------------------------------------
def logit_binary_concrete_sample_op(
    logits: Tensor, temperature: Tensor, rng_state: Tensor
) -> Tensor:
    return _sample(logits, temperature, rng_state, True)


def binary_concrete_sample_op(logits: Tensor, temperature: Tensor, rng_state: Tensor) -> Tensor:
    return _sample(logits, temperature, rng_state, False)


def logit_binary_concrete_sample_backward_op(
    grad: Tensor, sample: Tensor, temperature: Tensor, temperature_grad: bool
) -> Tuple[Tensor, Tensor]:
    return _sample_backward(grad, sample, temperature, temperature_grad, True)


def binary_concrete_sample_backward_op(
    grad: Tensor, sample: Tensor, temperature: Tensor, temperature_grad: bool
) -> Tuple[Tensor, Tensor]:
    return _sample_backward(grad, sample, temperature, temperature_grad, False)


def logit_binary_concrete_log_prob_op(value: Tensor, logits: Tensor, temperature: Tensor) -> Tensor:
    return _log_prob(value, logits, temperature, True)


def binary_concrete_log_prob_op(value: Tensor, logits: Tensor, temperature: Tensor) -> Tensor:
    return _log_prob(value, logits, temperature, False)


def logit_binary_concrete_log_prob_backward_op(
    grad: Tensor, value: Tensor, logits: Tensor, temperature: Tensor, output_mask: List[bool]
) -> Tuple[Tensor, Tensor, Tensor]:
    return _log_prob_backward(grad, value, logits, temperature, output_mask, True)


def binary_concrete_log_prob_backward_op(
    grad: Tensor, value: Tensor, logits: Tensor, temperature: Tensor, output_mask: List[bool]
) -> Tuple[Tensor, Tensor, Tensor]:
    return _log_prob_backward(grad, value, logits, temperature, output_mask, False)


# The host functions, by op name, with the signature of torch.ops.concrete_ext_triton.<name>.
HOST = {
    "logit_binary_concrete_sample": logit_binary_concrete_sample_op,
    "binary_concrete_sample": binary_concrete_sample_op,
    "logit_binary_concrete_sample_backward": logit_binary_concrete_sample_backward_op,
    "binary_concrete_sample_backward": binary_concrete_sample_backward_op,
    "logit_binary_concrete_log_prob": logit_binary_concrete_log_prob_op,
    "binary_concrete_log_prob": binary_concrete_log_prob_op,
    "logit_binary_concrete_log_prob_backward": logit_binary_concrete_log_prob_backward_op,
    "binary_concrete_log_prob_backward": binary_concrete_log_prob_backward_op,
}
