"""CPU kernels in plain PyTorch for when the compiled extension is missing.

Registered on the CPU dispatch key by _ops.py only if ``concrete_ext._C`` cannot be imported, so the
ops keep working (slowly) and keep the random-number contract of reference.py. Forward ops call the
reference with the call's (seed, offset); backward ops evaluate the same gradient formulas as
csrc/include/concrete_ext/math/*.h with tensor operations. Outputs have the layout of the compiled
kernels (_ops.empty_rows_like) so fake and real strides agree.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from . import reference as ref
from ._ops import empty_rows_like

_NEG_INF = float("-inf")


def _seed(seed, offset, generator, device):
    return ref.resolve_seed(seed, offset, generator, device)


def _into_rows(value: Tensor, like: Tensor, dim: int) -> Tensor:
    out = empty_rows_like(like, dim, value.dtype)
    out.copy_(value)
    return out


def _tau_rows(temperature: Tensor, moved: Tensor) -> Tensor:
    acc = torch.float64 if moved.dtype == torch.float64 else torch.float32
    return temperature.to(device=moved.device, dtype=acc).expand(moved.shape[:-1]).unsqueeze(-1)


def _acc(t: Tensor) -> Tensor:
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)


# ---- categorical forward ---------------------------------------------------------------------------
def exp_concrete_sample(logits, temperature, dim, seed, offset, generator):
    s, o = _seed(seed, offset, generator, logits.device)
    y = ref.exp_concrete_sample(_acc(logits), temperature, dim, seed=s, offset=o)
    return _into_rows(y.to(logits.dtype), logits, dim)


def concrete_sample(logits, temperature, dim, seed, offset, generator):
    s, o = _seed(seed, offset, generator, logits.device)
    x = ref.concrete_sample(_acc(logits), temperature, dim, seed=s, offset=o)
    return _into_rows(x.to(logits.dtype), logits, dim)


def gumbel_softmax_hard(logits, temperature, dim, seed, offset, generator):
    s, o = _seed(seed, offset, generator, logits.device)
    one_hot = ref.gumbel_max_sample(_acc(logits), dim, seed=s, offset=o)
    state = torch.tensor([s - 2**64 if s >= 2**63 else s, o], dtype=torch.int64)
    return _into_rows(one_hot.to(logits.dtype), logits, dim), state


def gumbel_max_sample(logits, dim, seed, offset, generator):
    s, o = _seed(seed, offset, generator, logits.device)
    return _into_rows(ref.gumbel_max_sample(_acc(logits), dim, seed=s, offset=o).to(logits.dtype),
                      logits, dim)


def exp_concrete_log_prob(value, logits, temperature, dim):
    return ref.exp_concrete_log_prob(_acc(value), _acc(logits), temperature, dim).to(logits.dtype)


def concrete_log_prob(value, logits, temperature, dim):
    return ref.concrete_log_prob(_acc(value), _acc(logits), temperature, dim).to(logits.dtype)


def relaxed_kl_sample(q_logits, q_temperature, p_logits, p_temperature, dim, seed, offset,
                      generator):
    s, o = _seed(seed, offset, generator, q_logits.device)
    y = ref.exp_concrete_sample(_acc(q_logits), q_temperature, dim, seed=s, offset=o)
    y = y.to(q_logits.dtype)  # densities at the sample as returned
    ym, aq, ap = _acc(y).movedim(dim, -1), _acc(q_logits).movedim(dim, -1), _acc(p_logits).movedim(dim, -1)
    masked = aq == _NEG_INF
    lq = ref._log_kappa(ym, aq, _tau_rows(q_temperature, aq), masked)
    lp = ref._log_kappa(ym, ap, _tau_rows(p_temperature, aq), masked)
    return _into_rows(y, q_logits, dim), lq.to(q_logits.dtype), lp.to(q_logits.dtype)


# ---- categorical backward ------------------------------------------------------------------------
def _sample_grads(g: Tensor, s: Tensor, tau: Tensor, log_space: bool):
    """(d z, sum_k dz_k log x_k) of one row batch; last dim is the category."""
    if log_space:
        live = s != _NEG_INF
        x = torch.exp(s)
        sdy = torch.where(live, g, 0).sum(-1, keepdim=True)
        dz = torch.where(live, g - x * sdy, 0)
        term = torch.where(live, dz * s, 0).sum(-1)
    else:
        dz = s * (g - (s * g).sum(-1, keepdim=True))
        term = torch.where(s > 0, dz * torch.log(torch.where(s > 0, s, 1)), 0).sum(-1)
    return dz, term


def _sample_backward(grad, sample, temperature, dim, temperature_grad, log_space):
    s, g = _acc(sample).movedim(dim, -1), _acc(grad).movedim(dim, -1)
    tau = _tau_rows(temperature, s)
    dz, term = _sample_grads(g, s, tau, log_space)
    ga = _into_rows((dz / tau).movedim(-1, dim).to(sample.dtype), sample, dim)
    gt = -term / tau.squeeze(-1) if temperature_grad else s.new_empty([0])
    return ga, gt


def exp_concrete_sample_backward(grad, sample, temperature, dim, temperature_grad):
    return _sample_backward(grad, sample, temperature, dim, temperature_grad, True)


def concrete_sample_backward(grad, sample, temperature, dim, temperature_grad):
    return _sample_backward(grad, sample, temperature, dim, temperature_grad, False)


def gumbel_softmax_hard_backward(grad, logits, temperature, rng_state, dim, temperature_grad):
    s, o = (int(v) % 2**64 for v in rng_state.tolist())
    x = ref.concrete_sample(_acc(logits), temperature, dim, seed=s, offset=o).movedim(dim, -1)
    g = _acc(grad).movedim(dim, -1)
    tau = _tau_rows(temperature, x)
    dz, term = _sample_grads(g, x, tau, False)
    ga = _into_rows((dz / tau).movedim(-1, dim).to(logits.dtype), logits, dim)
    gt = -term / tau.squeeze(-1) if temperature_grad else x.new_empty([0])
    return ga, gt


def _log_prob_backward(grad, value, logits, temperature, dim, output_mask: List[bool], log_space):
    v, a = _acc(value).movedim(dim, -1), _acc(logits).movedim(dim, -1)
    tau = _tau_rows(temperature, a)
    masked = a == _NEG_INF
    y = v if log_space else torch.log(torch.where(masked, 1, v))
    w = torch.where(masked, _NEG_INF, torch.where(masked, 0, a) - tau * torch.where(masked, 0, y))
    n = (~masked).sum(-1, keepdim=True).to(w.dtype)
    c = torch.where(masked, 0, 1 - n * torch.softmax(w, -1))
    g = _acc(grad).unsqueeze(-1)
    dy = -g * tau * c
    dv = dy if log_space else torch.where(masked, 0, (dy - g) / torch.where(masked, 1, v))
    none = lambda: logits.new_empty([0])  # noqa: E731 (distinct tensors: no aliasing)
    gv = _into_rows(dv.movedim(-1, dim).to(logits.dtype), logits, dim) if output_mask[0] else none()
    ga = _into_rows((g * c).movedim(-1, dim).to(logits.dtype), logits, dim) if output_mask[1] else none()
    y_live = torch.where(masked, 0, y)
    gt = (g.squeeze(-1) * ((n.squeeze(-1) - 1) / tau.squeeze(-1) - (y_live * c).sum(-1))
          if output_mask[2] else _acc(none()))
    return gv, ga, gt


def exp_concrete_log_prob_backward(grad, value, logits, temperature, dim, output_mask):
    return _log_prob_backward(grad, value, logits, temperature, dim, output_mask, True)


def concrete_log_prob_backward(grad, value, logits, temperature, dim, output_mask):
    return _log_prob_backward(grad, value, logits, temperature, dim, output_mask, False)


def relaxed_kl_sample_backward(grad_sample: Optional[Tensor], grad_log_q: Optional[Tensor],
                               grad_log_p: Optional[Tensor], sample, q_logits, q_temperature,
                               p_logits, p_temperature, dim, output_mask):
    y = _acc(sample).movedim(dim, -1)
    aq, ap = _acc(q_logits).movedim(dim, -1), _acc(p_logits).movedim(dim, -1)
    tq, tp = _tau_rows(q_temperature, aq), _tau_rows(p_temperature, aq)
    masked = aq == _NEG_INF
    y_l = torch.where(masked, 0, y)
    n = (~masked).sum(-1, keepdim=True).to(y.dtype)

    def c_of(a, t):
        w = torch.where(masked, _NEG_INF, torch.where(masked, 0, a) - t * y_l)
        return torch.where(masked, 0, 1 - n * torch.softmax(w, -1))

    cq, cp = c_of(aq, tq), c_of(ap, tp)
    zero = y.new_zeros(y.shape[:-1] + (1,))
    gq = _acc(grad_log_q).unsqueeze(-1) if grad_log_q is not None else zero
    gp = _acc(grad_log_p).unsqueeze(-1) if grad_log_p is not None else zero
    gy = _acc(grad_sample).movedim(dim, -1) if grad_sample is not None else torch.zeros_like(y)
    d_y = torch.where(masked, 0, gy - gq * tq * cq - gp * tp * cp)
    x = torch.where(masked, 0, torch.exp(y_l))
    sdy = d_y.sum(-1, keepdim=True)
    dz = torch.where(masked, 0, d_y - x * sdy)
    none = lambda: q_logits.new_empty([0])  # noqa: E731 (distinct tensors: no aliasing)
    gaq = _into_rows((dz / tq + gq * cq).movedim(-1, dim).to(q_logits.dtype), q_logits, dim) \
        if output_mask[0] else none()
    gap = _into_rows((gp * cp).movedim(-1, dim).to(q_logits.dtype), q_logits, dim) \
        if output_mask[2] else none()
    tq1, tp1, n1 = tq.squeeze(-1), tp.squeeze(-1), n.squeeze(-1)
    sum_dz_y = (d_y * y_l).sum(-1) - (x * y_l).sum(-1) * sdy.squeeze(-1)
    gtq = (-sum_dz_y / tq1 + gq.squeeze(-1) * ((n1 - 1) / tq1 - (y_l * cq).sum(-1))) \
        if output_mask[1] else _acc(none())
    gtp = gp.squeeze(-1) * ((n1 - 1) / tp1 - (y_l * cp).sum(-1)) if output_mask[3] else _acc(none())
    return gaq, gtq, gap, gtp


# ---- binary ---------------------------------------------------------------------------------------
def logit_binary_concrete_sample(logits, temperature, seed, offset, generator):
    s, o = _seed(seed, offset, generator, logits.device)
    return ref.logit_binary_concrete_sample(_acc(logits), temperature, seed=s, offset=o) \
        .to(logits.dtype).contiguous()


def binary_concrete_sample(logits, temperature, seed, offset, generator):
    s, o = _seed(seed, offset, generator, logits.device)
    return ref.binary_concrete_sample(_acc(logits), temperature, seed=s, offset=o) \
        .to(logits.dtype).contiguous()


def _binary_sample_backward(grad, sample, temperature, temperature_grad, logit_space):
    s, g = _acc(sample), _acc(grad)
    t = temperature.to(device=s.device, dtype=s.dtype)
    if logit_space:
        dy, y = g, s
        finite = torch.isfinite(y)
    else:
        dsig = s * (1 - s)
        finite = dsig > 0
        dy = g * dsig
        y = torch.log(torch.where(finite, s, 0.5)) - torch.log1p(-torch.where(finite, s, 0.5))
    ga = (dy / t).to(sample.dtype).contiguous()
    if not logit_space:
        ga = torch.where(finite, ga, 0).contiguous()
    gt = torch.where(finite, -dy * y / t, 0).expand(s.shape).contiguous() if temperature_grad \
        else s.new_empty([0])
    return ga, gt


def logit_binary_concrete_sample_backward(grad, sample, temperature, temperature_grad):
    return _binary_sample_backward(grad, sample, temperature, temperature_grad, True)


def binary_concrete_sample_backward(grad, sample, temperature, temperature_grad):
    return _binary_sample_backward(grad, sample, temperature, temperature_grad, False)


def logit_binary_concrete_log_prob(value, logits, temperature):
    return ref.logit_binary_concrete_log_prob(_acc(value), _acc(logits), temperature) \
        .to(logits.dtype).contiguous()


def binary_concrete_log_prob(value, logits, temperature):
    return ref.binary_concrete_log_prob(_acc(value), _acc(logits), temperature) \
        .to(logits.dtype).contiguous()


def _binary_log_prob_backward(grad, value, logits, temperature, output_mask, logit_space):
    v = _acc(value).detach().requires_grad_(output_mask[0])
    a = _acc(logits).detach().requires_grad_(output_mask[1])
    t = _acc(temperature).detach().expand(a.shape).contiguous().requires_grad_(output_mask[2])
    fn = ref.logit_binary_concrete_log_prob if logit_space else ref.binary_concrete_log_prob
    inputs = [x for x, m in zip((v, a, t), output_mask) if m]
    res = iter(torch.autograd.grad(fn(v, a, t), inputs, _acc(grad)) if inputs else [])
    none = lambda: logits.new_empty([0])  # noqa: E731 (distinct tensors: no aliasing)
    gv = next(res).to(logits.dtype).contiguous() if output_mask[0] else none()
    ga = next(res).to(logits.dtype).contiguous() if output_mask[1] else none()
    gt = next(res).contiguous() if output_mask[2] else _acc(none())
    return gv, ga, gt


def logit_binary_concrete_log_prob_backward(grad, value, logits, temperature, output_mask):
    return _binary_log_prob_backward(grad, value, logits, temperature, output_mask, True)


def binary_concrete_log_prob_backward(grad, value, logits, temperature, output_mask):
    return _binary_log_prob_backward(grad, value, logits, temperature, output_mask, False)


def noise_like(self, kind, seed, offset, generator):
    s, o = _seed(seed, offset, generator, self.device)
    return ref.noise(self.shape, kind, s, o, dtype=self.dtype, device=self.device)


KERNELS = {name: fn for name, fn in globals().items()
           if not name.startswith("_") and callable(fn) and name in __import__(
               "concrete_ext._ops", fromlist=["SCHEMAS"]).SCHEMAS}
