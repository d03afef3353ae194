"""Tables of results beside the paper's numbers, and training curves as PNG."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from . import runs
from .arch import parse_arch
from .paper import paper_nll

__all__ = ["collect", "format_table", "plot_curves", "save_figure"]


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
    """The evaluation of ``split`` with the largest m (then the most examples)."""
    found = [v for v in evals.values() if v.get("split") == split]
    return max(found, key=lambda v: (v["m"], v["n"])) if found else None


def collect(paths: Sequence[str]) -> List[Dict]:
    """One row per run folder: its configuration, training length and evaluations."""
    rows = []
    for run_dir in runs.run_dirs(list(paths)):
        config = runs.read_json(os.path.join(run_dir, runs.CONFIG))
        metrics = runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
        ends = [r for r in metrics if r.get("kind") == "end"]
        evals = runs.read_json(os.path.join(run_dir, runs.EVAL), {})
        row = {"run": run_dir, "arch": config["arch"], "arity": config["arity"],
               "m": config["m"], "estimator": config["estimator"], "dataset": config["dataset"],
               "steps": ends[-1]["step"] if ends else None,
               "minutes": ends[-1]["elapsed_s"] / 60 if ends else None}
        for split in ("test", "train"):
            e = _best_eval(evals, split)
            row[split] = e
            row["paper_" + split] = paper_nll(config["arch"], config["arity"], config["m"],
                                              config["estimator"], config["dataset"], split)
        rows.append(row)
    rows.sort(key=lambda r: (r["dataset"], r["arity"], r["arch"], r["m"], r["estimator"]))
    return rows


def format_table(rows: List[Dict], markdown: bool = False) -> str:
    """Our NLL (-L_m of the discrete model, with its m and number of images) beside the paper's."""
    head = ["dataset", "model", "n", "m", "estimator", "steps", "min", "test NLL ± s.e.", "paper",
            "train NLL ± s.e.", "paper", "eval"]
    lines = []
    for r in rows:
        test, train = r["test"], r["train"]
        bound_name = "L^SP_" if parse_arch(r["arch"]).is_conditional_model else "L_"
        evals = "; ".join(f"{e['split']} {bound_name}{e['m']} on {e['n']}" for e in (test, train)
                          if e)
        lines.append([
            r["dataset"], r["arch"], str(r["arity"]), str(r["m"]),
            _NAMES.get(r["estimator"], r["estimator"]),
            str(r["steps"]) if r["steps"] is not None else "-", _fmt(r["minutes"]),
            _nll(test), _fmt(r["paper_test"]), _nll(train), _fmt(r["paper_train"]), evals or "-"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h)
              for i, h in enumerate(head)]
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
        style = dict(color=colours[keys.index(key) % len(colours)],
                     ls=_STYLES.get(config["estimator"], "-."), lw=1.2)
        label = (f"{config['arch']} n={config['arity']} m={config['m']} "
                 f"{_NAMES.get(config['estimator'], config['estimator'])}")
        metrics = runs.read_jsonl(os.path.join(run_dir, runs.METRICS))
        train = [r for r in metrics if r.get("kind") == "train"]
        valid = [r for r in metrics if r.get("kind") == "valid"]
        if train:
            ax_train.plot([r["step"] for r in train], [r["objective"] for r in train], **style)
        if valid:
            (h,) = ax_valid.plot([r["step"] for r in valid], [r["bound"] for r in valid],
                                 marker="o", ms=3, label=label, **style)
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


def save_figure(fig, out: str, dpi: int = 100) -> str:
    """Write ``fig`` as a PNG to ``out`` (through a temporary file and os.replace), close it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, out)
    return out
