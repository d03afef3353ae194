"""Where the zoo's random numbers come from.

Training draws from a ``torch.Generator`` that is saved in checkpoints, so a resumed run continues
the same stream. Evaluation uses explicit seeds instead: the noise of each work unit (a block of
examples times a chunk of samples) is a pure function of (seed, block, chunk), through the ops'
``seed=`` argument (Philox; docs/ARCHITECTURE.md, "Random numbers"). So an evaluation does not
depend on the order the units are computed in, or on how they are split between workers.

A generator's draw is made here, not inside the op: one 64-bit seed per call, taken from a CPU
generator exactly as the ops take it (``random64``), so the noise is the same as passing the
generator, on any device. Data-parallel training (distributed.py) adds ``rows=(start, total)``:
the call's tensors hold rows ``start ..`` of a batch of ``total`` rows, and the random ops draw as
over the whole batch (layers.py), so a row's noise does not depend on how the batch is sharded.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Tuple

import torch

__all__ = ["mix64", "NoiseSource", "draw_seed", "DefaultGeneratorNoise", "generator_as_default"]

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def mix64(*values: int) -> int:
    """A 64-bit seed derived from integers (SplitMix64 chained); distinct tuples give unrelated
    seeds."""
    h = 0x6A09E667F3BCC908
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK))
    return h


def draw_seed(generator: torch.Generator) -> int:
    """One 64-bit seed from a CPU generator: the draw an op makes from it (host.h, random64)."""
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), None, generator=generator))


class NoiseSource:
    """Hands out the keyword arguments for one random op call: ``generator=`` or ``seed=``.

    With a seed, call ``i`` gets ``seed=mix64(seed, i)``, so the draws depend on the seed and the
    order of the calls only. A CPU generator gives ``seed=`` its next 64-bit draw (the same noise as
    ``generator=``, usable for tensors on any device); another generator is passed as it is.
    ``rows=(start, total)``: the tensors are rows ``start ..`` of a batch of ``total`` rows (dim 0),
    and the noise is drawn as for the whole batch (``layers.random_op``).
    """

    def __init__(
        self,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        rows: Optional[Tuple[int, int]] = None,
    ):
        if (generator is None) == (seed is None):
            raise ValueError("give exactly one of generator and seed")
        self.generator = generator
        self.seed = seed
        self.rows = rows
        self.calls = 0

    def __call__(self) -> Dict:
        if self.seed is None:
            if self.generator.device.type == "cpu":
                kw: Dict = {"seed": draw_seed(self.generator)}
            else:
                kw = {"generator": self.generator}
        else:
            kw = {"seed": mix64(self.seed, self.calls)}
            self.calls += 1
        if self.rows is not None:
            kw["rows"] = self.rows
        return kw


class DefaultGeneratorNoise:
    """Hands out no noise arguments: each random op draws its 64-bit seed from torch's default
    generator of its device, exactly as ``NoiseSource(generator)`` draws it from ``generator``
    (``random64``). Used inside a compiled training step (train.py), where a seed drawn in Python
    would be a constant of the graph; run it under ``generator_as_default(generator)`` to get the
    noise ``NoiseSource(generator)`` gives."""

    rows = None

    def __call__(self) -> Dict:
        return {}


@contextlib.contextmanager
def generator_as_default(generator: torch.Generator) -> Iterator[None]:
    """Within the block, torch's default CPU generator is in ``generator``'s state; afterwards
    ``generator`` takes the state the block left it in and the default generator gets its own
    state back. So ops that draw from the default generator (``DefaultGeneratorNoise``) draw what
    they would draw from ``generator``, and advance ``generator``, not the default one."""
    if generator.device.type != "cpu":
        raise ValueError(f"generator_as_default needs a CPU generator, got {generator.device}")
    default = torch.default_generator
    saved = default.get_state()
    default.set_state(generator.get_state())
    try:
        yield
        generator.set_state(default.get_state())
    finally:
        default.set_state(saved)
