"""Categorical sampling: concrete_sample, exp_concrete_sample and the straight-through
gumbel_softmax(hard=True), forward / backward / full, against F.gumbel_softmax, torch.distributions
(RelaxedOneHotCategorical, ExpRelaxedCategorical) and torch.compile of the formula.

    python -m benchmarks.run --ops concrete_sample,exp_concrete_sample,gumbel_softmax_hard [--quick]

Minimal bytes (N = rows x n elements of the dtype): forward reads the logits and writes the sample
(2N); backward reads the sample (or, hard, the logits) and its gradient and writes the logits'
gradient (3N); full is both (5N).
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch.distributions import RelaxedOneHotCategorical
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import concrete_ext as ce

from .harness import Plan, Provider, Spec, add_providers, compiled

TAU = 0.5
OPS = ("concrete_sample", "exp_concrete_sample", "gumbel_softmax_hard")
BYTES = {"forward": 2, "backward": 3, "full": 5}
TX = ("log", "log", "exp")  # Gumbel noise (two logs) and the softmax's exp


def _tx(op: str, mode: str):
    """The backward of a soft sample needs no transcendental; the hard one recomputes the sample."""
    return () if mode == "backward" and op != "gumbel_softmax_hard" else TX


# ---- the formulas torch.compile sees (noise in fp32 from torch.rand, as the kernels do) ----------
def _scores(x, tau):
    u = torch.rand(x.shape, device=x.device, dtype=torch.float32)
    return (x.float() - torch.log(-torch.log(u))) / tau


def concrete_formula(x, tau):
    return torch.softmax(_scores(x, tau), dim=-1).to(x.dtype)


def exp_concrete_formula(x, tau):
    return torch.log_softmax(_scores(x, tau), dim=-1).to(x.dtype)


def hard_formula(x, tau):
    soft = torch.softmax(_scores(x, tau), dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return (hard - soft.detach() + soft).to(x.dtype)


def exp_relaxed_eager(x, tau):
    """ExpConcrete with F.gumbel_softmax's noise: the eager peer of exp_concrete_sample."""
    g = -torch.empty_like(x).exponential_().log()
    return torch.log_softmax((x + g) / tau, dim=-1)


def _inputs(shape, dtype, device):
    def make() -> Dict[str, torch.Tensor]:
        x = torch.randn(shape, device=device, dtype=dtype)
        return {"logits": x, "tau": torch.tensor(TAU, device=device, dtype=dtype)}

    return make


def _providers(plan: Plan, op: str, n: int, dtype) -> Dict[str, Provider]:
    key = (op, n, dtype)
    cb = plan.compile_backend
    if op == "concrete_sample":
        ours = lambda i: ce.concrete_sample(i["logits"], TAU)  # noqa: E731
        peers = {
            "torch": Provider(lambda i: F.gumbel_softmax(i["logits"], tau=TAU)),
            "dist": Provider(
                lambda i: RelaxedOneHotCategorical(
                    i["tau"], logits=i["logits"], validate_args=False
                ).rsample()
            ),
            "compile": Provider(
                lambda i: compiled(concrete_formula, key, cb)(i["logits"], TAU), compiled=True
            ),
        }
    elif op == "exp_concrete_sample":
        ours = lambda i: ce.exp_concrete_sample(i["logits"], TAU)  # noqa: E731
        peers = {
            "torch": Provider(lambda i: exp_relaxed_eager(i["logits"], TAU)),
            "dist": Provider(
                lambda i: ExpRelaxedCategorical(
                    i["tau"], logits=i["logits"], validate_args=False
                ).rsample()
            ),
            "compile": Provider(
                lambda i: compiled(exp_concrete_formula, key, cb)(i["logits"], TAU), compiled=True
            ),
        }
    else:
        ours = lambda i: ce.gumbel_softmax(i["logits"], TAU, hard=True)  # noqa: E731
        peers = {
            "torch": Provider(lambda i: F.gumbel_softmax(i["logits"], tau=TAU, hard=True)),
            "compile": Provider(
                lambda i: compiled(hard_formula, key, cb)(i["logits"], TAU), compiled=True
            ),
        }
    return add_providers(plan, op, ours, peers)


def specs(plan: Plan) -> List[Spec]:
    out = []
    for op in OPS:
        if plan.ops is not None and op not in plan.ops:
            continue
        for dtype in plan.dtypes:
            for shape in plan.shapes:
                n, esz = shape[-1], torch.empty((), dtype=dtype).element_size()
                numel = shape[0] * n
                for mode in plan.modes:
                    out.append(
                        Spec(
                            op=op,
                            mode=mode,
                            shape=tuple(shape),
                            dtype=dtype,
                            device=plan.device,
                            make_inputs=_inputs(tuple(shape), dtype, plan.device),
                            providers=_providers(plan, op, n, dtype),
                            bytes=BYTES[mode] * numel * esz,
                            grad_inputs=("logits",),
                            tx=_tx(op, mode),
                            input_bytes=numel * esz,
                        )
                    )
    return out
