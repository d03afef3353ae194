"""Tables of results beside the paper's numbers, paired differences, and training curves as PNG."""

from __future__ import annotations

import itertools
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import runs
from .arch import parse_arch
from .paper import paper_nll

__all__ = [
    "collect",
    "format_table",
    "paired_differences",
    "format_paired",
    "compare_runs",
    "plot_curves",
    "plot_log_curves",
    "extrapolate",
    "save_figure",
]


_NAMES = {"concrete": "Concrete", "vimco": "VIMCO", "nvil": "NVIL"}


def _fmt(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _nll(e: Optional[Dict]) -> str:
    """NLL +- its standard error over images."""
    if not e:
        return "-"
    sem = e.get("sem")
    return f"{e['nll']:.2f}" + (f" ± {sem:.2f}" if sem is not None and sem == sem else "")


def _best_eval(evals: Dict, split: str) -> Optional[Dict]:
    """The evaluation of ``split`` on the most examples (then with the largest m): L_5000 on
    2,000 images rather than L_50000 on 200, whose use is the bias of the smaller m (the paired
    differences show it)."""
    found = [v for v in evals.values() if v.get("split") == split]
    return max(found, key=lambda v: (v["n"], v["m"])) if found else None


def collect(paths: Sequence[str]) -> List[Dict]:
    """One row per run folder: its configuration, training length and evaluations."""
    rows = []
    for run_dir in runs.run_dirs(list(paths)):
        config = runs.read_json(os.path.join(run_dir, runs.CONFIG))
        metrics = runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
        ends = [r for r in metrics if r.get("kind") == "end"]
        evals = runs.read_json(os.path.join(run_dir, runs.EVAL), {})
        row = {
            "run": run_dir,
            "arch": config["arch"],
            "arity": config["arity"],
            "m": config["m"],
            "estimator": config["estimator"],
            "dataset": config["dataset"],
            "steps": ends[-1]["step"] if ends else None,
            "minutes": ends[-1]["elapsed_s"] / 60 if ends else None,
        }
        for split in ("test", "train"):
            e = _best_eval(evals, split)
            row[split] = e
            row["paper_" + split] = paper_nll(
                config["arch"],
                config["arity"],
                config["m"],
                config["estimator"],
                config["dataset"],
                split,
            )
        rows.append(row)
    rows.sort(key=lambda r: (r["dataset"], r["arity"], r["arch"], r["m"], r["estimator"]))
    return rows


def format_table(rows: List[Dict], markdown: bool = False) -> str:
    """Our NLL (-L_m of the discrete model, with its m and number of images) beside the paper's."""
    head = [
        "dataset",
        "model",
        "n",
        "m",
        "estimator",
        "steps",
        "min",
        "test NLL ± s.e.",
        "paper",
        "train NLL ± s.e.",
        "paper",
        "eval",
    ]
    lines = []
    for r in rows:
        test, train = r["test"], r["train"]
        bound_name = "L^SP_" if parse_arch(r["arch"]).is_conditional_model else "L_"
        evals = "; ".join(
            f"{e['split']} {bound_name}{e['m']} on {e['n']}" for e in (test, train) if e
        )
        lines.append(
            [
                r["dataset"],
                r["arch"],
                str(r["arity"]),
                str(r["m"]),
                _NAMES.get(r["estimator"], r["estimator"]),
                str(r["steps"]) if r["steps"] is not None else "-",
                _fmt(r["minutes"]),
                _nll(test),
                _fmt(r["paper_test"]),
                _nll(train),
                _fmt(r["paper_train"]),
                evals or "-",
            ]
        )
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [
        max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(head)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


def _paired(run_a: str, rec_a: Dict, run_b: str, rec_b: Dict) -> Optional[Dict]:
    """NLL_a - NLL_b averaged over the images both evaluated, with the standard error of the
    per-image difference (and, for reference, the unpaired one); None without per-image values
    or when the images differ."""
    a = runs.load_per_image(run_a, rec_a["per_image"]) if rec_a.get("per_image") else None
    b = runs.load_per_image(run_b, rec_b["per_image"]) if rec_b.get("per_image") else None
    if a is None or b is None or not np.array_equal(a[1], b[1]):
        return None
    d = b[0] - a[0]  # per-image NLL_a - NLL_b (NLL = -L)
    n = len(d)
    sem = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    unpaired = math.sqrt(float(a[0].var(ddof=1) + b[0].var(ddof=1)) / n) if n > 1 else float("nan")
    return {
        "n": n,
        "a_nll": float(-a[0].mean()),
        "b_nll": float(-b[0].mean()),
        "diff": float(d.mean()),
        "sem": sem,
        "unpaired_sem": unpaired,
    }


def paired_differences(paths: Sequence[str]) -> List[Dict]:
    """Differences between evaluations of the same images, with the standard error of the
    per-image difference:

    * ``estimators``: Concrete against VIMCO / NVIL, same data, model, arity, m and protocol,
      for every evaluation (split, m, images) the two runs share;
    * ``bias``: within one run, a smaller m against a larger one on the same images (the bias of
      L_m as an estimate of log p(x), e.g. L_5000 against L_50000).
    """
    found = []
    for run_dir in runs.run_dirs(list(paths)):
        config = runs.read_json(os.path.join(run_dir, runs.CONFIG))
        evals = runs.read_json(os.path.join(run_dir, runs.EVAL), {})
        found.append((run_dir, config, evals))
    out: List[Dict] = []
    same = (
        "dataset",
        "arch",
        "arity",
        "m",
        "posterior_temperature",
        "prior_temperature",
        "batch_size",
        "inference_width",
    )
    for (ra, ca, ea), (rb, cb, eb) in itertools.combinations(found, 2):
        if any(
            ca.get(k, "mirror" if k == "inference_width" else None)
            != cb.get(k, "mirror" if k == "inference_width" else None)
            for k in same
        ):
            continue
        if (ca["estimator"] == "concrete") == (cb["estimator"] == "concrete"):
            continue
        if cb["estimator"] == "concrete":
            (ra, ca, ea), (rb, cb, eb) = (rb, cb, eb), (ra, ca, ea)
        for key in sorted(set(ea) & set(eb)):
            p = _paired(ra, ea[key], rb, eb[key])
            if p is not None:
                out.append(
                    {
                        "kind": "estimators",
                        "arch": ca["arch"],
                        "arity": ca["arity"],
                        "m": ca["m"],
                        "split": ea[key]["split"],
                        "eval_m": ea[key]["m"],
                        "a": f"Concrete (lr {ca['lr']:g})",
                        "b": f"{_NAMES.get(cb['estimator'], cb['estimator'])} (lr {cb['lr']:g})",
                        "run_a": ra,
                        "run_b": rb,
                        "steps_a": _steps(ra),
                        "steps_b": _steps(rb),
                        **p,
                    }
                )
    for run_dir, config, evals in found:
        for ka, kb in itertools.combinations(sorted(evals), 2):
            a, b = evals[ka], evals[kb]
            if a.get("split") != b.get("split") or a.get("m") == b.get("m"):
                continue
            if a["m"] > b["m"]:
                a, b = b, a
            p = _paired(run_dir, a, run_dir, b)
            if p is not None:
                out.append(
                    {
                        "kind": "bias",
                        "arch": config["arch"],
                        "arity": config["arity"],
                        "m": config["m"],
                        "split": a["split"],
                        "eval_m": f"{a['m']}/{b['m']}",
                        "a": f"{_NAMES.get(config['estimator'], config['estimator'])} L_{a['m']}",
                        "b": f"L_{b['m']}",
                        "run_a": run_dir,
                        "run_b": run_dir,
                        "steps_a": _steps(run_dir),
                        "steps_b": _steps(run_dir),
                        **p,
                    }
                )
    return out


def compare_runs(run_a: str, run_b: str) -> List[Dict]:
    """NLL_a - NLL_b with the paired standard error for every evaluation the two runs share
    (same split, m and images): any two runs, e.g. two learning rates or two architectures."""
    ea = runs.read_json(os.path.join(run_a, runs.EVAL), {})
    eb = runs.read_json(os.path.join(run_b, runs.EVAL), {})
    out = []
    for key in sorted(set(ea) & set(eb)):
        p = _paired(run_a, ea[key], run_b, eb[key])
        if p is not None:
            out.append(
                {
                    "key": key,
                    "split": ea[key]["split"],
                    "eval_m": ea[key]["m"],
                    "step_a": ea[key].get("step"),
                    "step_b": eb[key].get("step"),
                    **p,
                }
            )
    return out


def _steps(run_dir: str) -> Optional[int]:
    ends = [
        r for r in runs.read_jsonl(os.path.join(run_dir, runs.METRICS)) if r.get("kind") == "end"
    ]
    return ends[-1]["step"] if ends else None


def format_paired(rows: List[Dict], markdown: bool = False) -> str:
    """One line per paired difference: NLL of a, of b, and a - b ± s.e. (paired; unpaired)."""
    head = [
        "model",
        "n",
        "m",
        "split",
        "eval m",
        "images",
        "a",
        "b",
        "NLL a",
        "NLL b",
        "a - b ± s.e. (paired)",
        "unpaired s.e.",
    ]
    lines = [
        [
            r["arch"],
            str(r["arity"]),
            str(r["m"]),
            r["split"],
            str(r["eval_m"]),
            str(r["n"]),
            r["a"],
            r["b"],
            f"{r['a_nll']:.2f}",
            f"{r['b_nll']:.2f}",
            f"{r['diff']:+.2f} ± {r['sem']:.2f}",
            f"{r['unpaired_sem']:.2f}",
        ]
        for r in rows
    ]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


_STYLES = {"concrete": "-", "vimco": "--", "nvil": ":"}


def plot_curves(paths: Sequence[str], out: str, title: Optional[str] = None) -> str:
    """Training objective (left) and validation bound (right) against the step, one line per run
    (colour: model and m; line style: estimator); written as a PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_valid) = plt.subplots(1, 2, figsize=(12, 5))
    colours = plt.get_cmap("tab20").colors
    keys: List = []
    handles = []
    for run_dir in dict.fromkeys(runs.run_dirs(list(paths))):
        config = runs.read_json(os.path.join(run_dir, runs.CONFIG))
        key = (config["arch"], config["arity"], config["m"])
        if key not in keys:
            keys.append(key)
        style = dict(
            color=colours[keys.index(key) % len(colours)],
            ls=_STYLES.get(config["estimator"], "-."),
            lw=1.2,
        )
        label = (
            f"{config['arch']} n={config['arity']} m={config['m']} "
            f"{_NAMES.get(config['estimator'], config['estimator'])}"
        )
        metrics = runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
        train = [r for r in metrics if r.get("kind") == "train"]
        valid = [r for r in metrics if r.get("kind") == "valid"]
        if train:
            ax_train.plot([r["step"] for r in train], [r["objective"] for r in train], **style)
        if valid:
            (h,) = ax_valid.plot(
                [r["step"] for r in valid],
                [r["bound"] for r in valid],
                marker="o",
                ms=3,
                label=label,
                **style,
            )
            handles.append(h)
    if not keys:
        plt.close(fig)
        raise FileNotFoundError(f"no run folders (with config.json) in {list(paths)}")
    ax_train.set(xlabel="step", ylabel="nats", title="training objective (relaxed for Concrete)")
    ax_valid.set(xlabel="step", ylabel="nats", title="validation L_m of the discrete model")
    for ax in (ax_train, ax_valid):
        ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    rows = (len(handles) + 2) // 3
    fig.tight_layout(rect=(0, 0.03 * rows + 0.02, 1, 1))
    return save_figure(fig, out)


def extrapolate(
    steps: Sequence[float], values: Sequence[float], to: float, decades: float = 1.0
) -> Optional[Dict]:
    """A line in log10(steps) fitted by least squares to the points of the last ``decades``
    decades of steps, evaluated at ``to``: {"slope" (per decade), "at", "value", "points"}, or
    None with fewer than 3 such points. An extrapolation, not a measurement: curves flatten."""
    pts = [(math.log10(s), v) for s, v in zip(steps, values) if s > 0]
    if not pts:
        return None
    last = max(x for x, _ in pts)
    fit = [(x, v) for x, v in pts if x >= last - decades]
    if len(fit) < 3:
        return None
    xs, ys = np.array([x for x, _ in fit]), np.array([v for _, v in fit])
    slope, intercept = np.polyfit(xs, ys, 1)
    return {
        "slope": float(slope),
        "at": float(to),
        "value": float(intercept + slope * math.log10(to)),
        "points": len(fit),
        "from_step": float(10 ** xs.min()),
        "to_step": float(10 ** xs.max()),
    }


def plot_log_curves(
    paths: Sequence[str],
    out: str,
    title: Optional[str] = None,
    extrapolate_to: Optional[float] = 1e7,
) -> Dict[str, Optional[Dict]]:
    """Validation bound against log10(steps), one line per run; with ``extrapolate_to``, a dashed
    line fitted to each run's last decade of steps continued to that step and labelled as an
    extrapolation. Returns each run's fit (``extrapolate``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab10").colors
    fits: Dict[str, Optional[Dict]] = {}
    keys: List = []
    for run_dir in dict.fromkeys(runs.run_dirs(list(paths))):
        config = runs.read_json(os.path.join(run_dir, runs.CONFIG))
        valid = [
            r
            for r in runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
            if r.get("kind") == "valid" and r["step"] > 0
        ]
        if not valid:
            continue
        key = (config["arch"], config["m"])
        if key not in keys:
            keys.append(key)
        style = dict(
            color=colours[keys.index(key) % len(colours)], ls=_STYLES.get(config["estimator"], "-.")
        )
        name = _NAMES.get(config["estimator"], config["estimator"])
        label = f"{config['arch']} m={config['m']} {name} (lr {config['lr']:g})"
        steps, bounds = [r["step"] for r in valid], [r["bound"] for r in valid]
        ax.plot(steps, bounds, marker="o", ms=2, lw=1.2, label=label, **style)
        fit = extrapolate(steps, bounds, extrapolate_to) if extrapolate_to else None
        fits[run_dir] = fit
        if fit:
            xs = np.array([steps[-1], extrapolate_to])
            ys = fit["value"] + fit["slope"] * (np.log10(xs) - math.log10(extrapolate_to))
            ax.plot(xs, ys, lw=0.9, alpha=0.6, color=style["color"], ls=(0, (2, 2)))
            ax.annotate(
                f"{fit['value']:.1f}",
                (extrapolate_to, fit["value"]),
                fontsize=7,
                color=style["color"],
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
            )
    if not keys:
        plt.close(fig)
        raise FileNotFoundError(f"no run folders with validation records in {list(paths)}")
    ax.set_xscale("log")
    ax.set(xlabel="training steps (log scale)", ylabel="validation bound (nats)")
    if extrapolate_to:
        ax.axvspan(
            max(
                max(r["to_step"] for r in fits.values() if r)
                if any(fits.values())
                else extrapolate_to,
                1,
            ),
            extrapolate_to,
            color="0.92",
            zorder=0,
        )
        ax.text(
            extrapolate_to,
            ax.get_ylim()[0],
            "extrapolated (line in log steps fitted to the last decade)",
            fontsize=7,
            ha="right",
            va="bottom",
            color="0.3",
        )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, out)
    return fits


def save_figure(fig, out: str, dpi: int = 100) -> str:
    """Write ``fig`` as a PNG to ``out`` (through a temporary file and os.replace), close it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, out)
    return out
