"""Gradient estimators for L_m (Eq. 8): the Concrete relaxation, VIMCO (m > 1) and NVIL (m = 1).

Each estimator maps a minibatch to a surrogate loss whose gradient is the estimator (times -1,
for minimisation by Adam), plus the per-example objective it tracks:

* ``Concrete``: the relaxed bound E_Y[log (1/m) sum_i p(x, Y_i) / q(Y_i | x)] with relaxed nodes and
  densities (Section 3.3, Eq. 13 / 28, Appendix C.3); its gradient is the pathwise one, unbiased
  for the relaxed objective and biased for the discrete one.
* ``VIMCO`` (Mnih & Rezende, 2016): for the discrete L_m, the score-function term of sample j uses
  the learning signal L - L_{-j}, where L_{-j} replaces w_j by the geometric mean of the other
  weights; plus the pathwise-in-log-weights term sum_j w~_j grad log w_j. Computed in log space.
* ``NVIL`` (Mnih & Gregor, 2014): for L_1, the learning signal l = log p(x, z) - log q(z | x) minus
  an input-dependent baseline b(x) (one tanh hidden layer, trained by squared error) and a running
  mean c, divided by max(1, running standard deviation) (both running averages with decay 0.8).
  The division rescales the inference network's gradient by a positive factor per step (an
  adaptive step size): with the factor at 1 the estimator is unbiased.

The model is an ``SBN`` (density estimation, L_m of Eq. 8) or a ``ConditionalSBN`` (structured
prediction, L_m^SP of Section 5.3: the proposal is the prior p(z | x_top), log w = log p(x_bottom |
z)); the estimators see only the log-weights and the proposal's log-probability.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple

import torch
from torch import Tensor, nn

from .distributed import batch_moments
from .model import SBN, bound
from .noise import NoiseSource

__all__ = [
    "Step",
    "Concrete",
    "VIMCO",
    "NVIL",
    "make_estimator",
    "vimco_learning_signals",
    "ESTIMATORS",
]


class Step(NamedTuple):
    """What an estimator returns: the surrogate loss to minimise, the per-example objective it
    tracks (no gradient), and extra statistics for the logs (0-d tensors without gradient, read
    by the caller: no ``.item()`` inside a step, which ``torch.compile(fullgraph=True)`` traces
    whole)."""

    loss: Tensor
    objective: Tensor
    stats: Dict[str, Tensor]


class Concrete(nn.Module):
    """Pathwise gradient of the Concrete-relaxed L_m (any m >= 1)."""

    name = "concrete"

    def forward(self, model: SBN, x: Tensor, m: int, noise: NoiseSource) -> Step:
        objective = bound(model.log_weights_relaxed(x, m, noise).log_w)
        return Step(-objective.mean(), objective.detach(), {})


def vimco_learning_signals(log_w: Tensor) -> Tensor:
    """L - L_{-j} for each sample j (last dim, m >= 2), with L = log mean_i w_i and L_{-j} the
    same with log w_j replaced by the mean of the other log-weights (the geometric-mean
    swap-in of Mnih & Rezende, 2016), all in log space."""
    m = log_w.shape[-1]
    if m < 2:
        raise ValueError("VIMCO needs m >= 2 samples per example")
    others = (log_w.sum(-1, keepdim=True) - log_w) / (m - 1)  # (..., m): for each j
    eye = torch.eye(m, dtype=torch.bool, device=log_w.device)
    swapped = torch.where(eye, others.unsqueeze(-1), log_w.unsqueeze(-2))  # row j: w_j swapped
    leave_one_out = torch.logsumexp(swapped, -1) - math.log(m)
    return bound(log_w).unsqueeze(-1) - leave_one_out


class VIMCO(nn.Module):
    """VIMCO for the discrete L_m, m >= 2."""

    name = "vimco"

    def forward(self, model: SBN, x: Tensor, m: int, noise: NoiseSource) -> Step:
        if m < 2:
            raise ValueError("VIMCO needs m >= 2 (use NVIL for m = 1)")
        w = model.log_weights_discrete(x, m, noise)
        log_w = w.log_w
        signals = vimco_learning_signals(log_w.detach())
        objective = bound(log_w)
        surrogate = objective + (signals * w.log_q).sum(-1)
        return Step(-surrogate.mean(), objective.detach(), {"signal_abs": signals.abs().mean()})


class NVIL(nn.Module):
    """NVIL for the discrete L_1, with its input-dependent baseline and running normalisation."""

    name = "nvil"

    def __init__(self, input_size: int, hidden: int = 100, decay: float = 0.8):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.baseline = nn.Sequential(
            nn.Linear(input_size, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )
        for mod in self.baseline:
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)
        self.register_buffer("signal_mean", torch.zeros(()))
        self.register_buffer("signal_var", torch.ones(()))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def scale(self) -> float:
        """The divisor max(1, running std) of the learning signal."""
        return float(self._scale())

    def _scale(self) -> Tensor:
        return self.signal_var.sqrt().clamp(min=1.0)

    def forward(self, model: SBN, x: Tensor, m: int, noise: NoiseSource) -> Step:
        if m != 1:
            raise ValueError("NVIL optimises L_1 (m = 1); use VIMCO for m > 1")
        w = model.log_weights_discrete(x, 1, noise)
        log_w, log_q = w.log_w.squeeze(-1), w.log_q.squeeze(-1)
        signal = log_w.detach()
        b = self.baseline(x).squeeze(-1)
        residual = signal - b.detach()
        if self.training:  # running statistics of the residual, first batch taken as they are
            with torch.no_grad():  # (tensor ops, no Python branch on a value: traceable whole)
                mean, var = batch_moments(residual)  # over all ranks' shards (distributed.py)
                d = self.decay
                self.signal_mean.copy_(
                    torch.where(self.started, self.signal_mean * d + (1 - d) * mean, mean)
                )
                self.signal_var.copy_(
                    torch.where(self.started, self.signal_var * d + (1 - d) * var, var)
                )
                self.started.fill_(True)
        centred = residual - self.signal_mean
        scale = self._scale()
        learning_signal = centred / scale
        # the pathwise term: grad log p(x, z) for a VAE (the zero-mean -grad log q of the ELBO's
        # gradient left out, as in Mnih & Gregor), grad log p(x_bottom | z) for structured
        # prediction (whose log q is the prior's, already in the score term)
        pathwise = w.log_p.squeeze(-1) if w.log_ratio is None else log_w
        surrogate = learning_signal * log_q + pathwise
        baseline_loss = (signal - self.signal_mean - b).pow(2)
        loss = -surrogate.mean() + baseline_loss.mean()
        return Step(
            loss, signal, {"baseline_mse": baseline_loss.mean().detach(), "signal_scale": scale}
        )


ESTIMATORS = ("concrete", "vimco", "nvil", "score")


def make_estimator(name: str, m: int, input_size: int, nvil_hidden: int = 100) -> nn.Module:
    """``concrete``, ``vimco`` (m > 1), ``nvil`` (m = 1), or ``score``: VIMCO or NVIL by m."""
    if name == "score":
        name = "vimco" if m > 1 else "nvil"
    if name == "concrete":
        return Concrete()
    if name == "vimco":
        if m < 2:
            raise ValueError("VIMCO needs m >= 2; for m = 1 use --estimator nvil (or score)")
        return VIMCO()
    if name == "nvil":
        if m != 1:
            raise ValueError("NVIL trains L_1; for m > 1 use --estimator vimco (or score)")
        return NVIL(input_size, nvil_hidden)
    raise ValueError(f"unknown estimator {name!r}: choose one of {', '.join(ESTIMATORS)}")
