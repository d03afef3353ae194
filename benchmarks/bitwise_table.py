"""A table of the compiled kernels' outputs, to check that a change to csrc/ leaves them bit for bit.

    python -m benchmarks.bitwise_table write TABLE.json [--device cpu|cuda] [--threads N]
    python -m benchmarks.bitwise_table check TABLE.json [--device cpu|cuda] [--threads N]
    python -m benchmarks.bitwise_table compare A.json B.json

`write` runs every op of the C++ surface (torch.ops.concrete_ext.*, forward and backward ops
called directly, so the Python layer above them does not matter) on a fixed list of cases and
stores, per case and output, the sha256 of the output's bytes together with its dtype, shape and
strides. `check` recomputes the cases with the build that is importable now and reports every
case whose outputs differ from TABLE.json (exit status 1 if any). `compare` diffs two tables, e.g. a
CUDA table written with the old build against one written with the new.

The cases cover every dtype (fp64, fp32, fp16, bf16), row lengths n in {1, 2, 3, 4, 5, 8, 16, 17,
100, 1024, 5000} at several row counts (some large enough that at::parallel_for splits them over
two threads), the category dim not last, non-contiguous inputs, -inf logits and all -inf rows,
the temperature as a Python float, a one-element tensor, a per-row tensor and a broadcast one,
explicit seeds and the default generator, every output_mask, and noise_like of every kind.
Inputs are drawn from a seeded torch.Generator, so the table depends on the kernels only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
NS = (1, 2, 3, 4, 5, 8, 16, 17, 100, 1024, 5000)
NOISE_KINDS = ("bits", "uniform", "exponential", "gumbel", "logistic")


def _ops():
    import concrete_ext  # noqa: F401  (defines the schemas, loads _C)
    from concrete_ext import _ops as ops_mod

    return torch.ops.concrete_ext, ops_mod


def _sha(c: torch.Tensor) -> str:
    return hashlib.sha256(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"").hexdigest()


def digest(t: torch.Tensor) -> list:
    """[sha256 of the bytes of a contiguous copy, dtype, shape, strides, sha256 with every NaN
    replaced by one NaN]. The last tells a difference in values from one in NaN sign or payload
    only (which the compiler's operand order in NaN propagation decides)."""
    c = t.detach().cpu().contiguous().reshape(-1)
    canon = c.clone()
    if c.is_floating_point():
        canon[torch.isnan(c)] = float("nan")
    return [_sha(c), str(t.dtype), list(t.shape), list(t.stride()), _sha(canon)]


class Cases:
    """Yields (name, thunk) pairs; a thunk returns a tensor or a tuple of tensors."""

    def __init__(self, device: str):
        self.device = device
        self.ce, _ = _ops()

    # ---- inputs -------------------------------------------------------------------------------
    def gen(self, key: str) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))
        return g

    def randn(self, shape, dtype, key, scale=1.0):
        x = torch.randn(shape, generator=self.gen(key), dtype=torch.float64) * scale
        return x.to(dtype).to(self.device)

    def rand(self, shape, dtype, key, lo=0.02, hi=0.98):
        u = torch.rand(shape, generator=self.gen(key), dtype=torch.float64) * (hi - lo) + lo
        return u.to(dtype).to(self.device)

    def temps(self, batch_shape, dtype, key) -> List[Tuple[str, torch.Tensor]]:
        """Python float (a float64 CPU scalar, as functional.py sends it), a one-element tensor of
        the op's dtype on the CPU, one on the device, a per-row tensor and a broadcast one."""
        out = [
            ("tf", torch.tensor(0.5, dtype=torch.float64)),
            ("t1", torch.tensor(0.7, dtype=dtype)),
        ]
        if self.device != "cpu":
            out.append(("t1dev", torch.tensor(0.6, dtype=dtype, device=self.device)))
        if len(batch_shape) >= 1 and all(s > 0 for s in batch_shape):
            t = self.rand(batch_shape, dtype, key + "/tau", 0.2, 2.0)
            out.append(("trow", t))
            if len(batch_shape) >= 1 and batch_shape[0] > 1:
                b = [batch_shape[0]] + [1] * (len(batch_shape) - 1)
                out.append(("tbcast", self.rand(b, dtype, key + "/taub", 0.3, 1.5)))
        return out

    # ---- the cases ----------------------------------------------------------------------------
    def shapes(self) -> Iterator[Tuple[str, Tuple[int, ...], int, str]]:
        """(label, shape, dim, layout): 2-D (rows, n) at several row counts, then the category
        dim not last, then non-contiguous views."""
        for n in NS:
            big = max(2, -(-70000 // n))  # > 2 x 32768 elements: two parallel tasks
            for rows in sorted({1, 3, 37, big}):
                yield f"r{rows}n{n}", (rows, n), -1, "contig"
        for n in (3, 8, 100):
            yield f"3d_dim1_n{n}", (4, n, 6), 1, "contig"
            yield f"3d_dim0_n{n}", (n, 5, 3), 0, "contig"
            yield f"T_n{n}", (n, 9), -1, "transposed"  # (9, n) view of a (n, 9) tensor
            yield f"S_n{n}", (13, 2 * n), -1, "strided"  # every other column

    def view(self, x: torch.Tensor, layout: str) -> torch.Tensor:
        if layout == "transposed":
            return x.t()
        if layout == "strided":
            return x[:, ::2]
        return x

    def logits(self, shape, dtype, layout, dim, key, mask: str = "none"):
        """Logits in `layout` (a view of a fresh tensor); mask "some" sets about 30% to -inf,
        "allrow" also every category of the first row."""
        a = self.randn(shape, torch.float64, key, 2.0)
        if mask != "none":
            m = torch.rand(shape, generator=self.gen(key + "/mask"), dtype=torch.float64) < 0.3
            a = a.masked_fill(m.to(a.device), float("-inf"))
            if mask == "allrow":
                v = self.view(a, layout)
                idx = [0] * v.dim()
                idx[dim] = slice(None)
                v[tuple(idx)] = float("-inf")
        return self.view(a.to(dtype), layout)

    def all(self) -> Iterator[Tuple[str, Callable[[], object]]]:
        yield from self.categorical()
        yield from self.binary()
        yield from self.noise()

    def categorical(self):
        ce = self.ce
        for dtype in DTYPES:
            dn = str(dtype).replace("torch.", "")
            for label, shape, dim, layout in self.shapes():
                base = f"{dn}/{label}"
                big = torch.Size(shape).numel() > 60000
                masks = ("none", "some") if big else ("none", "some", "allrow")
                for mask in masks:
                    key = f"{base}/{mask}"
                    a = self.logits(shape, dtype, layout, dim, key, mask)
                    d = dim
                    bshape = list(a.shape)
                    del bshape[d]
                    temps = self.temps(bshape, dtype, key)
                    if big or mask != "none":
                        temps = temps[:1] + temps[-1:] if len(temps) > 2 else temps
                    for tname, t in temps:
                        k = f"{key}/{tname}"
                        yield from self.categorical_case(k, a, t, d, dtype, tname)
                    if mask == "none":
                        yield (
                            f"cat/{key}/gumbel_max",
                            (lambda a=a, d=d: ce.gumbel_max_sample(a, d, 1234, 7, None)),
                        )
                        yield (
                            f"cat/{key}/gumbel_max_gen",
                            self._with_manual_seed(
                                lambda a=a, d=d: ce.gumbel_max_sample(a, d, None, 0, None), 99
                            ),
                        )

    def _with_manual_seed(self, f, seed):
        def run():
            torch.manual_seed(seed)
            return f()

        return run

    def categorical_case(self, k, a, t, d, dtype, tname):
        ce = self.ce
        seed, off = 20261207, 3
        for log_space, name in ((True, "exp_concrete"), (False, "concrete")):
            op = ce.exp_concrete_sample if log_space else ce.concrete_sample
            bop = ce.exp_concrete_sample_backward if log_space else ce.concrete_sample_backward
            s = op(a, t, d, seed, off, None)
            yield f"cat/{k}/{name}_sample", (lambda s=s: s)
            if tname == "tf":
                yield (
                    f"cat/{k}/{name}_sample_gen",
                    self._with_manual_seed(lambda op=op: op(a, t, d, None, 0, None), 5),
                )
            g = self.randn(s.shape, dtype, k + "/g" + name)
            for tg in (True, False):
                yield (
                    f"cat/{k}/{name}_sample_bwd_tg{int(tg)}",
                    (lambda bop=bop, g=g, s=s, tg=tg: bop(g, s, t, d, tg)),
                )
            # Log-densities at the sample (masked entries -inf / 0 included).
            lop = ce.exp_concrete_log_prob if log_space else ce.concrete_log_prob
            lbop = ce.exp_concrete_log_prob_backward if log_space else ce.concrete_log_prob_backward
            yield f"cat/{k}/{name}_log_prob", (lambda lop=lop, s=s: lop(s, a, t, d))
            gr = self.randn(lop(s, a, t, d).shape, dtype, k + "/gr" + name)
            for mask in ((True, True, True), (False, True, False), (True, False, True)):
                yield (
                    f"cat/{k}/{name}_log_prob_bwd_{''.join(str(int(m)) for m in mask)}",
                    (lambda lbop=lbop, s=s, gr=gr, mask=mask: lbop(gr, s, a, t, d, list(mask))),
                )
        # Straight-through Gumbel-softmax.
        hard, state = ce.gumbel_softmax_hard(a, t, d, seed, off, None)
        yield f"cat/{k}/hard", (lambda hard=hard, state=state: (hard, state))
        gh = self.randn(hard.shape, dtype, k + "/gh")
        for tg in (True, False):
            yield (
                f"cat/{k}/hard_bwd_tg{int(tg)}",
                (
                    lambda gh=gh, state=state, tg=tg: ce.gumbel_softmax_hard_backward(
                        gh, a, t, state, d, tg
                    )
                ),
            )
        # Relaxed KL with p logits of the same shape and layout.
        p = self.randn(a.shape, dtype, k + "/p")
        tp = t * 1.3 if t.dim() else torch.tensor(0.9, dtype=t.dtype)
        y, lq, lp = ce.relaxed_kl_sample(a, t, p, tp, d, seed, off, None)
        yield f"cat/{k}/kl", (lambda y=y, lq=lq, lp=lp: (y, lq, lp))
        gy = self.randn(y.shape, dtype, k + "/gy")
        glq = self.randn(lq.shape, dtype, k + "/glq")
        glp = self.randn(lp.shape, dtype, k + "/glp")
        for which, mask in (
            ("all", (True, True, True, True)),
            ("q", (True, True, False, False)),
            ("p", (False, False, True, True)),
        ):
            yield (
                f"cat/{k}/kl_bwd_{which}",
                (
                    lambda mask=mask, y=y: ce.relaxed_kl_sample_backward(
                        gy, glq, glp, y, a, t, p, tp, d, list(mask)
                    )
                ),
            )
        yield (
            f"cat/{k}/kl_bwd_noy",
            (
                lambda y=y: ce.relaxed_kl_sample_backward(
                    None, glq, None, y, a, t, p, tp, d, [True, True, True, True]
                )
            ),
        )
        yield (
            f"cat/{k}/kl_bwd_yonly",
            (
                lambda y=y: ce.relaxed_kl_sample_backward(
                    gy, None, None, y, a, t, p, tp, d, [True, True, True, True]
                )
            ),
        )

    def binary(self):
        ce = self.ce
        shapes = [
            ("e1", (1,)),
            ("e7", (7,)),
            ("e33", (3, 11)),
            ("e5000", (5000,)),
            ("e70000", (70001,)),
            ("e2d", (300, 257)),
            ("T", (40, 9)),
            ("S", (17, 20)),
        ]
        for dtype in DTYPES:
            dn = str(dtype).replace("torch.", "")
            for label, shape in shapes:
                key = f"bin/{dn}/{label}"
                a = self.randn(shape, dtype, key, 3.0)
                if label == "T":
                    a = a.t()
                elif label == "S":
                    a = a[:, ::2]
                if a.numel() >= 7:
                    a = a.clone() if a.is_contiguous() else a
                    flat = a.reshape(-1)
                    if a.is_contiguous():
                        flat[:6] = torch.tensor(
                            [float("-inf"), float("inf"), 40.0, -40.0, 0.0, 90.0],
                            dtype=torch.float64,
                        ).to(dtype)
                temps = self.temps(list(a.shape), dtype, key)
                # A per-element temperature and one broadcast along the last dim.
                for tname, t in temps:
                    k = f"{key}/{tname}"
                    for logit_space, name in ((True, "logit_binary"), (False, "binary")):
                        op = (
                            ce.logit_binary_concrete_sample
                            if logit_space
                            else ce.binary_concrete_sample
                        )
                        bop = (
                            ce.logit_binary_concrete_sample_backward
                            if logit_space
                            else ce.binary_concrete_sample_backward
                        )
                        s = op(a, t, 77, 5, None)
                        yield f"{k}/{name}_sample", (lambda s=s: s)
                        if tname == "tf":
                            yield (
                                f"{k}/{name}_sample_gen",
                                self._with_manual_seed(
                                    lambda op=op, t=t: op(a, t, None, 0, None), 11
                                ),
                            )
                        g = self.randn(s.shape, dtype, k + "/g" + name)
                        for tg in (True, False):
                            yield (
                                f"{k}/{name}_sample_bwd_tg{int(tg)}",
                                (lambda bop=bop, g=g, s=s, t=t, tg=tg: bop(g, s, t, tg)),
                            )
                        lop = (
                            ce.logit_binary_concrete_log_prob
                            if logit_space
                            else ce.binary_concrete_log_prob
                        )
                        lbop = (
                            ce.logit_binary_concrete_log_prob_backward
                            if logit_space
                            else ce.binary_concrete_log_prob_backward
                        )
                        # Values: the sample itself, and interior points.
                        v2 = (
                            self.randn(a.shape, dtype, k + "/v")
                            if logit_space
                            else self.rand(a.shape, dtype, k + "/v")
                        )
                        for vname, v in (("atsample", s), ("interior", v2)):
                            yield (
                                f"{k}/{name}_log_prob_{vname}",
                                (lambda lop=lop, v=v, t=t: lop(v, a, t)),
                            )
                            gr = self.randn(a.shape, dtype, k + "/gr" + vname + name)
                            for mask in (
                                (True, True, True),
                                (False, True, False),
                                (True, False, True),
                            ):
                                yield (
                                    (
                                        f"{k}/{name}_log_prob_{vname}_bwd_"
                                        f"{''.join(str(int(m)) for m in mask)}"
                                    ),
                                    (
                                        lambda lbop=lbop, v=v, gr=gr, t=t, mask=mask: lbop(
                                            gr, v, a, t, list(mask)
                                        )
                                    ),
                                )

    def noise(self):
        ce = self.ce
        for dtype in DTYPES:
            dn = str(dtype).replace("torch.", "")
            for shape in ((1,), (5,), (4, 7), (70001,), (3, 1000, 7)):
                x = torch.empty(shape, dtype=dtype, device=self.device)
                for kind in NOISE_KINDS:
                    if kind == "bits" and dtype != torch.float32:
                        continue
                    k = f"noise/{dn}/{'x'.join(map(str, shape))}/{kind}"
                    yield k, (lambda x=x, kind=kind: ce.noise_like(x, kind, 4242, 9, None))
                    yield (
                        k + "_gen",
                        self._with_manual_seed(
                            lambda x=x, kind=kind: ce.noise_like(x, kind, None, 0, None), 3
                        ),
                    )


def compute(device: str, threads: Optional[int], log=print) -> Dict[str, list]:
    ce, ops_mod = _ops()
    if not ops_mod.has_compiled(device):
        raise SystemExit(f"the compiled {device} kernels are not loaded: {ops_mod.compiled_info()}")
    if threads:
        torch.set_num_threads(threads)
    table: Dict[str, list] = {}
    cases = Cases(device)
    for name, thunk in cases.all():
        if name in table:
            raise SystemExit(f"duplicate case name {name}")
        try:
            out = thunk()
        except Exception as e:  # noqa: BLE001 - an error is a result too (its type)
            table[name] = [["error", type(e).__name__]]
            continue
        outs = out if isinstance(out, (tuple, list)) else (out,)
        table[name] = [digest(o) for o in outs]
    log(
        f"{len(table)} cases, {sum(len(v) for v in table.values())} outputs "
        f"({device}, {torch.get_num_threads()} threads)"
    )
    return table


def diff(a: Dict[str, list], b: Dict[str, list], log=print, limit: int = 40) -> int:
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))

    # A table written before the NaN-canonical digest (4 fields per output) compares on the 4.
    def exact(d):
        return [o[:4] for o in d]

    def canonical(d):
        return [o[1:] if len(o) == 5 else None for o in d]

    bad = [k for k in a if k in b and exact(a[k]) != exact(b[k])]
    # Differences in NaN bits only: the same outputs once every NaN is one NaN.
    nan_only = [
        k for k in bad if None not in canonical(a[k]) and canonical(a[k]) == canonical(b[k])
    ]
    for k in [k for k in bad if k not in nan_only][:limit]:
        log(f"DIFFERS {k}: {a[k]} != {b[k]}")
    for k in nan_only[:limit]:
        log(f"DIFFERS IN NAN BITS ONLY {k}")
    if len(bad) > 2 * limit:
        log(f"... ({len(bad)} in all)")
    if only_a or only_b:
        log(f"cases only in the first table: {len(only_a)}, only in the second: {len(only_b)}")
    log(
        f"{len(a) - len(only_a)} common cases, {len(bad)} differ "
        f"({len(nan_only)} of them in the sign or payload of NaN outputs only)"
    )
    return len(bad) + len(only_a) + len(only_b)


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("cmd", choices=("write", "check", "compare"))
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "compare":
        a, b = (load(p) for p in args.paths[:2])
        return 1 if diff(a["table"], b["table"]) else 0
    table = compute(args.device, args.threads)
    if args.cmd == "write":
        import concrete_ext

        with open(args.paths[0], "w") as f:
            json.dump(
                {
                    "build": concrete_ext._ops.compiled_info(),
                    "device": args.device,
                    "threads": torch.get_num_threads(),
                    "torch": str(torch.__version__),
                    "table": table,
                },
                f,
                indent=0,
                sort_keys=True,
            )
        return 0
    want = load(args.paths[0])["table"]
    return 1 if diff(want, table) else 0


if __name__ == "__main__":
    sys.exit(main())
