"""Per-call cost of small calls: every public op against the composite PyTorch a user would
otherwise write, at the batch sizes small models run (8 x 4, 64 x 10, 256 x 200), forward and
forward + backward, one thread.

    python -m benchmarks.bench_small                  # the table, ratios = peer time / ours
    python -m benchmarks.bench_small --tree DIR       # import concrete_ext from checkout DIR
    python -m benchmarks.bench_small --compare DIR    # ours against checkout DIR, side by side
    python -m benchmarks.bench_small --device cuda    # launch latency on a GPU (synchronised)

Small calls are bound by per-call overhead (argument checks, dispatch, autograd bookkeeping), not
by memory or arithmetic, so the timing differs from the harness's: each case times ours and its
peer alternately, `--rounds` times, each a loop of calls long enough to last `--min-ms`; the
per-call time is the minimum over the rounds, and the ratio is peer / ours (above 1: ours is
faster). On the CPU the clock is the process's CPU time (one thread: the time spent computing
this call, which other jobs on a shared machine change far less than the wall-clock time); on a
GPU it is the wall-clock time to completion. With --compare, the same is done between two
checkouts, one subprocess each, alternated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

SHAPES = [(8, 4), (64, 10), (256, 200)]
TAU = 0.5


def _import(tree: str = ""):
    if tree:
        sys.path.insert(0, os.path.abspath(tree))
    import torch

    import concrete_ext as ce

    torch.set_num_threads(1)
    return torch, ce


def cases(torch, ce, device: str = "cpu") -> List[Tuple[str, Callable, Callable, Callable]]:
    """(name, make_inputs(shape, grad), ours(inputs), peer(inputs)); each callable returns the
    output(s) to backpropagate."""
    F = torch.nn.functional
    D = torch.distributions
    tau = torch.tensor(TAU, device=device)

    def logits(shape, grad):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(device)
        return {"x": x.requires_grad_(grad)}

    def logistic(x):
        u = torch.rand_like(x)
        return u.log() - torch.log1p(-u)

    def gumbel(x):
        return -torch.empty_like(x).exponential_().log()

    def with_value(kind):
        def make(shape, grad):
            inp = logits(shape, grad)
            v = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
            if kind == "log_simplex":
                v = v.log_softmax(-1)
            elif kind == "unit":
                v = torch.sigmoid(v)
            inp["v"] = v
            return inp

        return make

    def exp_lp_peer(i):  # torch.distributions.ExpRelaxedCategorical.log_prob's formula
        x, v = i["x"], i["v"]
        n = x.shape[-1]
        log_scale = math.lgamma(n) + (n - 1) * math.log(TAU)
        a = x - x.logsumexp(-1, keepdim=True)
        score = a - v * TAU
        return (score - score.logsumexp(-1, keepdim=True)).sum(-1) + log_scale

    def lbc_lp_peer(i):
        x, v = i["x"], i["v"]
        return math.log(TAU) - TAU * v + x - 2 * F.softplus(x - TAU * v)

    def bc_lp_peer(i):
        x, v = i["x"], i["v"]
        lv, l1v = v.log(), torch.log1p(-v)
        y = lv - l1v
        return math.log(TAU) - TAU * y + x - 2 * F.softplus(x - TAU * y) - lv - l1v

    return [
        (
            "gumbel_softmax",
            logits,
            lambda i: ce.gumbel_softmax(i["x"], TAU),
            lambda i: F.gumbel_softmax(i["x"], TAU),
        ),
        (
            "gumbel_softmax hard",
            logits,
            lambda i: ce.gumbel_softmax(i["x"], TAU, hard=True),
            lambda i: F.gumbel_softmax(i["x"], TAU, hard=True),
        ),
        (
            "concrete_sample",
            logits,
            lambda i: ce.concrete_sample(i["x"], TAU),
            lambda i: ((i["x"] + gumbel(i["x"])) / TAU).softmax(-1),
        ),
        (
            "exp_concrete_sample",
            logits,
            lambda i: ce.exp_concrete_sample(i["x"], TAU),
            lambda i: ((i["x"] + gumbel(i["x"])) / TAU).log_softmax(-1),
        ),
        (
            "binary_concrete_sample",
            logits,
            lambda i: ce.binary_concrete_sample(i["x"], TAU),
            lambda i: torch.sigmoid((i["x"] + logistic(i["x"])) / TAU),
        ),
        (
            "logit_binary_concrete_sample",
            logits,
            lambda i: ce.logit_binary_concrete_sample(i["x"], TAU),
            lambda i: (i["x"] + logistic(i["x"])) / TAU,
        ),
        (
            "exp_concrete_log_prob",
            with_value("log_simplex"),
            lambda i: ce.exp_concrete_log_prob(i["v"], i["x"], TAU),
            exp_lp_peer,
        ),
        (
            "logit_binary_concrete_log_prob",
            with_value("real"),
            lambda i: ce.logit_binary_concrete_log_prob(i["v"], i["x"], TAU),
            lbc_lp_peer,
        ),
        (
            "binary_concrete_log_prob",
            with_value("unit"),
            lambda i: ce.binary_concrete_log_prob(i["v"], i["x"], TAU),
            bc_lp_peer,
        ),
        (
            "Concrete.rsample",
            logits,
            lambda i: ce.distributions.Concrete(tau, logits=i["x"]).rsample(),
            lambda i: D.RelaxedOneHotCategorical(tau, logits=i["x"]).rsample(),
        ),
        (
            "BinaryConcrete.rsample",
            logits,
            lambda i: ce.distributions.BinaryConcrete(tau, logits=i["x"]).rsample(),
            lambda i: D.RelaxedBernoulli(tau, logits=i["x"]).rsample(),
        ),
    ]


def _loop(fn: Callable, mode: str, inputs, torch) -> Callable:
    if mode == "forward":
        return lambda: fn(inputs)
    x = inputs["x"]

    def full():
        out = fn(inputs)
        torch.autograd.grad(out, x, torch.ones_like(out))

    return full


def _sync(torch, device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _per_call(f: Callable, min_s: float, sync=lambda: None, clock=time.process_time) -> float:
    """Seconds per call of one loop lasting at least min_s on `clock` (on a GPU: launch to
    completion of the loop, so the per-call time is the launch latency when kernels are small)."""
    n = 1
    while True:
        sync()
        t0 = clock()
        for _ in range(n):
            f()
        sync()
        dt = clock() - t0
        if dt >= min_s:
            return dt / n
        n = max(2 * n, int(n * 1.2 * min_s / max(dt, 1e-9)))


def measure(
    tree: str, rounds: int, min_ms: float, only: str = "", device: str = "cpu"
) -> Dict[str, Dict[str, float]]:
    """{case key: {"ours": s, "peer": s}}: each the minimum over `rounds` of the per-call time."""
    torch, ce = _import(tree)
    sync = _sync(torch, device)
    clock = time.perf_counter if device == "cuda" else time.process_time
    out = {}
    for name, make, ours, peer in cases(torch, ce, device):
        if only and only not in name:
            continue
        for shape in SHAPES:
            for mode in ("forward", "full"):
                inputs = make(shape, mode == "full")
                fo, fp = _loop(ours, mode, inputs, torch), _loop(peer, mode, inputs, torch)
                fo(), fp()  # warm up
                best = {"ours": math.inf, "peer": math.inf}
                for _ in range(rounds):
                    best["ours"] = min(best["ours"], _per_call(fo, min_ms / 1e3, sync, clock))
                    best["peer"] = min(best["peer"], _per_call(fp, min_ms / 1e3, sync, clock))
                out[f"{name}|{shape[0]}x{shape[1]}|{mode}"] = best
    return out


def _table(rows: List[List[str]], header: List[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _compare(dirs: List[str], rounds: int, min_ms: float, only: str, repeats: int):
    """Ours from each checkout, alternated in subprocesses; per case the minimum per checkout."""
    best: Dict[str, List[float]] = {}
    for _ in range(repeats):
        for k, d in enumerate(dirs):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_small",
                "--json",
                "--tree",
                d,
                "--rounds",
                str(rounds),
                "--min-ms",
                str(min_ms),
            ] + (["--only", only] if only else [])
            res = json.loads(
                subprocess.run(
                    cmd,
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                ).stdout
            )
            for key, v in res.items():
                best.setdefault(key, [math.inf] * len(dirs))
                best[key][k] = min(best[key][k], v["ours"])
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default="", help="import concrete_ext from this checkout")
    ap.add_argument("--compare", default="", help="another checkout to time against, side by side")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-ms", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=2, help="with --compare: subprocess rounds")
    ap.add_argument("--only", default="", help="cases whose name contains this")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.compare:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        best = _compare([here, args.compare], args.rounds, args.min_ms, args.only, args.repeats)
        rows = [
            [*k.split("|"), f"{v[0] * 1e6:.1f}", f"{v[1] * 1e6:.1f}", f"{v[1] / v[0]:.2f}"]
            for k, v in best.items()
        ]
        print(
            _table(
                rows, ["op", "shape", "mode", "this tree µs", f"{args.compare} µs", "other / this"]
            )
        )
        return
    if args.json:
        print(json.dumps(measure(args.tree, args.rounds, args.min_ms, args.only, args.device)))
        return
    print(table(args.device, args.rounds, args.min_ms, args.only, args.tree))


def table(
    device: str = "cpu", rounds: int = 5, min_ms: float = 30.0, only: str = "", tree: str = ""
) -> str:
    """The markdown table of every case, with a one-line header saying how it was measured (used
    by `python -m benchmarks.run --quick / --gpu` too)."""
    res = measure(tree, rounds, min_ms, only, device)
    import torch

    import concrete_ext as ce

    head = (
        f"# small calls on {device} (one CPU thread): torch {torch.__version__}, "
        f"concrete_ext from {os.path.dirname(os.path.dirname(ce.__file__))}, min of "
        f"{rounds} rounds of >= {min_ms} ms, load average "
        f"{tuple(round(x, 2) for x in os.getloadavg())}"
    )
    rows = [
        [
            *k.split("|"),
            f"{v['ours'] * 1e6:.1f}",
            f"{v['peer'] * 1e6:.1f}",
            f"{v['peer'] / v['ours']:.2f}",
        ]
        for k, v in res.items()
    ]
    return (
        head + "\n\n" + _table(rows, ["op", "shape", "mode", "ours µs", "peer µs", "peer / ours"])
    )


if __name__ == "__main__":
    main()
