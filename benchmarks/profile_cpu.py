"""Call one provider of one benchmark case in a loop, for a profiler to watch:

    perf record -F 499 -o /tmp/perf.data \
        python -m benchmarks.profile_cpu exp_concrete_log_prob forward 524288x8 --provider cpu
    perf report -i /tmp/perf.data --sort dso,symbol

Prints the mean time per call. The case is built by the same bench_<op>.py code as the benchmark.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from . import bench_binary, bench_index, bench_log_prob, bench_relaxed_kl, bench_sample
from .harness import OURS, PEERS, Plan, _backend_ctx, _input_sets, _thunk

MODULES = (bench_sample, bench_log_prob, bench_binary, bench_relaxed_kl, bench_index)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("op")
    ap.add_argument("mode", choices=("forward", "backward", "full"))
    ap.add_argument("shape", help="e.g. 524288x8")
    ap.add_argument("--provider", default="cpu", choices=OURS + PEERS)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split("x"))
    module = next(m for m in MODULES if args.op in m.OPS)
    plan = Plan(
        device="cpu",
        shapes=[shape],
        dtypes=[getattr(torch, args.dtype)],
        modes=[args.mode],
        ops=[args.op],
        providers=(args.provider,),
    )
    spec = module.specs(plan)[0]
    prov = spec.providers[args.provider]
    with _backend_ctx(prov.backend):
        sets = _input_sets(spec.make_inputs, 1, spec.grad_inputs, spec.mode, prov.compiled)
        fn = _thunk(spec.mode, prov, sets, spec.grad_inputs)
        fn()
        fn()
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            fn()
            calls += 1
    dt = time.perf_counter() - t0
    print(
        f"{spec.label()} {args.provider}: {calls} calls, {1e3 * dt / calls:.3f} ms per call",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
