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

try:
    import concrete_ext
except ImportError:  # run from a checkout without installing: use the checkout's package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import concrete_ext
from concrete_ext.zoo.estimators import make_estimator
from concrete_ext.zoo.evaluate import estimate_bound
from concrete_ext.zoo.model import SBN
from concrete_ext.zoo.noise import NoiseSource

CONFIGS = [
    ("200H-784V", 2, "concrete", 1), ("200H-784V", 2, "nvil", 1),
    ("200H-784V", 2, "concrete", 5), ("200H-784V", 2, "vimco", 5),
    ("200H~200H~784V", 2, "concrete", 1), ("200H~200H~784V", 2, "nvil", 1),
    ("200H~200H~784V", 2, "concrete", 5), ("200H~200H~784V", 2, "vimco", 5),
    ("200H~200H~784V", 2, "concrete", 50), ("200H~200H~784V", 2, "vimco", 50),
    ("240H~240H~784V", 4, "concrete", 5), ("240H~240H~784V", 8, "concrete", 5),
]
QUICK = [CONFIGS[i] for i in (2, 3, 6, 7, 10)]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                              timeout=10).stdout.strip() or "unknown"
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
    out = {"steps_per_s": 1 / np.median(t), "steps_per_s_q20": 1 / np.quantile(t, 0.8),
           "steps_per_s_q80": 1 / np.quantile(t, 0.2),
           "parameters": sum(p.numel() for p in model.parameters())}
    if backend is not None:  # evaluation throughput only for the default backend
        return out
    data = x[:args.eval_images].cpu().numpy()
    sync(device)
    res = estimate_bound(model, data, args.eval_m, seed=0, progress=False)
    sync(device)
    out["eval_draws_per_s"] = args.eval_images * args.eval_m / res.seconds
    return out


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
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__, "concrete_ext": concrete_ext.__version__,
            "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    rows = []
    for arch, arity, estimator, m in (QUICK if args.quick else CONFIGS):
        r = bench_config(arch, arity, estimator, m, device, args)
        rows.append({"arch": arch, "arity": arity, "estimator": estimator, "m": m, **r, **meta})
        print(f"{arch:16s} n={arity} {estimator:8s} m={m:<3d} {r['steps_per_s']:8.1f} steps/s "
              f"[{r['steps_per_s_q20']:.1f}, {r['steps_per_s_q80']:.1f}]  reference "
              f"{r['reference_steps_per_s']:6.1f} ({r['speedup_vs_reference']:.2f}x)  "
              f"{r['eval_draws_per_s']:10.0f} eval draws/s", file=sys.stderr)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"train_{device.type}.csv")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print("| model | n | estimator | m | steps/s (20-80%) | reference ops steps/s | ratio | "
          "eval draws/s |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['arity']} | {r['estimator']} | {r['m']} | "
              f"{r['steps_per_s']:.1f} ({r['steps_per_s_q20']:.1f}-{r['steps_per_s_q80']:.1f}) | "
              f"{r['reference_steps_per_s']:.1f} | {r['speedup_vs_reference']:.2f}x | "
              f"{r['eval_draws_per_s']:.0f} |")
    print(f"\n{meta['device']}, torch {meta['torch']}, concrete_ext {meta['concrete_ext']}, "
          f"commit {meta['commit']}, {meta['date']}; CSV: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
