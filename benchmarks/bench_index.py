"""The index samplers: categorical_sample and gumbel_top_k (k = 1 and 8) at LLM-vocabulary rows,
forward only (they have no gradient), against the torch ways to draw the same thing:

* ``torch``: ``torch.multinomial(torch.softmax(logits, -1), k)`` (k draws without replacement: the
  law of Gumbel-top-k);
* ``dist``: ``torch.distributions.Categorical(logits=logits).sample()`` (one draw per row, so for
  top-k with k > 1 it is a lower bound of the peer's cost);
* ``topk`` (gumbel_top_k only): ``torch.topk(logits + G, k).indices`` with G = -log(E), E ~ Exp(1)
  from ``exponential_`` (the Gumbel-top-k trick in eager torch).

    python -m benchmarks.run --ops categorical_sample,gumbel_top_k     # 64 x 32k / 128k / 256k
    python -m benchmarks.run --quick    # includes 64 x 131072 fp32 and bf16

Logits are standard normal. Minimal bytes: the logits read once and k int64 per row written.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch.distributions import Categorical

import concrete_ext as ce

from .harness import Plan, Provider, Spec, add_providers

OPS = ("categorical_sample", "gumbel_top_k")
KS = (1, 8)
TX = ("log", "log")  # the Gumbel noise of every element (what pruning avoids)


def multinomial(x, k):
    return torch.multinomial(torch.softmax(x, -1), k)


def topk_gumbel(x, k):
    g = -torch.empty_like(x).exponential_().log()
    return torch.topk(x + g, k, dim=-1).indices


def _inputs(shape, dtype, device):
    def make() -> Dict[str, torch.Tensor]:
        return {"logits": torch.randn(shape, device=device, dtype=dtype)}

    return make


def _providers(plan: Plan, op: str, k: int) -> Dict[str, Provider]:
    peers = {
        "torch": Provider(lambda i: multinomial(i["logits"], k)),
        "dist": Provider(lambda i: Categorical(logits=i["logits"], validate_args=False).sample()),
    }
    if op == "categorical_sample":
        ours = lambda i: ce.categorical_sample(i["logits"])  # noqa: E731
    else:
        ours = lambda i: ce.gumbel_top_k(i["logits"], k)  # noqa: E731
        peers["topk"] = Provider(lambda i: topk_gumbel(i["logits"], k))
    return add_providers(plan, op, ours, peers)


def specs(plan: Plan) -> List[Spec]:
    out = []
    for op in OPS:
        if plan.ops is not None and op not in plan.ops:
            continue
        for dtype in plan.dtypes:
            for shape in plan.shapes:
                rows, n = shape[0], shape[-1]
                esz = torch.empty((), dtype=dtype).element_size()
                for k in (1,) if op == "categorical_sample" else KS:
                    out.append(
                        Spec(
                            op=op if op == "categorical_sample" else f"{op}(k={k})",
                            mode="forward",
                            shape=tuple(shape),
                            dtype=dtype,
                            device=plan.device,
                            make_inputs=_inputs(tuple(shape), dtype, plan.device),
                            providers=_providers(plan, op, k),
                            bytes=rows * n * esz + rows * k * 8,
                            grad_inputs=(),
                            tx=TX,
                            input_bytes=rows * n * esz,
                        )
                    )
    return out
