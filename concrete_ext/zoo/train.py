"""Training (Section 5.1 and Appendix D.5): Adam (beta1 0.9, beta2 0.999) on minibatches of 64,
learning rates of D.5 by default, temperatures fixed throughout, validation bound tracked for
early stopping, checkpoints that resume exactly. The same loop trains density models (SBN) and
structured-prediction models (ConditionalSBN, chosen by an arch with a leading V layer).

Exact resumption: a checkpoint holds the model (with its centering averages), the estimator (NVIL's
baseline network and running statistics), Adam's state, the two random generators (one for the
data order and dynamic binarization, one for the model's noise), the current epoch's permutation
and position in it, and the step. Validation uses explicitly seeded noise and touches neither
generator, so a run stopped and resumed at any checkpoint computes the same parameters, bit for bit,
as one that was never stopped (same machine, same thread count).

Several processes (torchrun): ``world`` (distributed.World) shards each global batch over the ranks
and all-reduces what must be shared; rank 0 alone reads and writes the run folder. The checkpoint
holds nothing rank-dependent, so a run resumes on any number of ranks. See distributed.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from . import runs
from .arch import INFERENCE_WIDTHS
from .data import Dataset, load_dataset, random_subset
from .distributed import World
from .estimators import ESTIMATORS, make_estimator
from .evaluate import estimate_bound
from .model import make_model
from .noise import DefaultGeneratorNoise, NoiseSource, generator_as_default, mix64
from .progress import Progress

__all__ = ["TrainConfig", "Trainer", "build_model", "load_model", "PAPER_STEPS"]

PAPER_STEPS = 10_000_000
#: D.5: weight decay of the structured-prediction models (density models: none)
SP_WEIGHT_DECAY = 1e-3
FORMAT = 1


@dataclass
class TrainConfig:
    """Everything that defines a training run. None means the paper's default (D.5)."""

    dataset: str = "mnist"
    arch: str = "200H~200H~784V"
    arity: int = 2
    estimator: str = "concrete"  # concrete | vimco | nvil | score (= vimco if m > 1 else nvil)
    m: int = 1
    steps: int = 100_000
    minutes: Optional[float] = None  # stop earlier when this much wall-clock time is spent
    batch_size: int = 64
    lr: Optional[float] = None  # D.5: 3e-4 for linear models, 1e-4 for non-linear ones
    weight_decay: Optional[float] = None  # D.5: 0 for density estimation, 1e-3 for structured
    inference_width: str = "mirror"  # tanh width of '~' inference links (arch.INFERENCE_WIDTHS)
    beta1: float = 0.9
    beta2: float = 0.999
    posterior_temperature: Optional[float] = None  # D.5 by arity (model.DEFAULT_TEMPERATURES)
    prior_temperature: Optional[float] = None
    centering_decay: float = 0.9
    nvil_hidden: int = 100
    seed: int = 0
    log_every: int = 100
    eval_every: int = 5000
    eval_m: int = 100
    eval_n: int = 1000
    checkpoint_every: int = 1000
    data_root: Optional[str] = None
    compile: bool = False  # the training step through torch.compile (one CPU process; see Trainer)

    # fields that may change when a run is resumed (they do not change what a step computes;
    # compile changes only the floating-point rounding)
    RESUMABLE = (
        "steps",
        "minutes",
        "log_every",
        "eval_every",
        "eval_m",
        "eval_n",
        "checkpoint_every",
        "data_root",
        "compile",
    )

    def resolved(self) -> "TrainConfig":
        """A copy with the defaults filled in and the values checked."""
        from .arch import parse_arch
        from .model import DEFAULT_TEMPERATURES

        arch = parse_arch(self.arch)
        c = dataclasses.replace(self, arch=str(arch))
        if c.estimator == "score":
            c.estimator = "vimco" if c.m > 1 else "nvil"
        if c.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {c.estimator!r}: choose one of {ESTIMATORS}")
        if c.arity not in DEFAULT_TEMPERATURES:
            raise ValueError(f"arity must be one of {sorted(DEFAULT_TEMPERATURES)}")
        t1, t2 = DEFAULT_TEMPERATURES[c.arity]
        c.posterior_temperature = c.posterior_temperature or t1
        c.prior_temperature = c.prior_temperature or t2
        c.lr = c.lr or (3e-4 if arch.is_linear else 1e-4)
        if c.weight_decay is None:
            c.weight_decay = SP_WEIGHT_DECAY if arch.is_conditional_model else 0.0
        if c.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {c.weight_decay}")
        if c.inference_width not in INFERENCE_WIDTHS:
            raise ValueError(
                f"inference_width must be one of {INFERENCE_WIDTHS}, got {c.inference_width!r}"
            )
        for name in (
            "m",
            "steps",
            "batch_size",
            "log_every",
            "eval_every",
            "eval_m",
            "eval_n",
            "checkpoint_every",
        ):
            if getattr(c, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(c, name)}")
        return c

    @property
    def task(self) -> str:
        """ "sp" (structured prediction, Section 5.3) when the arch starts with an observed layer,
        else "density" (Section 5.2)."""
        from .arch import parse_arch

        return "sp" if parse_arch(self.arch).is_conditional_model else "density"

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**d)


def build_model(config: TrainConfig, pixel_mean: Optional[np.ndarray] = None):
    """``SBN`` (density estimation) or ``ConditionalSBN`` (structured prediction, an arch with a
    leading V layer) as configured."""
    return make_model(
        config.arch,
        config.arity,
        posterior_temperature=config.posterior_temperature,
        prior_temperature=config.prior_temperature,
        centering_decay=config.centering_decay,
        pixel_mean=pixel_mean,
        inference_width=config.inference_width,
    )


def load_model(path: str) -> Tuple[torch.nn.Module, "TrainConfig", int]:
    """(model in eval mode, its config, its step) from a checkpoint.pt or best.pt."""
    state = runs.load_checkpoint(path)
    with _checked(path):
        _check_format(state)
        config = TrainConfig.from_dict(state["config"])
        model = build_model(config)
        model.load_state_dict(state["model"])
    model.eval()
    return model, config, int(state["step"])


def _check_format(state: Dict) -> None:
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')} is not {FORMAT}")


@contextlib.contextmanager
def _checked(path: str):
    """Errors while restoring from a checkpoint become a CheckpointError naming the file."""
    try:
        yield
    except runs.CheckpointError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        what = f"lacks the entry {e}" if isinstance(e, KeyError) else f"does not fit: {e}"
        raise runs.CheckpointError(f"checkpoint {path} {what}") from e


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix64(seed, stream) >> 1)


class Trainer:
    """Trains one model in ``run_dir``; ``Trainer(config, run_dir).run()``.

    With ``resume=True`` the run continues from ``run_dir/checkpoint.pt``; ``config`` may then be
    None (the saved one is used) or differ from it in the fields of TrainConfig.RESUMABLE only.
    ``world``: this process's rank and device (distributed.from_env); default one CPU process.
    """

    def __init__(
        self,
        config: Optional[TrainConfig],
        run_dir: str,
        *,
        resume: bool = False,
        progress: bool = True,
        dataset: Optional[Dataset] = None,
        world: Optional[World] = None,
    ):
        self.run_dir = run_dir
        self.world = world = world or World.single()
        self.progress = progress and world.is_main
        ckpt_path = os.path.join(run_dir, runs.CHECKPOINT)
        state = None
        if resume:  # rank 0 reads the checkpoint and sends it to the others
            state = world.from_main(lambda: runs.load_checkpoint(ckpt_path))
            with _checked(ckpt_path):
                _check_format(state)
                saved = TrainConfig.from_dict(state["config"])
            config = self._merge(saved, config)
        elif world.from_main(lambda: os.path.exists(ckpt_path)):
            raise FileExistsError(
                f"{run_dir} already holds a checkpoint: continue it with "
                "--resume, or choose another --run-dir"
            )
        if config is None:
            raise ValueError("a new run needs a configuration")
        self.config = config = config.resolved()
        if world.is_main:
            os.makedirs(run_dir, exist_ok=True)
        self.data = (
            dataset if dataset is not None else load_dataset(config.dataset, config.data_root)
        )
        self.train_x = torch.as_tensor(self.data.train, dtype=torch.float32)
        self.valid_x = self.validation_images(config, self.data)
        self.valid_name = "valid" if self.data.valid is not None else "train"

        with torch.random.fork_rng(devices=[]):  # initialise from the seed, leave torch's RNG be
            torch.manual_seed(mix64(config.seed, 0) >> 1)
            self.model = build_model(config, self.data.train_mean())
            self.estimator = make_estimator(
                config.estimator, config.m, self.model.input_size, config.nvil_hidden
            )
        self.model.to(world.device)
        self.estimator.to(world.device)
        self.optimizer = torch.optim.Adam(
            self._param_groups(), lr=config.lr, betas=(config.beta1, config.beta2), fused=True
        )
        self.data_gen = _generator(config.seed, 1)
        self.noise_gen = _generator(config.seed, 2)
        self.step, self.epoch, self.pos = 0, 0, 0
        self.perm: Optional[torch.Tensor] = None
        self.best: Optional[float] = None
        self.elapsed = 0.0
        self._stop = False
        if state is not None:
            with _checked(ckpt_path):
                self._restore(state)
            if world.is_main:
                runs.truncate_jsonl(os.path.join(run_dir, runs.METRICS), self.step)
        if world.is_main:
            runs.write_json(os.path.join(run_dir, runs.CONFIG), config.to_dict())
        # the training forward pass: model and estimator (their gradients all-reduced after the
        # backward pass when there are several ranks); share = this rank's part of each batch
        self.objective = world.wrap(self.model, self.estimator, config.m)
        self._params = list(self.model.parameters()) + list(self.estimator.parameters())
        self.share = 1.0
        self.compiled = None
        self._compiled_ran = False
        if config.compile and not world.distributed and world.device.type == "cpu":
            self.compiled = torch.compile(
                self._forward_default_noise, fullgraph=True, dynamic=False
            )

    def _param_groups(self):
        """Adam's parameter groups: weight decay (an L2 term in Adam's gradient, PyTorch's
        ``weight_decay``) on the model's parameters only, not on NVIL's baseline network, which
        is no part of the model; one group when there is no decay (checkpoints of runs without
        decay keep their layout)."""
        model, est = list(self.model.parameters()), list(self.estimator.parameters())
        wd = self.config.weight_decay
        if wd == 0 or not est:
            return [{"params": model + est, "weight_decay": wd}]
        return [{"params": model, "weight_decay": wd}, {"params": est, "weight_decay": 0.0}]

    @staticmethod
    def validation_images(config: TrainConfig, data: Dataset) -> np.ndarray:
        """The ``eval_n`` validation images a run tracks (drawn with its seed); the training
        images when the dataset has no validation split."""
        valid = data.valid if data.valid is not None else data.binary("train")
        return valid[random_subset(len(valid), config.eval_n, config.seed)]

    # ---- state ----------------------------------------------------------------------------------
    @staticmethod
    def _merge(saved: TrainConfig, given: Optional[TrainConfig]) -> TrainConfig:
        if given is None:
            return saved
        a, b = saved.resolved().to_dict(), given.resolved().to_dict()
        changed = [k for k in a if a[k] != b[k] and k not in TrainConfig.RESUMABLE]
        if changed:
            raise ValueError(
                "cannot resume with a different "
                + ", ".join(f"{k} (saved {a[k]!r}, given {b[k]!r})" for k in changed)
            )
        return given

    def state_dict(self) -> Dict:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "pos": self.pos,
            "perm": self.perm,
            "best": self.best,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "estimator": self.estimator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
        }

    def _restore(self, state: Dict) -> None:
        _check_format(state)
        self.model.load_state_dict(state["model"])
        self.estimator.load_state_dict(state["estimator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        self.step, self.epoch, self.pos = state["step"], state["epoch"], state["pos"]
        self.perm, self.best, self.elapsed = state["perm"], state["best"], state["elapsed"]

    def save(self) -> None:
        if self.world.is_main:
            runs.save_checkpoint(self.state_dict(), os.path.join(self.run_dir, runs.CHECKPOINT))

    def _log(self, record: Dict) -> None:
        if self.world.is_main:
            runs.append_jsonl(os.path.join(self.run_dir, runs.METRICS), record)

    # ---- one step -------------------------------------------------------------------------------
    def next_batch(self) -> torch.Tensor:
        n, b = self.train_x.shape[0], self.config.batch_size
        if b > n:
            raise ValueError(f"batch size {b} exceeds the {n} training images")
        if self.perm is None or self.pos + b > n:  # a new epoch (the last partial batch is dropped)
            self.perm = torch.randperm(n, generator=self.data_gen)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos : self.pos + b]
        self.pos += b
        x = self.train_x[idx]
        if self.data.dynamic:
            x = torch.bernoulli(x, generator=self.data_gen)
        return x

    def _forward_default_noise(self, x: torch.Tensor):
        """The forward pass with every random op drawing from torch's default generator: what
        ``compiled`` compiles (a seed drawn in Python would be a constant of the graph)."""
        return self.objective(x, DefaultGeneratorNoise())

    def _forward(self, x: torch.Tensor, rows):
        """The estimator's forward pass (model and estimator) on batch ``x``.

        Compiled (``config.compile``): forward and backward run as generated kernels around the
        package's ops (torch.compile, fullgraph: one graph each), with the noise generator
        standing in for the default one, so each op draws the seed it draws in eager mode: the
        same noise, the same step up to floating-point rounding. If compiling fails (no C++
        compiler, say), the run continues in eager mode with a warning."""
        if self.compiled is not None:
            try:
                with generator_as_default(self.noise_gen):
                    out = self.compiled(x)
                self._compiled_ran = True
                return out
            except Exception as e:  # noqa: BLE001 - a compiler failure: fall back to eager
                if self._compiled_ran:  # it compiled and ran before: a real error
                    raise
                first = (str(e).strip().splitlines() or [""])[0][:200]
                warnings.warn(
                    f"torch.compile of the training step failed ({type(e).__name__}: "
                    f"{first}); training continues in eager mode"
                )
                self.compiled = None
        return self.objective(x, NoiseSource(self.noise_gen, rows=rows))

    def train_step(self) -> Dict:
        self.model.train()
        self.estimator.train()
        # this rank's rows of the global batch; the noise drawn as for the whole batch
        x, rows, self.share = self.world.shard(self.next_batch())
        out = self._forward(x, rows)
        loss = out.loss.item()
        if self.world.any(not math.isfinite(loss))[0]:
            raise FloatingPointError(
                f"non-finite loss at step {self.step + 1}; the last checkpoint is in "
                f"{self.run_dir} (try a lower --lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        # weighted by the shard's share: the all-reduced gradient is that of the global mean
        weight = self.share * self.world.size
        (out.loss if weight == 1.0 else out.loss * weight).backward()
        self.world.reduce_gradients(self._params)
        self.optimizer.step()
        self.world.sync_buffers(self.model, self.share)
        self.step += 1
        return {
            "loss": loss,
            "objective": out.objective.mean().item(),
            **{k: float(v) for k, v in out.stats.items()},
        }

    def validate(self) -> float:
        c = self.config
        est = estimate_bound(
            self.model, self.valid_x, c.eval_m, seed=c.seed, progress=False, world=self.world
        )
        improved = self.best is None or est.mean > self.best
        if improved:
            self.best = est.mean  # the same on every rank: so is the estimate
        if improved and self.world.is_main:
            runs.save_checkpoint(
                {
                    "format": FORMAT,
                    "config": c.to_dict(),
                    "step": self.step,
                    "model": self.model.state_dict(),
                    "valid": est.mean,
                },
                os.path.join(self.run_dir, runs.BEST),
            )
        self._log(
            {
                "kind": "valid",
                "step": self.step,
                "split": self.valid_name,
                "m": c.eval_m,
                "n": est.n,
                "bound": est.mean,
                "sem": est.sem,
                "best": self.best,
                "elapsed_s": round(self.elapsed, 3),
            }
        )
        return est.mean

    # ---- the loop -------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self._stop = True

    def run(self) -> Dict:
        """Train to ``steps`` (or ``minutes``), checkpointing; returns a summary.

        SIGINT / SIGTERM stop the run at the end of the current step, with a checkpoint.
        """
        c = self.config
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        budget = c.minutes * 60 if c.minutes else math.inf
        window: Dict[str, float] = {}
        window_steps, window_start = 0, time.time()
        status = "done"
        bar = Progress(
            c.steps,
            f"train {c.arch} {c.estimator} m={c.m}",
            initial=self.step,
            unit="step",
            disable=not self.progress,
            budget_s=budget if budget < math.inf else None,
            elapsed_s=self.elapsed,
        )
        if self.step == 0 and self.best is None:  # the curve starts at the initial model
            self.validate()
        try:
            while self.step < c.steps:
                self.world.fault_point(self.step)
                stop, over = self.world.any(self._stop, self.elapsed >= budget)  # all ranks agree
                if stop:
                    self._stop = True
                    status = "interrupted"
                    break
                if over:
                    status = "time budget"
                    break
                t0 = time.time()
                stats = self.train_step()
                self.elapsed += time.time() - t0
                for k, v in stats.items():
                    window[k] = window.get(k, 0.0) + v
                window_steps += 1
                bar.update(1, elapsed=self.elapsed)
                if self.step % c.log_every == 0 or self.step == c.steps:
                    now = time.time()
                    window = self.world.weighted_sum(window, self.share)  # global means
                    rec = {k: v / window_steps for k, v in window.items()}
                    rec.update(
                        kind="train",
                        step=self.step,
                        epoch=self.epoch,
                        steps_per_s=window_steps / max(now - window_start, 1e-9),
                        elapsed_s=round(self.elapsed, 3),
                    )
                    self._log(rec)
                    bar.set(loss=rec["loss"], objective=rec["objective"])
                    window, window_steps, window_start = {}, 0, now
                if self.step % c.eval_every == 0:
                    t0 = time.time()
                    bound = self.validate()
                    self.elapsed += time.time() - t0
                    bar.write(f"step {self.step}: {self.valid_name} L_{c.eval_m} = {bound:.2f}")
                if self.step % c.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            for sig, h in handlers.items():
                signal.signal(sig, h)
        if self.step % c.eval_every != 0 and status != "interrupted":
            self.validate()
        self.save()
        summary = {
            "kind": "end",
            "step": self.step,
            "status": status,
            "epoch": self.epoch,
            "elapsed_s": round(self.elapsed, 3),
            "best_valid": self.best,
        }
        self._log(summary)
        return summary
