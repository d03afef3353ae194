"""The temperature study of Figure 4 (right): structured prediction trained on L_1^SP with the
Concrete relaxation at a range of temperatures, scored by the relaxed (continuous) objective it
optimised and by the discrete objective of the same weights.

For each temperature lambda, a normal training run (``Trainer``, resumable) in
``<out>/T<lambda>``; then, on ``n`` images of the evaluation split drawn with ``subset_seed``:

* ``continuous``: E[L_m^SP] of the relaxed graph at lambda (relaxed draws from the prior),
* ``discrete``: E[L_m^SP] of the discrete graph, the model that is actually used,

each averaged over ``draws`` seeded repetitions per image (for m = 1 this is E[log p(x_bottom |
z)], the quantity the paper plots, as a loss: lower is better), plus L_100^SP of the discrete
graph, and statistics of the relaxed activities a in (-1, 1) of every latent unit:
``median_abs`` (the median of |a|), ``frac_mid`` (the fraction with |a| < 0.5, i.e. closer to
the midpoint 0 than to either corner) and ``frac_corner`` (|a| > 0.9).

**The interior region.** The paper shades the temperatures at which the relaxed units "prefer"
the interior of (-1, 1). Here a temperature is in that region when the majority of the trained
model's relaxed activities lie closer to the midpoint than to a corner: ``median_abs < 0.5``
(equivalently ``frac_mid > 0.5``). This is measured, not assumed; for reference, a binary Concrete
node's density is log-convex (mass piling up at the corners) for lambda <= 1 and vanishes at both
corners for lambda > 1 (Proposition 1 (d) of the paper, n = 2), whatever its logits.

Outputs: ``<out>/fig4.json`` (settings and one record per temperature), ``<out>/fig4.csv`` (the
records) and ``<out>/fig4.png``.
"""

from __future__ import annotations

import csv
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import runs
from .data import load_dataset, random_subset
from .evaluate import estimate_bound
from .model import bound
from .noise import NoiseSource, mix64
from .report import save_figure
from .train import TrainConfig, Trainer, load_model

__all__ = ["expected_bound", "activity_stats", "temperature_sweep", "plot_sweep", "INTERIOR_MEDIAN"]

INTERIOR_MEDIAN = 0.5  # |a| below this: closer to the midpoint 0 than to a corner


@torch.no_grad()
def expected_bound(
    model, data, m: int, *, relaxed: bool, draws: int = 10, seed: int = 0, batch: int = 500
) -> Dict[str, float]:
    """E[L_m] per example of the relaxed (``relaxed=True``) or the discrete graph, averaged over
    ``draws`` seeded draws of the m samples; returns the mean over examples and its standard
    error. The model is put in eval mode for the duration."""
    x_all = torch.as_tensor(np.asarray(data), dtype=torch.float32)
    per = torch.zeros(x_all.shape[0], dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for r in range(draws):
            for b0 in range(0, x_all.shape[0], batch):
                x = x_all[b0 : b0 + batch]
                noise = NoiseSource(seed=mix64(seed, r, b0))
                w = (model.log_weights_relaxed if relaxed else model.log_weights_discrete)(
                    x, m, noise
                )
                per[b0 : b0 + batch] += bound(w.log_w).double()
    finally:
        model.train(was_training)
    per /= draws
    n = per.shape[0]
    return {
        "mean": float(per.mean()),
        "sem": float(per.std() / math.sqrt(n)) if n > 1 else float("nan"),
    }


@torch.no_grad()
def activity_stats(model, data, *, draws: int = 1, seed: int = 0) -> Dict[str, float]:
    """Where the relaxed activities of every latent unit fall in (-1, 1), over ``data`` and
    ``draws`` relaxed draws from the prior: median |a|, fractions with |a| < 0.5 and > 0.9."""
    x = torch.as_tensor(np.asarray(data), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        acts = torch.cat(
            [
                a.abs().reshape(-1)
                for r in range(draws)
                for a in model.relaxed_activities(x, 1, NoiseSource(seed=mix64(seed, r)))
            ]
        )
    finally:
        model.train(was_training)
    return {
        "median_abs": float(acts.median()),
        "mean_abs": float(acts.mean()),
        "frac_mid": float((acts < INTERIOR_MEDIAN).double().mean()),
        "frac_corner": float((acts > 0.9).double().mean()),
    }


def _run_name(t: float) -> str:
    return f"T{t:.4g}"


def temperature_sweep(
    out_dir: str,
    temperatures: Sequence[float],
    base: TrainConfig,
    *,
    split: str = "test",
    n: int = 500,
    subset_seed: int = 0,
    draws: int = 10,
    eval_m: int = 100,
    progress: bool = True,
    log=print,
) -> Dict:
    """Train ``base`` (a structured-prediction config) at each temperature (skipping runs already
    at ``base.steps``, resuming unfinished ones), evaluate as described in the module docstring,
    write fig4.json / fig4.csv / fig4.png into ``out_dir``; returns the JSON content."""
    base = base.resolved()
    if base.task != "sp":
        raise ValueError(
            f"the temperature study is for structured prediction; {base.arch} is a "
            "density model (use an arch with a leading V layer)"
        )
    if base.estimator != "concrete":
        raise ValueError("the temperature study trains the Concrete relaxation")
    temperatures = sorted(set(float(t) for t in temperatures))
    if not temperatures or min(temperatures) <= 0:
        raise ValueError(f"temperatures must be positive, got {temperatures}")
    data = load_dataset(base.dataset, base.data_root)
    x = data.binary(split)
    if n and n < len(x):
        x = x[random_subset(len(x), n, subset_seed)]
    records: List[Dict] = []
    for t in temperatures:
        run_dir = os.path.join(out_dir, _run_name(t))
        config = TrainConfig.from_dict(
            {**base.to_dict(), "posterior_temperature": t, "prior_temperature": t}
        )
        ckpt = os.path.join(run_dir, runs.CHECKPOINT)
        done = os.path.isfile(ckpt) and runs.load_checkpoint(ckpt)["step"] >= config.steps
        if not done:
            trainer = Trainer(
                config, run_dir, resume=os.path.isfile(ckpt), progress=progress, dataset=data
            )
            summary = trainer.run()
            if summary["status"] == "interrupted":  # Ctrl-C / SIGTERM: rerun to continue
                raise RuntimeError(
                    f"training at temperature {t:g} was interrupted at step "
                    f"{summary['step']}; run the same command to continue"
                )
            # a --minutes budget may end a run early: its step is recorded
        model, _, step = load_model(ckpt)
        end = [
            r
            for r in runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
            if r.get("kind") == "end"
        ]
        t0 = time.time()
        cont = expected_bound(model, x, config.m, relaxed=True, draws=draws, seed=subset_seed)
        disc = expected_bound(model, x, config.m, relaxed=False, draws=draws, seed=subset_seed)
        lm = estimate_bound(model, x, eval_m, seed=subset_seed, progress=False)
        stats = activity_stats(model, x, seed=subset_seed)
        rec = {
            "temperature": t,
            "run": run_dir,
            "step": step,
            "train_s": end[-1]["elapsed_s"] if end else None,
            "continuous_loss": -cont["mean"],
            "continuous_sem": cont["sem"],
            "discrete_loss": -disc["mean"],
            "discrete_sem": disc["sem"],
            f"discrete_L{eval_m}_nll": lm.nll,
            f"discrete_L{eval_m}_sem": lm.sem,
            **stats,
            "interior": stats["median_abs"] < INTERIOR_MEDIAN,
            "eval_s": round(time.time() - t0, 2),
        }
        records.append(rec)
        log(
            f"lambda {t:g}: continuous {rec['continuous_loss']:.2f}, discrete "
            f"{rec['discrete_loss']:.2f} (-E[L_{config.m}^SP]); discrete L_{eval_m}^SP NLL "
            f"{lm.nll:.2f}; median |a| {stats['median_abs']:.3f}"
            + (" (interior)" if rec["interior"] else "")
        )
    result = {
        "arch": base.arch,
        "arity": base.arity,
        "m": base.m,
        "steps": base.steps,
        "dataset": base.dataset,
        "lr": base.lr,
        "seed": base.seed,
        "split": split,
        "n": int(len(x)),
        "subset_seed": subset_seed,
        "draws": draws,
        "eval_m": eval_m,
        "interior_rule": f"median over units, images and draws of |relaxed activity| < "
        f"{INTERIOR_MEDIAN}",
        "records": records,
    }
    os.makedirs(out_dir, exist_ok=True)
    runs.write_json(os.path.join(out_dir, "fig4.json"), result)
    _write_csv(os.path.join(out_dir, "fig4.csv"), records)
    plot_sweep(result, os.path.join(out_dir, "fig4.png"))
    return result


def _write_csv(path: str, records: List[Dict]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    runs.atomic_write_text(path, buf.getvalue())


def _interior_spans(temps: List[float], interior: List[bool]):
    """Intervals of the temperature axis (log scale) to shade: around each interior temperature,
    to the geometric midpoints with its neighbours (the axis ends beyond the extremes)."""
    spans = []
    for i, (t, inside) in enumerate(zip(temps, interior)):
        if not inside:
            continue
        lo = math.sqrt(temps[i - 1] * t) if i > 0 else t / 1.5
        hi = math.sqrt(temps[i + 1] * t) if i + 1 < len(temps) else t * 1.5
        spans.append((lo, hi))
    return spans


def plot_sweep(result: Dict, out: str, title: Optional[str] = None) -> str:
    """Figure 4 (right): -E[L_m^SP] of the continuous and the discrete graph against the training
    temperature, the interior region shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    recs = result["records"]
    temps = [r["temperature"] for r in recs]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for lo, hi in _interior_spans(temps, [r["interior"] for r in recs]):
        ax.axvspan(lo, hi, color="0.85", lw=0)
    m = result["m"]
    ax.errorbar(
        temps,
        [r["continuous_loss"] for r in recs],
        [r["continuous_sem"] for r in recs],
        marker="o",
        ms=4,
        capsize=2,
        label="continuous (relaxed) graph",
    )
    ax.errorbar(
        temps,
        [r["discrete_loss"] for r in recs],
        [r["discrete_sem"] for r in recs],
        marker="s",
        ms=4,
        capsize=2,
        label="discrete graph",
    )
    ax.set_xscale("log")
    ax.set_xticks(temps)
    ax.set_xticklabels([f"{t:.2g}" for t in temps], fontsize=8)
    ax.minorticks_off()
    ax.set(
        xlabel="training temperature λ",
        ylabel=f"-E[L$_{{{m}}}^{{SP}}$] (nats, lower is better)",
        title=title
        or f"{result['arch']}, arity {result['arity']}, L$_{{{m}}}^{{SP}}$\n"
        f"{result['steps']} training steps per temperature; "
        f"{result['split']} split, {result['n']} images",
    )
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    shaded = matplotlib.patches.Patch(
        color="0.85", label="relaxed units in the interior (median |a| < 0.5)"
    )
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + [shaded], fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)
