"""Evaluation of the discrete model: L_m (Eq. 8) with m up to 50,000 and beyond, in bounded memory.

The paper reports the NLL estimate -L_50000 averaged over a dataset (Section 5.2). For each example
the m importance weights are drawn in chunks; a running log-sum-exp (in float64) accumulates
log sum_i w_i, so memory holds one chunk at a time: about ``rows`` draws of the whole network.

Work is split into units of (a block of ``batch`` examples) x (a chunk of ``chunk`` samples), with
batch and chunk fixed by (m, rows) alone. The noise of a unit is a pure function of
(seed, block, chunk), so the estimate is a pure function of (weights, data, m, seed, rows): it does
not depend on the order of the units, nor on how they are shared between processes
(``shard=(rank, world)`` computes every world-th unit). Each unit's log-sum fills one entry of an
(examples, chunks) table; tables of disjoint shards merge exactly (an all-reduce with max across
ranks, distributed.py), and the per-example sum runs over the chunks in a fixed order, so a
sharded estimate equals the one-process one bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np
import torch

from .model import SBN
from .noise import NoiseSource, mix64
from .progress import Progress

if TYPE_CHECKING:
    from .distributed import World

__all__ = [
    "BoundEstimate",
    "plan",
    "unit_log_sums",
    "combine_units",
    "partial_log_sums",
    "estimate_bound",
    "DEFAULT_ROWS",
]

DEFAULT_ROWS = 4096


@dataclass
class BoundEstimate:
    """L_m averaged over a dataset; ``nll`` = -mean, ``sem`` its standard error over examples."""

    m: int
    n: int
    mean: float
    sem: float
    seed: int
    rows: int
    seconds: float
    per_example: np.ndarray = field(repr=False)

    @property
    def nll(self) -> float:
        return -self.mean

    def summary(self) -> Dict:
        d = asdict(self)
        d.pop("per_example")
        d["nll"] = self.nll
        return d


def plan(m: int, rows: int = DEFAULT_ROWS) -> Tuple[int, int]:
    """(examples per block, samples per chunk) for L_m with about ``rows`` draws per unit."""
    if m < 1 or rows < 1:
        raise ValueError(f"m and rows must be positive, got m={m}, rows={rows}")
    chunk = min(m, rows)
    return max(1, rows // chunk), chunk


@torch.no_grad()
def unit_log_sums(
    model: SBN,
    data,
    m: int,
    *,
    seed: int = 0,
    rows: int = DEFAULT_ROWS,
    shard: Tuple[int, int] = (0, 1),
    progress: bool = True,
    desc: str = "eval",
) -> torch.Tensor:
    """The (examples, chunks) table of log sum_i w_i over each chunk of samples, float64, for the
    units of this shard (-inf in the entries of other shards' units).

    ``data``: (N, pixels) array or tensor in {0, 1}. The model is put in eval mode (centering
    frozen) for the duration.
    """
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    param = next(model.parameters())
    x_all = torch.as_tensor(np.asarray(data), dtype=param.dtype, device=param.device)
    n = x_all.shape[0]
    batch, chunk = plan(m, rows)
    n_blocks, n_chunks = math.ceil(n / batch), math.ceil(m / chunk)
    table = torch.full((n, n_chunks), float("-inf"), dtype=torch.float64, device=param.device)
    units = [(b, c) for b in range(n_blocks) for c in range(n_chunks)][rank::world]
    total = sum((min(n, (b + 1) * batch) - b * batch) * min(chunk, m - c * chunk) for b, c in units)
    was_training = model.training
    model.eval()
    try:
        with Progress(total, desc, unit="draws", disable=not progress) as bar:
            for b, c in units:
                e0, e1 = b * batch, min(n, (b + 1) * batch)
                s = min(chunk, m - c * chunk)
                noise = NoiseSource(seed=mix64(seed, b, c))
                log_w = model.log_weights_discrete(x_all[e0:e1], s, noise).log_w
                table[e0:e1, c] = torch.logsumexp(log_w.double(), -1)
                bar.update((e1 - e0) * s)
    finally:
        model.train(was_training)
    return table


def combine_units(table: torch.Tensor) -> torch.Tensor:
    """log sum_i w_i per example from a table of unit log-sums, chunk after chunk (a fixed order:
    the result does not depend on which process computed which unit)."""
    acc = torch.full(table.shape[:1], float("-inf"), dtype=table.dtype, device=table.device)
    for c in range(table.shape[1]):
        acc = torch.logaddexp(acc, table[:, c])
    return acc


def partial_log_sums(model: SBN, data, m: int, **kw) -> torch.Tensor:
    """log sum_i w_i per example over the units of this shard (-inf where none), float64;
    keywords of ``unit_log_sums``."""
    return combine_units(unit_log_sums(model, data, m, **kw))


def estimate_bound(
    model: SBN,
    data,
    m: int,
    *,
    seed: int = 0,
    rows: int = DEFAULT_ROWS,
    progress: bool = True,
    desc: str = "eval",
    world: Optional["World"] = None,
) -> BoundEstimate:
    """L_m of the discrete model averaged over ``data`` (streamed; see the module docstring).

    ``world`` (distributed.World): the units are shared between its ranks and the table is
    combined on every rank, which all get the one-process estimate (same bits).
    """
    start = time.time()
    shard = world.shard_spec if world is not None else (0, 1)
    table = unit_log_sums(
        model, data, m, seed=seed, rows=rows, shard=shard, progress=progress, desc=desc
    )
    if world is not None:
        table = world.combine_units(table)
    per = (combine_units(table) - math.log(m)).cpu().numpy()
    n = len(per)
    sem = float(per.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return BoundEstimate(
        m=m,
        n=n,
        mean=float(per.mean()),
        sem=sem,
        seed=seed,
        rows=rows,
        seconds=time.time() - start,
        per_example=per,
    )
