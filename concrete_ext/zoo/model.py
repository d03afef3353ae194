"""Sigmoid-belief-network VAEs of Section 5.2: a generative model p(z, x) and an inference network
q(z | x), both made of layers of n-ary stochastic nodes (layers.py) joined by linear or non-linear
conditioning functions (arch.py).

For "200H~200H~784V" the generative model samples z_top (200 units) from a learned prior, z_1 given
z_top, and x given z_1; the inference network samples z_1 given x, then z_top given z_1.

* Initialisation (Section 5.1, D.3): Glorot-uniform weights, zero biases, except the bias of the
  decoder's output (the 784 observed units), set to the logit of the training pixel means.
* Centering (D.4): the activity of each inference-network stochastic layer is centred before it is
  fed to the next inference layer, by an exponentially decaying average (rate 0.9) over
  minibatches, subtracted before it is updated; no gradient flows through it, and it is frozen in
  ``eval()`` mode.
* Temperatures (D.5): the relaxed posterior uses lambda_1, every relaxed prior / conditional prior
  lambda_2 (Eq. 28); defaults by arity in DEFAULT_TEMPERATURES.

``log_weights_discrete`` gives log p(x, z) and log q(z | x) of m draws of the discrete model (the
terms of L_m, Eq. 8); ``log_weights_relaxed`` gives the same terms of the Concrete relaxation
(Eq. 20 / 24-28), with densities of the relaxed nodes in log space.

``ConditionalSBN`` is the structured-prediction model of Section 5.3 ("392V-240H-240H-392V":
p(x_bottom, z | x_top), the prior as proposal); it offers the same two methods, so the estimators,
training and evaluation serve both. ``make_model`` picks the class from the notation.
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import Arch, parse_arch
from .layers import StochasticLayer
from .noise import NoiseSource

__all__ = [
    "SBN",
    "ConditionalSBN",
    "make_model",
    "Weights",
    "DEFAULT_TEMPERATURES",
    "conditioning",
    "bernoulli_log_prob",
    "bound",
]

#: (posterior lambda_1, prior lambda_2) by arity, Appendix D.5.
DEFAULT_TEMPERATURES = {2: (2 / 3, 1 / 2), 4: (1.0, 2 / 3), 8: (2 / 3, 2 / 5)}
PIXEL_MEAN_CLIP = 1e-3


class Weights(NamedTuple):
    """log p(x, z) and log q(z | x) of each draw, shape (batch, m); log w = log_p - log_q.

    ``log_ratio``, when given, is log w computed directly (structured prediction, where
    log w = log p(x_bottom | z) and forming log_p - log_q would only add rounding)."""

    log_p: Tensor
    log_q: Tensor
    log_ratio: Optional[Tensor] = None

    @property
    def log_w(self) -> Tensor:
        return self.log_p - self.log_q if self.log_ratio is None else self.log_ratio


def conditioning(in_features: int, out_features: int, link: str, hidden: int) -> nn.Sequential:
    """'-': one linear map; '~': two tanh layers of width ``hidden``, then a linear map (D.1)."""
    if link == "-":
        return nn.Sequential(nn.Linear(in_features, out_features))
    if link == "~":
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, out_features),
        )
    raise ValueError(f"unknown link {link!r}")


def glorot_reset(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every linear map of ``module`` (D.3)."""
    for mod in module.modules():
        if isinstance(mod, nn.Linear):
            nn.init.xavier_uniform_(mod.weight)
            nn.init.zeros_(mod.bias)


def set_logit_bias(linear: nn.Linear, pixel_mean) -> None:
    """``linear``'s bias = logit(mean), the mean clipped to [1e-3, 1 - 1e-3] (pixels that are
    always 0 in the training set would otherwise get an infinite bias)."""
    mean = torch.as_tensor(np.asarray(pixel_mean, dtype=np.float64))
    if mean.shape != linear.bias.shape:
        raise ValueError(
            f"pixel_mean must have shape {tuple(linear.bias.shape)}, got {tuple(mean.shape)}"
        )
    mean = mean.clamp(PIXEL_MEAN_CLIP, 1 - PIXEL_MEAN_CLIP)
    with torch.no_grad():
        linear.bias.copy_(torch.log(mean) - torch.log1p(-mean))


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """sum_j log Bernoulli(x_j; sigmoid(logits_j)) over the last dim, broadcasting x."""
    return (x * logits - F.softplus(logits)).sum(-1)


class SBN(nn.Module):
    """A density model in the paper's notation, e.g. ``SBN("200H~200H~784V", arity=2)``."""

    def __init__(
        self,
        arch,
        arity: int = 2,
        *,
        posterior_temperature: Optional[float] = None,
        prior_temperature: Optional[float] = None,
        centering_decay: float = 0.9,
        pixel_mean: Optional[np.ndarray] = None,
        inference_width: str = "mirror",
    ):
        super().__init__()
        self.arch: Arch = parse_arch(arch)
        self.inference_width = inference_width
        if not self.arch.is_density_model:
            raise ValueError(
                f"{self.arch} is not a density model (latent layers, then one "
                "observed layer); conditional models like 392V-240H-240H-392V are "
                "structured prediction (Section 5.3)"
            )
        if arity not in DEFAULT_TEMPERATURES:
            raise ValueError(f"arity must be one of {sorted(DEFAULT_TEMPERATURES)}, got {arity}")
        t1, t2 = DEFAULT_TEMPERATURES[arity]
        self.arity = arity
        self.posterior_temperature = float(posterior_temperature or t1)
        self.prior_temperature = float(prior_temperature or t2)
        if not 0.0 <= centering_decay < 1.0:
            raise ValueError(f"centering_decay must be in [0, 1), got {centering_decay}")
        self.centering_decay = centering_decay
        sizes = self.arch.sizes
        self.latent: List[StochasticLayer] = [StochasticLayer(s, arity) for s in sizes[:-1]]
        n = len(self.latent)
        out_params = [layer.params for layer in self.latent[1:]] + [sizes[-1]]
        self.prior_logits = nn.Parameter(torch.zeros(self.latent[0].params))
        self.gen = nn.ModuleList(
            conditioning(sizes[i], out_params[i], self.arch.links[i], self.arch.hidden_width(i))
            for i in range(n)
        )
        self.inf = nn.ModuleList(
            conditioning(
                sizes[i + 1],
                self.latent[i].params,
                self.arch.links[i],
                self.arch.inference_width(i, inference_width),
            )
            for i in range(n)
        )
        for i in range(1, n):
            self.register_buffer(f"center_{i}", torch.zeros(sizes[i]))
        self.reset_parameters(pixel_mean)

    # ---- set-up -------------------------------------------------------------------------------
    def reset_parameters(self, pixel_mean: Optional[np.ndarray] = None) -> None:
        """Glorot-uniform weights, zero biases, decoder output bias = logit(pixel mean) (D.3)."""
        glorot_reset(self)
        nn.init.zeros_(self.prior_logits)
        if pixel_mean is not None:
            self.set_output_bias(pixel_mean)

    def set_output_bias(self, pixel_mean) -> None:
        """Decoder output bias = logit(mean) (see ``set_logit_bias``)."""
        set_logit_bias(self.gen[-1][-1], pixel_mean)

    @property
    def input_size(self) -> int:
        """Pixels of an example x."""
        return self.arch.sizes[-1]

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch}, arity={self.arity}, temperatures=(posterior "
            f"{self.posterior_temperature:.4g}, prior {self.prior_temperature:.4g}), "
            f"inference width {self.inference_width}"
        )

    # ---- helpers ------------------------------------------------------------------------------
    def _centred(self, i: int, activity: Tensor) -> Tensor:
        """Activity of inference layer i minus its running average, then the average updated
        (training mode only); no gradient through the average (D.4)."""
        if i == 0:
            return activity
        centre = getattr(self, f"center_{i}")
        out = activity - centre.to(activity.dtype)
        if self.training and self.centering_decay > 0:
            with torch.no_grad():
                batch_mean = activity.detach().reshape(-1, activity.shape[-1]).mean(0)
                centre.mul_(self.centering_decay).add_((1 - self.centering_decay) * batch_mean)
        return out

    def _first_logits(self, x: Tensor, m: int) -> Tensor:
        """Inference logits of the bottom latent layer, computed once and shared by m draws."""
        logits = self.inf[-1](x)
        return logits.unsqueeze(1).expand(x.shape[0], m, logits.shape[-1])

    # ---- the discrete model -------------------------------------------------------------------
    def log_weights_discrete(self, x: Tensor, m: int, noise: NoiseSource) -> Weights:
        """m draws z ~ q(z | x) of the discrete model per example; log p(x, z) and log q(z | x).

        ``x``: (batch, pixels) in {0, 1}. The draws carry no gradient; the log-probabilities do
        (for the score-function estimators).
        """
        n = len(self.latent)
        states: List[Optional[Tensor]] = [None] * n
        acts: List[Optional[Tensor]] = [None] * n
        log_q = x.new_zeros(x.shape[0], m)
        logits = self._first_logits(x, m)
        for i in reversed(range(n)):
            if i < n - 1:
                logits = self.inf[i](self._centred(i + 1, acts[i + 1]))
            states[i], acts[i] = self.latent[i].sample_discrete(logits, noise())
            log_q = log_q + self.latent[i].log_prob_discrete(states[i], logits)
        log_p = self.latent[0].log_prob_discrete(states[0], self.prior_logits)
        for i in range(n - 1):
            log_p = log_p + self.latent[i + 1].log_prob_discrete(
                states[i + 1], self.gen[i](acts[i])
            )
        log_p = log_p + bernoulli_log_prob(x.unsqueeze(1), self.gen[-1](acts[-1]))
        return Weights(log_p, log_q)

    # ---- the Concrete relaxation --------------------------------------------------------------
    def log_weights_relaxed(self, x: Tensor, m: int, noise: NoiseSource) -> Weights:
        """m reparameterised draws of the relaxed posterior; the log-densities of Eq. 24-28.

        The top layer's sample and both its log-densities (posterior at lambda_1, learned prior at
        lambda_2) come from one relaxed-KL pass; lower layers are sampled at lambda_1 and scored
        under their conditional priors at lambda_2 once the layers above are sampled.
        """
        t1, t2 = self.posterior_temperature, self.prior_temperature
        n = len(self.latent)
        ys: List[Optional[Tensor]] = [None] * n
        acts: List[Optional[Tensor]] = [None] * n
        log_q = x.new_zeros(x.shape[0], m)
        log_p = x.new_zeros(x.shape[0], m)
        logits = self._first_logits(x, m)
        for i in reversed(range(n)):
            if i < n - 1:
                logits = self.inf[i](self._centred(i + 1, acts[i + 1]))
            if i == 0:
                prior = self.prior_logits.expand_as(logits)
                ys[0], lq, lp = self.latent[0].sample_relaxed_pair(logits, t1, prior, t2, noise())
                log_p = log_p + lp
            else:
                ys[i], lq = self.latent[i].sample_relaxed(logits, t1, noise())
            log_q = log_q + lq
            acts[i] = self.latent[i].activity_relaxed(ys[i])
        for i in range(n - 1):
            log_p = log_p + self.latent[i + 1].log_prob_relaxed(ys[i + 1], self.gen[i](acts[i]), t2)
        log_p = log_p + bernoulli_log_prob(x.unsqueeze(1), self.gen[-1](acts[-1]))
        return Weights(log_p, log_q)

    # ---- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, count: int, noise: NoiseSource) -> Tensor:
        """Pixel probabilities p(x | z) for ``count`` draws z of the discrete generative model."""
        logits = self.prior_logits.expand(count, -1)
        act = None
        for i, layer in enumerate(self.latent):
            _, act = layer.sample_discrete(logits, noise())
            logits = self.gen[i](act)
        return torch.sigmoid(logits)


class ConditionalSBN(nn.Module):
    """Structured output prediction (Section 5.3; Raiko et al. 2014): a sigmoid belief network
    p(x_bottom, z | x_top), e.g. ``ConditionalSBN("392V-240H-240H-392V")``.

    The leading observed layer (the top half of an image, the first ``sizes[0]`` pixels, as 0 / 1)
    conditions the first latent layer; each latent layer conditions the next; the last one
    conditions the trailing observed layer (the bottom half, the last ``sizes[-1]`` pixels).
    There is no inference network: the proposal is the prior p(z | x_top), so the objective
    L_m^SP = E[log (1/m) sum_i p(x_bottom | z_i)], z_i ~ p(z | x_top), has log-weights
    log p(x_bottom | z) and the score-function estimators use log p(z | x_top) as log q.

    The Concrete relaxation samples every latent layer from its relaxed conditional prior at one
    temperature, the posterior temperature lambda_1 of D.5 ("for the whole graph"); the
    proposal's density cancels from the weights, so no density is evaluated.
    Initialisation as for ``SBN`` (D.3): Glorot-uniform weights, zero biases, output bias =
    logit of the training means of the bottom-half pixels.
    """

    def __init__(
        self,
        arch,
        arity: int = 2,
        *,
        posterior_temperature: Optional[float] = None,
        prior_temperature: Optional[float] = None,
        centering_decay: float = 0.9,
        pixel_mean: Optional[np.ndarray] = None,
        inference_width: str = "mirror",
    ):
        super().__init__()
        self.arch: Arch = parse_arch(arch)
        if not self.arch.is_conditional_model:
            raise ValueError(
                f"{self.arch} is not a conditional model (an observed layer, latent "
                "layers, an observed layer), e.g. 392V-240H-240H-392V"
            )
        if arity not in DEFAULT_TEMPERATURES:
            raise ValueError(f"arity must be one of {sorted(DEFAULT_TEMPERATURES)}, got {arity}")
        self.arity = arity
        # one temperature for the whole relaxed graph; prior_temperature, centering_decay and
        # inference_width are accepted for a uniform signature with SBN (no inference network)
        self.posterior_temperature = float(posterior_temperature or DEFAULT_TEMPERATURES[arity][0])
        self.prior_temperature = self.posterior_temperature
        sizes = self.arch.sizes
        self.context_size, self.target_size = sizes[0], sizes[-1]
        self.latent: List[StochasticLayer] = [StochasticLayer(s, arity) for s in sizes[1:-1]]
        out_params = [layer.params for layer in self.latent] + [sizes[-1]]
        self.gen = nn.ModuleList(
            conditioning(sizes[i], out_params[i], self.arch.links[i], self.arch.hidden_width(i))
            for i in range(len(out_params))
        )
        self.reset_parameters(pixel_mean)

    @property
    def temperature(self) -> float:
        return self.posterior_temperature

    @property
    def input_size(self) -> int:
        """Pixels of an example: top half (context) and bottom half (target)."""
        return self.context_size + self.target_size

    def reset_parameters(self, pixel_mean: Optional[np.ndarray] = None) -> None:
        glorot_reset(self)
        if pixel_mean is not None:
            self.set_output_bias(pixel_mean)

    def set_output_bias(self, pixel_mean) -> None:
        """Output bias = logit of the bottom-half means; ``pixel_mean`` holds either the bottom
        half's means or every pixel's (the bottom half is then its last ``target_size``)."""
        mean = np.asarray(pixel_mean, dtype=np.float64)
        if mean.shape == (self.input_size,):
            mean = mean[-self.target_size :]
        set_logit_bias(self.gen[-1][-1], mean)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, arity={self.arity}, temperature={self.temperature:.4g}"

    def split(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(top half, bottom half) of images ``x`` (..., input_size)."""
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{self.arch} needs examples of {self.context_size} + "
                f"{self.target_size} = {self.input_size} pixels, got {x.shape[-1]}"
            )
        return x[..., : self.context_size], x[..., self.context_size :]

    def _context_logits(self, top: Tensor, m: int) -> Tensor:
        logits = self.gen[0](top)
        return logits.unsqueeze(1).expand(top.shape[0], m, logits.shape[-1])

    # ---- the discrete model -------------------------------------------------------------------
    def log_weights_discrete(self, x: Tensor, m: int, noise: NoiseSource) -> Weights:
        """m draws z ~ p(z | x_top) per example: log_q = log p(z | x_top) (the proposal, with
        gradient, for the score-function estimators), log w = log p(x_bottom | z), and
        log_p = log w + log_q."""
        top, bottom = self.split(x)
        log_prior = x.new_zeros(x.shape[0], m)
        logits = self._context_logits(top, m)
        act = None
        for i, layer in enumerate(self.latent):
            if i:
                logits = self.gen[i](act)
            state, act = layer.sample_discrete(logits, noise())
            log_prior = log_prior + layer.log_prob_discrete(state, logits)
        log_lik = bernoulli_log_prob(bottom.unsqueeze(1), self.gen[-1](act))
        return Weights(log_lik + log_prior, log_prior, log_lik)

    # ---- the Concrete relaxation --------------------------------------------------------------
    def relaxed_activities(self, x: Tensor, m: int, noise: NoiseSource) -> List[Tensor]:
        """Activities in (-1, 1)^units of every latent layer for m relaxed draws from the prior
        p(z | x_top) at the model's temperature (reparameterised: gradients flow)."""
        top, _ = self.split(x)
        logits = self._context_logits(top, m)
        acts: List[Tensor] = []
        for i, layer in enumerate(self.latent):
            if i:
                logits = self.gen[i](acts[-1])
            y = layer.draw_relaxed(logits, self.temperature, noise())
            acts.append(layer.activity_relaxed(y))
        return acts

    def log_weights_relaxed(self, x: Tensor, m: int, noise: NoiseSource) -> Weights:
        """m relaxed draws from the prior; log w = log p(x_bottom | relaxed z), log q = 0."""
        _, bottom = self.split(x)
        act = self.relaxed_activities(x, m, noise)[-1]
        log_lik = bernoulli_log_prob(bottom.unsqueeze(1), self.gen[-1](act))
        zero = torch.zeros_like(log_lik)
        return Weights(log_lik, zero, log_lik)

    @torch.no_grad()
    def predict(self, x: Tensor, noise: NoiseSource) -> Tensor:
        """Pixel probabilities of the bottom half given the top half, for one draw z of the
        discrete model per example."""
        top, _ = self.split(x)
        logits = self.gen[0](top)
        for i, layer in enumerate(self.latent):
            _, act = layer.sample_discrete(logits, noise())
            logits = self.gen[i + 1](act)
        return torch.sigmoid(logits)


def make_model(arch, arity: int = 2, **kwargs) -> nn.Module:
    """``SBN`` for a density model ("200H~784V"), ``ConditionalSBN`` for a conditional one
    ("392V-240H-240H-392V")."""
    parsed = parse_arch(arch)
    cls = ConditionalSBN if parsed.is_conditional_model else SBN
    return cls(parsed, arity, **kwargs)


def bound(log_w: Tensor) -> Tensor:
    """L_m of each example: log (1/m) sum_i w_i over the last dim (Eq. 8), in log space."""
    return torch.logsumexp(log_w, -1) - math.log(log_w.shape[-1])
