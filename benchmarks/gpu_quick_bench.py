"""First GPU measurements: the fused sample (forward, backward) against F.gumbel_softmax (eager and
torch.compile) and the device copy bandwidth, at 2^26 elements for several row lengths.

    python benchmarks/gpu_quick_bench.py [--elements 26]

Prints one table: median time (CUDA events via triton.testing.do_bench), achieved GB/s counting the
minimal bytes (forward: read logits + write sample; backward: read sample + grad, write grad) and
the fraction of the copy bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import concrete_ext as ce  # noqa: E402


def bench(fn, rep_ms=200):
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=rep_ms, quantiles=[0.5, 0.2, 0.8], return_mode="median")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=26)
    args = ap.parse_args()
    numel = 1 << args.elements
    dev = "cuda"
    # Copy bandwidth: bytes read + written by a device-to-device copy of 1 GiB.
    src = torch.empty(1 << 28, dtype=torch.float32, device=dev).normal_()
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src))[0]
    copy_gbs = 2 * src.numel() * 4 / (t * 1e-3) / 1e9
    src = dst = None  # free the 2 GiB before the cases (rebinding: the lambda above is done)
    print(
        f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  copy {copy_gbs:.0f} GB/s"
    )

    def gs_ref(x):
        return F.gumbel_softmax(x, tau=0.5)

    def compile_static(fn):
        """A fresh torch.compile of fn with static shapes, for one (dtype, n). One compiled object
        reused across shapes and dtypes makes dynamo recompile with dynamic shapes and, past its
        recompile limit, fall back to eager: the peer would not be what inductor makes of the
        formula at this shape."""
        torch._dynamo.reset()
        return torch.compile(fn, dynamic=False)

    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for n in (4, 8, 64, 1024, 32768):
            x = torch.randn(numel // n, n, device=dev, dtype=dtype)
            esz = x.element_size()
            fwd_bytes = 2 * numel * esz
            ours = bench(lambda: ce.concrete_sample(x, 0.5))[0]
            eager = bench(lambda: gs_ref(x))[0]
            try:
                compiled = compile_static(gs_ref)
                compiled(x)  # compile outside the timed calls
                comp = bench(lambda: compiled(x))[0]
            except Exception as e:  # noqa: BLE001
                comp = float("nan")
                print("torch.compile failed:", e)
            xr = x.clone().requires_grad_()
            y = ce.concrete_sample(xr, 0.5)
            g = torch.randn_like(y)
            bw = bench(lambda: torch.autograd.grad(y, xr, g, retain_graph=True))[0]
            bwd_bytes = 3 * numel * esz
            rows.append(
                (
                    str(dtype)[6:],
                    n,
                    ours,
                    fwd_bytes / ours / 1e6,
                    fwd_bytes / ours / 1e6 / copy_gbs,
                    eager / ours,
                    comp / ours,
                    bw,
                    bwd_bytes / bw / 1e6 / copy_gbs,
                )
            )
            x = xr = y = g = None  # free this case's tensors before the next
            torch.cuda.empty_cache()
    print(
        f"\n{'dtype':8s} {'n':>6s} {'fwd ms':>8s} {'GB/s':>7s} {'%copy':>6s} {'xEager':>7s} "
        f"{'xCompile':>8s} {'bwd ms':>8s} {'bwd%copy':>8s}"
    )
    for r in rows:
        print(
            f"{r[0]:8s} {r[1]:6d} {r[2]:8.3f} {r[3]:7.0f} {100 * r[4]:5.0f}% {r[5]:7.2f} "
            f"{r[6]:8.2f} {r[7]:8.3f} {100 * r[8]:7.0f}%"
        )


if __name__ == "__main__":
    main()
