"""What the harness's rows become: a CSV, a markdown table, PNG plots and the performance targets
(reported, never asserted)."""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence

from .harness import LIMITS, OURS, PEERS

COLUMNS = [
    "op",
    "provider",
    "mode",
    "shape",
    "n",
    "numel",
    "dtype",
    "rep",
    "status",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "runs",
    "warmup_s",
    "bytes",
    "gbs",
    "limit_gbs",
    "frac_limit",
    "x_tx_floor",
    *[f"vs_{p}" for p in PEERS],
    "device",
    "device_name",
    "torch",
    "triton",
    "cuda",
    "python",
    "commit",
    "date",
    "load_avg",
]
PEER_LABEL = {
    "torch": "eager torch",
    "compile": "torch.compile",
    "dist": "torch.distributions",
    "reference": "reference",
    "topk": "torch.topk(logits + gumbel)",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_csv(rows: Sequence[Dict[str, Any]], path: str):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in COLUMNS})


def _num(v: float, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _pair(a: Optional[Dict], b: Optional[Dict], key: str, fmt: str, scale: float = 1.0) -> str:
    vals = [(_num(r[key] * scale, fmt) if r is not None else "–") for r in (a, b)]
    return " / ".join(vals)


def _groups(rows: Sequence[Dict[str, Any]]):
    """(op, mode, shape, dtype) -> provider -> {rep: row}, in first-seen order."""
    groups: Dict[tuple, Dict[str, Dict[int, Dict]]] = {}
    for r in rows:
        key = (r["op"], r["mode"], r["shape"], r["dtype"])
        groups.setdefault(key, {}).setdefault(r["provider"], {})[r["rep"]] = r
    return groups


def markdown_table(rows: Sequence[Dict[str, Any]], env: Dict[str, str]) -> str:
    """Every measured case: both runs of the median, the spread of run 1, throughput, limit, peers."""
    cpu = env["device"] == "cpu"
    head = [
        "op",
        "mode",
        "shape",
        "dtype",
        "provider",
        "median ms (run 1 / 2)",
        "p20–p80 ms (run 1)",
        "GB/s (run 1 / 2)",
        "% of copy (run 1 / 2)",
    ]
    if cpu:
        head.append("× tx floor (run 1 / 2)")
    head += [f"× vs {p} (run 1 / 2)" for p in ("torch", "compile", "dist", "reference")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    problems = []
    for (op, mode, shape, dtype), provs in _groups(rows).items():
        for prov, reps in provs.items():
            r1, r2 = reps.get(1), reps.get(2)
            if r1 is None or r1["status"] != "ok":
                if r1 is not None:
                    problems.append(f"- {op} {mode} {shape} {dtype} **{prov}**: {r1['status']}")
                continue
            cells = [
                op,
                mode,
                shape,
                dtype,
                f"**{prov}**" if prov in OURS else prov,
                _pair(r1, r2, "median_ms", ".4g"),
                f"{_num(r1['p20_ms'], '.4g')}–{_num(r1['p80_ms'], '.4g')}",
                _pair(r1, r2, "gbs", ".3g"),
                _pair(r1, r2, "frac_limit", ".0f", 100),
            ]
            if cpu:
                cells.append(_pair(r1, r2, "x_tx_floor", ".2f"))
            for p in ("torch", "compile", "dist", "reference"):
                cells.append("" if p == prov or prov in LIMITS else _pair(r1, r2, f"vs_{p}", ".2f"))
            lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    if problems:
        out += "\n\nNot measured:\n\n" + "\n".join(sorted(set(problems)))
    return out


def header(env: Dict[str, str], extra: str = "") -> str:
    return (
        f"{env['device_name']} · torch {env['torch']} · triton {env['triton'] or '–'} · "
        f"CUDA {env['cuda'] or '–'} · Python {env['python']} · commit {env['commit']} · "
        f"{env['date']} · load average {env['load_avg']}{extra}"
    )


# ---- plots ------------------------------------------------------------------------------------------
def plots(rows: Sequence[Dict[str, Any]], out_dir: str, tag: str, env: Dict[str, str]) -> List[str]:
    """Throughput against n (at each total size with several n) or against the total size (at each
    n with several sizes), one line per provider, the copy limit dashed and the CPU tx floor
    dotted. Points are the better of the two runs' medians."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"plots skipped: {e}")
        return []
    best: Dict[tuple, float] = {}
    for r in rows:
        if r["status"] == "ok" and not math.isnan(r["gbs"]):
            k = (r["op"], r["mode"], r["dtype"], r["provider"], r["n"], r["numel"])
            best[k] = max(best.get(k, 0.0), r["gbs"])
    families = defaultdict(dict)
    for (op, mode, dtype, prov, n, numel), g in best.items():
        families[(op, mode, dtype)][(prov, n, numel)] = g
    paths = []
    for (op, mode, dtype), pts in families.items():
        sizes = defaultdict(set)
        for _, n, numel in pts:
            sizes[numel].add(n)
        ns = defaultdict(set)
        for _, n, numel in pts:
            ns[n].add(numel)
        views = [("n", numel, sorted(v)) for numel, v in sizes.items() if len(v) > 1]
        views += [("numel", n, sorted(v)) for n, v in ns.items() if len(v) > 1]
        for axis, fixed, xs in views:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            provs = sorted({p for (p, _, _) in pts}, key=lambda p: (p in LIMITS, p))
            for p in provs:
                key = (lambda x: (p, x, fixed)) if axis == "n" else (lambda x: (p, fixed, x))
                xy = [(x, pts[key(x)]) for x in xs if key(x) in pts]
                if not xy:
                    continue
                style = {
                    "copy": dict(color="black", ls="--"),
                    "tx_floor": dict(color="grey", ls=":"),
                }
                ax.plot(
                    *zip(*xy),
                    marker="o" if p not in LIMITS else None,
                    label=p + (" (limit)" if p == "copy" else ""),
                    **style.get(p, {}),
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("categories n" if axis == "n" else "elements")
            ax.set_ylabel("GB/s (minimal bytes)")
            what = f"{fixed} elements" if axis == "n" else f"n = {fixed}"
            ax.set_title(f"{op} {mode} {dtype}, {what}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            fig.text(
                0.01,
                0.005,
                f"{env['device_name']} · torch {env['torch']} · {env['date']}",
                fontsize=6,
                color="grey",
            )
            name = (
                f"{tag}_{op}_{mode}_{dtype}_{'by_n_at' if axis == 'n' else 'by_size_n'}{fixed}.png"
            )
            path = os.path.join(out_dir, name)
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths


# ---- targets ---------------------------------------------------------------------------------------
def _get(rows, op, mode, shape, dtype, provider) -> Dict[int, Dict]:
    return {
        r["rep"]: r
        for r in rows
        if r["op"] == op
        and r["mode"] == mode
        and r["shape"] == shape
        and r["dtype"] == dtype
        and r["provider"] == provider
        and r["status"] == "ok"
    }


def _judge(vals: List[float], goal: float) -> str:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "not measured"
    met = sum(v >= goal for v in vals)
    return f"{'met' if met == len(vals) else 'MISSED'} in {met}/{len(vals)} runs"


def cpu_targets(rows: Sequence[Dict[str, Any]]) -> str:
    """The CPU targets at 4096x1024 and 524288x8, fp32 (docs/BENCHMARKS.md, "Targets")."""
    goals = [
        ("concrete_sample", "torch", 3.0, "sample forward vs eager F.gumbel_softmax"),
        ("concrete_sample", "compile", 1.5, "sample forward vs torch.compile of the formula"),
        ("exp_concrete_log_prob", "compile", 1.0, "ExpConcrete log_prob forward vs torch.compile"),
    ]
    lines = ["| target | shape | goal | run 1 | run 2 | verdict |", "|---|---|---|---|---|---|"]
    for op, peer, goal, what in goals:
        for shape in ("4096x1024", "524288x8"):
            reps = _get(rows, op, "forward", shape, "float32", "cpu")
            vals = [reps[k][f"vs_{peer}"] if k in reps else float("nan") for k in (1, 2)]
            lines.append(
                f"| {what} | {shape} | ≥ {goal:g}× | {_num(vals[0], '.3f')}× | "
                f"{_num(vals[1], '.3f')}× | {_judge(vals, goal)} |"
            )
    return "\n".join(lines)


def gpu_targets(rows: Sequence[Dict[str, Any]], min_numel: int = 1 << 26) -> str:
    """The GPU targets: sample forward and backward at >= 2^26 elements and n >= 4:
    >= 85% of the copy bandwidth, >= 4x eager F.gumbel_softmax, >= 1x torch.compile."""
    head = (
        "| provider | dtype | shape | fwd % copy | bwd % copy | fwd × eager | fwd × compile | "
        "bwd × eager | bwd × compile |"
    )
    lines = [head, "|" + "---|" * 9]
    tally = defaultdict(lambda: [0, 0])
    keys = sorted(
        {
            (r["provider"], r["dtype"], r["n"], r["numel"], r["shape"])
            for r in rows
            if r["op"] == "concrete_sample"
            and r["provider"] in OURS
            and r["n"] >= 4
            and r["numel"] >= min_numel
            and r["status"] == "ok"
        },
        key=lambda k: (k[0], k[1], k[3], k[2]),
    )
    for prov, dtype, n, numel, shape in keys:
        cells = [prov, dtype, shape]
        fwd = _get(rows, "concrete_sample", "forward", shape, dtype, prov)
        bwd = _get(rows, "concrete_sample", "backward", shape, dtype, prov)
        spec = [
            (fwd, "frac_limit", 0.85, 100, "%"),
            (bwd, "frac_limit", 0.85, 100, "%"),
            (fwd, "vs_torch", 4.0, 1, "×"),
            (fwd, "vs_compile", 1.0, 1, "×"),
            (bwd, "vs_torch", 4.0, 1, "×"),
            (bwd, "vs_compile", 1.0, 1, "×"),
        ]
        for i, (reps, key, goal, scale, unit) in enumerate(spec):
            vals = [reps[k][key] for k in (1, 2) if k in reps]
            ok = [v >= goal for v in vals if not math.isnan(v)]
            tally[i][0] += sum(ok)
            tally[i][1] += len(ok)
            shown = " / ".join(_num(v * scale, ".0f" if unit == "%" else ".2f") for v in vals)
            cells.append((shown + unit) if vals else "–")
        lines.append("| " + " | ".join(cells) + " |")
    names = [
        "fwd ≥ 85% copy",
        "bwd ≥ 85% copy",
        "fwd ≥ 4× eager",
        "fwd ≥ 1× compile",
        "bwd ≥ 4× eager",
        "bwd ≥ 1× compile",
    ]
    verdict = "; ".join(f"{names[i]}: {tally[i][0]}/{tally[i][1]} runs" for i in range(6))
    return "\n".join(lines) + f"\n\nTargets met (cases × 2 runs): {verdict}"
