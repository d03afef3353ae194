"""Binary Concrete: logit_binary_concrete_sample (Eq. 26), binary_concrete_sample (Eq. 16) and
logit_binary_concrete_log_prob, forward / backward / full, against torch.distributions
(LogitRelaxedBernoulli / RelaxedBernoulli), the reference and torch.compile of the formula.

Elementwise ops: the shape only sets the element count. Minimal bytes (N elements): sampling reads
the logits and writes the sample (2N), its backward reads the sample and its gradient and writes
the logits' gradient (3N); the log-density reads value and logits and writes one value each (3N),
its backward reads those two and the gradient and writes two gradients (5N).
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch.distributions import RelaxedBernoulli
from torch.distributions.relaxed_bernoulli import LogitRelaxedBernoulli

import concrete_ext as ce

from .harness import Plan, Provider, Spec, add_providers, compiled

TAU = 0.5
OPS = ("logit_binary_concrete_sample", "binary_concrete_sample", "logit_binary_concrete_log_prob")
BYTES = {
    "sample": {"forward": 2, "backward": 3, "full": 5},
    "log_prob": {"forward": 3, "backward": 5, "full": 8},
}
# Logistic noise takes two logs (log U and log(1 - U)), the sigmoid an exp, softplus an exp and a log.
TX = {
    "logit_binary_concrete_sample": ("log", "log"),
    "binary_concrete_sample": ("log", "log", "exp"),
    "logit_binary_concrete_log_prob": ("exp", "log"),
}
TX_BACKWARD = {"logit_binary_concrete_log_prob": ("exp",)}  # the sigmoid; sampling needs none


def logit_formula(a, tau):
    u = torch.rand(a.shape, device=a.device, dtype=torch.float32)
    return ((a.float() + torch.log(u) - torch.log1p(-u)) / tau).to(a.dtype)


def binary_formula(a, tau):
    return torch.sigmoid(logit_formula(a, tau).float()).to(a.dtype)


def logit_log_prob_formula(y, a, tau):
    z = a.float() - tau * y.float()
    return (math.log(tau) + z - 2 * F.softplus(z)).to(a.dtype)


def _inputs(op, shape, dtype, device):
    def make() -> Dict[str, torch.Tensor]:
        a = torch.randn(shape, device=device, dtype=dtype)
        out = {"logits": a, "tau": torch.tensor(TAU, device=device, dtype=dtype)}
        if op.endswith("log_prob"):
            u = torch.rand(shape, device=device)
            out["value"] = ((a.float() + torch.log(u) - torch.log1p(-u)) / TAU).to(dtype)
        return out

    return make


def _providers(plan: Plan, op: str, n: int, dtype) -> Dict[str, Provider]:
    key, cb = (op, n, dtype), plan.compile_backend
    if op == "logit_binary_concrete_sample":
        ours = lambda i: ce.logit_binary_concrete_sample(i["logits"], TAU)  # noqa: E731
        dist = lambda i: LogitRelaxedBernoulli(  # noqa: E731
            i["tau"], logits=i["logits"], validate_args=False
        ).rsample()
        comp = lambda i: compiled(logit_formula, key, cb)(i["logits"], TAU)  # noqa: E731
    elif op == "binary_concrete_sample":
        ours = lambda i: ce.binary_concrete_sample(i["logits"], TAU)  # noqa: E731
        dist = lambda i: RelaxedBernoulli(  # noqa: E731
            i["tau"], logits=i["logits"], validate_args=False
        ).rsample()
        comp = lambda i: compiled(binary_formula, key, cb)(i["logits"], TAU)  # noqa: E731
    else:
        ours = lambda i: ce.logit_binary_concrete_log_prob(i["value"], i["logits"], TAU)  # noqa: E731
        dist = lambda i: LogitRelaxedBernoulli(  # noqa: E731
            i["tau"], logits=i["logits"], validate_args=False
        ).log_prob(i["value"])
        comp = lambda i: compiled(logit_log_prob_formula, key, cb)(  # noqa: E731
            i["value"], i["logits"], TAU
        )
    peers = {"dist": Provider(dist), "compile": Provider(comp, compiled=True)}
    return add_providers(plan, op, ours, peers, random=not op.endswith("log_prob"))


def specs(plan: Plan) -> List[Spec]:
    out = []
    for op in OPS:
        if plan.ops is not None and op not in plan.ops:
            continue
        kind = "log_prob" if op.endswith("log_prob") else "sample"
        grads = ("value", "logits") if kind == "log_prob" else ("logits",)
        n_inputs = len(grads)
        for dtype in plan.dtypes:
            esz = torch.empty((), dtype=dtype).element_size()
            for shape in plan.shapes:
                numel = math.prod(shape)
                for mode in plan.modes:
                    out.append(
                        Spec(
                            op=op,
                            mode=mode,
                            shape=tuple(shape),
                            dtype=dtype,
                            device=plan.device,
                            make_inputs=_inputs(op, tuple(shape), dtype, plan.device),
                            providers=_providers(plan, op, shape[-1], dtype),
                            bytes=BYTES[kind][mode] * numel * esz,
                            grad_inputs=grads,
                            tx=TX_BACKWARD.get(op, ()) if mode == "backward" else TX[op],
                            input_bytes=n_inputs * numel * esz,
                        )
                    )
    return out
