"""Data-parallel training and sharded evaluation over several processes (torch.distributed).

    torchrun --nproc_per_node=4 -m concrete_ext.zoo train --arch 200H~200H~784V --m 5 ...
    torchrun --nproc_per_node=4 -m concrete_ext.zoo eval runs/<run> --m 5000

``World`` is the one object the trainer and the CLI ask about ranks: a single process gets
``World.single()`` (no process group, every method a no-op); under torchrun ``from_env`` starts the
process group (NCCL on GPUs, gloo on CPUs) with a timeout, so a rank that dies makes the others fail
within a bounded time instead of hanging.

What a run computes does not depend on the number of ranks W (up to floating-point rounding):

* **Data.** Every rank draws the same global batch of ``batch_size`` examples from the same data
  generator (same permutation, same dynamic binarization) and keeps its contiguous shard of rows
  (sizes differ by at most one when W does not divide the batch; each shard's loss is weighted by
  its share, so the gradient is that of the global mean). ``reduce_gradients`` all-reduces the
  gradients after the backward pass (one flat buffer; DistributedDataParallel is not used, see
  ``World.close``), so parameters and Adam's state stay identical on all ranks.
* **Noise.** The noise generator is the same on every rank and every op call draws one 64-bit seed
  from it, as in a one-process run. The ops' noise is a pure function of (seed, element index)
  (docs/ARCHITECTURE.md, "Random numbers"), so ``NoiseSource(rows=(start, total))`` makes every
  random op run as over the ``total`` rows of the global batch, the shard's rows padded with zeros
  (layers.py): each example gets the noise it gets in a one-process run, and shards get different
  noise. The price: the elementwise sampling ops (not the networks) run on the global batch on
  every rank.
* **Centering (D.4).** The update of a running average is linear in the batch mean, so the average
  over ranks of the buffers, weighted by shard size, after each step is the update with the global
  batch mean (``sync_buffers``); it is done after every step, before the next use.
* **NVIL.** The running mean and variance of the learning signal are updated from the global
  batch's moments (``batch_moments``: two all-reduces), on every rank alike, before they are used.
* **Validation / evaluation.** Work units (estimate_bound) are dealt round-robin to the ranks; the
  table of per-unit log-sums is combined with an all-reduce (max: each entry is computed by one
  rank, -inf elsewhere), then summed in the one-process order, so every rank gets the one-process
  estimate bit for bit.
* **Files.** Rank 0 alone reads the checkpoint (and broadcasts it) and writes the run folder:
  config, metrics, checkpoints, eval.json. The checkpoint holds no rank-dependent state, so a run
  resumes on any number of ranks.
* **Decisions.** Stopping (signal, ``--minutes``) and the non-finite-loss check are agreed by an
  all-reduce every step, so all ranks stop at the same step.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "World",
    "from_env",
    "batch_moments",
    "failure_message",
    "DEFAULT_TIMEOUT_S",
    "FAULT_ENV",
]

DEFAULT_TIMEOUT_S = 300.0
#: test hook: "RANK:STEP" makes that rank exit with status 3 when training reaches STEP;
#: "RANK:STEP:hang" makes it stop answering instead (sleep)
FAULT_ENV = "CONCRETE_EXT_ZOO_FAIL_RANK_AT_STEP"
#: errors of rank 0 raised again, with their type, on the other ranks (``World.from_main``)
_ERRORS = {
    c.__name__: c
    for c in (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        KeyError,
        RuntimeError,
        FloatingPointError,
    )
}


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _Objective(nn.Module):
    """Model and estimator as one module: the training forward pass x, noise -> Step, and every
    parameter (the estimator's too: NVIL's baseline) in one place."""

    def __init__(self, model: nn.Module, estimator: nn.Module, m: int):
        super().__init__()
        self.model, self.estimator, self.m = model, estimator, m

    def forward(self, x: Tensor, noise):
        return self.estimator(self.model, x, self.m, noise)


@dataclass
class World:
    """This process's rank among ``size`` processes, and the device it computes on."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None  # None: no process group

    @classmethod
    def single(cls, device=None) -> "World":
        return cls(device=torch.device(device or "cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def __str__(self) -> str:
        return (
            f"rank {self.rank} of {self.size} ({self.backend or 'single process'}, {self.device})"
        )

    # ---- data -----------------------------------------------------------------------------------
    def rows(self, n: int) -> Tuple[int, int]:
        """[start, stop) of this rank's contiguous shard of n rows (sizes differ by at most 1)."""
        if n < self.size:
            raise ValueError(f"a batch of {n} cannot be shared by {self.size} ranks")
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    def shard(self, batch: Tensor) -> Tuple[Tensor, Optional[Tuple[int, int]], float]:
        """(this rank's rows on its device, noise rows (start, total) or None, share of the
        batch)."""
        n = batch.shape[0]
        if not self.distributed:
            return batch.to(self.device), None, 1.0
        start, stop = self.rows(n)
        return batch[start:stop].to(self.device), (start, n), (stop - start) / n

    # ---- training -------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, estimator: nn.Module, m: int) -> nn.Module:
        """The training forward pass x, noise -> Step (gradients are all-reduced by
        ``reduce_gradients`` after the backward pass, buffers by ``sync_buffers``)."""
        return _Objective(model, estimator, m)

    def reduce_gradients(self, params: List[Tensor]) -> None:
        """Each gradient replaced by its mean over ranks (one all-reduce of a flat buffer, as
        DistributedDataParallel's buckets: sum, then divide by the number of ranks). A missing
        gradient counts as zeros and is filled in, so every rank reduces the same buffer."""
        if not self.distributed:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat.div_(self.size)
        start = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[start : start + n].view_as(p.grad))
            start += n

    def sync_buffers(self, module: nn.Module, share: float) -> None:
        """Floating-point buffers (the centering averages) replaced by their average over ranks,
        weighted by shard share: for a running average this is the update with the global batch
        mean."""
        if not self.distributed:
            return
        for b in module.buffers():
            if b.is_floating_point():
                b.mul_(share)
                dist.all_reduce(b)

    def any(self, *flags: bool) -> List[bool]:
        """Each flag or-ed over ranks (the same decision everywhere)."""
        if not self.distributed:
            return [bool(f) for f in flags]
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def weighted_sum(self, values: Dict[str, float], share: float) -> Dict[str, float]:
        """sum over ranks of share * value for each key (shard means -> global means)."""
        if not self.distributed:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([values[k] * share for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def from_main(self, fn: Callable):
        """fn() computed on rank 0 and sent to every rank; an exception it raises is raised on
        every rank (same type where it is a built-in one, same message)."""
        if not self.distributed:
            return fn()
        box: List = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as e:  # sent to the other ranks, then raised here too
                box[0] = ("error", type(e).__name__, str(e))
        dist.broadcast_object_list(box, src=0, device=self.device)
        if box[0][0] == "error":
            _, name, message = box[0]
            cls = _ERRORS.get(name)
            raise cls(message) if cls else RuntimeError(f"{name} on rank 0: {message}")
        return box[0][1]

    def fault_point(self, step: int) -> None:
        """Test hook: exit abruptly (or hang) on the rank and step named by $FAULT_ENV."""
        spec = os.environ.get(FAULT_ENV, "").split(":")
        if spec[:2] == [str(self.rank), str(step)]:
            hang = spec[2:] == ["hang"]
            print(
                f"rank {self.rank}: {FAULT_ENV} set, {'hanging' if hang else 'exiting'} at "
                f"step {step} (time {time.time():.3f})",
                file=sys.stderr,
                flush=True,
            )
            if hang:
                time.sleep(3600)
            os._exit(3)

    # ---- evaluation -----------------------------------------------------------------------------
    @property
    def shard_spec(self) -> Tuple[int, int]:
        return self.rank, self.size

    def combine_units(self, table: Tensor) -> Tensor:
        """Every rank's entries of the (examples, chunks) table of unit log-sums (-inf where
        another rank computes the unit) merged on every rank; exact."""
        if self.distributed:
            dist.all_reduce(table, op=dist.ReduceOp.MAX)
        return table

    def close(self) -> None:
        """Tear the process group down, and with it its worker threads, before Python exits.

        Two aborts ("terminate called without an active exception") came from this teardown.
        A rank destroying its gloo group while a peer still talked to it (3 of about 10 runs of
        the 2-rank tests): so all ranks meet at a barrier first. And (1 of 79 runs with the
        barrier; a core of the aborted rank shows it) a gloo worker thread releasing its last
        finished work after the main thread had begun finalizing the interpreter: the work holds
        tensors whose Python objects it must release, so the thread takes the GIL, which during
        finalization makes it exit (pthread_exit) through the work's noexcept destructor, and
        std::terminate aborts the process. The worker threads live as long as the group's C++
        object, and two things kept that alive past destroy_process_group: torch._dynamo, when
        first imported while a group exists (torch.optim imports it), keeps references to the
        group, which ``from_env`` avoids by importing it before the group is made; and
        DistributedDataParallel, which holds the group as long as the module lives, so the zoo
        all-reduces gradients itself (``reduce_gradients``). destroy_process_group then drops
        the last reference and the collection below frees the group, whose destructor (run with
        the GIL released) joins its worker threads while the interpreter is whole. Tested: no
        thread of the group is left after close."""
        if self.backend is not None and dist.is_initialized():
            try:
                dist.barrier()
            except Exception:  # a dead peer: tear down anyway, the error is already reported
                pass
            dist.destroy_process_group()
            self.backend = None
            gc.collect()


def from_env(device: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """The World of this process: under torchrun (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR /
    MASTER_PORT set), start the process group; else a single process.

    ``device``: None picks cuda:LOCAL_RANK with NCCL when CUDA is available under torchrun, else the
    CPU with gloo (a single process: the CPU); "cpu" or "cuda" forces one. ``timeout_s`` bounds
    how long a collective waits for a rank that stopped (NCCL: with its asynchronous error
    handling, on by default in recent PyTorch).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or "RANK" not in os.environ:
        return World.single("cuda" if device == "cuda" else "cpu")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available")
        torch.cuda.set_device(local)
        dev, backend = torch.device("cuda", local), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    # imported before the group exists: imported later (torch.optim does), it keeps references
    # to the group that outlive destroy_process_group, and the group's threads with them (close)
    importlib.import_module("torch._dynamo")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(rank=rank, size=size, local_rank=local, device=dev, backend=backend)


def batch_moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean and biased variance of ``x`` over the global batch: over every rank's shard when a
    process group of several ranks is running (like SyncBatchNorm), else over ``x``."""
    if not _active():
        return x.mean(), x.var(unbiased=False)
    t = torch.stack([x.sum(), x.new_tensor(float(x.numel()))]).double()
    dist.all_reduce(t)
    mean = t[0] / t[1]
    sq = ((x.double() - mean) ** 2).sum()
    dist.all_reduce(sq)
    return mean.to(x.dtype), (sq / t[1]).to(x.dtype)


def failure_message(error: BaseException, run_dir: Optional[str] = None) -> Optional[str]:
    """A clear message for a collective that failed because another rank stopped; None when no
    process group of several ranks is running (the error is then not about ranks)."""
    if not _active():
        return None
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = (
        f"; the last checkpoint in {run_dir} is intact: continue with --resume, on any "
        "number of ranks"
        if run_dir
        else ""
    )
    return (
        f"error: rank {dist.get_rank()} of {dist.get_world_size()}: communication with the "
        f"other ranks failed ({first[:200]}). Another rank probably stopped (crashed, was "
        f"killed, ran out of memory) or hangs (given up after --dist-timeout): see its "
        f"output{where}."
    )
