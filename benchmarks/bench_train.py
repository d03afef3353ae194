"""Training and evaluation throughput of the model zoo (concrete_ext.zoo).

For each configuration of Section 5.2 (architecture, arity, estimator, m): training steps per second
(batch 64, Adam, the estimator's full forward and backward pass) with the fused ops (the default
backend) and with the same model on the pure-PyTorch reference ops (``concrete_ext.backend
("reference")``), measured in the same run, their ratio, and evaluation draws per second of the
discrete model (the cost unit of L_m). Synthetic binary images (pixels on with probability
0.13, like MNIST) stand in for data, so no dataset is needed.

    python benchmarks/bench_train.py                      # CPU, all configurations
    python benchmarks/bench_train.py --device cuda --quick

Timing: ``--warmup`` steps, then ``--repeats`` blocks of ``--steps`` steps each, wall clock (with
CUDA synchronisation); the median block gives steps/s and the 20 / 80 % quantiles its spread.
Results: a CSV in benchmarks/results/ (device, versions, git commit, date on every row) and a
markdown table on stdout.

Side by side with another checkout (``--against DIR``, e.g. a worktree of an older commit with its
compiled extension): the training step as the trainer runs it (``Trainer.train_step``: batch drawn
from the shipped MNIST sample, forward, backward, Adam, the logged statistics), once with this
checkout (compiled step, ``TrainConfig(compile=True)``, unless ``--no-compile``) and once with DIR
(its default step), each in a fresh process with ``PYTHONPATH`` set to its checkout, alternated
``--rounds`` times (A B, then B A, ...) so that both see the same load on a shared machine. Both
wall-clock steps/s and steps per CPU second of the process (``time.process_time``: what a step
costs, less sensitive to the process being descheduled on a busy machine) are reported:

    python benchmarks/bench_train.py --against ../baseline --threads 1 --rounds 2 \
        --configs "200H~784V:2:concrete:1,200H-784V:2:concrete:5"
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

if "--worker" not in sys.argv:  # a worker imports the checkout its PYTHONPATH names
    try:
        import concrete_ext
    except ImportError:  # run from a checkout without installing: use the checkout's package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import concrete_ext
else:
    import concrete_ext
from concrete_ext.zoo.estimators import make_estimator
from concrete_ext.zoo.evaluate import estimate_bound
from concrete_ext.zoo.model import SBN
from concrete_ext.zoo.noise import NoiseSource

CONFIGS = [
    ("200H-784V", 2, "concrete", 1),
    ("200H-784V", 2, "nvil", 1),
    ("200H-784V", 2, "concrete", 5),
    ("200H-784V", 2, "vimco", 5),
    ("200H~200H~784V", 2, "concrete", 1),
    ("200H~200H~784V", 2, "nvil", 1),
    ("200H~200H~784V", 2, "concrete", 5),
    ("200H~200H~784V", 2, "vimco", 5),
    ("200H~200H~784V", 2, "concrete", 50),
    ("200H~200H~784V", 2, "vimco", 50),
    ("240H~240H~784V", 4, "concrete", 5),
    ("240H~240H~784V", 8, "concrete", 5),
]
QUICK = [CONFIGS[i] for i in (2, 3, 6, 7, 10)]
#: the configurations of the step-speed target: 200H~784V and 200H-784V at m = 1 and 5
SIDE_BY_SIDE = [
    ("200H~784V", 2, "concrete", 1),
    ("200H-784V", 2, "concrete", 1),
    ("200H~784V", 2, "concrete", 5),
    ("200H-784V", 2, "concrete", 5),
    ("200H~784V", 2, "nvil", 1),
    ("200H-784V", 2, "nvil", 1),
    ("200H~784V", 2, "vimco", 5),
    ("200H-784V", 2, "vimco", 5),
]


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=os.path.dirname(os.path.abspath(__file__)),
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_config(arch, arity, estimator, m, device, args):
    """Steps/s with the default backend and with the reference ops, and evaluation draws/s."""
    fused = time_training(arch, arity, estimator, m, device, args, None)
    with concrete_ext.backend("reference"):
        ref = time_training(arch, arity, estimator, m, device, args, "reference")
    fused["reference_steps_per_s"] = ref["steps_per_s"]
    fused["speedup_vs_reference"] = fused["steps_per_s"] / ref["steps_per_s"]
    return fused


def time_training(arch, arity, estimator, m, device, args, backend):
    torch.manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0)
    x = (torch.rand(64, 784, generator=gen, device=device) < 0.13).float()
    model = SBN(arch, arity, pixel_mean=np.full(784, 0.13)).to(device)
    est = make_estimator(estimator, m, 784).to(device)
    params = list(model.parameters()) + list(est.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, fused=True)

    def step():
        out = est(model, x, m, NoiseSource(gen))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync(device)
        times.append((time.perf_counter() - t0) / args.steps)
    t = np.array(times)
    out = {
        "steps_per_s": 1 / np.median(t),
        "steps_per_s_q20": 1 / np.quantile(t, 0.8),
        "steps_per_s_q80": 1 / np.quantile(t, 0.2),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if backend is not None:  # evaluation throughput only for the default backend
        return out
    data = x[: args.eval_images].cpu().numpy()
    sync(device)
    res = estimate_bound(model, data, args.eval_m, seed=0, progress=False)
    sync(device)
    out["eval_draws_per_s"] = args.eval_images * args.eval_m / res.seconds
    return out


def trainer_steps_per_s(arch, arity, estimator, m, args, compile_step: bool):
    """Median steps/s of ``Trainer.train_step`` of the imported checkout (the real training step:
    batch, forward, backward, Adam, statistics) on the shipped MNIST sample; with
    ``compile_step`` when the checkout's TrainConfig has that field."""
    import dataclasses
    import tempfile

    from concrete_ext.zoo.data import load_mnist_sample
    from concrete_ext.zoo.train import TrainConfig, Trainer

    fields = dict(
        dataset="mnist-sample",
        arch=arch,
        arity=arity,
        estimator=estimator,
        m=m,
        steps=10**9,
        eval_every=10**9,
        log_every=10**9,
        checkpoint_every=10**9,
    )
    if compile_step:
        if "compile" not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise SystemExit("this checkout's TrainConfig has no compile field")
        fields["compile"] = True
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            TrainConfig(**fields), run_dir, progress=False, dataset=load_mnist_sample()
        )
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            trainer.train_step()
        warmup_s = time.perf_counter() - t0
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                trainer.train_step()
            times.append((time.perf_counter() - t0) / args.steps)
            cpu.append((time.process_time() - c0) / args.steps)
    t, c = np.array(times), np.array(cpu)
    return {
        "steps_per_s": float(1 / np.median(t)),
        "steps_per_s_q20": float(1 / np.quantile(t, 0.8)),
        "steps_per_s_q80": float(1 / np.quantile(t, 0.2)),
        "steps_per_cpu_s": float(1 / np.median(c)),
        "warmup_s": warmup_s,
        "compiled": bool(compile_step and trainer.compiled is not None),
    }


def profile_steps(arch, arity, estimator, m, args, compile_step: bool) -> dict:
    """Self CPU time per step of the trainer's step (torch.profiler over ``args.steps`` steps after
    ``args.warmup``), in groups: the matrix products (mm, addmm, bmm), this package's ops
    (forward and backward kernels), Adam, the compiled graphs (their generated kernels and
    wrappers), and everything else (other aten ops, autograd, the Python of the trainer)."""
    import dataclasses
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    from concrete_ext.zoo.data import load_mnist_sample
    from concrete_ext.zoo.train import TrainConfig, Trainer

    fields = dict(
        dataset="mnist-sample",
        arch=arch,
        arity=arity,
        estimator=estimator,
        m=m,
        steps=10**9,
        eval_every=10**9,
        log_every=10**9,
        checkpoint_every=10**9,
    )
    if compile_step and "compile" in {f.name for f in dataclasses.fields(TrainConfig)}:
        fields["compile"] = True
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            TrainConfig(**fields), run_dir, progress=False, dataset=load_mnist_sample()
        )
        for _ in range(args.warmup):
            trainer.train_step()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                trainer.train_step()
        wall = (time.perf_counter() - t0) / args.steps
    groups = {"gemm": 0.0, "package ops": 0.0, "adam": 0.0, "compiled graphs": 0.0, "other": 0.0}
    for e in prof.key_averages():
        name = e.key
        if name in ("aten::mm", "aten::addmm", "aten::bmm"):
            g = "gemm"
        elif name.startswith("concrete_ext::"):
            g = "package ops"
        elif "adam" in name.lower():
            g = "adam"
        elif "CompiledFxGraph" in name:
            g = "compiled graphs"
        else:
            g = "other"
        groups[g] += e.self_cpu_time_total / 1000 / args.steps  # ms per step
    return {"ms_per_step": groups, "profiled_ms": sum(groups.values()), "wall_ms": wall * 1e3}


def _tree_commit(tree: str) -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=tree,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def side_by_side(args) -> int:
    """This checkout against ``args.against``, alternated, each measurement in a fresh process."""
    import json

    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    theirs = os.path.abspath(args.against)
    configs = SIDE_BY_SIDE
    if args.configs:
        configs = []
        for item in args.configs.split(","):
            arch, arity, estimator, m = item.split(":")
            configs.append((arch, int(arity), estimator, int(m)))
    trees = {"ours": (ours, not args.no_compile), "theirs": (theirs, False)}
    meta = {
        "ours_commit": _tree_commit(ours),
        "theirs_commit": _tree_commit(theirs),
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    rows = []
    for arch, arity, estimator, m in configs:
        measured = {"ours": [], "theirs": []}
        for r in range(args.rounds):
            for name in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
                tree, comp = trees[name]
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    "--threads",
                    str(args.threads or 1),
                    "--steps",
                    str(args.steps),
                    "--repeats",
                    str(args.repeats),
                    "--warmup",
                    str(args.warmup),
                    "--configs",
                    f"{arch}:{arity}:{estimator}:{m}",
                ]
                if not comp:
                    cmd.append("--no-compile")
                env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS=str(args.threads or 1))
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
                if done.returncode != 0:
                    print(done.stdout + done.stderr, file=sys.stderr)
                    return 1
                res = json.loads(done.stdout.strip().splitlines()[-1])
                measured[name].append(res)
                print(
                    f"{arch:16s} {estimator:8s} m={m:<2d} round {r + 1} {name:6s} "
                    f"{res['steps_per_s']:7.1f} steps/s, {res['steps_per_cpu_s']:7.1f} steps per "
                    f"CPU s (compiled {res['compiled']}, warm-up {res['warmup_s']:.1f} s)",
                    file=sys.stderr,
                )
        row = {"arch": arch, "arity": arity, "estimator": estimator, "m": m}
        for unit in ("steps_per_s", "steps_per_cpu_s"):
            a = [x[unit] for x in measured["ours"]]
            b = [x[unit] for x in measured["theirs"]]
            row.update(
                {
                    f"ours_{unit}": ";".join(f"{v:.1f}" for v in a),
                    f"theirs_{unit}": ";".join(f"{v:.1f}" for v in b),
                    f"ratio_{unit}_per_round": ";".join(f"{x / y:.2f}" for x, y in zip(a, b)),
                    f"ratio_{unit}_of_means": float(np.mean(a) / np.mean(b)),
                }
            )
        rows.append({**row, "ours_compiled": all(x["compiled"] for x in measured["ours"]), **meta})
    meta["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "train_side_by_side_cpu.csv"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(
        f"| model | estimator | m | ours ({meta['ours_commit']}) steps/s | "
        f"{meta['theirs_commit']} steps/s | ratio | ours steps per CPU s | "
        f"{meta['theirs_commit']} steps per CPU s | ratio |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['arch']} | {r['estimator']} | {r['m']} | {r['ours_steps_per_s']} | "
            f"{r['theirs_steps_per_s']} | {r['ratio_steps_per_s_of_means']:.2f}x | "
            f"{r['ours_steps_per_cpu_s']} | {r['theirs_steps_per_cpu_s']} | "
            f"{r['ratio_steps_per_cpu_s_of_means']:.2f}x |"
        )
    print("(each cell: the rounds, in order; ratio: of the means over rounds)")
    print(
        f"\ntorch {meta['torch']}, {meta['threads']} thread(s), {meta['date']}, load average "
        f"{meta['load_before']} before, {meta['load_after']} after; CSV: {out}"
    )
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--eval-m", type=int, default=1000)
    p.add_argument("--eval-images", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="five representative configurations")
    p.add_argument("--out", help="CSV path (default benchmarks/results/train_<device>.csv)")
    p.add_argument("--against", help="another checkout: time the trainer's step side by side")
    p.add_argument("--rounds", type=int, default=2, help="alternations with --against")
    p.add_argument("--configs", help="ARCH:ARITY:ESTIMATOR:M,... (with --against)")
    p.add_argument("--no-compile", action="store_true", help="this checkout's eager step")
    p.add_argument(
        "--profile",
        action="store_true",
        help="self CPU time of the trainer's step "
        "by group (matrix products, the package's ops, Adam, compiled graphs, other) "
        "for --configs, with the checkout on PYTHONPATH",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        configs = [c.split(":") for c in (args.configs or "200H~784V:2:concrete:1").split(",")]
        print(
            f"{concrete_ext.__file__}, {'eager' if args.no_compile else 'compiled'} step; "
            f"self CPU ms per step (profiled; profiling adds overhead)"
        )
        for arch, arity, estimator, m in configs:
            r = profile_steps(arch, int(arity), estimator, int(m), args, not args.no_compile)
            parts = ", ".join(
                f"{k} {v:.2f} ({100 * v / r['profiled_ms']:.0f}%)"
                for k, v in r["ms_per_step"].items()
                if v > 0
            )
            print(f"{arch} {estimator} m={m}: {r['profiled_ms']:.2f} ms/step: {parts}")
        return 0
    if args.worker:
        import json

        arch, arity, estimator, m = args.configs.split(":")
        res = trainer_steps_per_s(arch, int(arity), estimator, int(m), args, not args.no_compile)
        print(json.dumps(res))
        return 0
    if args.against:
        return side_by_side(args)
    device = torch.device(args.device)
    meta = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "concrete_ext": concrete_ext.__version__,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = []
    for arch, arity, estimator, m in QUICK if args.quick else CONFIGS:
        r = bench_config(arch, arity, estimator, m, device, args)
        rows.append({"arch": arch, "arity": arity, "estimator": estimator, "m": m, **r, **meta})
        print(
            f"{arch:16s} n={arity} {estimator:8s} m={m:<3d} {r['steps_per_s']:8.1f} steps/s "
            f"[{r['steps_per_s_q20']:.1f}, {r['steps_per_s_q80']:.1f}]  reference "
            f"{r['reference_steps_per_s']:6.1f} ({r['speedup_vs_reference']:.2f}x)  "
            f"{r['eval_draws_per_s']:10.0f} eval draws/s",
            file=sys.stderr,
        )
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", f"train_{device.type}.csv"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(
        "| model | n | estimator | m | steps/s (20-80%) | reference ops steps/s | ratio | "
        "eval draws/s |\n|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['arch']} | {r['arity']} | {r['estimator']} | {r['m']} | "
            f"{r['steps_per_s']:.1f} ({r['steps_per_s_q20']:.1f}-{r['steps_per_s_q80']:.1f}) | "
            f"{r['reference_steps_per_s']:.1f} | {r['speedup_vs_reference']:.2f}x | "
            f"{r['eval_draws_per_s']:.0f} |"
        )
    print(
        f"\n{meta['device']}, torch {meta['torch']}, concrete_ext {meta['concrete_ext']}, "
        f"commit {meta['commit']}, {meta['date']}; CSV: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
