"""The benchmark harness shared by every benchmarks/bench_<op>.py (method: docs/BENCHMARKS.md).

A `Spec` is one op in one mode (forward, backward, full) at one shape and dtype, with the providers
that compute it: ours (`cpu`, `cuda`, `triton` through `concrete_ext.backend`) and the peers
(`reference`, `torch`, `dist`, `compile`). `run_specs` times every provider of a spec twice (run 1
of all providers, then run 2, so drift between runs is visible) and measures the limit in the same
place:

* `copy`: a clone of as many bytes as the op minimally moves (read + write), on CPU and GPU;
  `frac_limit` = time of that copy / time of the op.
* `tx_floor` (CPU only): one vectorised pass of the transcendental functions the op needs per
  element (for sampling: log, log, exp), on cache-resident blocks so that memory is touched once.

Timing: `triton.testing.do_bench` on CUDA (median, 20th and 80th percentiles of single calls, after
warm-up, with the L2 flushed before each call), `torch.utils.benchmark` on CPU (quantiles of the
per-block averages of `blocked_autorange`). Inputs are rotated through enough copies to overflow the
last-level cache, so no call finds its inputs cached by the previous one.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import subprocess
import time
import traceback
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

MODES = ("forward", "backward", "full")
# Modes timed as one direct call (no autograd): the forward, and a backward op called on its own
# (bench_backward.py).
DIRECT_MODES = ("forward", "backward_op")
OURS = ("cpu", "cuda", "triton")
PEERS = ("reference", "torch", "dist", "compile", "topk")  # topk: bench_index only
LIMITS = ("copy", "tx_floor")


# ---- what runs -----------------------------------------------------------------------------------
@dataclass
class Provider:
    """fn(inputs) -> output tensor or tuple of tensors; `backend` is entered around every call."""

    fn: Callable[[Dict[str, Any]], Any]
    backend: Optional[str] = None
    compiled: bool = False  # inputs get maybe_mark_dynamic on dim 0 (rows), see compiled()
    max_numel: Optional[int] = None  # skipped above this size (the slow reference)


@dataclass
class Spec:
    op: str
    mode: str
    shape: Tuple[int, ...]
    dtype: torch.dtype
    device: str
    make_inputs: Callable[[], Dict[str, Any]]  # one fresh set of inputs
    providers: Dict[str, Provider]
    bytes: int  # minimal bytes read + written by the op in this mode
    grad_inputs: Tuple[str, ...] = ("logits",)  # inputs that get a gradient (backward, full)
    tx: Tuple[str, ...] = ()  # transcendental functions per element (CPU floor)
    input_bytes: int = 0  # bytes of one input set (for the rotation count)

    @property
    def n(self) -> int:
        return self.shape[-1]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def label(self) -> str:
        return f"{self.op} {self.mode} {shape_str(self.shape)} {dtype_str(self.dtype)}"


@dataclass
class Settings:
    device: str = "cpu"
    cpu_min_run_time: float = 0.12  # seconds per CPU timing
    gpu_warmup_ms: float = 10.0
    gpu_rep_ms: float = 40.0
    deadline: Optional[float] = None  # time.monotonic() after which remaining specs are skipped
    max_rotation: int = 8
    log: Callable[[str], None] = print
    smoke: bool = False  # one call per provider, no timing (dry run)


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def dtype_str(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---- environment -----------------------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:  # noqa: BLE001 - no git on the machine
        return ""


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def env_info(device: str) -> Dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if commit != "unknown" and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        threads = torch.get_num_threads()
        name = (
            f"{cpu_name()} ({os.cpu_count()} cores, {threads} thread{'s' if threads > 1 else ''})"
        )
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_avg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def last_level_cache_bytes(device: str) -> int:
    if device == "cuda":
        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 64 << 20))
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in os.listdir(base):
            try:
                with open(os.path.join(base, idx, "size")) as f:
                    s = f.read().strip()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(s[-1], 1)
                best = max(best, int(s.rstrip("KM")) * mult)
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return best or (32 << 20)


# ---- timing ---------------------------------------------------------------------------------------
@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    runs: int


def time_cpu(fn: Callable[[], Any], min_run_time: float, min_blocks: int = 5) -> Timing:
    """blocked_autorange for at least `min_run_time` s, extended to `min_blocks` blocks so slow
    calls still get quantiles."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    first = timer.timeit(1).times[0]
    if first * min_blocks >= min_run_time:  # slow calls: one call per block, no size estimate
        times, number = [first], 1
    else:
        m = timer.blocked_autorange(min_run_time=min_run_time)
        times, number = list(m.times), m.number_per_run
    while len(times) < min_blocks:
        times.extend(timer.timeit(number).times)
    t = torch.tensor(times, dtype=torch.float64) * 1e3
    q = torch.quantile(t, torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64)).tolist()
    return Timing(q[0], q[1], q[2], int(number * len(times)))


def time_gpu(fn: Callable[[], Any], warmup_ms: float, rep_ms: float) -> Timing:
    from triton.testing import do_bench

    q = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(float(q[0]), float(q[1]), float(q[2]), -1)


def time_fn(fn: Callable[[], Any], s: Settings) -> Timing:
    if s.device == "cuda":
        return time_gpu(fn, s.gpu_warmup_ms, s.gpu_rep_ms)
    return time_cpu(fn, s.cpu_min_run_time)


# ---- torch.compile peers --------------------------------------------------------------------------
_COMPILED: Dict[tuple, Callable] = {}


def _configure_dynamo():
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
    if hasattr(cfg, "accumulated_recompile_limit"):
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4096)
    # Backward mode calls the same graph's backward again (retain_graph=True), which a compiled
    # backward that donates its saved buffers refuses.
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False


def compiled(formula: Callable, key: tuple, backend: str = "inductor") -> Callable:
    """torch.compile of `formula`, one fresh code object per `key` (op, n, dtype, ...).

    Dynamo keeps its cache on the code object; a fresh copy per key keeps each guard list short
    and far from the recompile limit. Inputs are marked dynamic in dim 0 (rows) by the runner, so
    one compilation per (n, dtype, grad mode) serves every total size.
    """
    k = (formula.__module__, formula.__qualname__, backend) + tuple(key)
    if k not in _COMPILED:
        _configure_dynamo()
        code = formula.__code__.replace(co_name=f"{formula.__name__}_{len(_COMPILED)}")
        fresh = types.FunctionType(
            code, formula.__globals__, code.co_name, formula.__defaults__, formula.__closure__
        )
        _COMPILED[k] = torch.compile(fresh, backend=backend)
    return _COMPILED[k]


# ---- the limits ---------------------------------------------------------------------------------
def _copy_provider(spec: Spec) -> Tuple[Provider, Callable, int]:
    """A clone moving the op's minimal bytes: spec.bytes / 2 read, as many written."""
    elems = max(1, spec.bytes // (2 * 4))

    def make():
        return {"src": torch.rand(elems, device=spec.device)}

    return Provider(lambda inp: inp["src"].clone()), make, elems * 4


_TX = {"log": torch.log, "exp": torch.exp}


def _tx_provider(spec: Spec) -> Tuple[Provider, Callable, int]:
    """The op's transcendental functions (spec.tx, in order) on every element, fp32, one read of the
    input and one write of the output; each block of 2^20 elements stays cache-resident between the
    functions, which run in place (torch's vectorised CPU kernels)."""
    numel, fns = spec.numel, [_TX[t] for t in spec.tx]
    block = 1 << 20

    def make():
        return {"u": torch.rand(numel, device=spec.device) * 0.5 + 0.25}

    def fn(inp):
        u = inp["u"]
        out = torch.empty_like(u)
        for b in range(0, numel, block):
            o = out[b : b + block]
            fns[0](u[b : b + block], out=o)
            for f in fns[1:]:
                o.abs_()
                f(o, out=o)
        return out

    return Provider(fn), make, numel * 4


# ---- running ----------------------------------------------------------------------------------------
def _outputs(out) -> List[torch.Tensor]:
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]


def _grads_like(outs: List[torch.Tensor]) -> List[torch.Tensor]:
    return [torch.randn_like(o) for o in outs]


def _thunk(spec_mode: str, prov: Provider, sets: List[Dict[str, Any]], grad_names: Sequence[str]):
    """A no-argument callable running one call of the provider, rotating through the input sets."""
    state = {"i": 0}
    k = len(sets)

    def nxt():
        i = state["i"]
        state["i"] = (i + 1) % k
        return i

    if spec_mode in DIRECT_MODES:
        return lambda: prov.fn(sets[nxt()])
    xs = [[s[name] for name in grad_names] for s in sets]
    if spec_mode == "backward":
        outs = [_outputs(prov.fn(s)) for s in sets]
        grads = [_grads_like(o) for o in outs]

        def backward():
            i = nxt()
            return torch.autograd.grad(outs[i], xs[i], grads[i], retain_graph=True)

        return backward
    shapes_from = _outputs(prov.fn(sets[0]))  # one untimed call gives the output shapes
    grads = [_grads_like(shapes_from) for _ in range(k)]
    del shapes_from

    def full():
        i = nxt()
        return torch.autograd.grad(_outputs(prov.fn(sets[i])), xs[i], grads[i])

    return full


def _input_sets(make, count: int, grad_names: Sequence[str], mode: str, mark_dynamic: bool):
    sets = []
    for _ in range(count):
        inp = make()
        if mode not in DIRECT_MODES:
            for name in grad_names:
                inp[name] = inp[name].detach().requires_grad_(True)
        if mark_dynamic:
            for v in inp.values():
                if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[0] > 1:
                    torch._dynamo.maybe_mark_dynamic(v, 0)
        sets.append(inp)
    return sets


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def _reason(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}".replace("\n", " ").strip()
    return msg[:300]


@dataclass
class _Prepared:
    name: str
    thunk: Optional[Callable] = None
    backend: Optional[str] = None
    status: str = "ok"
    warmup_s: float = float("nan")


def _prepare(
    spec: Spec, name: str, prov: Provider, make, input_bytes: int, s: Settings, llc: int
) -> _Prepared:
    p = _Prepared(name, backend=prov.backend)
    if prov.max_numel is not None and spec.numel > prov.max_numel:
        p.status = f"skipped: slower than the sweep allows above {prov.max_numel} elements"
        return p
    mode = spec.mode if name not in LIMITS else "forward"
    k = 1 if s.smoke else max(1, min(s.max_rotation, math.ceil(2 * llc / max(1, input_bytes))))
    grad_names = spec.grad_inputs if name not in LIMITS else ()
    t0 = time.perf_counter()
    try:
        with _backend_ctx(prov.backend):
            sets = _input_sets(make, k, grad_names, mode, prov.compiled)
            thunk = _thunk(mode, prov, sets, grad_names)
            for _ in range(2 if prov.compiled and not s.smoke else 1):
                thunk()  # compilation, lazy initialisation; the timers warm up further
            _sync(spec.device)
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        # A backend that cannot serve the call says so through concrete_ext._backend.select.
        unavailable = name in OURS and "cannot run" in str(e) and "concrete_ext backend" in str(e)
        p.status = f"{'unavailable' if unavailable else 'error'}: {_reason(e)}"
        if not unavailable:
            s.log(traceback.format_exc(limit=3))
        return p
    p.thunk, p.warmup_s = thunk, time.perf_counter() - t0
    return p


def _backend_ctx(name: Optional[str]):
    if name is None:
        return contextlib.nullcontext()
    import concrete_ext as ce

    return ce.backend(name)


def run_spec(spec: Spec, s: Settings, env: Dict[str, str]) -> List[Dict[str, Any]]:
    """Rows for one spec: every provider and limit, timed twice (or called once when smoke)."""
    llc = last_level_cache_bytes(spec.device)
    entries = [
        (name, prov, spec.make_inputs, spec.input_bytes) for name, prov in spec.providers.items()
    ]
    prov, make, nbytes = _copy_provider(spec)
    entries.append(("copy", prov, make, nbytes))
    if spec.device == "cpu" and spec.tx:
        prov, make, nbytes = _tx_provider(spec)
        entries.append(("tx_floor", prov, make, nbytes))
    prepared = [_prepare(spec, *e, s, llc) for e in entries]
    rows = []
    for rep in (1,) if s.smoke else (1, 2):
        for p in prepared:
            row = _base_row(spec, p.name, rep, env)
            row["status"], row["warmup_s"] = p.status, p.warmup_s
            if p.thunk is not None and not s.smoke:
                try:
                    with _backend_ctx(p.backend):
                        t = time_fn(p.thunk, s)
                    row.update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, runs=t.runs)
                except Exception as e:  # noqa: BLE001
                    row["status"] = f"error: {_reason(e)}"
            rows.append(row)
    del prepared
    if spec.device == "cuda":
        torch.cuda.empty_cache()
    _derive(rows, spec)
    return rows


def _base_row(spec: Spec, provider: str, rep: int, env: Dict[str, str]) -> Dict[str, Any]:
    row = {
        "op": spec.op,
        "provider": provider,
        "mode": spec.mode,
        "shape": shape_str(spec.shape),
        "n": spec.n,
        "numel": spec.numel,
        "dtype": dtype_str(spec.dtype),
        "rep": rep,
        "status": "ok",
        "median_ms": float("nan"),
        "p20_ms": float("nan"),
        "p80_ms": float("nan"),
        "runs": 0,
        "warmup_s": float("nan"),
        "bytes": spec.bytes,
        "gbs": float("nan"),
        "limit_gbs": float("nan"),
        "frac_limit": float("nan"),
        "x_tx_floor": float("nan"),
    }
    for peer in PEERS:
        row[f"vs_{peer}"] = float("nan")
    row.update(env)
    return row


def _derive(rows: List[Dict[str, Any]], spec: Spec):
    """GB/s, fraction of the copy limit, multiple of the tx floor and ratio to each peer, per run."""
    for rep in {r["rep"] for r in rows}:
        same = {r["provider"]: r for r in rows if r["rep"] == rep}
        t = {k: r["median_ms"] for k, r in same.items() if r["status"] == "ok"}
        for name, r in same.items():
            if name not in t:
                continue
            r["gbs"] = spec.bytes / (t[name] * 1e-3) / 1e9
            if "copy" in t:
                r["limit_gbs"] = spec.bytes / (t["copy"] * 1e-3) / 1e9
                r["frac_limit"] = t["copy"] / t[name]
            if "tx_floor" in t:
                r["x_tx_floor"] = t[name] / t["tx_floor"]
            for peer in PEERS:
                if peer in t:
                    r[f"vs_{peer}"] = t[peer] / t[name]


def run_specs(specs: Sequence[Spec], s: Settings, env: Dict[str, str]) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for i, spec in enumerate(specs):
        if s.deadline is not None and time.monotonic() > s.deadline:
            s.log(f"[{i + 1}/{len(specs)}] {spec.label()}: skipped (time budget spent)")
            for name in spec.providers:
                r = _base_row(spec, name, 1, env)
                r["status"] = "skipped: time budget spent"
                rows.append(r)
            continue
        t0 = time.perf_counter()
        try:
            got = run_spec(spec, s, env)
        except Exception as e:  # noqa: BLE001 - one spec failing must not end the sweep
            s.log(traceback.format_exc(limit=4))
            got = []
            for name in spec.providers:
                r = _base_row(spec, name, 1, env)
                r["status"] = f"error: {_reason(e)}"
                got.append(r)
            if spec.device == "cuda":
                torch.cuda.empty_cache()
        rows.extend(got)
        s.log(
            f"[{i + 1}/{len(specs)}] {spec.label()} ({time.perf_counter() - t0:.1f} s): "
            + _one_line(got)
        )
    return rows


def _one_line(rows: List[Dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        if r["status"] != "ok":
            if r["rep"] == 1:
                parts.append(f"{r['provider']}={r['status'].split(':')[0]}")
            continue
        if math.isnan(r["median_ms"]):
            parts.append(f"{r['provider']}=ran")
        else:
            parts.append(f"{r['provider']}{r['rep']}={r['median_ms']:.3g}ms")
        if r["provider"] == "compile" and r["rep"] == 1 and r["warmup_s"] > 1:
            parts.append(f"(compile warm-up {r['warmup_s']:.1f}s)")
    return " ".join(parts)


# ---- plans: what a bench_<op>.py is asked to build -------------------------------------------------
@dataclass
class Plan:
    device: str
    shapes: Sequence[Tuple[int, ...]]
    dtypes: Sequence[torch.dtype]
    modes: Sequence[str] = MODES
    providers: Sequence[str] = ("cpu",) + PEERS  # ours and peers to include
    ops: Optional[Sequence[str]] = None  # None: every op of the module
    compile_backend: str = "inductor"  # "aot_eager" in dry runs: traces without code generation
    reference_max_numel: int = 1 << 22

    def wants(self, op: str, provider: str) -> bool:
        return (self.ops is None or op in self.ops) and provider in self.providers


def add_providers(
    plan: Plan, op: str, ours_fn: Callable, peers: Dict[str, Provider], random: bool = True
) -> Dict[str, Provider]:
    """Ours on every backend the device has, then the peers the plan asks for. The reference of a
    random op draws its Philox noise with int64 tensor ops: it is capped at
    plan.reference_max_numel elements."""
    out: Dict[str, Provider] = {}
    for b in OURS:
        if plan.wants(op, b):
            out[b] = Provider(ours_fn, backend=b)
    if plan.wants(op, "reference"):
        cap = plan.reference_max_numel if random else None
        out["reference"] = Provider(ours_fn, backend="reference", max_numel=cap)
    for name, prov in peers.items():
        if plan.wants(op, name):
            out[name] = prov
    return out
