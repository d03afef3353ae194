"""The op table: one row per op, the single source of everything the op layer generates.

From each row, ``_ops`` generates the op's schema in both namespaces (``concrete_ext``, served by
the compiled CPU/CUDA kernels or the Python fallback; ``concrete_ext_triton``, served by the Triton
kernels), its fake kernel, its autograd (the classic one registered on the op and the
``torch.func``-aware one the public functions use), its forward-mode rule and its vmap rule; the
Python fallback kernels come from the row's reference function and derivative formulas.

A row says:

* ``args`` / ``returns``: the schema of the forward op without the random-number arguments.
  Random ops (``random=True``) take ``int? seed, int offset, Generator? generator`` in the compiled
  namespace and ``Tensor rng_state`` (int64 ``[seed, offset]`` on the op's device) in the Triton
  namespace, always last.
* ``kind``: ``"row"`` (a category dim ``dim``; the op sees (rows, n) rows with that dim last) or
  ``"elementwise"``.
* ``outputs``: the layout of each output (see LAYOUTS below), which fixes the fake kernel, the
  strides of every backend's output and the batching of the vmap rule.
* ``grads``: the differentiable inputs, in the order the backward op returns their gradients.
  Inputs whose name ends in ``temperature`` get a per-row (row ops) or per-element (elementwise ops)
  gradient in the math type, summed to the temperature's shape by the autograd layer.
* ``backward``: the backward op. Its arguments are bound by name: a forward input of the same name,
  or an entry of ``bind``: ``"grad<i>"`` (the incoming gradient of output i; ``"grad?<i>"``: None
  when that gradient is undefined), ``"out<i>"`` (output i of the forward), ``"needs:<input>"``
  (whether that input needs a gradient), ``"mask"`` (one bool per entry of ``grads``).
* ``reference`` / ``vjp`` / ``jvp``: the composite-PyTorch forward (``concrete_ext.reference``) and
  derivative formulas (``concrete_ext._derivatives``). The vjp is the backward op's Python fallback
  kernel and the differentiable backward used when a higher derivative is taken; the jvp gives the
  forward-mode tangents.
* ``undefined_rows``: the temperature gradient is 0 on rows that have no distribution (all logits
  -inf, whose sample is NaN), as for every op that reads its sample back.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

from . import _derivatives as dv
from . import reference as ref

ROW, ELEMENTWISE = "row", "elementwise"

# Output layouts: "<layout>:<input it is shaped like>[?<flag that asks for it>]". When the flag
# is false the output is an empty tensor of its own ([0]); flags name a bool argument or
# "output_mask[i]".
LAYOUTS = {
    "rows": "the input's shape, contiguous with `dim` moved last, viewed in the input's dim order",
    "batch": "the input's shape without `dim` (contiguous), the input's dtype",
    "like": "the input's shape, contiguous",
    "trows": "the input's shape without `dim`, in the math type (float64 for float64, else float32)",
    "telems": "the input's shape, contiguous, in the math type",
    "state": "int64 [seed, offset] of the call, on the input's device",
    "index": "the input's shape without `dim`, int64",
    "topk": "the input's shape without `dim`, then k, int64",
    "noise": "the input's shape, contiguous; int64 for kind 'bits', else the input's dtype",
}


@dataclasses.dataclass(frozen=True)
class Backward:
    args: str
    returns: str
    bind: Dict[str, str]
    outputs: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    args: str
    returns: str
    kind: str
    outputs: Tuple[str, ...]
    random: bool = False
    grads: Tuple[str, ...] = ()
    backward: Optional[Backward] = None
    reference: Optional[Callable] = None
    vjp: Optional[Callable] = None
    jvp: Optional[Callable] = None
    undefined_rows: bool = False
    composite: bool = False  # no compiled or Triton kernel: the reference serves every device


_SAMPLE_BW = dict(
    args="Tensor grad, Tensor sample, Tensor temperature, int dim, bool temperature_grad",
    returns="(Tensor, Tensor)",
    bind={"grad": "grad0", "sample": "out0", "temperature_grad": "needs:temperature"},
    outputs=("rows:sample", "trows:sample?temperature_grad"),
)
_LOG_PROB_BW = dict(
    args="Tensor grad, Tensor value, Tensor logits, Tensor temperature, int dim,"
    " bool[3] output_mask",
    returns="(Tensor, Tensor, Tensor)",
    bind={"grad": "grad0", "output_mask": "mask"},
    outputs=(
        "rows:logits?output_mask[0]",
        "rows:logits?output_mask[1]",
        "trows:logits?output_mask[2]",
    ),
)
_BINARY_SAMPLE_BW = dict(
    args="Tensor grad, Tensor sample, Tensor temperature, bool temperature_grad",
    returns="(Tensor, Tensor)",
    bind={"grad": "grad0", "sample": "out0", "temperature_grad": "needs:temperature"},
    outputs=("like:sample", "telems:sample?temperature_grad"),
)
_BINARY_LOG_PROB_BW = dict(
    args="Tensor grad, Tensor value, Tensor logits, Tensor temperature, bool[3] output_mask",
    returns="(Tensor, Tensor, Tensor)",
    bind={"grad": "grad0", "output_mask": "mask"},
    outputs=(
        "like:logits?output_mask[0]",
        "like:logits?output_mask[1]",
        "telems:logits?output_mask[2]",
    ),
)

OPS: Tuple[Op, ...] = (
    # ---- categorical samples -----------------------------------------------------------------
    Op(
        "exp_concrete_sample",
        "Tensor logits, Tensor temperature, int dim",
        "Tensor",
        ROW,
        ("rows:logits",),
        random=True,
        grads=("logits", "temperature"),
        backward=Backward(**_SAMPLE_BW),
        reference=ref.exp_concrete_sample,
        vjp=dv.exp_concrete_sample_vjp,
        jvp=dv.exp_concrete_sample_jvp,
        undefined_rows=True,
    ),
    Op(
        "concrete_sample",
        "Tensor logits, Tensor temperature, int dim",
        "Tensor",
        ROW,
        ("rows:logits",),
        random=True,
        grads=("logits", "temperature"),
        backward=Backward(**_SAMPLE_BW),
        reference=ref.concrete_sample,
        vjp=dv.concrete_sample_vjp,
        jvp=dv.concrete_sample_jvp,
        undefined_rows=True,
    ),
    # Straight-through: the one-hot of argmax(logits + G) forward, the soft sample's gradient
    # backward, recomputed from the [seed, offset] the forward returns (no rows x n tensor kept).
    Op(
        "gumbel_softmax_hard",
        "Tensor logits, Tensor temperature, int dim",
        "(Tensor, Tensor)",
        ROW,
        ("rows:logits", "state:logits"),
        random=True,
        grads=("logits", "temperature"),
        backward=Backward(
            args="Tensor grad, Tensor logits, Tensor temperature, Tensor rng_state, int dim,"
            " bool temperature_grad",
            returns="(Tensor, Tensor)",
            bind={"grad": "grad0", "rng_state": "out1", "temperature_grad": "needs:temperature"},
            outputs=("rows:logits", "trows:logits?temperature_grad"),
        ),
        reference=dv.gumbel_softmax_hard_reference,
        vjp=dv.gumbel_softmax_hard_vjp,
        jvp=dv.gumbel_softmax_hard_jvp,
    ),
    Op(
        "gumbel_max_sample",
        "Tensor logits, int dim",
        "Tensor",
        ROW,
        ("rows:logits",),
        random=True,
        reference=ref.gumbel_max_sample,
    ),
    # ---- index samplers: Gumbel-max and Gumbel-top-k returning indices (no one-hot, no noise) ----
    Op(
        "categorical_sample",
        "Tensor logits, Tensor temperature, int dim",
        "Tensor",
        ROW,
        ("index:logits",),
        random=True,
        reference=ref.categorical_sample,
    ),
    Op(
        "gumbel_top_k",
        "Tensor logits, int k, int dim",
        "Tensor",
        ROW,
        ("topk:logits",),
        random=True,
        reference=ref.gumbel_top_k,
    ),
    # ---- categorical log-densities (reduce `dim`) ----------------------------------------------
    Op(
        "exp_concrete_log_prob",
        "Tensor value, Tensor logits, Tensor temperature, int dim",
        "Tensor",
        ROW,
        ("batch:logits",),
        grads=("value", "logits", "temperature"),
        backward=Backward(**_LOG_PROB_BW),
        reference=ref.exp_concrete_log_prob,
        vjp=dv.exp_concrete_log_prob_vjp,
        jvp=dv.exp_concrete_log_prob_jvp,
    ),
    Op(
        "concrete_log_prob",
        "Tensor value, Tensor logits, Tensor temperature, int dim",
        "Tensor",
        ROW,
        ("batch:logits",),
        grads=("value", "logits", "temperature"),
        backward=Backward(**_LOG_PROB_BW),
        reference=ref.concrete_log_prob,
        vjp=dv.concrete_log_prob_vjp,
        jvp=dv.concrete_log_prob_jvp,
    ),
    # ---- the relaxed KL term (Eq. 28): y ~ ExpConcrete(q), log kappa_q(y), log kappa_p(y) -------
    Op(
        "relaxed_kl_sample",
        "Tensor q_logits, Tensor q_temperature, Tensor p_logits, Tensor p_temperature, int dim",
        "(Tensor, Tensor, Tensor)",
        ROW,
        ("rows:q_logits", "batch:q_logits", "batch:q_logits"),
        random=True,
        grads=("q_logits", "q_temperature", "p_logits", "p_temperature"),
        backward=Backward(
            args="Tensor? grad_sample, Tensor? grad_log_q, Tensor? grad_log_p, Tensor sample,"
            " Tensor q_logits, Tensor q_temperature, Tensor p_logits, Tensor p_temperature,"
            " int dim, bool[4] output_mask",
            returns="(Tensor, Tensor, Tensor, Tensor)",
            bind={
                "grad_sample": "grad?0",
                "grad_log_q": "grad?1",
                "grad_log_p": "grad?2",
                "sample": "out0",
                "output_mask": "mask",
            },
            outputs=(
                "rows:q_logits?output_mask[0]",
                "trows:q_logits?output_mask[1]",
                "rows:q_logits?output_mask[2]",
                "trows:q_logits?output_mask[3]",
            ),
        ),
        reference=dv.relaxed_kl_sample_reference,
        vjp=dv.relaxed_kl_sample_vjp,
        jvp=dv.relaxed_kl_sample_jvp,
        undefined_rows=True,
    ),
    # ---- binary (elementwise; the temperature broadcasts to the logits' shape) -------------------
    Op(
        "logit_binary_concrete_sample",
        "Tensor logits, Tensor temperature",
        "Tensor",
        ELEMENTWISE,
        ("like:logits",),
        random=True,
        grads=("logits", "temperature"),
        backward=Backward(**_BINARY_SAMPLE_BW),
        reference=ref.logit_binary_concrete_sample,
        vjp=dv.logit_binary_concrete_sample_vjp,
        jvp=dv.logit_binary_concrete_sample_jvp,
    ),
    Op(
        "binary_concrete_sample",
        "Tensor logits, Tensor temperature",
        "Tensor",
        ELEMENTWISE,
        ("like:logits",),
        random=True,
        grads=("logits", "temperature"),
        backward=Backward(**_BINARY_SAMPLE_BW),
        reference=ref.binary_concrete_sample,
        vjp=dv.binary_concrete_sample_vjp,
        jvp=dv.binary_concrete_sample_jvp,
    ),
    Op(
        "logit_binary_concrete_log_prob",
        "Tensor value, Tensor logits, Tensor temperature",
        "Tensor",
        ELEMENTWISE,
        ("like:logits",),
        grads=("value", "logits", "temperature"),
        backward=Backward(**_BINARY_LOG_PROB_BW),
        reference=ref.logit_binary_concrete_log_prob,
        vjp=dv.logit_binary_concrete_log_prob_vjp,
        jvp=dv.logit_binary_concrete_log_prob_jvp,
    ),
    Op(
        "binary_concrete_log_prob",
        "Tensor value, Tensor logits, Tensor temperature",
        "Tensor",
        ELEMENTWISE,
        ("like:logits",),
        grads=("value", "logits", "temperature"),
        backward=Backward(**_BINARY_LOG_PROB_BW),
        reference=ref.binary_concrete_log_prob,
        vjp=dv.binary_concrete_log_prob_vjp,
        jvp=dv.binary_concrete_log_prob_jvp,
    ),
    # ---- noise of the random-number contract, shaped like `self` ---------------------------------
    Op(
        "noise_like",
        "Tensor self, str kind",
        "Tensor",
        ELEMENTWISE,
        ("noise:self",),
        random=True,
        reference=dv.noise_like_reference,
    ),
    # The noise a random call drew, from its [seed, offset] (for the straight-through backward's
    # higher derivatives, which rebuild the soft sample); composite: built on noise_like.
    Op(
        "noise_from_state",
        "Tensor self, str kind, Tensor rng_state",
        "Tensor",
        ELEMENTWISE,
        ("noise:self",),
        reference=dv.noise_from_state_reference,
        composite=True,
    ),
)

BY_NAME: Dict[str, Op] = {o.name: o for o in OPS}
