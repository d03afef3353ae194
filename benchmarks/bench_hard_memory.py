"""Memory of straight-through (hard) Gumbel-softmax: concrete_ext against
torch.nn.functional.gumbel_softmax(hard=True).

For each (rows, n) it reports the bytes autograd keeps between forward and backward besides the
inputs (through torch.autograd.graph.saved_tensors_hooks, on any device), and on CUDA the memory
held after forward and the peak over forward + backward (torch.cuda.max_memory_allocated).
concrete_ext keeps the logits, the temperature and a 2-element rng state, and recomputes the soft
sample in backward; torch keeps the rows x n soft sample.

    python benchmarks/bench_hard_memory.py [--device cuda] [--sizes 4096x1024,65536x128]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import concrete_ext as ce  # noqa: E402

PROVIDERS = {
    "concrete_ext": lambda a: ce.gumbel_softmax(a, 0.5, hard=True),
    "torch": lambda a: F.gumbel_softmax(a, 0.5, hard=True),
}


def saved_bytes(fn, logits) -> int:
    """Bytes of the storages autograd saves for backward, inputs excluded (each storage once)."""
    seen = {}
    inputs = {logits.untyped_storage().data_ptr()}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in inputs:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(logits)
    return sum(seen.values())


def cuda_memory(fn, logits):
    """(bytes held after forward, peak bytes over forward + backward), above the inputs."""
    logits.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    y = fn(logits)
    held = torch.cuda.memory_allocated() - base
    y.backward(torch.ones_like(y))
    torch.cuda.synchronize()
    return held, torch.cuda.max_memory_allocated() - base


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="4096x1024,65536x128,1024x32768")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    head = "| rows x n | provider | saved for backward (MiB) |"
    head += " held after forward (MiB) | peak fwd+bwd (MiB) |" if cuda else ""
    print(f"device {args.device}, {args.dtype}\n\n{head}")
    print("|" + "---|" * (head.count("|") - 1))
    for size in args.sizes.split(","):
        rows, n = (int(v) for v in size.split("x"))
        logits = torch.randn(rows, n, device=args.device, dtype=dtype, requires_grad=True)
        for name, fn in PROVIDERS.items():
            cells = [f"{saved_bytes(fn, logits) / 2**20:.3f}"]
            if cuda:
                held, peak = cuda_memory(fn, logits)
                cells += [f"{held / 2**20:.1f}", f"{peak / 2**20:.1f}"]
            print(f"| {rows} x {n} | {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
