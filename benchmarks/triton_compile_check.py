"""Compiles every Triton kernel variant the launchers of concrete_ext._triton use, for a CUDA target,
on a machine without a GPU (Triton's ptxas ships with it). The interpreter tests (TRITON_INTERPRET=1)
run the kernels' Python, which accepts code the compiler rejects; this catches those errors before a
GPU run. The kernel launches are intercepted (nothing runs): each distinct (kernel, signature,
constexprs, num_warps) is compiled once to a cubin.

    python benchmarks/triton_compile_check.py [--arch 90] [--quick]

Prints one FAIL line per variant that does not compile and a summary; exits 1 on any failure.
Depends on Triton's ASTSource API (triton.compiler.ASTSource with a signature dict), present in the
Triton 3.x releases this package supports.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret

import torch  # noqa: E402

_PTR = {
    torch.float32: "*fp32",
    torch.float64: "*fp64",
    torch.float16: "*fp16",
    torch.bfloat16: "*bf16",
    torch.int64: "*i64",
    torch.int32: "*i32",
}


class Compiler:
    """Stands in for concrete_ext._triton.common.wrap_triton: kernel[grid](*args, **kwargs)
    compiles."""

    def __init__(self, target):
        self.target, self.seen, self.failures = target, set(), []

    def signature(self, kernel, args, kwargs):
        params = {p.name: p for p in kernel.params}
        values = dict(zip(kernel.arg_names, args))
        values.update({k: v for k, v in kwargs.items() if k in params})
        sig, consts = {}, {}
        for name in kernel.arg_names:
            v = values[name]
            if params[name].is_constexpr:
                sig[name], consts[name] = "constexpr", v
            elif isinstance(v, torch.Tensor):
                sig[name] = _PTR[v.dtype]
            elif isinstance(v, bool):
                sig[name] = "i1"
            elif isinstance(v, int):
                sig[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
            elif isinstance(v, float):
                sig[name] = "fp32"
            else:
                raise TypeError(f"argument {name} of type {type(v).__name__}")
        return sig, consts

    def wrap(self, kernel):
        outer = self

        class Launch:
            def __getitem__(self, grid):
                return self

            def __call__(self, *args, **kwargs):
                import triton
                from triton.compiler import ASTSource

                warps = kwargs.pop("num_warps", 4)
                sig, consts = outer.signature(kernel, args, kwargs)
                key = (
                    kernel.fn.__name__,
                    tuple(sorted(sig.items())),
                    tuple(sorted((k, repr(v)) for k, v in consts.items())),
                    warps,
                )
                if key in outer.seen:
                    return
                outer.seen.add(key)
                try:
                    triton.compile(
                        ASTSource(fn=kernel, signature=sig, constexprs=consts),
                        target=outer.target,
                        options={"num_warps": warps},
                    )
                except Exception as e:  # noqa: BLE001 - report every compile error
                    lines = str(e).strip().splitlines() or [type(e).__name__]
                    outer.failures.append(key)
                    print(
                        f"FAIL {kernel.fn.__name__} {consts} num_warps={warps}\n    "
                        + "\n    ".join(lines[-12:]),
                        flush=True,
                    )

        return Launch()


def row_calls(K, dtype, n, rows=3):
    a = torch.randn(rows, n, dtype=dtype)
    t = torch.rand(rows, dtype=torch.float64) + 0.5
    ts = torch.tensor(0.5, dtype=torch.float64)
    g, gr = torch.randn(rows, n, dtype=dtype), torch.randn(rows, dtype=dtype)
    for name in ("exp_concrete_sample", "concrete_sample"):
        K[name](a, t, -1, 1, 0, None)
        for tg in (True, False):
            K[name + "_backward"](g, a, t, -1, tg)
    K["gumbel_softmax_hard"](a, ts, -1, 1, 0, None)
    for tg in (True, False):
        K["gumbel_softmax_hard_backward"](g, a, t, torch.tensor([1, 0]), -1, tg)
    K["gumbel_max_sample"](a, -1, 1, 0, None)
    K["categorical_sample"](a, t, -1, 1, 0, None)
    K["categorical_sample"](a, ts, -1, 1, 0, None)
    for k in sorted({1, min(3, n), n}):
        K["gumbel_top_k"](a, k, -1, 1, 0, None)
    for name in ("exp_concrete_log_prob", "concrete_log_prob"):
        K[name](a, a, t, -1)
        for mask in itertools.product([True, False], repeat=3):
            K[name + "_backward"](gr, a, a, t, -1, list(mask))
    K["relaxed_kl_sample"](a, t, a, ts, -1, 1, 0, None)
    for mask in [
        (True,) * 4,
        (True, False, False, False),
        (False, True, False, True),
        (False, False, True, False),
        (False,) * 4,
    ]:
        for has in [
            (True, True, True),
            (True, False, False),
            (False, True, False),
            (False, False, True),
        ]:
            K["relaxed_kl_sample_backward"](
                g if has[0] else None,
                gr if has[1] else None,
                gr if has[2] else None,
                a,
                a,
                t,
                a,
                t,
                -1,
                list(mask),
            )


def elementwise_calls(K, dtype, numel):
    a = torch.randn(numel, dtype=dtype)
    t = torch.rand(numel, dtype=torch.float64) + 0.5
    for name in ("logit_binary_concrete_sample", "binary_concrete_sample"):
        K[name](a, t, 1, 0, None)
        for tg in (True, False):
            K[name + "_backward"](a, a, t, tg)
    for name in ("logit_binary_concrete_log_prob", "binary_concrete_log_prob"):
        K[name](a, a, t)
        for mask in itertools.product([True, False], repeat=3):
            K[name + "_backward"](a, a, a, t, list(mask))
    for kind in ("bits", "uniform", "exponential", "gumbel", "logistic"):
        K["noise_like"](a, kind, 1, 0, None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10")
    parser.add_argument(
        "--quick", action="store_true", help="fp32 and fp64, three row lengths (both launch paths)"
    )
    args = parser.parse_args(argv)
    from triton.backends.compiler import GPUTarget

    import concrete_ext._triton as T
    from concrete_ext._triton import common

    if T.unavailable_reasons() or T.interpreted():
        print("FAIL setup: " + ("; ".join(T.unavailable_reasons()) or "kernels are interpreted"))
        return 1
    compiler = Compiler(GPUTarget("cuda", args.arch, 32))
    common.wrap_triton = compiler.wrap  # common.launch calls it for every compiled kernel
    dtypes = [torch.float32, torch.float64] + (
        [] if args.quick else [torch.float16, torch.bfloat16]
    )
    ns = [7, 20, 1000] if args.quick else [1, 4, 7, 20, 129, 1000, 20000]
    start = time.time()
    for config in ({}, dict(max_tile_n=4, chunk=16)):  # single-pass tiles, then looped rows
        with common.launch_config(**config):
            for dtype in dtypes:
                for n in ns:
                    row_calls(T.KERNELS, dtype, n)
                for numel in (5, 1 << 20):
                    elementwise_calls(T.KERNELS, dtype, numel)
    print(
        f"{len(compiler.seen) - len(compiler.failures)}/{len(compiler.seen)} kernel variants "
        f"compiled for sm_{args.arch} in {time.time() - start:.0f} s",
        flush=True,
    )
    return 1 if compiler.failures else 0


if __name__ == "__main__":
    sys.exit(main())
