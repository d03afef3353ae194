"""GPU check of the Triton kernels at full size: every op, forward and backward, against the float64
reference (concrete_ext.reference, run on the GPU) and against the compiled CUDA kernels
(torch.ops.concrete_ext.*) when the build has them, with the same seeds. Prints one PASS / FAIL line
per op and case with the largest errors (and, with --bench, the median time of each
implementation), then a summary; exits 1 if anything failed.

Errors are "scaled": max |got - expected| / max(1, max |expected|) over the finite entries, after
checking that the non-finite entries (masked categories, empty rows) agree exactly. Gumbel-max and
the hard forward compare categories: a row may differ only at a near-tie of the scores (the fp32
noise against the fp64 reference), at most `--tie-fraction` of the rows.

Robust by design: each case runs in its own try block with a watchdog (faulthandler) that dumps the
stack and exits if a case runs past --case-timeout seconds; a CUDA error is reported and the next
case still runs (an illegal address poisons the context, so later cases then fail too, visibly).

    python benchmarks/triton_check.py [--quick] [--bench] [--only NAME]
"""

from __future__ import annotations

import argparse
import faulthandler
import sys
import time
import traceback
from typing import Callable, Dict, List, Sequence, Tuple

import torch

INF = float("inf")
DEVICE = "cuda"  # --device cpu: a dry run of this script through TRITON_INTERPRET=1
TOL = {torch.float32: (1e-4, 5e-4), torch.float64: (1e-9, 1e-8)}  # (values, gradients)


# ---- comparisons ----------------------------------------------------------------------------------
def scaled_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max(1, max |expected|) over finite entries; inf if the non-finite
    entries (NaN, +-inf) differ."""
    g, e = got.detach().double(), expected.detach().double()
    if g.shape != e.shape:
        raise AssertionError(f"shape {tuple(g.shape)} != {tuple(e.shape)}")
    fg, fe = torch.isfinite(g), torch.isfinite(e)
    if not torch.equal(fg, fe):
        return INF
    nf = ~fe
    if nf.any() and not bool(((g[nf] == e[nf]) | (g[nf].isnan() & e[nf].isnan())).all()):
        return INF
    if not fe.any():
        return 0.0
    return ((g[fe] - e[fe]).abs().max() / e[fe].abs().max().clamp(min=1.0)).item()


def category_mismatch(
    got: torch.Tensor, expected_onehot: torch.Tensor, scores: torch.Tensor, tie: float = 1e-5
) -> Tuple[float, bool]:
    """(fraction of rows whose category differs, whether every difference is a near-tie)."""
    gi, ei = got.argmax(-1), expected_onehot.argmax(-1)
    bad = gi != ei
    if not bad.any():
        return 0.0, True
    s = scores[bad]
    gap = (s.gather(-1, ei[bad, None]) - s.gather(-1, gi[bad, None])).abs()
    return bad.float().mean().item(), bool(
        (gap <= tie * s.abs().amax(-1, keepdim=True).clamp(min=1.0)).all()
    )


# ---- inputs ---------------------------------------------------------------------------------------
def logits(shape, seed, dtype, masked=True):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    a = 1.5 * torch.randn(shape, generator=gen, device=DEVICE, dtype=torch.float64)
    if masked and shape[-1] > 1:
        drop = torch.rand(shape, generator=gen, device=DEVICE) < 0.1
        drop[..., 0] = False
        a = a.masked_fill(drop, -INF)
    return a.to(dtype)


def temperature(shape, seed, dtype):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    return (0.3 + 1.7 * torch.rand(shape, generator=gen, device=DEVICE, dtype=torch.float64)).to(
        dtype
    )


def upstream(outs, seed=99):
    """Upstream gradients, one per output (float64; rounded to each output's dtype when used)."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    return [torch.randn(o.shape, generator=gen, device=DEVICE, dtype=torch.float64) for o in outs]


def vjp(fn: Callable, inputs: Sequence[torch.Tensor], up=upstream):
    """(outputs, grads of `inputs`, upstream used) of fn(*inputs); `up`: outputs -> upstream."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    ups = up(outs)
    pairs = [(o, u.to(o.dtype)) for o, u in zip(outs, ups) if o.requires_grad]
    grads = torch.autograd.grad(
        [p[0] for p in pairs], leaves, [p[1] for p in pairs], allow_unused=True
    )
    return tuple(o.detach() for o in outs), grads, ups


# ---- cases ----------------------------------------------------------------------------------------
class Case:
    """One op at one size: fn[impl](*inputs) runs an implementation ('triton', 'cuda' or
    'reference'); with `grad`, the gradients of every input are checked too."""

    def __init__(
        self,
        name: str,
        label: str,
        dtype,
        fn: Dict[str, Callable],
        inputs=(),
        grad=True,
        argmax_scores=None,
        exact=False,
    ):
        self.name, self.label, self.dtype, self.fn = name, label, dtype, fn
        self.inputs, self.grad = inputs, grad
        self.argmax_scores, self.exact = argmax_scores, exact


def row_cases(sizes, dtypes) -> List[Case]:
    from concrete_ext import reference as ref
    from concrete_ext._triton import KERNELS

    ops = torch.ops.concrete_ext
    cases = []
    for rows, n in sizes:
        for dtype in dtypes:
            if dtype == torch.float64 and rows * n > (1 << 21):
                continue  # fp64 at the largest sizes only doubles the time
            lab = f"{str(dtype)[6:]} {rows}x{n}"
            a, t = logits((rows, n), rows + n, dtype), temperature((rows,), n, dtype)
            p = logits((rows, n), rows + n + 1, dtype, masked=False)
            tp = temperature((rows,), n + 1, dtype)
            s = 1234
            for name in ("exp_concrete_sample", "concrete_sample"):
                cases.append(
                    Case(
                        name,
                        lab,
                        dtype,
                        {
                            "triton": lambda a, t, name=name: KERNELS[name](a, t, -1, s, 3, None),
                            "cuda": lambda a, t, name=name: getattr(ops, name)(
                                a, t, -1, s, 3, None
                            ),
                            "reference": lambda a, t, name=name: getattr(ref, name)(
                                a, t, -1, seed=s, offset=3
                            ),
                        },
                        inputs=(a, t),
                    )
                )
            cases.append(
                Case(
                    "gumbel_softmax_hard",
                    lab,
                    dtype,
                    {
                        "triton": lambda a, t: KERNELS["gumbel_softmax_hard"](a, t, -1, s, 3, None)[
                            0
                        ],
                        "cuda": lambda a, t: ops.gumbel_softmax_hard(a, t, -1, s, 3, None)[0],
                        "reference": lambda a, t: ref.gumbel_softmax(
                            a, t, True, -1, seed=s, offset=3
                        ),
                    },
                    inputs=(a, t),
                    argmax_scores=(a, s),
                )
            )
            cases.append(
                Case(
                    "gumbel_max_sample",
                    lab,
                    dtype,
                    {
                        "triton": lambda a: KERNELS["gumbel_max_sample"](a, -1, s, 3, None),
                        "cuda": lambda a: ops.gumbel_max_sample(a, -1, s, 3, None),
                        "reference": lambda a: ref.gumbel_max_sample(a, -1, seed=s, offset=3),
                    },
                    inputs=(a,),
                    grad=False,
                    argmax_scores=(a, s),
                )
            )
            y = ref.exp_concrete_sample(a.double(), 0.8, -1, seed=7).to(dtype)
            for name, v in (("exp_concrete_log_prob", y), ("concrete_log_prob", y.exp())):
                cases.append(
                    Case(
                        name,
                        lab,
                        dtype,
                        {
                            "triton": lambda v, a, t, name=name: KERNELS[name](v, a, t, -1),
                            "cuda": lambda v, a, t, name=name: getattr(ops, name)(v, a, t, -1),
                            "reference": lambda v, a, t, name=name: getattr(ref, name)(v, a, t, -1),
                        },
                        inputs=(v, a, t),
                    )
                )
            cases.append(
                Case(
                    "relaxed_kl_sample",
                    lab,
                    dtype,
                    {
                        "triton": lambda a, t, p, tp: KERNELS["relaxed_kl_sample"](
                            a, t, p, tp, -1, s, 3, None
                        ),
                        "cuda": lambda a, t, p, tp: ops.relaxed_kl_sample(
                            a, t, p, tp, -1, s, 3, None
                        ),
                        "reference": lambda a, t, p, tp: ref.relaxed_kl_sample(
                            a, t, p, tp, -1, seed=s, offset=3
                        ),
                    },
                    inputs=(a, t, p, tp),
                )
            )
    return cases


def binary_cases(numels, dtypes) -> List[Case]:
    from concrete_ext import reference as ref
    from concrete_ext._triton import KERNELS

    ops = torch.ops.concrete_ext
    cases = []
    for numel in numels:
        for dtype in dtypes:
            if dtype == torch.float64 and numel > (1 << 22):
                continue
            lab = f"{str(dtype)[6:]} {numel}"
            shape = (numel // 64, 64)
            a = logits(shape, numel, dtype, masked=False)
            t = temperature(shape[-1:], 5, dtype)
            s = 4321
            for name in ("logit_binary_concrete_sample", "binary_concrete_sample"):
                cases.append(
                    Case(
                        name,
                        lab,
                        dtype,
                        {
                            "triton": lambda a, t, name=name: KERNELS[name](a, t, s, 1, None),
                            "cuda": lambda a, t, name=name: getattr(ops, name)(a, t, s, 1, None),
                            "reference": lambda a, t, name=name: getattr(ref, name)(
                                a, t, seed=s, offset=1
                            ),
                        },
                        inputs=(a, t),
                    )
                )
            y = ref.logit_binary_concrete_sample(a.double(), 0.9, seed=3).to(dtype)
            for name, v in (
                ("logit_binary_concrete_log_prob", y),
                ("binary_concrete_log_prob", torch.sigmoid(y)),
            ):
                cases.append(
                    Case(
                        name,
                        lab,
                        dtype,
                        {
                            "triton": lambda v, a, t, name=name: KERNELS[name](v, a, t),
                            "cuda": lambda v, a, t, name=name: getattr(ops, name)(v, a, t),
                            "reference": lambda v, a, t, name=name: getattr(ref, name)(v, a, t),
                        },
                        inputs=(v, a, t.expand(shape).contiguous()),
                    )
                )
            like = torch.empty(shape, device=DEVICE, dtype=dtype)
            for kind in ("bits", "uniform", "exponential", "gumbel", "logistic"):
                cases.append(
                    Case(
                        "noise_like",
                        f"{kind} {lab}",
                        dtype,
                        {
                            "triton": lambda kind=kind, like=like: KERNELS["noise_like"](
                                like, kind, s, 2, None
                            ),
                            "cuda": lambda kind=kind, like=like: ops.noise_like(
                                like, kind, s, 2, None
                            ),
                            "reference": lambda kind=kind, like=like: ref.noise(
                                like.shape,
                                kind,
                                s,
                                2,
                                torch.float64,
                                DEVICE,
                                ref.draw_bits_of(like.dtype),
                            ),
                        },
                        grad=False,
                        exact=kind == "bits",
                    )
                )
    return cases


# ---- running --------------------------------------------------------------------------------------
def run_case(case: Case, has_cuda_kernels: bool, bench: bool, tie_fraction: float) -> bool:
    from concrete_ext import reference as ref

    tol_v, tol_g = TOL[case.dtype]
    args = case.inputs
    impls = ["triton"] + (["cuda"] if has_cuda_kernels and DEVICE == "cuda" else [])
    ref_args = tuple(x.double() for x in args)
    report, ok = [], True
    with ref.noise_as(args[0].dtype):  # the float64 reference draws the noise of the tested call
        if case.grad:
            ref_out, ref_grads, up = vjp(case.fn["reference"], ref_args)
        else:
            ref_out = case.fn["reference"](*ref_args)
            ref_out = ref_out if isinstance(ref_out, tuple) else (ref_out,)
    for impl in impls:
        if case.grad:
            out, grads, _ = vjp(case.fn[impl], args, lambda outs: up)
        else:
            out = case.fn[impl](*args)
            out, grads = (out if isinstance(out, tuple) else (out,)), ()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        if case.exact:
            same = all(torch.equal(o.cpu(), r.cpu()) for o, r in zip(out, ref_out))
            report.append(f"{impl}: {'bit-identical' if same else 'DIFFERENT BITS'}")
            ok &= same
        elif case.argmax_scores is not None:
            a, seed = case.argmax_scores
            g = ref.noise(
                a.shape, "gumbel", seed, 3, torch.float64, DEVICE, ref.draw_bits_of(a.dtype)
            )
            frac, ties = category_mismatch(out[0], ref_out[0], a.double() + g)
            report.append(f"{impl}: rows differing {frac:.1e}{'' if ties else ' (NOT ties)'}")
            ok &= frac <= tie_fraction and ties
        else:
            errs = [scaled_error(o, r) for o, r in zip(out, ref_out)]
            report.append(f"{impl}: value err {max(errs):.1e}")
            ok &= max(errs) <= tol_v
        if grads:
            gerrs = [
                scaled_error(g, r)
                for g, r in zip(grads, ref_grads)
                if g is not None and r is not None
            ]
            missing = sum((g is None) != (r is None) for g, r in zip(grads, ref_grads))
            report.append(
                f"grad err {max(gerrs, default=0.0):.1e}"
                + (f" ({missing} grads missing)" if missing else "")
            )
            ok &= max(gerrs, default=0.0) <= tol_g and not missing
    if bench:
        import triton.testing

        for impl in impls:
            ms = triton.testing.do_bench(lambda: case.fn[impl](*args), warmup=10, rep=50)
            report.append(f"{impl} {ms:.3f} ms")
    name = case.name + (" (+backward)" if case.grad else "")
    print(
        f"{'PASS' if ok else 'FAIL'} {name:45s} {case.label:22s} " + "; ".join(report), flush=True
    )
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--bench", action="store_true", help="also time each implementation")
    parser.add_argument("--only", default="", help="run the ops whose name contains this")
    parser.add_argument("--case-timeout", type=float, default=180.0)
    parser.add_argument("--tie-fraction", type=float, default=1e-3)
    parser.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="cpu: a dry run of this script on tiny sizes (TRITON_INTERPRET=1)",
    )
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        import os

        os.environ["TRITON_INTERPRET"] = "1"
        args.bench = False
    elif not torch.cuda.is_available():
        print("FAIL setup: no CUDA device is visible (this check runs the compiled Triton kernels)")
        return 1
    try:
        import triton

        from concrete_ext import _ops, _triton
    except Exception:
        print("FAIL setup: importing concrete_ext / triton\n" + traceback.format_exc())
        return 1
    if _triton.unavailable_reasons():
        print("FAIL setup: " + "; ".join(_triton.unavailable_reasons()))
        return 1
    if _triton.interpreted() and DEVICE == "cuda":
        print("FAIL setup: TRITON_INTERPRET=1 is set; unset it to check the compiled kernels")
        return 1
    has_cuda = _ops.has_compiled("cuda")
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (Triton interpreter)"
    print(
        f"device {name}, torch {torch.__version__}, triton "
        f"{triton.__version__}; compiled CUDA kernels: "
        f"{'yes' if has_cuda else 'no (' + str(_ops.compiled_info().get('error')) + ')'}",
        flush=True,
    )
    dtypes = [torch.float32, torch.float64]
    if DEVICE == "cpu":
        sizes, numels = [(6, 7), (2, 40)], [256]
    elif args.quick:
        sizes, numels = [(512, 10), (64, 1000), (4, 20000)], [1 << 16]
    else:
        sizes = [(8192, 10), (4096, 256), (1024, 1000), (256, 4096), (32, 50000)]
        numels = [1 << 20, 1 << 24]
    failed, total, start = [], 0, time.time()
    for maker, sz in ((row_cases, sizes), (binary_cases, numels)):
        try:
            cases = maker(sz, dtypes)
        except Exception:
            print(f"FAIL setup of {maker.__name__}\n" + traceback.format_exc(), flush=True)
            failed.append(maker.__name__)
            continue
        for case in cases:
            if args.only and args.only not in case.name:
                continue
            total += 1
            faulthandler.dump_traceback_later(args.case_timeout, exit=True)
            try:
                if not run_case(case, has_cuda, args.bench, args.tie_fraction):
                    failed.append(f"{case.name} {case.label}")
            except Exception as e:
                print(
                    f"FAIL {case.name:45s} {case.label:22s} {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}",
                    flush=True,
                )
                traceback.print_exc(limit=4, file=sys.stdout)
                failed.append(f"{case.name} {case.label}")
            finally:
                faulthandler.cancel_dump_traceback_later()
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
        del cases
    print(
        f"\n{total - len(failed)}/{total} cases passed in {time.time() - start:.0f} s"
        + ("" if not failed else "; failed: " + ", ".join(failed)),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
