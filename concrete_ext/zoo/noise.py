"""Where the zoo's random numbers come from.

Training draws from a ``torch.Generator`` that is saved in checkpoints, so a resumed run continues
the same stream. Evaluation uses explicit seeds instead: the noise of each work unit (a block of
examples times a chunk of samples) is a pure function of (seed, block, chunk), through the ops'
``seed=`` argument (Philox, DESIGN.md section 4). So an evaluation does not depend on the order
the units are computed in, or on how they are split between workers.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

__all__ = ["mix64", "NoiseSource"]

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


class NoiseSource:
    """Hands out the keyword arguments for one random op call: ``generator=`` or ``seed=``.

    With a seed, call ``i`` gets ``seed=mix64(seed, i)``, so the draws depend on the seed and the
    order of the calls only.
    """

    def __init__(self, generator: Optional[torch.Generator] = None, seed: Optional[int] = None):
        if (generator is None) == (seed is None):
            raise ValueError("give exactly one of generator and seed")
        self.generator = generator
        self.seed = seed
        self.calls = 0

    def __call__(self) -> Dict:
        if self.seed is None:
            return {"generator": self.generator}
        s = mix64(self.seed, self.calls)
        self.calls += 1
        return {"seed": s}
