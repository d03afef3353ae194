"""Every backward op called directly (torch.ops.concrete_ext.<op>_backward), against torch.compile of
the same backward formula, in mode `backward_op`.

    python -m benchmarks.run --quick --ops concrete_sample_backward,binary_concrete_sample_backward

The autograd `backward` mode of the other bench modules times autograd.grad through the op, which
adds autograd's own work to ours and to the peer's; here both sides compute only the gradient, from
the same saved tensors, so the row says how fast our backward kernel is against what inductor
generates for its formula. Gradients computed: d logits (and d value for the log-densities), not
d temperature (the temperature is a float, as in most calls). The compiled formulas draw the
straight-through backward's noise from torch.rand, as the forward peers do, and skip the masking of
-inf logits, which the inputs here do not have.

Minimal bytes (N elements, R rows): sample backward reads the sample and its gradient and writes
d logits (3N; the straight-through backward reads the logits instead of the sample); log-density
backward reads value, logits and R row gradients and writes two gradients (4N + R); relaxed KL
reads y, both logits, dy and 2R row gradients and writes both logits' gradients (6N + 2R).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List

import torch

from .harness import Plan, Provider, Spec, add_providers, compiled

TAU, TAU_P = 0.5, 0.67
OPS = (
    "concrete_sample_backward",
    "exp_concrete_sample_backward",
    "gumbel_softmax_hard_backward",
    "exp_concrete_log_prob_backward",
    "concrete_log_prob_backward",
    "relaxed_kl_sample_backward",
    "logit_binary_concrete_sample_backward",
    "binary_concrete_sample_backward",
    "logit_binary_concrete_log_prob_backward",
    "binary_concrete_log_prob_backward",
)
MODE = "backward_op"


# ---- the backward formulas torch.compile sees (fp32, as the kernels compute) ----------------------
def concrete_bwd(grad, x, tau):
    s = (x * grad).sum(-1, keepdim=True)
    return x * (grad - s) / tau


def exp_concrete_bwd(grad, y, tau):
    g = torch.where(y == float("-inf"), 0.0, grad)
    return (g - y.exp() * g.sum(-1, keepdim=True)) / tau


def hard_bwd(grad, a, tau):
    u = torch.rand(a.shape, device=a.device, dtype=torch.float32)
    x = torch.softmax((a - torch.log(-torch.log(u))) / tau, dim=-1)
    return x * (grad - (x * grad).sum(-1, keepdim=True)) / tau


def _density_c(y, a, tau):
    return 1 - y.shape[-1] * torch.softmax(a - tau * y, dim=-1)


def exp_log_prob_bwd(g, y, a, tau):
    da = g.unsqueeze(-1) * _density_c(y, a, tau)
    return -tau * da, da


def log_prob_bwd(g, x, a, tau):
    gc = g.unsqueeze(-1)
    da = gc * _density_c(torch.log(x), a, tau)
    return (-tau * da - gc) / x, da


def kl_bwd(gy, gq, gp, y, aq, ap, tq, tp):
    cq, cp = _density_c(y, aq, tq), _density_c(y, ap, tp)
    gq, gp = gq.unsqueeze(-1), gp.unsqueeze(-1)
    dY = gy - gq * tq * cq - gp * tp * cp
    dz = dY - y.exp() * dY.sum(-1, keepdim=True)
    return dz / tq + gq * cq, gp * cp


def logit_binary_bwd(grad, y, tau):
    return grad / tau


def binary_bwd(grad, x, tau):
    return grad * (x * (1 - x)) / tau


def logit_binary_log_prob_bwd(g, y, a, tau):
    c = 1 - 2 * torch.sigmoid(a - tau * y)
    return -tau * c * g, c * g


def binary_log_prob_bwd(g, x, a, tau):
    y = torch.log(x) - torch.log1p(-x)
    c = 1 - 2 * torch.sigmoid(a - tau * y)
    return (-tau * c + 2 * x - 1) / (x * (1 - x)) * g, c * g


# ---- inputs: what the forward would have saved ------------------------------------------------------
def _inputs(op: str, shape, dtype, device) -> Callable[[], Dict[str, torch.Tensor]]:
    rows, n = shape

    def make():
        a = torch.randn(shape, device=device, dtype=torch.float32)
        g = -torch.log(-torch.log(torch.rand(shape, device=device)))
        y = torch.log_softmax((a + g) / TAU, dim=-1)
        out = {"a": a, "grad": torch.randn(shape, device=device)}
        if op in ("concrete_sample_backward", "concrete_log_prob_backward"):
            out["v"] = y.exp()
        elif op in (
            "exp_concrete_sample_backward",
            "exp_concrete_log_prob_backward",
            "relaxed_kl_sample_backward",
        ):
            out["v"] = y
        elif op.startswith("logit_binary"):
            u = torch.rand(shape, device=device)
            out["v"] = (a + torch.log(u) - torch.log1p(-u)) / TAU
        elif op.startswith("binary"):
            u = torch.rand(shape, device=device)
            out["v"] = torch.sigmoid((a + torch.log(u) - torch.log1p(-u)) / TAU)
        if "log_prob" in op:
            out["grad"] = torch.randn(shape[:-1] if "binary" not in op else shape, device=device)
        if op == "relaxed_kl_sample_backward":
            out["ap"] = torch.randn(shape, device=device)
            out["gq"], out["gp"] = (
                torch.randn(rows, device=device),
                torch.randn(rows, device=device),
            )
        if op == "gumbel_softmax_hard_backward":
            out["state"] = torch.tensor([1234, 0], dtype=torch.int64)
        return {
            k: (v.to(dtype) if v.is_floating_point() and k not in ("gq", "gp") else v)
            for k, v in out.items()
        }

    return make


def _ours(op: str) -> Callable:
    ce = torch.ops.concrete_ext
    t, tp = torch.tensor(TAU, dtype=torch.float64), torch.tensor(TAU_P, dtype=torch.float64)
    if op in ("concrete_sample_backward", "exp_concrete_sample_backward"):
        f = getattr(ce, op)
        return lambda i: f(i["grad"], i["v"], t, -1, False)
    if op == "gumbel_softmax_hard_backward":
        return lambda i: ce.gumbel_softmax_hard_backward(
            i["grad"], i["a"], t, i["state"], -1, False
        )
    if op in ("exp_concrete_log_prob_backward", "concrete_log_prob_backward"):
        f = getattr(ce, op)
        return lambda i: f(i["grad"], i["v"], i["a"], t, -1, [True, True, False])
    if op == "relaxed_kl_sample_backward":
        return lambda i: ce.relaxed_kl_sample_backward(
            i["grad"],
            i["gq"],
            i["gp"],
            i["v"],
            i["a"],
            t,
            i["ap"],
            tp,
            -1,
            [True, False, True, False],
        )
    if op.endswith("sample_backward"):
        f = getattr(ce, op)
        return lambda i: f(i["grad"], i["v"], t, False)
    f = getattr(ce, op)
    return lambda i: f(i["grad"], i["v"], i["a"], t, [True, True, False])


def _compiled(op: str, key: tuple, backend: str) -> Callable:
    formula = {
        "concrete_sample_backward": concrete_bwd,
        "exp_concrete_sample_backward": exp_concrete_bwd,
        "gumbel_softmax_hard_backward": hard_bwd,
        "exp_concrete_log_prob_backward": exp_log_prob_bwd,
        "concrete_log_prob_backward": log_prob_bwd,
        "relaxed_kl_sample_backward": kl_bwd,
        "logit_binary_concrete_sample_backward": logit_binary_bwd,
        "binary_concrete_sample_backward": binary_bwd,
        "logit_binary_concrete_log_prob_backward": logit_binary_log_prob_bwd,
        "binary_concrete_log_prob_backward": binary_log_prob_bwd,
    }[op]
    fn = lambda: compiled(formula, key, backend)  # noqa: E731
    if op == "gumbel_softmax_hard_backward":
        return lambda i: fn()(i["grad"], i["a"], TAU)
    if op == "relaxed_kl_sample_backward":
        return lambda i: fn()(i["grad"], i["gq"], i["gp"], i["v"], i["a"], i["ap"], TAU, TAU_P)
    if "log_prob" in op:
        return lambda i: fn()(i["grad"], i["v"], i["a"], TAU)
    return lambda i: fn()(i["grad"], i["v"], TAU)


def _bytes(op: str, rows: int, n: int, esz: int) -> int:
    numel = rows * n
    if op == "relaxed_kl_sample_backward":
        return (6 * numel + 2 * rows) * esz
    if "log_prob" in op:
        return (4 * numel + (numel if "binary" in op else rows)) * esz
    return 3 * numel * esz


def specs(plan: Plan) -> List[Spec]:
    out = []
    for op in OPS:
        if plan.ops is not None and op not in plan.ops:
            continue
        for dtype in plan.dtypes:
            esz = torch.empty((), dtype=dtype).element_size()
            for shape in plan.shapes:
                rows, n = math.prod(shape[:-1]), shape[-1]
                key, cb = (op, n, dtype), plan.compile_backend
                peers = {"compile": Provider(_compiled(op, key, cb), compiled=True)}
                out.append(
                    Spec(
                        op=op,
                        mode=MODE,
                        shape=tuple(shape),
                        dtype=dtype,
                        device=plan.device,
                        make_inputs=_inputs(op, tuple(shape), dtype, plan.device),
                        providers=add_providers(plan, op, _ours(op), peers, random=False),
                        bytes=_bytes(op, rows, n, esz),
                        grad_inputs=(),
                        tx=(),
                        input_bytes=(3 if op == "relaxed_kl_sample_backward" else 2)
                        * rows
                        * n
                        * esz,
                    )
                )
    return out
