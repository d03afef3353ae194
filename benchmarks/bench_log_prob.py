"""Categorical log-densities: exp_concrete_log_prob (log kappa, on the log-simplex) and
concrete_log_prob (on the simplex), forward / backward / full, against torch.distributions
(ExpRelaxedCategorical / RelaxedOneHotCategorical .log_prob), the package's plain-PyTorch reference
and torch.compile of the formula (log kappa in docs/ARCHITECTURE.md, "Ops").

Minimal bytes (N elements, R rows): forward reads value and logits and writes one value per row
(2N + R); backward reads both again and the row gradient and writes both gradients (4N + R); full is
both.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch.distributions import RelaxedOneHotCategorical
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import concrete_ext as ce

from .harness import Plan, Provider, Spec, add_providers, compiled

TAU = 0.5
OPS = ("exp_concrete_log_prob", "concrete_log_prob")
TX = {"exp_concrete_log_prob": ("exp",), "concrete_log_prob": ("log", "exp")}


def _log_kappa(y, a, tau):
    """log((n-1)!) + (n-1) log tau + sum_k (a_k - tau y_k) - n LSE_k(a_k - tau y_k), in fp32."""
    n = y.shape[-1]
    w = a.float() - tau * y.float()
    return math.lgamma(n) + (n - 1) * math.log(tau) + w.sum(-1) - n * torch.logsumexp(w, dim=-1)


def exp_log_prob_formula(y, a, tau):
    return _log_kappa(y, a, tau).to(a.dtype)


def log_prob_formula(x, a, tau):
    log_x = torch.log(x.float())
    return (_log_kappa(log_x, a, tau) - log_x.sum(-1)).to(a.dtype)


def _inputs(op, shape, dtype, device):
    def make() -> Dict[str, torch.Tensor]:
        a = torch.randn(shape, device=device, dtype=torch.float32)
        g = -torch.log(-torch.log(torch.rand(shape, device=device)))
        y = torch.log_softmax((a + g) / TAU, dim=-1)  # a point of ExpConcrete(a, TAU)
        value = y if op == "exp_concrete_log_prob" else y.exp()
        return {
            "value": value.to(dtype),
            "logits": a.to(dtype),
            "tau": torch.tensor(TAU, device=device, dtype=dtype),
        }

    return make


def _providers(plan: Plan, op: str, n: int, dtype) -> Dict[str, Provider]:
    key, cb = (op, n, dtype), plan.compile_backend
    if op == "exp_concrete_log_prob":
        ours = lambda i: ce.exp_concrete_log_prob(i["value"], i["logits"], TAU)  # noqa: E731
        dist, formula = ExpRelaxedCategorical, exp_log_prob_formula
    else:
        ours = lambda i: ce.concrete_log_prob(i["value"], i["logits"], TAU)  # noqa: E731
        dist, formula = RelaxedOneHotCategorical, log_prob_formula
    peers = {
        "dist": Provider(
            lambda i: dist(i["tau"], logits=i["logits"], validate_args=False).log_prob(i["value"])
        ),
        "compile": Provider(
            lambda i: compiled(formula, key, cb)(i["value"], i["logits"], TAU), compiled=True
        ),
    }
    return add_providers(plan, op, ours, peers, random=False)


def specs(plan: Plan) -> List[Spec]:
    out = []
    for op in OPS:
        if plan.ops is not None and op not in plan.ops:
            continue
        for dtype in plan.dtypes:
            esz = torch.empty((), dtype=dtype).element_size()
            for shape in plan.shapes:
                rows, n = math.prod(shape[:-1]), shape[-1]
                numel = rows * n
                nbytes = {"forward": (2 * numel + rows) * esz, "backward": (4 * numel + rows) * esz}
                nbytes["full"] = nbytes["forward"] + nbytes["backward"]
                for mode in plan.modes:
                    out.append(
                        Spec(
                            op=op,
                            mode=mode,
                            shape=tuple(shape),
                            dtype=dtype,
                            device=plan.device,
                            make_inputs=_inputs(op, tuple(shape), dtype, plan.device),
                            providers=_providers(plan, op, n, dtype),
                            bytes=nbytes[mode],
                            grad_inputs=("value", "logits"),
                            tx=TX[op],
                            input_bytes=2 * numel * esz,
                        )
                    )
    return out
