"""The paper's model notation (Section 5.1 and Appendix D.1), e.g. ``"200H~200H~784V"``.

Read left to right in the order of conditional sampling: each integer is the number of stochastic
units of a layer, ``H`` a latent layer, ``V`` an observed one. The link between two layers is ``-``
(a linear function of the previous layer) or ``~`` (non-linear: two tanh layers of the size of the
preceding stochastic layer, then a linear map; Appendix D.1). A leading ``H`` layer is sampled from
a learned prior; a leading ``V`` layer is a conditioning input (structured prediction, Section 5.3,
e.g. ``"392V-240H-240H-392V"``). The paper's typographic dashes (``–``) and tildes (``∼``) are
accepted too.

Inference networks mirror each link: the network that infers layer ``i`` from layer ``i + 1`` has
the same kind as the link between them. For ``~`` the paper's "tanh layers of the size of the
preceding stochastic layer" has two readings for an inference network, which runs in the other
direction (INFERENCE_WIDTHS):

* ``"mirror"`` (the default): the size of layer ``i``, the preceding layer in the notation, as in
  the generative link (Burda et al. 2016, whose architectures the paper follows, Appendix D:
  ``200H~784V`` infers with 784 -> 200 -> 200 -> 200);
* ``"input"``: the size of layer ``i + 1``, the layer that precedes in the inference network's own
  direction (784 -> 784 -> 784 -> 200).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Tuple

__all__ = ["Layer", "Arch", "parse_arch", "INFERENCE_WIDTHS"]

INFERENCE_WIDTHS = ("mirror", "input")

_TOKEN = re.compile(r"\s*(\d+)\s*([HV])\s*", re.IGNORECASE)
_LINKS = {"-": "-", "–": "-", "—": "-", "~": "~", "∼": "~"}


@dataclass(frozen=True)
class Layer:
    size: int
    observed: bool

    def __str__(self) -> str:
        return f"{self.size}{'V' if self.observed else 'H'}"


@dataclass(frozen=True)
class Arch:
    """Layers in sampling order and the links between consecutive layers ('-' or '~')."""

    layers: Tuple[Layer, ...]
    links: Tuple[str, ...]

    def __str__(self) -> str:
        out = str(self.layers[0])
        for link, layer in zip(self.links, self.layers[1:]):
            out += link + str(layer)
        return out

    @property
    def sizes(self) -> Tuple[int, ...]:
        return tuple(layer.size for layer in self.layers)

    @property
    def is_density_model(self) -> bool:
        """Latent layers first, one observed layer last (Section 5.2)."""
        return (
            len(self.layers) >= 2
            and self.layers[-1].observed
            and not any(layer.observed for layer in self.layers[:-1])
        )

    @property
    def is_conditional_model(self) -> bool:
        """Observed context first, latent layers, observed target last (Section 5.3)."""
        return (
            len(self.layers) >= 3
            and self.layers[0].observed
            and self.layers[-1].observed
            and not any(layer.observed for layer in self.layers[1:-1])
        )

    @property
    def is_linear(self) -> bool:
        """All links linear: the paper's "linear models" (their own hyperparameters, D.5)."""
        return all(link == "-" for link in self.links)

    def hidden_width(self, i: int) -> int:
        """Width of the tanh layers of link ``i`` (between layers i and i+1): layer i's size."""
        return self.layers[i].size

    def inference_width(self, i: int, reading: str = "mirror") -> int:
        """Width of the tanh layers of the inference network of link ``i`` (inferring layer i from
        layer i+1): layer i's size (``"mirror"``) or layer i+1's (``"input"``); module docstring."""
        if reading == "mirror":
            return self.layers[i].size
        if reading == "input":
            return self.layers[i + 1].size
        raise ValueError(
            f"inference width reading must be one of {INFERENCE_WIDTHS}, got {reading!r}"
        )


def parse_arch(text) -> Arch:
    """Parse the notation, e.g. ``parse_arch("200H~200H~784V")``; an Arch passes through."""
    if isinstance(text, Arch):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an architecture is a string like '200H~200H~784V', got {text!r}")
    s = text.strip().strip("()")
    layers, links, pos = [], [], 0
    while True:
        m = _TOKEN.match(s, pos)
        if m is None:
            raise ValueError(
                f"cannot read a layer (like '200H' or '784V') at position {pos} of {text!r}"
            )
        size = int(m.group(1))
        if size <= 0:
            raise ValueError(f"layer sizes must be positive, got {size} in {text!r}")
        layers.append(Layer(size, m.group(2).upper() == "V"))
        pos = m.end()
        if pos == len(s):
            break
        link = _LINKS.get(s[pos])
        if link is None:
            raise ValueError(
                f"expected a link '-' or '~' at position {pos} of {text!r}, got {s[pos]!r}"
            )
        links.append(link)
        pos += 1
    if len(layers) < 2:
        raise ValueError(f"{text!r} needs at least two layers")
    return Arch(tuple(layers), tuple(links))
