"""Layers of n-ary stochastic nodes (n in {2, 4, 8}) with states on the corners of {-1, 1}^log2(n).

Appendix D.2: a layer of ``units`` stochastic units with arity ``n`` holds ``units / log2(n)``
independent nodes; node j has logits log alpha in R^n, samples D ~ Discrete(alpha) and emits
Y = C D, where the columns of C (log2(n) x n) are the corners of the hypercube. Its Concrete
relaxation emits C X with X ~ Concrete(alpha, lambda).

Binary layers (n = 2) use one logit a = log alpha per unit: the discrete unit is
2 H(a + L) - 1 with L ~ Logistic (Appendix B, Eq. 15), the relaxed one is 2 sigmoid(Y) - 1 with
Y = (a + L) / lambda the logistic node of Eq. 26, whose density is that of Appendix C.3.2. n-ary
layers relax through ExpConcrete nodes (Appendix C.3, Eq. 24-25): Y = log X on the log-simplex.

All relaxed densities are computed in log space by the package's ops (``logit_binary_concrete_*``,
``exp_concrete_*``, ``relaxed_kl_sample``), never by formulas of this module.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import concrete_ext as ce

__all__ = ["StochasticLayer", "corners", "relaxed_kl_sample", "random_op"]

ARITIES = (2, 4, 8)


def corners(n: int) -> Tensor:
    """C: the (log2 n, n) matrix whose column j is the corner of {-1, 1}^log2(n) with bit b of j
    giving coordinate b (bit set: +1)."""
    k = int(round(math.log2(n)))
    j = torch.arange(n)
    bits = (j.unsqueeze(0) >> torch.arange(k).unsqueeze(1)) & 1
    return (2 * bits - 1).to(torch.float32)


def relaxed_kl_sample(
    q_logits: Tensor, q_temperature, p_logits: Tensor, p_temperature, **noise
) -> Tuple[Tensor, Tensor, Tensor]:
    """(y ~ ExpConcrete(q), log kappa_q(y), log kappa_p(y)) along the last dim (Eq. 28)."""
    return ce.relaxed_kl_sample(q_logits, q_temperature, p_logits, p_temperature, -1, **noise)


def _rows(t: Tensor, start: int, total: int) -> Tensor:
    """t (its rows start .. of a batch of total rows, dim 0) padded with zeros to the batch."""
    n = t.shape[0]
    return torch.cat(
        [t.new_zeros((start,) + t.shape[1:]), t, t.new_zeros((total - start - n,) + t.shape[1:])]
    )


def random_op(op, noise: Dict, *inputs: Tensor, **kwargs):
    """``op(*inputs, **kwargs, **noise)``. With ``noise["rows"] = (start, total)`` (a shard of a
    data-parallel batch, NoiseSource), the inputs are padded with zero rows to the whole batch,
    the op runs on it and the outputs are cut back to the shard: the ops' noise is a function of
    (seed, element index), so each row gets the noise it gets in a one-process run."""
    rows = noise.get("rows")
    if rows is None:
        return op(*inputs, **kwargs, **noise)
    noise = {k: v for k, v in noise.items() if k != "rows"}
    start, total = rows
    n = inputs[0].shape[0]
    out = op(*[_rows(t, start, total) for t in inputs], **kwargs, **noise)
    if isinstance(out, tuple):
        return tuple(o[start : start + n] for o in out)
    return out[start : start + n]


def _noise(like: Tensor, *, kind: str, **noise) -> Tensor:
    """``ce.noise`` of ``like``'s shape, dtype and device (as a function of a tensor for random_op)."""
    return ce.noise(kind, like.shape, dtype=like.dtype, device=like.device, **noise)


def _kl_sample(q_logits: Tensor, p_logits: Tensor, *, q_temperature, p_temperature, **noise):
    return relaxed_kl_sample(q_logits, q_temperature, p_logits, p_temperature, **noise)


class StochasticLayer:
    """Sampling and log-probabilities of one layer; holds no parameters.

    Logits come flat, ``(..., params)``: ``units`` logits for a binary layer, ``nodes * n`` for an
    n-ary one. States: binary, the activity in {-1, 1} itself; n-ary, the one-hot D of each node,
    shape ``(..., nodes, n)``. Relaxed values ``y`` are the logistic node (binary) or the
    ExpConcrete node (n-ary).
    """

    def __init__(self, units: int, arity: int = 2):
        if arity not in ARITIES:
            raise ValueError(f"arity must be one of {ARITIES}, got {arity}")
        bits = int(round(math.log2(arity)))
        if units % bits:
            raise ValueError(
                f"a layer of {units} units cannot be split into {arity}-ary nodes "
                f"of {bits} units each"
            )
        self.units, self.arity, self.bits = units, arity, bits
        self.nodes = units // bits
        self.params = units if arity == 2 else self.nodes * arity
        self._corners = corners(arity)

    def __repr__(self) -> str:
        return f"StochasticLayer(units={self.units}, arity={self.arity})"

    def _shape(self, logits: Tensor) -> Tensor:
        return logits if self.arity == 2 else logits.unflatten(-1, (self.nodes, self.arity))

    def _emit(self, probs: Tensor) -> Tensor:
        """C applied to each node's (one-hot or simplex) vector, flattened to units."""
        c = self._corners.to(device=probs.device, dtype=probs.dtype)
        return (probs @ c.t()).flatten(-2)

    # ---- discrete -----------------------------------------------------------------------------
    def sample_discrete(self, logits: Tensor, noise: Dict) -> Tuple[Tensor, Tensor]:
        """(state, activity in {-1, 1}^units) of a draw of the discrete layer; no gradient."""
        logits = logits.detach()
        if self.arity == 2:
            lo = random_op(_noise, noise, logits, kind="logistic")
            s = torch.where(logits + lo > 0, 1.0, -1.0).to(logits.dtype)
            return s, s
        d = random_op(ce.gumbel_max_sample, noise, self._shape(logits), dim=-1)
        return d, self._emit(d)

    def log_prob_discrete(self, state: Tensor, logits: Tensor) -> Tensor:
        """log P(state) summed over the layer: binary log sigmoid(s a); n-ary sum of D . log_softmax."""
        if self.arity == 2:
            return -F.softplus(-state * logits).sum(-1)
        return (state * torch.log_softmax(self._shape(logits), -1)).sum((-1, -2))

    def probs(self, logits: Tensor) -> Tensor:
        """P(unit = +1) (binary) or each node's categorical probabilities (n-ary)."""
        return torch.sigmoid(logits) if self.arity == 2 else torch.softmax(self._shape(logits), -1)

    # ---- relaxed ------------------------------------------------------------------------------
    def draw_relaxed(self, logits: Tensor, temperature, noise: Dict) -> Tensor:
        """A reparameterised relaxed draw y at ``temperature`` (no density computed)."""
        if self.arity == 2:
            return random_op(
                ce.logit_binary_concrete_sample, noise, logits, temperature=temperature
            )
        return random_op(
            ce.exp_concrete_sample, noise, self._shape(logits), temperature=temperature, dim=-1
        )

    def sample_relaxed(self, logits: Tensor, temperature, noise: Dict) -> Tuple[Tensor, Tensor]:
        """(y, log density of y summed over the layer) for y drawn at ``temperature``."""
        y = self.draw_relaxed(logits, temperature, noise)
        return y, self.log_prob_relaxed(y, logits, temperature)

    def sample_relaxed_pair(
        self, q_logits: Tensor, q_temperature, p_logits: Tensor, p_temperature, noise: Dict
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """(y ~ q, log q(y), log p(y)), each log density summed over the layer; the n-ary case is
        one fused relaxed-KL pass (Eq. 28) when the build's op is correct."""
        if self.arity == 2:
            y = random_op(
                ce.logit_binary_concrete_sample, noise, q_logits, temperature=q_temperature
            )
            lq = ce.logit_binary_concrete_log_prob(y, q_logits, q_temperature)
            lp = ce.logit_binary_concrete_log_prob(y, p_logits, p_temperature)
            return y, lq.sum(-1), lp.sum(-1)
        q, p = self._shape(q_logits), self._shape(p_logits)
        y, lq, lp = random_op(
            _kl_sample, noise, q, p, q_temperature=q_temperature, p_temperature=p_temperature
        )
        return y, lq.sum(-1), lp.sum(-1)

    def log_prob_relaxed(self, y: Tensor, logits: Tensor, temperature) -> Tensor:
        """log density of the relaxed node y under ``logits`` at ``temperature``, summed."""
        if self.arity == 2:
            return ce.logit_binary_concrete_log_prob(y, logits, temperature).sum(-1)
        return ce.exp_concrete_log_prob(y, self._shape(logits), temperature, -1).sum(-1)

    def activity_relaxed(self, y: Tensor) -> Tensor:
        """The layer's output in (-1, 1)^units: 2 sigmoid(y) - 1, or C exp(y) per node."""
        if self.arity == 2:
            return torch.tanh(y / 2)
        return self._emit(torch.exp(y))
