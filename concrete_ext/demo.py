"""A one-minute tour of the ops: a sample, its log-density, gradients, and the measured speed of the
fused sampler against torch.nn.functional.gumbel_softmax on this machine.

    python -m concrete_ext.demo [--device cpu|cuda] [--rows 4096] [--n 1024]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils import benchmark

import concrete_ext as ce


def _time(fn, label: str, min_run_time: float) -> float:
    return (
        benchmark.Timer(stmt="fn()", globals={"fn": fn}, label=label)
        .blocked_autorange(min_run_time=min_run_time)
        .median
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per measurement")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    print(f"concrete_ext {ce.__version__}: build {ce.build_info()}")
    print(f"backends: { {k: v['available'] for k, v in ce.backends().items()} }\n")

    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.5, -1.0, float("-inf")]], device=dev, requires_grad=True)
    tau = torch.tensor(0.5, device=dev, requires_grad=True)
    y = ce.exp_concrete_sample(logits, tau)  # log of a Concrete sample
    x = y.exp()
    lp = ce.exp_concrete_log_prob(y, logits, tau)
    print("logits          ", logits.detach().cpu().tolist())
    print(
        "sample x        ",
        [round(v, 4) for v in x.detach().cpu().flatten().tolist()],
        "(the -inf category is exactly 0)",
    )
    print("log kappa(log x)", round(lp.item(), 4))
    (lp + (x[..., 0] * 3).sum()).backward()
    print("d/d logits      ", [round(v, 4) for v in logits.grad.cpu().flatten().tolist()])
    print("d/d temperature ", round(tau.grad.item(), 4))
    hard = ce.gumbel_softmax(logits.detach(), tau=0.5, hard=True)
    print("hard sample     ", hard.cpu().flatten().tolist(), "(straight-through one-hot)\n")

    big = torch.randn(args.rows, args.n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def ours():
        ce.gumbel_softmax(big, tau=0.5)
        sync()

    def theirs():
        F.gumbel_softmax(big, tau=0.5)
        sync()

    t_ours = _time(ours, "concrete_ext", args.seconds)
    t_theirs = _time(theirs, "F.gumbel_softmax", args.seconds)
    gb = 2 * big.numel() * big.element_size() / 1e9
    print(f"gumbel_softmax on {args.rows} x {args.n} float32, {dev}:")
    print(f"  concrete_ext       {t_ours * 1e3:8.3f} ms  ({gb / t_ours:6.1f} GB/s)")
    print(f"  F.gumbel_softmax   {t_theirs * 1e3:8.3f} ms  ({gb / t_theirs:6.1f} GB/s)")
    print(
        f"  speed-up           {t_theirs / t_ours:8.2f}x (measured just now, median of repeated runs)"
    )


if __name__ == "__main__":
    main()
