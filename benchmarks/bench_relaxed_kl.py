"""The relaxed KL term (Eq. 28): relaxed_kl_sample draws y ~ ExpConcrete(q) and returns
(y, log kappa_q(y), log kappa_p(y)) in one pass, against the same three results computed with
torch.distributions.ExpRelaxedCategorical, the reference and torch.compile of the formula.

Minimal bytes (N elements, R rows): forward reads both logits and writes the sample and two values
per row (3N + 2R); backward reads the sample, its gradient, both logits and two row gradients and
writes both logits' gradients (6N + 2R); full is both.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import concrete_ext as ce

from .bench_log_prob import _log_kappa
from .bench_sample import _scores
from .harness import Plan, Provider, Spec, add_providers, compiled

TAU_Q, TAU_P = 0.5, 0.67  # the paper's separate posterior and prior temperatures (Section 5)
OPS = ("relaxed_kl_sample",)
TX = ("log", "log", "exp", "exp", "exp")  # noise, the sample's LSE, the two densities' LSEs
TX_BACKWARD = ("exp", "exp")  # the two densities' softmaxes


def kl_formula(q, p, tq, tp):
    y = torch.log_softmax(_scores(q, tq), dim=-1)
    return y.to(q.dtype), _log_kappa(y, q, tq).to(q.dtype), _log_kappa(y, p, tp).to(q.dtype)


def _dist(i):
    dq = ExpRelaxedCategorical(i["tq"], logits=i["q_logits"], validate_args=False)
    dp = ExpRelaxedCategorical(i["tp"], logits=i["p_logits"], validate_args=False)
    y = dq.rsample()
    return y, dq.log_prob(y), dp.log_prob(y)


def _inputs(shape, dtype, device):
    def make() -> Dict[str, torch.Tensor]:
        return {
            "q_logits": torch.randn(shape, device=device, dtype=dtype),
            "p_logits": torch.randn(shape, device=device, dtype=dtype),
            "tq": torch.tensor(TAU_Q, device=device, dtype=dtype),
            "tp": torch.tensor(TAU_P, device=device, dtype=dtype),
        }

    return make


def _providers(plan: Plan, n: int, dtype) -> Dict[str, Provider]:
    key, cb = ("relaxed_kl_sample", n, dtype), plan.compile_backend
    ours = lambda i: ce.relaxed_kl_sample(i["q_logits"], TAU_Q, i["p_logits"], TAU_P)  # noqa: E731
    peers = {
        "dist": Provider(_dist),
        "compile": Provider(
            lambda i: compiled(kl_formula, key, cb)(i["q_logits"], i["p_logits"], TAU_Q, TAU_P),
            compiled=True,
        ),
    }
    return add_providers(plan, "relaxed_kl_sample", ours, peers)


def specs(plan: Plan) -> List[Spec]:
    out = []
    if plan.ops is not None and "relaxed_kl_sample" not in plan.ops:
        return out
    for dtype in plan.dtypes:
        esz = torch.empty((), dtype=dtype).element_size()
        for shape in plan.shapes:
            rows, n = math.prod(shape[:-1]), shape[-1]
            numel = rows * n
            nbytes = {
                "forward": (3 * numel + 2 * rows) * esz,
                "backward": (6 * numel + 2 * rows) * esz,
            }
            nbytes["full"] = nbytes["forward"] + nbytes["backward"]
            for mode in plan.modes:
                out.append(
                    Spec(
                        op="relaxed_kl_sample",
                        mode=mode,
                        shape=tuple(shape),
                        dtype=dtype,
                        device=plan.device,
                        make_inputs=_inputs(tuple(shape), dtype, plan.device),
                        providers=_providers(plan, n, dtype),
                        bytes=nbytes[mode],
                        grad_inputs=("q_logits", "p_logits"),
                        tx=TX_BACKWARD if mode == "backward" else TX,
                        input_bytes=2 * numel * esz,
                    )
                )
    return out
