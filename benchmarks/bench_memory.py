"""Peak memory and time of many samples from one distribution: ExpConcrete(t, logits=L).rsample((S,))
with L of shape (rows, n), on the CPU. rsample hands the op the logits and the per-row temperature
broadcast over the sample dim (stride 0); kernels that read them in place need about the output's
memory, kernels that copy them out first need twice that.

Each case runs in a fresh subprocess (so that one case's freed memory cannot serve the next) and
reports the peak resident set size during the call minus the resident size just before it
(resource.getrusage's ru_maxrss; torch's CPU allocator keeps no statistics, and tracemalloc does not
see it), divided by the output's size. The "before" column runs the same script on another
checkout's build (--before PATH puts it first on PYTHONPATH: a build of an earlier commit), and
each code is also timed on the same parameters copied out contiguous inside the call ("copy": what
copying kernels pay) and on contiguous logits made before the call ("plain": the common path,
which must not get slower).

    python -m benchmarks.bench_memory [--before CHECKOUT] [--rows 512] [--n 1024] [--samples 64]
        [--threads 1] [--rounds 2] [--out benchmarks/results/FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
import torch
import concrete_ext as ce
from concrete_ext.distributions import ExpConcrete

rows, n, S, mode, reps, threads = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                   sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
torch.set_num_threads(threads)
torch.manual_seed(0)
logits = torch.randn(rows, n)
tau = torch.full((rows, 1), 0.5)
d = ExpConcrete(tau, logits=logits)
ExpConcrete(tau[:2], logits=logits[:2]).rsample((2,))  # load and warm up everything small


a_full, t_full = (x.contiguous() for x in d._shaped((S,))) if mode == "plain" else (None, None)


def call():
    if mode == "copy":  # the same call with the parameters copied out to the sample shape first
        a, t = d._shaped((S,))
        return ce.functional.exp_concrete_sample(a.contiguous(), t.contiguous(), -1)
    if mode == "plain":  # contiguous (S, rows, n) logits made before the call (the common path)
        return ce.functional.exp_concrete_sample(a_full, t_full, -1)
    return d.rsample((S,))


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


before = rss_kib()
peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = call()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out_kib = y.numel() * y.element_size() / 1024
del y
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    y = call()
    times.append(time.perf_counter() - t0)
    del y
print(json.dumps({"peak_kib": max(peak, peak0) - before, "grew": peak > peak0,
                  "out_kib": out_kib, "ms": 1e3 * sorted(times)[len(times) // 2],
                  "file": ce.__file__}))
"""


def run_case(
    pythonpath: str, rows: int, n: int, samples: int, mode: str, reps: int, threads: int
) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(rows),
            str(n),
            str(samples),
            mode,
            str(reps),
            str(threads),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd="/tmp",
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--before", default=None, help="a checkout whose build is 'before' (PYTHONPATH)"
    )
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7, help="timed calls per case (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="every case again, this many times")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)

    trees = ([("before", args.before)] if args.before else []) + [("after", HERE)]
    cases = [(label, path, mode) for label, path in trees for mode in ("rsample", "copy", "plain")]
    lines = [
        f"ExpConcrete(t, logits=L).rsample(({args.samples},)), L {args.rows}x{args.n} fp32, "
        f"t {args.rows}x1, CPU, {args.threads} thread(s); peak = max RSS during the call - RSS "
        "before it; ms = median of the timed calls. rsample: the call itself; copy: the "
        "functional op on the same parameters copied out contiguous inside the call; plain: the "
        "functional op on contiguous (S, rows, n) logits made before the call (no stride 0: the "
        "common path)",
        "",
        f"| code | call | round | peak MiB | output MiB | peak / output | median ms ({args.reps} calls) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for line in lines:
        print(line, flush=True)
    for rnd in range(1, args.rounds + 1):
        for label, path, mode in cases:
            r = run_case(path, args.rows, args.n, args.samples, mode, args.reps, args.threads)
            assert r["file"].startswith(path), (r["file"], path)
            peak, out = r["peak_kib"] / 1024, r["out_kib"] / 1024
            line = (
                f"| {label} ({os.path.basename(path.rstrip('/'))}) | {mode} | {rnd} | {peak:.0f} | "
                f"{out:.0f} | {peak / out:.2f} | {r['ms']:.1f} |"
            )
            lines.append(line)
            print(line, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
