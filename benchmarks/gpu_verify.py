"""Verify every compiled CUDA kernel against the compiled CPU kernels on a GPU machine.

For explicit seeds the CUDA and CPU kernels draw the same 32-bit numbers, so every op is compared
value for value: forward outputs and gradients (logits, value, temperature), fp64 / fp32 / bf16 /
fp16, many row lengths (including looped rows), every dim, non-contiguous inputs, -inf logits.
Outputs land in memory poisoned with NaN first, so an element a kernel forgets to write shows up.
Also checks that CUDA-graph replay draws fresh noise, as torch.rand does.

    python benchmarks/gpu_verify.py [--quick] [--out results.json]

Prints one line per case and a summary table; exits non-zero if any case fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import concrete_ext as ce  # noqa: E402

SEED, OFF = 0x1234_5678_9ABC_DEF0, 3
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
results = []
DEV = "cuda"


def poison():
    """Fill recently freed device memory with NaN so unwritten outputs are visible."""
    if DEV == "cuda":
        t = torch.full((1 << 24,), float("nan"), device=DEV)
        del t


def rel_err(a: torch.Tensor, b: torch.Tensor, dtype=None) -> float:
    """max |a - b| / (|b| + 1) over finite entries; non-finite entries must match. With `dtype`,
    b (the float64 truth) is first rounded to it, so overflow to inf counts as agreement."""
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if dtype is not None:
        b = b.to(dtype)
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    fin = torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), fin) or not torch.equal(torch.isnan(a), torch.isnan(b)):
        return math.inf
    inf_b = ~fin & ~torch.isnan(b)  # +-inf entries must match exactly
    if not torch.equal(a[inf_b], b[inf_b]):
        return math.inf
    if not fin.any():
        return 0.0
    d = (a[fin] - b[fin]).abs()
    return (d / (b[fin].abs() + 1.0)).max().item()


def record(name, err, tol, extra=""):
    ok = err <= tol
    results.append({"case": name, "err": err, "tol": tol, "ok": ok})
    print(f"{'PASS' if ok else 'FAIL'} {name:70s} err={err:.3g} tol={tol:.1g} {extra}", flush=True)


def guarded(name):
    def deco(fn):
        def run(*a, **k):
            try:
                fn(*a, **k)
            except Exception as e:  # noqa: BLE001 - report and go on
                results.append(
                    {"case": name, "err": math.inf, "tol": 0, "ok": False, "error": repr(e)}
                )
                print(f"FAIL {name}: {e!r}\n{traceback.format_exc()}", flush=True)

        return run

    return deco


def inputs(shape, dim, dtype, masked=True, tensor_tau=True, gen=None):
    a = torch.randn(*shape, generator=gen, dtype=torch.float64) * 2
    if masked and shape[dim] > 1:
        idx = [slice(None)] * len(shape)
        idx[dim] = 0
        a[tuple(idx)] = float("-inf")
    batch = [s for i, s in enumerate(shape) if i != dim % len(shape)]
    tau = (
        (torch.rand(batch, generator=gen, dtype=torch.float64) + 0.25)
        if tensor_tau
        else torch.tensor(0.6, dtype=torch.float64)
    )
    return a.to(dtype), tau


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def both(fn, *args):
    """Run fn on CPU tensors and on copies moved to CUDA (non-tensor args shared)."""
    cpu = fn(*args)
    poison()
    cuda = fn(*[x.to(DEV) if isinstance(x, torch.Tensor) and x.dim() > 0 else x for x in args])
    sync()
    return cpu, cuda


def grads_of(fn, tensors, out_grad_seed=0):
    """Gradients of sum(out * r) wrt each tensor that requires grad."""
    outs = fn(*tensors)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(out_grad_seed)
    loss = 0
    for o in outs:
        r = torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype)
        loss = loss + (torch.where(torch.isfinite(o), o, 0) * r).sum()
    req = [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]
    return torch.autograd.grad(loss, req, allow_unused=True)


def compare_op(
    name,
    fn,
    shape,
    dim,
    dtype,
    *,
    tensor_tau=True,
    masked=True,
    grad=True,
    extra_inputs=None,
    prep=None,
):
    gen = torch.Generator().manual_seed(hash((name, shape, dim)) % 2**31)
    a, tau = inputs(shape, dim, dtype, masked, tensor_tau, gen)
    extra = extra_inputs(a, gen) if extra_inputs else []
    base = [a, tau] + extra
    prep = prep or (lambda x: x)
    cpu_in = [prep(t.clone()).requires_grad_(grad) for t in base]
    cuda_in = [prep(t.clone().to(DEV)).requires_grad_(grad) for t in base]
    # Truth: the CPU kernels on the same inputs in float64 (same seed, so the same draws). The GPU
    # passes when its error against the truth is within the dtype's tolerance or at most twice the
    # CPU kernel's own error in that dtype (large rows accumulate rounding in any order).
    truth_in = [prep(t.clone().double()).requires_grad_(grad) for t in base]
    tuple_ = lambda o: o if isinstance(o, tuple) else (o,)  # noqa: E731
    out_t, out_c = tuple_(fn(*truth_in)), tuple_(fn(*cpu_in))
    poison()
    out_g = tuple_(fn(*cuda_in))
    sync()
    label = f"{name} {tuple(shape)} dim={dim} {str(dtype)[6:]}"

    def judge(gpu, cpu, truth, tol, what):
        errs_g = [rel_err(g, t, dtype) for g, t in zip(gpu, truth)]
        errs_c = [rel_err(c, t, dtype) for c, t in zip(cpu, truth)]
        err_g, err_c = max(errs_g), max(errs_c)
        # float64 rounding grows with the row: sums of n terms, and for the log-density gradients
        # 1 - n softmax(w) cancels (one n for each).
        n = shape[dim]
        allowed = tol * n if dtype == torch.float64 else max(tol, 2 * err_c)
        record(f"{label} {what}", err_g, allowed, f"(cpu err {err_c:.3g})")

    judge(out_g, out_c, out_t, TOL[dtype], "fwd")
    if grad:
        gt = grads_of(fn, truth_in)
        gc = grads_of(fn, cpu_in)
        poison()
        gg = grads_of(fn, cuda_in)
        judge(gg, gc, gt, TOL[dtype] * 5, "bwd")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--self-test",
        action="store_true",
        help="run the script's logic with the CPU standing in for the GPU",
    )
    args = ap.parse_args()
    if args.self_test:
        global DEV
        DEV = "cpu"
    else:
        assert torch.cuda.is_available(), "no CUDA device"
        info = ce.build_info()
        print("build_info:", info)
        assert info.get("cuda"), "the extension was built without CUDA kernels"
    t0 = time.time()
    s = dict(seed=SEED, offset=OFF)

    # Noise: bits identical, transforms within a few ulps.
    for kind in ("bits", "uniform", "exponential", "gumbel", "logistic"):

        @guarded(f"noise {kind}")
        def _():
            for dtype in (torch.float32, torch.float64):
                c = ce.noise(kind, (1 << 20) + 3, dtype=dtype, **s)
                poison()
                g = ce.noise(kind, (1 << 20) + 3, dtype=dtype, device=DEV, **s)
                tol = 0 if kind == "bits" else 8 * torch.finfo(dtype).eps
                record(f"noise {kind} {str(dtype)[6:]}", rel_err(g, c), tol)

        _()

    ns = [1, 2, 3, 4, 7, 8, 16, 33, 64, 129, 256, 1000, 1024, 4097, 8192, 40000, 131072]
    if args.quick:
        ns = [1, 2, 3, 8, 33, 129, 1024, 4097, 40000]
    dtypes = [torch.float64, torch.float32, torch.bfloat16, torch.float16]

    def rows_for(n):
        return max(1, min(64, (1 << 18) // n))

    def ops(dim):
        return {
            "exp_concrete_sample": lambda a, t: ce.exp_concrete_sample(a, t, dim, **s),
            "concrete_sample": lambda a, t: ce.concrete_sample(a, t, dim, **s),
            "gumbel_softmax_hard": lambda a, t: ce.gumbel_softmax(a, t, hard=True, dim=dim, **s),
            "exp_concrete_log_prob": lambda a, t, v: ce.exp_concrete_log_prob(v, a, t, dim),
            "concrete_log_prob": lambda a, t, v: ce.concrete_log_prob(v, a, t, dim),
            "relaxed_kl_sample": lambda a, t, p: ce.relaxed_kl_sample(
                a, t, p, t * 0.7 + 0.1, dim, **s
            ),
        }

    def extras(dim):
        def value(log_space):
            def make(a, gen):
                y = ce.exp_concrete_sample(a.double(), 0.8, dim, seed=7)
                if log_space:
                    return [y.to(a.dtype)]
                # A point of the simplex whose unmasked coordinates stay positive in the dtype
                # (an unmasked 0 is outside the support: its log-density and gradient are not
                # defined, and kernels may differ there).
                tiny = torch.finfo(a.dtype).tiny
                x = torch.where(a == float("-inf"), 0.0, y.exp().clamp(min=4 * tiny))
                return [(x / x.sum(dim, keepdim=True)).to(a.dtype)]

            return make

        return {
            "exp_concrete_log_prob": value(True),
            "concrete_log_prob": value(False),
            "relaxed_kl_sample": lambda a, gen: [
                torch.randn(a.shape, generator=gen, dtype=torch.float64).to(a.dtype)
            ],
        }

    for name in ops(-1):
        for dtype in dtypes:
            for n in ns:

                @guarded(f"{name} n={n} {dtype}")
                def _():
                    compare_op(
                        name,
                        ops(-1)[name],
                        (rows_for(n), n),
                        -1,
                        dtype,
                        extra_inputs=extras(-1).get(name),
                        grad=dtype != torch.float16 or n < 5000,
                    )

                _()

        @guarded(f"{name} layouts")
        def _():
            for dim in (0, 1, -1):  # every dim of a 3-D tensor
                compare_op(
                    name,
                    ops(dim)[name],
                    (5, 6, 7),
                    dim,
                    torch.float32,
                    extra_inputs=extras(dim).get(name),
                )
            # scalar temperature; non-contiguous (transposed) inputs
            compare_op(
                name + " scalar-tau",
                ops(-1)[name],
                (33, 9),
                -1,
                torch.float32,
                tensor_tau=False,
                extra_inputs=extras(-1).get(name),
            )
            compare_op(
                name + " transposed",
                ops(0)[name],
                (12, 20),
                0,
                torch.float32,
                extra_inputs=extras(0).get(name),
                prep=lambda x: x.t().contiguous().t(),
            )

        _()

    # Gumbel-max: identical categories (ties are measure-zero; allow a tiny fraction).
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        for n in (2, 7, 129, 40000):

            @guarded(f"gumbel_max n={n} {dtype}")
            def _():
                a, _t = inputs((rows_for(n), n), -1, dtype)
                c, g = both(lambda x: ce.gumbel_max_sample(x, -1, **s), a)
                mismatch = (c.argmax(-1) != g.cpu().argmax(-1)).float().mean().item()
                ones = (g.sum(-1) == 1).all().item()
                record(
                    f"gumbel_max n={n} {str(dtype)[6:]} (mismatch fraction, one-hot={ones})",
                    mismatch if ones else math.inf,
                    1e-3,
                )

            _()

    # Index samplers: the same category as the CPU kernels (noise within a few ulps: allow a tiny
    # fraction) and, exactly, as the CUDA gumbel_max_sample's argmax and the first top-k column.
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        for n in (2, 7, 129, 40000, 131072):

            @guarded(f"categorical_sample / gumbel_top_k n={n} {dtype}")
            def _():
                a, _t = inputs((min(rows_for(n), 256), n), -1, dtype)
                c, g = both(lambda x: ce.categorical_sample(x, **s), a)
                hot = ce.gumbel_max_sample(a.to(DEV), -1, **s)
                exact = torch.equal(
                    g, torch.where((a.to(DEV) == -math.inf).all(-1), -1, hot.argmax(-1))
                )
                record(
                    f"categorical_sample n={n} {str(dtype)[6:]} (mismatch fraction, = gumbel_max: {exact})",
                    (c != g.cpu()).float().mean().item() if exact else math.inf,
                    1e-3,
                )
                for k in sorted({1, min(8, n), min(64, n), min(65, n), min(300, n)}):
                    c, g = both(lambda x: ce.gumbel_top_k(x, k, **s), a)
                    first = ce.categorical_sample(a.to(DEV), **s)
                    exact = torch.equal(torch.where(first >= 0, g[:, 0], -1), first)
                    record(
                        f"gumbel_top_k n={n} k={k} {str(dtype)[6:]} (mismatch fraction, first = categorical: {exact})",
                        (c != g.cpu()).any(-1).float().mean().item() if exact else math.inf,
                        1e-2,
                    )

            _()

    # Binary ops: elementwise, per-element tensor temperatures.
    for dtype in dtypes:
        for numel in (1, 7, 1 << 12, (1 << 20) + 5):
            for name, fn in {
                "binary_concrete_sample": lambda a, t: ce.binary_concrete_sample(a, t, **s),
                "logit_binary_concrete_sample": lambda a, t: ce.logit_binary_concrete_sample(
                    a, t, **s
                ),
                "logit_binary_concrete_log_prob": lambda a, t, v: ce.logit_binary_concrete_log_prob(
                    v, a, t
                ),
                "binary_concrete_log_prob": lambda a, t, v: ce.binary_concrete_log_prob(v, a, t),
            }.items():

                @guarded(f"{name} numel={numel} {dtype}")
                def _():
                    def ex(a, gen, nm=name):
                        if "log_prob" not in nm:
                            return []
                        y = ce.logit_binary_concrete_sample(a.double(), 0.7, seed=9)
                        return [(y if nm.startswith("logit") else torch.sigmoid(y)).to(a.dtype)]

                    compare_op(
                        name,
                        lambda a, t, *e: fn(
                            a, t.reshape(a.shape) if t.numel() == a.numel() else t, *e
                        ),
                        (numel, 1),
                        -1,
                        dtype,
                        masked=False,
                        extra_inputs=ex,
                    )

                _()

    # CUDA graphs: each replay draws fresh noise (the generator's Philox offset advances).
    @guarded("cuda graph replay")
    def _():
        if DEV != "cuda":
            return
        x = torch.randn(64, 33, device="cuda")
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        s_ = torch.cuda.Stream()
        s_.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s_):
            for _w in range(2):
                ce.exp_concrete_sample(x, 0.5)
        torch.cuda.current_stream().wait_stream(s_)
        with torch.cuda.graph(g):
            out = ce.exp_concrete_sample(x, 0.5)
            out2 = ce.gumbel_softmax(x, 0.5, hard=True)
        g.replay()
        first, first2 = out.clone(), out2.clone()
        g.replay()
        same = torch.equal(first, out) or torch.equal(first2, out2)
        valid = torch.allclose(out.exp().sum(-1), torch.ones(64, device="cuda"), atol=1e-5)
        record("cuda graph replay draws fresh noise", 0.0 if (not same and valid) else math.inf, 0)

    _()

    # The default generator: torch.manual_seed reproduces, consecutive calls differ.
    @guarded("generator")
    def _():
        x = torch.randn(8, 5, device=DEV)
        torch.manual_seed(3)
        a1, a2 = ce.concrete_sample(x, 1.0), ce.concrete_sample(x, 1.0)
        torch.manual_seed(3)
        b1 = ce.concrete_sample(x, 1.0)
        record(
            "manual_seed reproduces, calls differ",
            0.0 if torch.equal(a1, b1) and not torch.equal(a1, a2) else math.inf,
            0,
        )

    _()

    failed = [r for r in results if not r["ok"]]
    print(
        f"\n== gpu_verify: {len(results) - len(failed)}/{len(results)} cases pass "
        f"({time.time() - t0:.0f} s)"
    )
    for r in failed[:40]:
        print("  FAILED", r["case"], r.get("error", f"err={r['err']:.3g} tol={r['tol']:.1g}"))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
