"""Run the benchmarks: `python -m benchmarks.run [--quick | --gpu] [--dry-run] [--out DIR]`.

--quick      CPU, the target shapes (4096x1024 and 524288x8) and a few cases of every op;
             about 5 minutes on 2 cores with the small-call table (the deadline, 300 s, skips
             what is left, and says so). The reference of the random ops (int64 Philox, seconds per call here) is left to the sweep.
--gpu        the CUDA sweep, in priority order: the targets (sample forward/backward at 2^26
             elements, every n, fp32 then bf16), then the size scaling, the other ops, 2^28.
             Trimmed to --budget-s (180 s by default) so benchmarks/gpu_check.sh stays short.
(neither)    the full CPU sweep: every op, mode, n and size from 2^16 to 2^24, fp32 and bf16 (long).
--dry-run    print the plan, then call every case once at a tiny size on this CPU (torch.compile with
             the aot_eager backend): catches silly failures before GPU time is spent.

--quick and --gpu end with the small-call table of bench_small (per-call cost at 8x4, 64x10 and
256x200 against the composite peers; on a GPU, the launch latency); --no-small skips it.

Writes <out>/<device>_<plan>_<stamp>.csv and .md and PNG plots, prints a compact table of our
providers and the small calls, then the performance targets last.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Callable, List, Sequence, Tuple

import torch

from . import (
    bench_backward,
    bench_binary,
    bench_index,
    bench_log_prob,
    bench_relaxed_kl,
    bench_sample,
    bench_small,
    report,
)
from .harness import PEERS, Plan, Settings, Spec, env_info, run_specs, time_fn

MODULES = (bench_sample, bench_log_prob, bench_binary, bench_relaxed_kl, bench_backward)
N_ALL = (2, 4, 8, 16, 64, 256, 1024, 4096, 32768)
F32, BF16 = torch.float32, torch.bfloat16
QUICK_SHAPES = [(4096, 1024), (524288, 8)]
WIDE = [(4096, 1024)]
SMALL = [(1024, 1024)]  # the other ops in --quick: 2^20 elements
INDEX = [(64, 32768), (64, 131072), (64, 262144)]  # bench_index: LLM vocabularies


def grid(ns: Sequence[int], log2_sizes: Sequence[int]) -> List[Tuple[int, int]]:
    return [((1 << s) // n, n) for s in log2_sizes for n in ns if (1 << s) >= n]


def quick_plan() -> List[Tuple[object, Plan]]:
    """CPU: the targets first, then one or two cases of every other op and mode."""
    mine = ("cpu",)
    P = lambda **kw: Plan(device="cpu", **kw)  # noqa: E731
    return [
        (
            bench_sample,
            P(
                shapes=QUICK_SHAPES,
                dtypes=[F32],
                modes=["forward"],
                ops=["concrete_sample"],
                providers=mine + ("torch", "dist", "compile"),
            ),
        ),
        (
            bench_log_prob,
            P(
                shapes=QUICK_SHAPES,
                dtypes=[F32],
                modes=["forward"],
                ops=["exp_concrete_log_prob"],
                providers=mine + ("dist", "compile", "reference"),
            ),
        ),
        # Every backward op called directly against torch.compile of its formula.
        (
            bench_backward,
            P(
                shapes=QUICK_SHAPES,
                dtypes=[F32],
                modes=[bench_backward.MODE],
                providers=mine + ("compile",),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=WIDE,
                dtypes=[F32],
                modes=["backward", "full"],
                ops=["concrete_sample"],
                providers=mine + ("torch", "compile"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=WIDE,
                dtypes=[BF16],
                modes=["forward"],
                ops=["concrete_sample"],
                providers=mine + ("torch",),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=SMALL,
                dtypes=[F32],
                modes=["forward", "full"],
                ops=["gumbel_softmax_hard"],
                providers=mine + ("torch",),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=SMALL,
                dtypes=[F32],
                modes=["forward"],
                ops=["exp_concrete_sample"],
                providers=mine + ("torch", "dist"),
            ),
        ),
        (
            bench_log_prob,
            P(
                shapes=SMALL,
                dtypes=[F32],
                modes=["backward"],
                ops=["exp_concrete_log_prob"],
                providers=mine + ("dist", "reference"),
            ),
        ),
        (
            bench_log_prob,
            P(
                shapes=SMALL,
                dtypes=[F32],
                modes=["forward"],
                ops=["concrete_log_prob"],
                providers=mine + ("dist",),
            ),
        ),
        (
            bench_binary,
            P(shapes=SMALL, dtypes=[F32], modes=["forward"], providers=mine + ("dist",)),
        ),
        (
            bench_binary,
            P(
                shapes=SMALL,
                dtypes=[F32],
                modes=["backward"],
                ops=["logit_binary_concrete_sample"],
                providers=mine + ("dist",),
            ),
        ),
        (
            bench_relaxed_kl,
            P(
                shapes=SMALL,
                dtypes=[F32],
                modes=["forward", "backward"],
                providers=mine + ("dist",),
            ),
        ),
        (
            bench_index,
            P(
                shapes=[(64, 131072)],
                dtypes=[F32, BF16],
                modes=["forward"],
                ops=["categorical_sample"],
                providers=mine + ("torch", "dist"),
            ),
        ),
    ]


def gpu_plan() -> List[Tuple[object, Plan]]:
    """CUDA, highest priority first; the deadline cuts from the end."""
    mine = ("cuda", "triton")
    P = lambda **kw: Plan(device="cuda", **kw)  # noqa: E731
    two = [8, 1024]
    sample = ["concrete_sample"]
    return [
        (
            bench_sample,
            P(
                shapes=grid(N_ALL, [26]),
                dtypes=[F32],
                modes=["forward"],
                ops=sample,
                providers=mine + ("torch", "compile", "dist"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=grid(N_ALL, [26]),
                dtypes=[F32],
                modes=["backward"],
                ops=sample,
                providers=mine + ("torch", "compile"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=grid([4, 8, 64, 1024, 32768], [26]),
                dtypes=[BF16],
                modes=["forward", "backward"],
                ops=sample,
                providers=mine + ("torch", "compile"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=grid(two, [16, 20, 24]),
                dtypes=[F32],
                modes=["forward"],
                ops=sample,
                providers=mine + ("torch", "compile", "reference"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=grid(two, [26]),
                dtypes=[F32],
                modes=["full"],
                ops=sample,
                providers=mine + ("torch", "compile"),
            ),
        ),
        (
            bench_log_prob,
            P(
                shapes=grid(two, [26]),
                dtypes=[F32],
                modes=["forward", "backward"],
                ops=["exp_concrete_log_prob"],
                providers=mine + ("dist", "compile", "reference"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=grid(two, [26]),
                dtypes=[F32],
                modes=["forward", "full"],
                ops=["gumbel_softmax_hard"],
                providers=mine + ("torch", "compile"),
            ),
        ),
        (
            bench_binary,
            P(
                shapes=[(65536, 1024)],
                dtypes=[F32],
                modes=["forward"],
                providers=mine + ("dist", "compile"),
            ),
        ),
        (
            bench_relaxed_kl,
            P(
                shapes=grid(two, [26]),
                dtypes=[F32],
                modes=["forward", "backward"],
                providers=mine + ("dist", "compile"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=grid(two, [26]),
                dtypes=[F32],
                modes=["forward"],
                ops=["exp_concrete_sample"],
                providers=mine + ("torch", "dist", "compile"),
            ),
        ),
        (
            bench_sample,
            P(
                shapes=grid([4, 64, 1024], [28]),
                dtypes=[F32],
                modes=["forward", "backward"],
                ops=sample,
                providers=mine + ("torch", "compile"),
            ),
        ),
    ]


def sweep_plan() -> List[Tuple[object, Plan]]:
    """The full CPU sweep (n x 2^16..2^24, fp32 and bf16, every mode and provider)."""
    shapes = grid(N_ALL, [16, 20, 24])
    provs = ("cpu",) + PEERS
    out = [
        (m, Plan(device="cpu", shapes=shapes, dtypes=[F32, BF16], providers=provs))
        for m in (bench_sample, bench_log_prob, bench_relaxed_kl)
    ]
    out.append(
        (
            bench_binary,
            Plan(
                device="cpu",
                shapes=[((1 << s) // 1024, 1024) for s in (16, 20, 24)],
                dtypes=[F32, BF16],
                providers=provs,
            ),
        )
    )
    out.append(
        (
            bench_index,
            Plan(
                device="cpu",
                shapes=INDEX,
                dtypes=[F32, BF16],
                modes=["forward"],
                providers=("cpu", "torch", "dist", "topk"),
            ),
        )
    )
    return out


def build_specs(plan: List[Tuple[object, Plan]], ops: Sequence[str] = ()) -> List[Spec]:
    specs = []
    for module, p in plan:
        if ops:
            p = dataclasses.replace(p, ops=[o for o in (p.ops or module.OPS) if o in ops])
        specs.extend(module.specs(p))
    return specs


def dry_plan(plan: List[Tuple[object, Plan]]) -> List[Tuple[object, Plan]]:
    """The same cases on this CPU at tiny sizes (rows cut to 4), every provider, aot_eager."""
    out = []
    for module, p in plan:
        shapes = [(min(4, s[0]),) + tuple(s[1:]) for s in p.shapes]
        provs = tuple(dict.fromkeys(("cpu",) + tuple(p.providers)))
        out.append(
            (
                module,
                dataclasses.replace(
                    p, device="cpu", shapes=shapes, providers=provs, compile_backend="aot_eager"
                ),
            )
        )
    return out


def peak_copy(s: Settings) -> List[float]:
    """GB/s (read + write) of a device-to-device clone of 1 GiB, twice."""
    src = torch.rand(1 << 28, device="cuda")
    out = []
    for _ in range(2):
        t = time_fn(src.clone, s)
        out.append(2 * src.numel() * 4 / (t.median_ms * 1e-3) / 1e9)
    del src
    torch.cuda.empty_cache()
    return out


def compact_table(rows) -> str:
    """One line per case for our providers: time, GB/s, limit, and the ratio to every peer."""
    head = "| op | mode | shape | dtype | ours | ms (run 1 / 2) | GB/s | % copy | × torch | × compile | × dist | × reference |"
    lines = [head, "|" + "---|" * 12]
    for r1 in rows:
        if (
            r1["rep"] != 1
            or r1["provider"] not in ("cpu", "cuda", "triton")
            or r1["status"] != "ok"
        ):
            continue
        r2 = next(
            (
                r
                for r in rows
                if r["rep"] == 2
                and all(r[k] == r1[k] for k in ("op", "mode", "shape", "dtype", "provider"))
            ),
            None,
        )
        pair = lambda k, f, sc=1: report._pair(r1, r2, k, f, sc)  # noqa: E731
        lines.append(
            "| "
            + " | ".join(
                [
                    r1["op"],
                    r1["mode"],
                    r1["shape"],
                    r1["dtype"],
                    r1["provider"],
                    pair("median_ms", ".4g"),
                    report._num(r1["gbs"], ".3g"),
                    pair("frac_limit", ".0f", 100),
                    pair("vs_torch", ".2f"),
                    pair("vs_compile", ".2f"),
                    pair("vs_dist", ".2f"),
                    pair("vs_reference", ".2f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def dry_run(plan, log: Callable[[str], None], ops: Sequence[str] = ()) -> int:
    specs = build_specs(plan, ops)
    keys = {(sp.op, sp.n, str(sp.dtype)) for sp in specs if "compile" in sp.providers}
    log(
        f"plan: {len(specs)} cases, {sum(len(sp.providers) for sp in specs)} provider timings x 2 runs, "
        f"about {2 * len(keys)} torch.compile graphs"
    )
    for sp in specs:
        log(f"  {sp.label():60s} {','.join(sp.providers)}")
    tiny = build_specs(dry_plan(plan), ops)
    env = env_info("cpu")
    t0 = time.monotonic()
    rows = run_specs(tiny, Settings(device="cpu", smoke=True, log=log), env)
    bad = [r for r in rows if r["status"].startswith("error")]
    unavailable = {
        (r["provider"], r["status"]) for r in rows if r["status"].startswith("unavailable")
    }
    log(
        f"dry run: {len(tiny)} cases, {len(rows)} provider calls in {time.monotonic() - t0:.1f} s; "
        f"{len(bad)} errors"
    )
    for prov, status in sorted(unavailable)[:6]:
        log(f"  {prov}: {status[:160]}")
    for r in bad:
        log(
            f"  ERROR {r['op']} {r['mode']} {r['shape']} {r['dtype']} {r['provider']}: {r['status']}"
        )
    return max(1 if bad else 0, exercise_reports(rows, env, log))


def exercise_reports(rows, env, log) -> int:
    """Feed the dry run's rows, with made-up times of 1 ms that are written nowhere, through every
    report (tables, targets, plots) so that none of them fails after a real sweep."""
    import copy
    import tempfile

    fake = copy.deepcopy(rows)
    for r in fake:
        r["rep"] = 1
        if r["status"] == "ok":
            r.update(median_ms=1.0, p20_ms=1.0, p80_ms=1.0, gbs=1.0, limit_gbs=1.0, frac_limit=1.0)
    fake += [dict(r, rep=2) for r in fake]
    try:
        with tempfile.TemporaryDirectory() as d:
            report.write_csv(fake, os.path.join(d, "x.csv"))
            report.markdown_table(fake, env)
            report.gpu_targets(fake, min_numel=0)
            report.cpu_targets(fake)
            compact_table(fake)
            n = len(report.plots(fake, d, "dry", env))
    except Exception as e:  # noqa: BLE001
        log(f"reports: FAILED on the dry run's rows: {type(e).__name__}: {e}")
        return 1
    log(f"reports: tables, targets and {n} plots built from the dry run's rows")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="skip the cases left after this many seconds (default 180 with --gpu, "
        "300 with --quick, none otherwise)",
    )
    ap.add_argument("--ops", default="", help="comma-separated op names to keep")
    ap.add_argument(
        "--no-small",
        dest="small",
        action="store_false",
        help="skip the small-call table (bench_small), which --quick and --gpu add",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: on a shared machine a second OpenMP thread waits "
        "for a busy core at every parallel region, see docs/BENCHMARKS.md)",
    )
    args = ap.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    plan = gpu_plan() if args.gpu else quick_plan() if args.quick else sweep_plan()
    ops = [o for o in args.ops.split(",") if o]
    if args.dry_run:
        return dry_run(plan, log, ops)

    start = time.monotonic()
    device = "cuda" if args.gpu else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads)
    if device == "cuda" and not torch.cuda.is_available():
        log("--gpu: no CUDA device is visible")
        return 2
    budget = (
        args.budget_s
        if args.budget_s is not None
        else (180 if args.gpu else 300 if args.quick else None)
    )
    s = Settings(device=device, log=log, deadline=None if budget is None else start + budget)
    env = env_info(device)
    import concrete_ext as ce

    log(f"concrete_ext build: {ce.build_info()}")
    log(
        "backends: "
        + "; ".join(
            f"{k}: {'yes' if v['available'] else 'no (' + '; '.join(v['reasons']) + ')'}"
            for k, v in ce.backends().items()
        )
    )
    extra = ""
    if device == "cuda":
        peak = peak_copy(s)
        extra = f" · peak copy (1 GiB clone) {peak[0]:.0f} / {peak[1]:.0f} GB/s"
    log(report.header(env, extra))
    specs = build_specs(plan, ops)
    rows = run_specs(specs, s, env)

    name = "gpu" if args.gpu else "quick" if args.quick else "sweep"
    stamp = env["date"].replace("-", "").replace(":", "")[:13]
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"{device}_{name}_{stamp}")
    report.write_csv(rows, base + ".csv")
    elapsed = time.monotonic() - start
    skipped = sum(1 for r in rows if r["status"].startswith("skipped: time"))
    targets = report.gpu_targets(rows) if args.gpu else report.cpu_targets(rows)
    with open(base + ".md", "w") as f:
        f.write(
            f"# benchmarks.run --{name}\n\n{report.header(env, extra)}\n\n"
            f"Command: `python -m benchmarks.run {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f" · {elapsed:.0f} s · {len(specs)} cases"
            + (f" · {skipped} provider timings skipped by the time budget" if skipped else "")
            + f"\n\n## Targets\n\n{targets}\n\n## Every case\n\n"
            + report.markdown_table(rows, env)
            + "\n"
        )
    try:
        pngs = report.plots(rows, args.out, os.path.basename(base), env)
    except Exception as e:  # noqa: BLE001 - the tables and targets matter more than the plots
        log(f"plots failed: {type(e).__name__}: {e}")
        pngs = []
    # Per-call cost of small calls (bench_small: ours against the composite peers).
    small = (
        bench_small.table(device, rounds=3, min_ms=20.0)
        if args.small and (args.quick or args.gpu)
        else ""
    )
    if small:
        with open(base + ".md", "a") as f:
            f.write(f"\n## Small calls (`python -m benchmarks.bench_small`)\n\n{small}\n")
    log("\n" + compact_table(rows))
    if small:
        log("\n" + small)
    log(f"\nfiles: {base}.csv, {base}.md, {len(pngs)} PNG plots in {args.out}")
    log(
        f"\n== bench summary: {name}, {elapsed:.0f} s, {len(specs)} cases"
        + (f", {skipped} provider timings skipped (time budget)" if skipped else "")
        + " =="
    )
    log(report.header(env, extra))
    log("\n" + targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
