"""What the 64-bit draws of fp64 ops cost: fp64 random ops of this tree against another checkout
(with 32-bit draws), side by side, one thread, with the same ops in fp32 as the control (their
draws did not change, so their ratio shows what else differs between the trees).

    python -m benchmarks.bench_fp64_noise --compare /path/to/other/checkout

Each tree runs in its own subprocess (it imports its own build); the subprocesses alternate
`--repeats` times and the per-call time is the minimum over all rounds (CPU time of the process,
one thread). The ratio is other / this: below 1, this tree is slower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CASES = [
    # (name, dtype, shape)
    ("noise gumbel", "float64", (1 << 20,)),
    ("gumbel_softmax", "float64", (4096, 256)),
    ("concrete_sample", "float64", (4096, 256)),
    ("binary_concrete_sample", "float64", (1 << 20,)),
    ("categorical_sample", "float64", (64, 16384)),
    ("noise gumbel", "float32", (1 << 20,)),
    ("gumbel_softmax", "float32", (4096, 256)),
    ("categorical_sample", "float32", (64, 16384)),
]


def _time_tree(tree: str, rounds: int, min_ms: float) -> dict:
    sys.path.insert(0, os.path.abspath(tree))
    import torch

    import concrete_ext as ce

    torch.set_num_threads(1)
    out = {}
    for name, dt, shape in CASES:
        if not hasattr(ce, name.split()[0]):  # an older checkout without the op
            continue
        dtype = getattr(torch, dt)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
        fn = {
            "noise gumbel": lambda: ce.noise("gumbel", shape, dtype=dtype, seed=1),
            "gumbel_softmax": lambda: ce.gumbel_softmax(x, 0.5, seed=1),
            "concrete_sample": lambda: ce.concrete_sample(x, 0.5, seed=1),
            "binary_concrete_sample": lambda: ce.binary_concrete_sample(x, 0.5, seed=1),
            "categorical_sample": lambda: ce.categorical_sample(x, seed=1),
        }[name]
        fn()
        best = float("inf")
        for _ in range(rounds):
            n, t0 = 0, time.process_time()
            while True:
                fn()
                n += 1
                dt_s = time.process_time() - t0
                if dt_s * 1e3 >= min_ms:
                    break
            best = min(best, dt_s / n)
        out[f"{name}|{dt}|{'x'.join(map(str, shape))}"] = best * 1e6
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", required=True, help="the other checkout (built in place)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-ms", type=float, default=50.0)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_time_tree(args.child, args.rounds, args.min_ms)))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    best: dict = {here: {}, args.compare: {}}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for _ in range(args.repeats):
        for tree in (here, args.compare):
            cmd = [sys.executable, "-m", "benchmarks.bench_fp64_noise", "--compare", "-"]
            cmd += ["--child", tree, "--rounds", str(args.rounds), "--min-ms", str(args.min_ms)]
            res = json.loads(subprocess.check_output(cmd, cwd=here, env=env).decode().strip())
            for k, v in res.items():
                best[tree][k] = min(v, best[tree].get(k, float("inf")))
    print("| op | dtype | shape | this tree µs | other µs | other / this |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, v in best[here].items():
        name, dt, shape = k.split("|")
        o = best[args.compare].get(k)
        other = f"{o:.0f} | {o / v:.2f}" if o is not None else "– | –"
        print(f"| {name} | {dt} | {shape} | {v:.0f} | {other} |")


if __name__ == "__main__":
    main()
