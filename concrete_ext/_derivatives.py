"""Derivative formulas of every op in composite PyTorch: the vjp (backward) and jvp (forward mode).

These are the formulas the fused backward kernels compute (csrc/include/concrete_ext/math/*.h),
written with differentiable tensor operations, so that:

* they are the Python fallback kernels of the backward ops (no compiled extension);
* the autograd layer calls them instead of the fused backward kernel when a derivative of the
  backward is wanted (``create_graph=True``, ``torch.func``): every op is then differentiable to any
  order, under every transform, with the second-order terms computed by autograd from these;
* they give the forward-mode tangents (``torch.func.jvp``, ``torch.autograd.forward_ad``).

Conventions: each vjp has the signature of its backward op and returns one gradient per entry of
the op's ``grads`` (``_table``), None where the op's flag or mask did not ask for it; gradients of
the temperature are per row (row ops) or per element (elementwise ops), in the math type (float64
for float64, else float32), before the autograd layer sums them to the temperature's shape. Each jvp
takes (inputs, outputs, tangents) -- dicts of the forward's arguments by name, the forward's
outputs, and the tangents of the differentiable inputs (None: zero) -- and returns one tangent per
output. The math runs in the math type with the category dim moved last; masked categories (-inf
logits) have zero derivatives, and every branch a ``where`` discards is made finite first, so no NaN
reaches a derivative of a derivative.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import reference as ref

NEG_INF = float("-inf")


# ---- shared pieces ---------------------------------------------------------------------------
def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc(t: Tensor) -> Tensor:
    return t.to(acc_dtype(t.dtype))


def _moved(t: Tensor, dim: int) -> Tensor:
    """t in the math type with the category dim last."""
    return _acc(t.movedim(dim, -1))


def _back(t: Tensor, dim: int, like: Tensor) -> Tensor:
    """A moved result back in `like`'s dim order and dtype."""
    return t.movedim(-1, dim).to(like.dtype)


def _tau_rows(temperature: Tensor, moved: Tensor) -> Tensor:
    """The temperature broadcast to the batch shape of `moved`, with a trailing 1 (category)."""
    t = temperature.to(device=moved.device, dtype=moved.dtype)
    return t.expand(moved.shape[:-1]).unsqueeze(-1)


def _tau_elems(temperature: Tensor, like: Tensor) -> Tensor:
    return temperature.to(device=like.device, dtype=like.dtype).expand(like.shape)


def _tangent_rows(t: Optional[Tensor], moved: Tensor) -> Optional[Tensor]:
    return None if t is None else _tau_rows(t, moved)


def _zero_to(t: Tensor, keep: Tensor) -> Tensor:
    """t where `keep`, else exactly 0 (also where t is not finite)."""
    return torch.where(keep, t, torch.zeros((), dtype=t.dtype, device=t.device))


def _safe(t: Tensor, keep: Tensor, fill: float = 0.0) -> Tensor:
    """t where `keep`, else `fill`: the argument to give a function whose result `where` drops."""
    return torch.where(keep, t, torch.full((), fill, dtype=t.dtype, device=t.device))


def _rows_sum(t: Tensor) -> Tensor:
    return t.sum(-1, keepdim=True)


# ---- categorical samples ------------------------------------------------------------------------
def _sample_dz(g: Tensor, s: Tensor, log_space: bool):
    """(dz, the per-row sum_k dz_k log x_k) from the upstream gradient and the saved sample."""
    if log_space:
        live = s > NEG_INF
        gl = _zero_to(g, live)
        dz = _zero_to(gl - torch.exp(s) * _rows_sum(gl), live)
        return dz, (dz * _safe(s, live)).sum(-1)
    live = s > 0
    dz = s * (g - _rows_sum(s * g))
    return dz, (dz * torch.log(_safe(s, live, 1.0))).sum(-1)


def _sample_vjp(grad, sample, temperature, dim, temperature_grad, log_space):
    s, g = _moved(sample, dim), _moved(grad, dim)
    tau = _tau_rows(temperature, s)
    dz, term = _sample_dz(g, s, log_space)
    ga = _back(dz / tau, dim, sample)
    return ga, (-term / tau.squeeze(-1) if temperature_grad else None)


def exp_concrete_sample_vjp(grad, sample, temperature, dim, temperature_grad):
    return _sample_vjp(grad, sample, temperature, dim, temperature_grad, True)


def concrete_sample_vjp(grad, sample, temperature, dim, temperature_grad):
    return _sample_vjp(grad, sample, temperature, dim, temperature_grad, False)


def _perturbation_tangent(log_x: Tensor, live: Tensor, tau: Tensor, da, dtau) -> Tensor:
    """w = (da - log x dtau) / tau, the tangent of z = (a + G) / tau up to a row constant (log x
    may be any row-constant shift of z), 0 where the category is dead."""
    w = torch.zeros_like(log_x)
    if da is not None:
        w = w + _zero_to(da, live)
    if dtau is not None:
        w = w - _safe(log_x, live) * dtau
    return w / tau


def _softmax_tangent(x: Tensor, log_x: Tensor, live: Tensor, tau: Tensor, da, dtau) -> Tensor:
    """d softmax((a + G) / tau) for tangents (da, dtau): dx = x (w - sum_j x_j w_j)."""
    w = _perturbation_tangent(log_x, live, tau, da, dtau)
    return x * (w - _rows_sum(x * w))


def _log_tangent(y: Tensor, live: Tensor, tau: Tensor, da, dtau) -> Tensor:
    """d y for y = z - LSE(z): w - sum_j x_j w_j, 0 where masked."""
    w = _perturbation_tangent(y, live, tau, da, dtau)
    return _zero_to(w - _rows_sum(torch.exp(y) * w), live)


def _sample_jvp(inputs, outputs, tangents, log_space):
    dim = inputs["dim"]
    out = outputs[0]
    s = _moved(out, dim)
    tau = _tau_rows(inputs["temperature"], s)
    da = tangents.get("logits")
    da = None if da is None else _moved(da, dim)
    dtau = _tangent_rows(tangents.get("temperature"), s)
    if log_space:
        d = _log_tangent(s, s > NEG_INF, tau, da, dtau)
    else:
        live = s > 0
        d = _softmax_tangent(s, torch.log(_safe(s, live, 1.0)), live, tau, da, dtau)
    return (_back(d, dim, out),)


def exp_concrete_sample_jvp(inputs, outputs, tangents):
    return _sample_jvp(inputs, outputs, tangents, True)


def concrete_sample_jvp(inputs, outputs, tangents):
    return _sample_jvp(inputs, outputs, tangents, False)


# ---- straight-through Gumbel-softmax -------------------------------------------------------------
def _soft_sample(logits: Tensor, temperature: Tensor, rng_state: Tensor, dim: int) -> Tensor:
    """The soft sample x = softmax((a + G) / tau) of a hard call, G regenerated from its
    [seed, offset]; differentiable in logits and temperature. Moved layout, math type."""
    from ._ops import op  # the noise op (any backend); late import: _ops imports this module

    a = _moved(logits, dim)
    g = op("noise_from_state")(a, "gumbel", rng_state.to(a.device))
    masked = a == NEG_INF
    z = torch.where(masked, NEG_INF, (_safe(a, ~masked) + g) / _tau_rows(temperature, a))
    return torch.softmax(z, dim=-1)


def gumbel_softmax_hard_vjp(grad, logits, temperature, rng_state, dim, temperature_grad):
    x = _soft_sample(logits, temperature, rng_state, dim)
    tau = _tau_rows(temperature, x)
    dz, term = _sample_dz(_moved(grad, dim), x, False)
    ga = _back(dz / tau, dim, logits)
    return ga, (-term / tau.squeeze(-1) if temperature_grad else None)


def gumbel_softmax_hard_jvp(inputs, outputs, tangents):
    dim = inputs["dim"]
    x = _soft_sample(inputs["logits"], inputs["temperature"], outputs[1], dim)
    tau = _tau_rows(inputs["temperature"], x)
    da = tangents.get("logits")
    live = x > 0
    dx = _softmax_tangent(
        x,
        torch.log(_safe(x, live, 1.0)),
        live,
        tau,
        None if da is None else _moved(da, dim),
        _tangent_rows(tangents.get("temperature"), x),
    )
    return _back(dx, dim, outputs[0]), None


def gumbel_softmax_hard_reference(logits, temperature, dim, *, seed, offset, generator):
    """The op's forward in composite PyTorch: (one-hot of argmax(a + G), [seed, offset])."""
    s, o = ref.resolve_seed(seed, offset, generator, logits.device)
    one_hot = ref.gumbel_max_sample(logits, dim, seed=s, offset=o)
    state = torch.tensor(
        [s - 2**64 if s >= 2**63 else s, o], dtype=torch.int64, device=logits.device
    )
    return one_hot, state


# ---- categorical log-densities -------------------------------------------------------------------
def _density_partials(y: Tensor, a: Tensor, tau: Tensor, masked: Tensor):
    """(c_k = 1 - n s_k (0 where masked), n, d/dtau) of log kappa(y) for one batch of rows."""
    w = torch.where(masked, NEG_INF, _safe(a, ~masked) - tau * _safe(y, ~masked))
    n = (~masked).sum(-1, keepdim=True).to(y.dtype)
    c = _zero_to(1 - n * torch.softmax(w, -1), ~masked)
    dtau = (n - 1).squeeze(-1) / tau.squeeze(-1) - (_safe(y, ~masked) * c).sum(-1)
    return c, dtau


def _log_prob_terms(value, logits, temperature, dim, log_space):
    v, a = _moved(value, dim), _moved(logits, dim)
    tau = _tau_rows(temperature, a)
    masked = a == NEG_INF
    y = v if log_space else torch.log(_safe(v, ~masked, 1.0))
    c, dtau = _density_partials(y, a, tau, masked)
    return v, tau, masked, c, dtau


def _log_prob_vjp(grad, value, logits, temperature, dim, output_mask, log_space):
    v, tau, masked, c, dtau = _log_prob_terms(value, logits, temperature, dim, log_space)
    g = _acc(grad).unsqueeze(-1)
    gv = ga = gt = None
    if output_mask[0]:
        dy = -g * tau * c
        dv = dy if log_space else _zero_to((dy - g) / _safe(v, ~masked, 1.0), ~masked)
        gv = _back(dv, dim, logits)
    if output_mask[1]:
        ga = _back(g * c, dim, logits)
    if output_mask[2]:
        gt = g.squeeze(-1) * dtau
    return gv, ga, gt


def exp_concrete_log_prob_vjp(grad, value, logits, temperature, dim, output_mask):
    return _log_prob_vjp(grad, value, logits, temperature, dim, output_mask, True)


def concrete_log_prob_vjp(grad, value, logits, temperature, dim, output_mask):
    return _log_prob_vjp(grad, value, logits, temperature, dim, output_mask, False)


def _log_prob_jvp(inputs, outputs, tangents, log_space):
    dim = inputs["dim"]
    v, tau, masked, c, dtau = _log_prob_terms(
        inputs["value"], inputs["logits"], inputs["temperature"], dim, log_space
    )
    out = torch.zeros_like(dtau)
    if tangents.get("value") is not None:
        dv = _moved(tangents["value"], dim)
        if log_space:
            dy_coef = -tau * c
        else:  # d/dx_k = (-tau c_k - 1) / x_k
            dy_coef = _zero_to((-tau * c - 1) / _safe(v, ~masked, 1.0), ~masked)
        out = out + (dy_coef * _zero_to(dv, ~masked)).sum(-1)
    if tangents.get("logits") is not None:
        out = out + (c * _zero_to(_moved(tangents["logits"], dim), ~masked)).sum(-1)
    if tangents.get("temperature") is not None:
        out = out + dtau * _tau_rows(tangents["temperature"], v).squeeze(-1)
    return (out.to(outputs[0].dtype),)


def exp_concrete_log_prob_jvp(inputs, outputs, tangents):
    return _log_prob_jvp(inputs, outputs, tangents, True)


def concrete_log_prob_jvp(inputs, outputs, tangents):
    return _log_prob_jvp(inputs, outputs, tangents, False)


# ---- relaxed KL ----------------------------------------------------------------------------------
def relaxed_kl_sample_reference(
    q_logits, q_temperature, p_logits, p_temperature, dim, *, seed, offset, generator
):
    """The op's forward in composite PyTorch: y ~ ExpConcrete(q) rounded to the logits' dtype and
    both log-densities at that rounded y, over the categories q does not mask."""
    s, o = ref.resolve_seed(seed, offset, generator, q_logits.device)
    y = ref.exp_concrete_sample(_acc(q_logits), q_temperature, dim, seed=s, offset=o)
    y = y.to(q_logits.dtype)
    ym, aq, ap = _moved(y, dim), _moved(q_logits, dim), _moved(p_logits, dim)
    masked = aq == NEG_INF
    lq = ref._log_kappa(ym, aq, _tau_rows(q_temperature, aq), masked)
    lp = ref._log_kappa(ym, ap, _tau_rows(p_temperature, aq), masked)
    return y, lq.to(q_logits.dtype), lp.to(q_logits.dtype)


def relaxed_kl_sample_vjp(
    grad_sample,
    grad_log_q,
    grad_log_p,
    sample,
    q_logits,
    q_temperature,
    p_logits,
    p_temperature,
    dim,
    output_mask,
):
    y, aq, ap = _moved(sample, dim), _moved(q_logits, dim), _moved(p_logits, dim)
    tq, tp = _tau_rows(q_temperature, aq), _tau_rows(p_temperature, aq)
    masked = aq == NEG_INF
    cq, dtq = _density_partials(y, aq, tq, masked)
    cp, dtp = _density_partials(y, ap, tp, masked)
    zero_rows = y.new_zeros(y.shape[:-1] + (1,))
    gq = _acc(grad_log_q).unsqueeze(-1) if grad_log_q is not None else zero_rows
    gp = _acc(grad_log_p).unsqueeze(-1) if grad_log_p is not None else zero_rows
    gy = _moved(grad_sample, dim) if grad_sample is not None else torch.zeros_like(y)
    # The total gradient reaching y flows through the sampler (its ExpConcrete backward).
    d_y = gy - gq * tq * cq - gp * tp * cp
    dz, term = _sample_dz(d_y, y, True)
    gaq = _back(dz / tq + gq * cq, dim, q_logits) if output_mask[0] else None
    gtq = -term / tq.squeeze(-1) + gq.squeeze(-1) * dtq if output_mask[1] else None
    gap = _back(gp * cp, dim, q_logits) if output_mask[2] else None
    gtp = gp.squeeze(-1) * dtp if output_mask[3] else None
    return gaq, gtq, gap, gtp


def relaxed_kl_sample_jvp(inputs, outputs, tangents):
    dim = inputs["dim"]
    y_out = outputs[0]
    y = _moved(y_out, dim)
    aq, ap = _moved(inputs["q_logits"], dim), _moved(inputs["p_logits"], dim)
    tq = _tau_rows(inputs["q_temperature"], aq)
    tp = _tau_rows(inputs["p_temperature"], aq)
    masked = aq == NEG_INF
    live = ~masked & (y > NEG_INF)
    dq = tangents.get("q_logits")
    dy = _log_tangent(
        y,
        live,
        tq,
        None if dq is None else _moved(dq, dim),
        _tangent_rows(tangents.get("q_temperature"), y),
    )
    res = [_back(dy, dim, y_out)]
    for a, tau, da, dtau in (
        (aq, tq, dq, tangents.get("q_temperature")),
        (ap, tp, tangents.get("p_logits"), tangents.get("p_temperature")),
    ):
        c, dt = _density_partials(y, a, tau, masked)
        d = (-tau * c * dy).sum(-1)
        if da is not None:
            d = d + (c * _zero_to(_moved(da, dim), ~masked)).sum(-1)
        if dtau is not None:
            d = d + dt * _tau_rows(dtau, y).squeeze(-1)
        res.append(d.to(y_out.dtype))
    return tuple(res)


# ---- binary ------------------------------------------------------------------------------------
def _binary_logit(s: Tensor, logit_space: bool):
    """(y, dy/d(sample) factor, finite) of a saved binary sample: the logistic-space value y and
    the derivative of the sample with respect to y (1, or x (1 - x))."""
    if logit_space:
        return s, torch.ones_like(s), torch.isfinite(s)
    dsig = s * (1 - s)
    live = dsig > 0
    xs = _safe(s, live, 0.5)
    return torch.log(xs) - torch.log1p(-xs), dsig, live


def _binary_sample_vjp(grad, sample, temperature, temperature_grad, logit_space):
    s, g = _acc(sample), _acc(grad)
    t = _tau_elems(temperature, s)
    y, dsig, live = _binary_logit(s, logit_space)
    dy = g * dsig
    ga = _zero_to(dy / t, live) if not logit_space else dy / t
    gt = _zero_to(-dy * _safe(y, live) / t, live) if temperature_grad else None
    return ga.to(sample.dtype), gt


def logit_binary_concrete_sample_vjp(grad, sample, temperature, temperature_grad):
    return _binary_sample_vjp(grad, sample, temperature, temperature_grad, True)


def binary_concrete_sample_vjp(grad, sample, temperature, temperature_grad):
    return _binary_sample_vjp(grad, sample, temperature, temperature_grad, False)


def _binary_sample_jvp(inputs, outputs, tangents, logit_space):
    out = outputs[0]
    s = _acc(out)
    t = _tau_elems(inputs["temperature"], s)
    y, dsig, live = _binary_logit(s, logit_space)
    w = torch.zeros_like(s)
    if tangents.get("logits") is not None:
        w = w + _acc(tangents["logits"])
    if tangents.get("temperature") is not None:
        w = w - _safe(y, live) * _tau_elems(tangents["temperature"], s)
    return (_zero_to(dsig * w / t, live).to(out.dtype),)


def logit_binary_concrete_sample_jvp(inputs, outputs, tangents):
    return _binary_sample_jvp(inputs, outputs, tangents, True)


def binary_concrete_sample_jvp(inputs, outputs, tangents):
    return _binary_sample_jvp(inputs, outputs, tangents, False)


def _binary_partials(value, logits, temperature, logit_space):
    """(d/dvalue, d/dlogits, d/dtau) of the binary log-density, elementwise, in the math type.
    With u = a - tau y and c = 1 - 2 sigmoid(u): d/da = c, d/dy = -tau c, d/dtau = 1/tau - y c;
    on (0, 1), y = logit(x) and d/dx = (-tau c + 2x - 1) / (x (1 - x))."""
    v, a = _acc(value), _acc(logits)
    v, a = torch.broadcast_tensors(v, a)
    t = _tau_elems(temperature, a)
    y = v if logit_space else torch.log(v) - torch.log1p(-v)
    c = 1 - 2 * torch.sigmoid(a - t * y)
    dv = -t * c if logit_space else (2 * v - 1 - t * c) / (v * (1 - v))
    return dv, c, 1 / t - y * c


def _binary_log_prob_vjp(grad, value, logits, temperature, output_mask, logit_space):
    dv, da, dt = _binary_partials(value, logits, temperature, logit_space)
    g = _acc(grad)
    return (
        (g * dv).to(logits.dtype) if output_mask[0] else None,
        (g * da).to(logits.dtype) if output_mask[1] else None,
        g * dt if output_mask[2] else None,
    )


def logit_binary_concrete_log_prob_vjp(grad, value, logits, temperature, output_mask):
    return _binary_log_prob_vjp(grad, value, logits, temperature, output_mask, True)


def binary_concrete_log_prob_vjp(grad, value, logits, temperature, output_mask):
    return _binary_log_prob_vjp(grad, value, logits, temperature, output_mask, False)


def _binary_log_prob_jvp(inputs, outputs, tangents, logit_space):
    dv, da, dt = _binary_partials(
        inputs["value"], inputs["logits"], inputs["temperature"], logit_space
    )
    out = torch.zeros_like(da)
    for name, coef in (("value", dv), ("logits", da), ("temperature", dt)):
        tan = tangents.get(name)
        if tan is not None:
            out = out + coef * _acc(tan).expand(out.shape)
    return (out.to(outputs[0].dtype),)


def logit_binary_concrete_log_prob_jvp(inputs, outputs, tangents):
    return _binary_log_prob_jvp(inputs, outputs, tangents, True)


def binary_concrete_log_prob_jvp(inputs, outputs, tangents):
    return _binary_log_prob_jvp(inputs, outputs, tangents, False)


# ---- noise ---------------------------------------------------------------------------------------
def noise_like_reference(self, kind, *, seed, offset, generator):
    s, o = ref.resolve_seed(seed, offset, generator, self.device)
    return ref.noise(self.shape, kind, s, o, dtype=self.dtype, device=self.device)


def noise_from_state_reference(self, kind, rng_state):
    """noise_like for the call whose int64 [seed, offset] is `rng_state` (any device): the noise a
    random op drew, regenerated (the straight-through backward's higher derivatives use it)."""
    from ._ops import op

    seed, offset = (int(v) for v in rng_state.tolist())
    return op("noise_like")(self, kind, seed, offset, None)


__all__: Sequence[str] = [n for n in dir() if n.endswith(("_vjp", "_jvp", "_reference"))]
