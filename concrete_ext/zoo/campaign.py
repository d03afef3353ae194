"""The 10^6-step reproduction (a tenth of the paper's 10^7 steps): three Concrete-against-NVIL
pairs, trained round-robin in stages and evaluated on the paper's protocol where affordable.

    python -m concrete_ext.zoo campaign --root runs/campaign            # continue whatever is left
    python -m concrete_ext.zoo campaign --root runs/campaign --status   # where each run stands

| pair | model | m | estimators | paper (test NLL, Concrete / NVIL) |
| --- | --- | --- | --- | --- |
| a | 392V-240H-240H-392V (structured prediction) | 1 | Concrete, NVIL | 58.5 / 61.4 |
| b | 200H-784V | 1 | Concrete, NVIL | 107.3 / 104.4 |
| c | 200H~200H~784V | 1 | Concrete, NVIL | 87.9 / 88.4 |

Each call does the next unfinished thing, in this order, and can be stopped at any time (Ctrl-C or
SIGTERM: the run being trained stops at the end of its step with a checkpoint; an evaluation that
is cut short is redone) and started again:

1. NVIL's learning rate for each pair, chosen from 1e-4, 3e-4, 1e-3 by validation L_100 on 1,000
   validation images after 20,000 steps (lrsweep.py; ``<root>/lr/<pair>/sweep.json``). Concrete
   uses the rate of D.5 (3e-4 linear models, 1e-4 non-linear ones).
2. Training, round-robin in stages of ``--stage`` steps (100,000 by default), so that all six runs
   advance together and can be compared at equal steps whenever the campaign is stopped. Runs are
   ordinary run folders ``<root>/<pair>_<estimator>`` (seed 0, batch 64, validation L_100 on
   1,000 validation images every 10,000 steps, a checkpoint every 10,000 steps, the compiled
   step); each stage resumes the run exactly.
3. Evaluation of ``best.pt`` (the early stopping of D.5) after the run's first stage (``interim``,
   kept in ``<root>/<run>/milestones/<step>/``) and at the end (``final``):
   structured prediction: L^SP_100 on the whole test and training sets (the paper's estimate);
   density: L_5000 on 2,000 random test images (subset seed 0), L_50000 and L_5000 on the same
   200 random test images (subset seed 1: the bias of the smaller m), and at the end also L_5000
   on 2,000 random training images.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from typing import Dict, List, Optional, Tuple

from . import runs

__all__ = ["Plan", "PLAN", "run_campaign", "status", "export", "format_status", "run_name"]

#: (split, m, images or None for the whole split, subset seed)
Eval = Tuple[str, int, Optional[int], int]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the campaign trains and evaluates (PLAN: the 10^6-step reproduction)."""

    pairs: Dict[str, str]  # pair name -> arch; each trained with Concrete and NVIL
    common: Dict  # TrainConfig fields of every run (not arch, estimator, steps, lr)
    sweep: Dict  # TrainConfig fields that differ in the learning-rate sweeps
    rates: Tuple[float, ...]
    evals: Dict[Tuple[str, str], List[Eval]]  # (task, phase) -> evaluations
    total: int = 1_000_000
    stage: int = 100_000

    @property
    def runs(self) -> List[Tuple[str, str]]:
        return [(pair, est) for pair in self.pairs for est in ("concrete", "nvil")]


PLAN = Plan(
    pairs={"a": "392V-240H-240H-392V", "b": "200H-784V", "c": "200H~200H~784V"},
    common=dict(
        dataset="mnist",
        arity=2,
        m=1,
        seed=0,
        batch_size=64,
        eval_every=10_000,
        eval_m=100,
        eval_n=1000,
        log_every=1000,
        checkpoint_every=10_000,
        compile=True,
    ),
    sweep=dict(steps=20_000, eval_every=5000, log_every=500, checkpoint_every=5000),
    rates=(1e-4, 3e-4, 1e-3),
    evals={
        ("sp", "interim"): [("test", 100, None, 0), ("train", 100, None, 0)],
        ("sp", "final"): [("test", 100, None, 0), ("train", 100, None, 0)],
        ("density", "interim"): [
            ("test", 5000, 2000, 0),
            ("test", 50000, 200, 1),
            ("test", 5000, 200, 1),
        ],
        ("density", "final"): [
            ("test", 5000, 2000, 0),
            ("test", 50000, 200, 1),
            ("test", 5000, 200, 1),
            ("train", 5000, 2000, 0),
        ],
    },
)


def run_name(pair: str, estimator: str) -> str:
    return f"{pair}_{estimator}"


def _sweep_dir(root: str, pair: str) -> str:
    return os.path.join(root, "lr", pair)


def _task(plan: Plan, pair: str) -> str:
    from .arch import parse_arch

    return "sp" if parse_arch(plan.pairs[pair]).is_conditional_model else "density"


def _config(plan: Plan, root: str, pair: str, estimator: str, steps: int):
    from .lrsweep import chosen_rate
    from .train import TrainConfig

    lr = None
    if estimator != "concrete":
        lr = chosen_rate(_sweep_dir(root, pair))
        if lr is None:
            raise RuntimeError(f"pair {pair}: the learning-rate sweep has not finished")
    return TrainConfig(
        arch=plan.pairs[pair], estimator=estimator, steps=steps, lr=lr, **plan.common
    )


def _step(run_dir: str) -> int:
    ckpt = os.path.join(run_dir, runs.CHECKPOINT)
    return int(runs.load_checkpoint(ckpt)["step"]) if os.path.isfile(ckpt) else 0


class _Stop(Exception):
    pass


def _train(plan: Plan, root: str, pair: str, estimator: str, target: int, progress: bool) -> None:
    from .train import Trainer

    run_dir = os.path.join(root, run_name(pair, estimator))
    config = _config(plan, root, pair, estimator, target)
    resume = os.path.isfile(os.path.join(run_dir, runs.CHECKPOINT))
    # One process trains the six runs stage after stage, and each new model recompiles the step:
    # past dynamo's recompile limit (8) the compile fails and the run falls back to eager (seen on
    # 2026-12-08 at the 5th stage of one process). A fresh cache per stage costs one compile.
    import torch

    torch._dynamo.reset()
    trainer = Trainer(config, run_dir, resume=resume, progress=progress)
    print(
        f"[campaign] {run_name(pair, estimator)}: training from step {trainer.step} to "
        f"{target} (lr {trainer.config.lr:g})",
        file=sys.stderr,
        flush=True,
    )
    summary = trainer.run()
    if summary["status"] == "interrupted":
        raise _Stop()


def _eval_key(split: str, m: int, n: Optional[int], seed: int) -> str:
    return f"{split}@{m}" + (f"/n{n}s{seed}" if n else "")


def _evaluate(plan: Plan, root: str, pair: str, estimator: str, phase: str, progress: bool) -> None:
    from . import cli

    run_dir = os.path.join(root, run_name(pair, estimator))
    best = runs.load_checkpoint(os.path.join(run_dir, runs.BEST))["step"]
    for split, m, n, seed in plan.evals[(_task(plan, pair), phase)]:
        key = _eval_key(split, m, n, seed)
        done = runs.read_json(os.path.join(run_dir, runs.EVAL), {}).get(key)
        if done and done.get("step") == best:
            continue
        args = ["eval", run_dir, "--m", str(m), "--split", split, "--subset-seed", str(seed)]
        if n:
            args += ["--n", str(n)]
        if not progress:
            args.append("--quiet")
        print(
            f"[campaign] {run_name(pair, estimator)}: {phase} evaluation {key} of best.pt "
            f"(step {best})",
            file=sys.stderr,
            flush=True,
        )
        if cli.main(args) != 0:
            raise RuntimeError(f"evaluation {key} of {run_dir} failed")
    if phase == "interim":  # keep what the first stage measured
        dest = os.path.join(run_dir, "milestones", str(best))
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(os.path.join(run_dir, runs.EVAL), os.path.join(dest, runs.EVAL))
        per = os.path.join(run_dir, runs.PER_IMAGE)
        if os.path.isdir(per):
            shutil.copytree(per, os.path.join(dest, runs.PER_IMAGE), dirs_exist_ok=True)
        runs.write_json(os.path.join(dest, "done.json"), {"step": best})


def _interim_done(plan: Plan, root: str, pair: str, estimator: str) -> bool:
    """A milestone holds every interim evaluation of the plan."""
    folder = os.path.join(root, run_name(pair, estimator), "milestones")
    if not os.path.isdir(folder):
        return False
    keys = {_eval_key(*e) for e in plan.evals[(_task(plan, pair), "interim")]}
    return any(
        os.path.isfile(os.path.join(folder, d, "done.json"))
        and keys <= set(runs.read_json(os.path.join(folder, d, runs.EVAL), {}))
        for d in os.listdir(folder)
    )


def _final_done(plan: Plan, root: str, pair: str, estimator: str) -> bool:
    run_dir = os.path.join(root, run_name(pair, estimator))
    best = os.path.join(run_dir, runs.BEST)
    if _step(run_dir) < plan.total or not os.path.isfile(best):
        return False
    step = runs.load_checkpoint(best)["step"]
    evals = runs.read_json(os.path.join(run_dir, runs.EVAL), {})
    return all(
        evals.get(_eval_key(*e), {}).get("step") == step
        for e in plan.evals[(_task(plan, pair), "final")]
    )


def run_campaign(root: str, plan: Plan = PLAN, progress: bool = False) -> str:
    """Do what is left (sweeps, training stages, evaluations); returns "done" or "stopped"."""
    from .lrsweep import lr_sweep
    from .train import TrainConfig

    os.makedirs(root, exist_ok=True)
    try:
        for pair in plan.pairs:  # 1. NVIL's learning rate
            folder = _sweep_dir(root, pair)
            if not os.path.isfile(os.path.join(folder, "sweep.json")):
                base = TrainConfig(
                    arch=plan.pairs[pair], estimator="nvil", **{**plan.common, **plan.sweep}
                )
                print(
                    f"[campaign] pair {pair}: NVIL learning-rate sweep in {folder}",
                    file=sys.stderr,
                    flush=True,
                )
                lr_sweep(folder, base, plan.rates, progress=progress)  # KeyboardInterrupt: stop
        target = plan.stage  # 2. training, round-robin by stages; 3. evaluations
        while True:
            for pair, est in plan.runs:
                run_dir = os.path.join(root, run_name(pair, est))
                if _step(run_dir) < min(target, plan.total):
                    _train(plan, root, pair, est, min(target, plan.total), progress)
                if _step(run_dir) >= plan.stage and not _interim_done(plan, root, pair, est):
                    _evaluate(plan, root, pair, est, "interim", progress)  # as soon as it can
            if target >= plan.total:
                break
            target += plan.stage
        for pair, est in plan.runs:
            if not _final_done(plan, root, pair, est):
                _evaluate(plan, root, pair, est, "final", progress)
    except (_Stop, KeyboardInterrupt):
        print("[campaign] stopped; run the same command to continue", file=sys.stderr)
        return "stopped"
    return "done"


def status(root: str, plan: Plan = PLAN) -> List[Dict]:
    """Where each run stands: steps, speed over the last logged stretch, best validation."""
    out = []
    for pair, est in plan.runs:
        run_dir = os.path.join(root, run_name(pair, est))
        metrics = runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
        train = [r for r in metrics if r.get("kind") == "train"]
        valid = [r for r in metrics if r.get("kind") == "valid"]
        sweep = runs.read_json(os.path.join(_sweep_dir(root, pair), "sweep.json"))
        out.append(
            {
                "run": run_name(pair, est),
                "arch": plan.pairs[pair],
                "estimator": est,
                "step": _step(run_dir),
                "steps_per_s": train[-1]["steps_per_s"] if train else None,
                "elapsed_h": train[-1]["elapsed_s"] / 3600 if train else None,
                "best_valid": valid[-1]["best"] if valid else None,
                "lr": (sweep or {}).get("chosen_lr") if est != "concrete" else "D.5",
                "interim_eval": _interim_done(plan, root, pair, est),
                "final_eval": _final_done(plan, root, pair, est),
            }
        )
    return out


def export(
    root: str, dest: str, plan: Plan = PLAN, per_image_splits: Tuple[str, ...] = ("test",)
) -> List[str]:
    """Copy the small files the tables and plots are made from to ``dest``: the sweeps (sweep.json,
    each rate's config and metrics), each run's config, metrics and evaluations (also those kept
    in milestones/), and the per-image values of the evaluations of ``per_image_splits``; no
    checkpoints."""
    copied = []

    def copy(src: str, rel: str) -> None:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)
        copied.append(rel)

    for pair in plan.pairs:
        folder = _sweep_dir(root, pair)
        if os.path.isfile(os.path.join(folder, "sweep.json")):
            copy(os.path.join(folder, "sweep.json"), os.path.join("lr", pair, "sweep.json"))
            for name in sorted(os.listdir(folder)):
                for f in (runs.CONFIG, runs.METRICS):
                    if os.path.isfile(os.path.join(folder, name, f)):
                        copy(os.path.join(folder, name, f), os.path.join("lr", pair, name, f))
    keep = (runs.CONFIG, runs.METRICS, runs.EVAL, "done.json")
    for pair, est in plan.runs:
        name = run_name(pair, est)
        run_dir = os.path.join(root, name)
        for dirpath, _, files in os.walk(run_dir):
            for f in sorted(files):
                rel = os.path.relpath(os.path.join(dirpath, f), run_dir)
                if f in keep or (f.endswith(".npz") and f.split("@")[0] in per_image_splits):
                    copy(os.path.join(dirpath, f), os.path.join(name, rel))
    return copied


def format_status(rows: List[Dict], total: int = PLAN.total) -> str:
    lines = []
    for r in rows:
        rate = r["steps_per_s"]
        left = (total - r["step"]) / rate / 3600 if rate else float("nan")
        best = "-" if r["best_valid"] is None else f"{r['best_valid']:.2f}"
        lr = r["lr"] if isinstance(r["lr"], str) else ("?" if r["lr"] is None else f"{r['lr']:g}")
        lines.append(
            f"{r['run']:12s} {r['arch']:20s} step {r['step']:>9,d} / {total:,}  "
            f"{(rate or 0):6.1f} steps/s  ~{left:5.1f} h left  best valid {best}  "
            f"lr {lr}  interim eval {'yes' if r['interim_eval'] else 'no'}  "
            f"final eval {'yes' if r['final_eval'] else 'no'}"
        )
    return "\n".join(lines)
