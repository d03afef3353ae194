"""The learning rates of VIMCO and NVIL, chosen by validation (the protocol of the comparisons).

Appendix D.5 gives the Concrete relaxation's learning rates (3e-4 for linear models, 1e-4 for
non-linear ones); the paper tuned those of its score-function baselines but does not state them.
So for each compared configuration the zoo trains the VIMCO (m > 1) or NVIL (m = 1) model at every
rate of ``RATES`` for the same fixed number of steps, and takes the rate whose model has the best
validation bound L_m (m = ``eval_m``, 100 by default) on the run's validation images after those
steps. Every run of a sweep uses the same seed, data order, validation images and noise seeds; only
the rate differs, so the comparison between rates is paired image by image (the margin of the
chosen rate over the runner-up is given with the standard error of the paired difference).

    python -m concrete_ext.zoo lr-sweep --arch 200H-784V --estimator nvil --m 1 --steps 20000 \\
        --out runs/lr/200H-784V_nvil_m1

writes ``<out>/lr<rate>/`` (ordinary run folders: an interrupted sweep resumes, finished runs are
kept) and ``<out>/sweep.json`` (settings, one record per rate, the chosen rate, the rule).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import runs
from .data import Dataset, load_dataset
from .evaluate import estimate_bound
from .train import TrainConfig, Trainer, load_model

__all__ = ["RATES", "lr_sweep", "chosen_rate", "SWEEP_FILE"]

RATES = (1e-4, 3e-4, 1e-3)
SWEEP_FILE = "sweep.json"
RULE = (
    "the rate with the best validation L_{m} (mean over the run's {n} validation images) after "
    "{steps} steps; the same seed, data order, images and noise for every rate"
)


def _run_name(lr: float) -> str:
    return f"lr{lr:g}"


def _finished(run_dir: str, steps: int) -> bool:
    ckpt = os.path.join(run_dir, runs.CHECKPOINT)
    return os.path.isfile(ckpt) and runs.load_checkpoint(ckpt)["step"] >= steps


def lr_sweep(
    out_dir: str,
    base: TrainConfig,
    rates: Sequence[float] = RATES,
    *,
    progress: bool = True,
    dataset: Optional[Dataset] = None,
) -> Dict:
    """Train ``base`` at each rate for ``base.steps`` steps in ``out_dir/lr<rate>`` (resumable),
    score each final model by L_{eval_m} on its validation images, write and return the sweep
    (``sweep.json``)."""
    if not rates:
        raise ValueError("give at least one learning rate")
    base = base.resolved()
    data = dataset if dataset is not None else load_dataset(base.dataset, base.data_root)
    records: List[Dict] = []
    per_image: Dict[float, np.ndarray] = {}
    for lr in rates:
        run_dir = os.path.join(out_dir, _run_name(lr))
        config = dataclasses.replace(base, lr=float(lr))
        start = time.time()
        if not _finished(run_dir, config.steps):
            resume = os.path.isfile(os.path.join(run_dir, runs.CHECKPOINT))
            summary = Trainer(
                None if resume else config, run_dir, resume=resume, progress=progress, dataset=data
            ).run()
            if summary["status"] == "interrupted":  # Ctrl-C / SIGTERM: stop the sweep too
                raise KeyboardInterrupt(f"sweep stopped in {run_dir} at step {summary['step']}")
        # the model after exactly `steps` steps (not best.pt: the rule is a fixed budget)
        model, saved, step = load_model(os.path.join(run_dir, runs.CHECKPOINT))
        trainer_valid = Trainer.validation_images(saved, data)
        est = estimate_bound(model, trainer_valid, saved.eval_m, seed=saved.seed, progress=False)
        per_image[lr] = est.per_example
        metrics = runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
        ends = [r for r in metrics if r.get("kind") == "end"]
        records.append(
            {
                "lr": float(lr),
                "run": _run_name(lr),
                "step": step,
                "valid_bound": est.mean,
                "valid_sem": est.sem,
                "valid_m": saved.eval_m,
                "valid_n": est.n,
                "train_minutes": (ends[-1]["elapsed_s"] / 60 if ends else None),
                "wall_s": round(time.time() - start, 1),
            }
        )
    ok = [r for r in records if math.isfinite(r["valid_bound"])]
    if not ok:
        raise FloatingPointError(f"no rate of {list(rates)} gave a finite validation bound")
    best = max(ok, key=lambda r: r["valid_bound"])
    others = sorted((r for r in ok if r is not best), key=lambda r: -r["valid_bound"])
    margin = None
    if others:
        d = per_image[best["lr"]] - per_image[others[0]["lr"]]
        margin = {
            "runner_up_lr": others[0]["lr"],
            "difference": float(d.mean()),
            "paired_sem": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None,
        }
    result = {
        "settings": {k: v for k, v in base.to_dict().items() if k != "lr"},
        "rates": [float(r) for r in rates],
        "records": records,
        "chosen_lr": best["lr"],
        "margin_over_runner_up": margin,
        "rule": RULE.format(m=base.eval_m, n=best["valid_n"], steps=base.steps),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    runs.write_json(os.path.join(out_dir, SWEEP_FILE), result)
    return result


def chosen_rate(out_dir: str) -> Optional[float]:
    """The rate a finished sweep in ``out_dir`` chose, or None."""
    sweep = runs.read_json(os.path.join(out_dir, SWEEP_FILE))
    return None if sweep is None else float(sweep["chosen_lr"])
