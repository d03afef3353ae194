"""Shared fixtures and helpers of the concrete_ext test suite.

Conventions (DESIGN.md section 5):

* Kernels are compared with ``concrete_ext.reference`` run in float64 on the *same* inputs (the
  inputs are rounded to the tested dtype first, then upcast for the reference) and the same explicit
  ``seed``/``offset``, so both see the same Philox draws.
* fp64 and fp32 results must lie within the tolerance table ``TOL`` (fp64: 1e-12; fp32: about
  30 ulps relative plus 8 ulps of the magnitude, which leaves room for sums over a row). fp16 / bf16 results follow the
  rule of the design: the kernel's largest error against the fp64 reference is at most twice the
  largest error of the reference itself run in that dtype, plus a floor of ``FLOOR_ULPS`` ulps of
  the result's magnitude.
* Non-finite results (masked categories give exactly 0 / -inf, rows of all -inf logits give NaN)
  must match the reference exactly, element by element.
* Every random test uses fixed seeds: nothing here is flaky and nothing is rerun.
* ``DEVICES`` holds "cuda" only when a GPU is visible; CUDA-only tests use ``requires_cuda`` and
  skip cleanly without one. Tests of the Triton kernels carry the ``triton`` marker and skip while
  Triton serves no op (or cannot run here).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors through the interpreter, which must be
# switched on before anything imports triton (collection imports the kernels).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import concrete_ext as ce
from concrete_ext import _backend

# ---- devices, dtypes, markers ----------------------------------------------------------------
CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LOW_PRECISION = (torch.float16, torch.bfloat16)
INF = float("inf")


def pytest_configure(config):
    for line in (
        "cuda: needs a CUDA device (skipped without one)",
        "triton: runs Triton kernels (through TRITON_INTERPRET=1 on CPU)",
        "slow: longer statistical tests (deselect with -m 'not slow')",
    ):
        config.addinivalue_line("markers", line)


def backend_params(op_name: str):
    """(device, backend) pairs an op test runs on: the compiled CPU kernels always; the compiled
    CUDA kernels and Triton on a GPU; Triton on the CPU through TRITON_INTERPRET=1. Pairs that
    cannot serve `op_name` here are skipped with the backend's own reasons."""
    pairs = [("cpu", "cpu", ()), ("cuda", "cuda", (pytest.mark.cuda,)),
             ("cuda", "triton", (pytest.mark.cuda, pytest.mark.triton)),
             ("cpu", "triton", (pytest.mark.triton,))]
    out = []
    for device, name, marks in pairs:
        reasons = []
        if device == "cuda" and not CUDA:
            reasons = ["no CUDA device is visible"]
        else:
            reasons = _backend.not_supported_reasons(name, torch.device(device), op_name)
        skip = (pytest.mark.skip(reason="; ".join(reasons)),) if reasons else ()
        out.append(pytest.param((device, name), id=f"{device}-{name}", marks=marks + skip))
    return out


def use_backend(device_backend):
    """Context manager running the ops in the block on the requested backend."""
    return ce.backend(device_backend[1])


# ---- tolerances ------------------------------------------------------------------------------
# (rtol, atol) for values of magnitude about 1; atol is scaled by max(1, max |expected|) so that
# a quantity such as a log-density of -300 is held to relative, not absolute, precision.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=4e-6, atol=1e-6),
    # fp16 / bf16 use the 2x rule below; these bounds are a sanity ceiling on top of it.
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=6e-2, atol=6e-2),
}
FLOOR_ULPS = 2  # the "small floor" of the 2x rule, in ulps of the largest |expected| (>= 1)


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _nonfinite_equal(a: torch.Tensor, e: torch.Tensor, name: str):
    fa, fe = torch.isfinite(a), torch.isfinite(e)
    bad = fa != fe
    assert not bad.any(), (f"{name}: finite pattern differs at {bad.nonzero()[:5].tolist()}: "
                           f"got {a[bad][:5].tolist()}, reference {e[bad][:5].tolist()}")
    same = (a[~fa] == e[~fe]) | (a[~fa].isnan() & e[~fe].isnan())
    assert same.all(), f"{name}: non-finite values differ: {a[~fa][~same][:5].tolist()} vs {e[~fe][~same][:5].tolist()}"


def assert_matches_reference(actual: torch.Tensor, expected64: torch.Tensor,
                             ref_low: Optional[torch.Tensor] = None, *, name: str = "result",
                             dtype: Optional[torch.dtype] = None, scale: Optional[float] = None,
                             tol_factor: float = 1.0, rule_2x: bool = False):
    """Checks a kernel result against the fp64 reference (see the module docstring).

    `dtype` is the precision the result is held to (default: actual.dtype); `ref_low` is the
    reference run in that dtype, needed for fp16/bf16. `scale` overrides the magnitude that scales
    atol (default max(1, max |expected|)); `tol_factor` multiplies the fp64/fp32 table (used for
    quantities summed over long rows, and stated where used). `rule_2x` applies the fp16/bf16
    rule to fp32 too (for a result the working precision itself limits, stated where used).
    """
    dtype = dtype or actual.dtype
    assert actual.shape == expected64.shape, f"{name}: shape {actual.shape} != {expected64.shape}"
    a = actual.detach().to("cpu", torch.float64)
    e = expected64.detach().to("cpu", torch.float64)
    _nonfinite_equal(a, e, name)
    fin = torch.isfinite(e)
    a, e = a[fin], e[fin]
    if e.numel() == 0:
        return
    mag = e.abs().max().item()
    s = max(1.0, mag) if scale is None else scale
    err = (a - e).abs()
    if dtype in LOW_PRECISION or rule_2x:
        assert ref_low is not None, "the 2x rule needs the reference run in that dtype"
        r = ref_low.detach().to("cpu", torch.float64)[fin]
        both = torch.isfinite(r)
        assert both.all(), (f"{name}: the {dtype} reference is not finite where the fp64 one is; "
                            "the 2x rule would be vacuous: use smaller inputs")
        err_k, err_r = err.max().item(), (r - e).abs().max().item()
        floor = FLOOR_ULPS * eps(dtype) * max(1.0, mag)
        assert err_k <= 2 * err_r + floor, (
            f"{name}: {dtype} kernel error {err_k:.3g} > 2 x reference-in-{dtype} error "
            f"{err_r:.3g} + floor {floor:.3g}")
        if dtype in LOW_PRECISION:
            tol = TOL[dtype]
            assert err_k <= tol["atol"] * s + tol["rtol"] * mag, (
                f"{name}: {dtype} kernel error {err_k:.3g} above the table ceiling")
        return
    tol = TOL[dtype]
    limit = tol_factor * (tol["atol"] * s + tol["rtol"] * e.abs())
    bad = err > limit
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} of {e.numel()} values outside the {dtype} tolerance; worst "
        f"error {err.max().item():.3g} (limit there {limit[err.argmax()].item():.3g}); "
        f"got {a[bad][:4].tolist()} expected {e[bad][:4].tolist()}")


# ---- running an op and its reference ---------------------------------------------------------
def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def forward_backward(fn: Callable, inputs: Dict[str, object], grad_names: Sequence[str],
                     upstream: Optional[Sequence[torch.Tensor]] = None):
    """Calls fn(**inputs); backpropagates `upstream` (one tensor per output; None: no backward)
    into the inputs named in grad_names, which are made leaves that require grad.

    Returns (outputs detached, {name: grad or None}).
    """
    leaves = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().clone().requires_grad_(k in grad_names)
        leaves[k] = v
    outs = _as_tuple(fn(**leaves))
    grads = {}
    if upstream is not None and grad_names:
        # The same upstream values serve the kernel (on its device) and the reference (on the CPU).
        pairs = [(o, g.to(device=o.device, dtype=o.dtype)) for o, g in zip(outs, upstream)
                 if o.requires_grad]
        gs = torch.autograd.grad([p[0] for p in pairs], [leaves[k] for k in grad_names],
                                 [p[1] for p in pairs], allow_unused=True)
        grads = dict(zip(grad_names, gs))
    return tuple(o.detach() for o in outs), grads


def cast_inputs(inputs: Dict[str, object], dtype: torch.dtype, device="cpu"):
    """Floating tensors rounded to `dtype` on `device`; everything else as is."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            v = v.to(device=device, dtype=dtype)
        out[k] = v
    return out


def upcast(inputs: Dict[str, object]):
    return {k: (v.to(torch.float64) if isinstance(v, torch.Tensor) and v.is_floating_point()
                else v) for k, v in inputs.items()}


def random_upstream(outputs, seed: int = 1234):
    """Upstream gradients, one per output, from a fixed generator; exactly representable in each
    output's dtype (they are rounded there first)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype).cpu().to(o.device)
            for o in outputs]


def compare_with_reference(kernel_fn: Callable, ref_fn: Callable, inputs: Dict[str, object],
                           dtype: torch.dtype, grad_names: Sequence[str] = (), *,
                           device: str = "cpu", names: Optional[Sequence[str]] = None,
                           tol_factor: float = 1.0, grad_tol_factor: float = 1.0,
                           grad_rule_2x: bool = False):
    """Runs kernel_fn on `inputs` rounded to `dtype` and ref_fn on the same values in float64 (and,
    for fp16/bf16, in `dtype`), forward and backward, and checks every output and every gradient.

    `grad_rule_2x` holds fp32 gradients to the 2x rule as well (see assert_matches_reference).
    Returns (kernel outputs, kernel grads) for further checks.
    """
    low = cast_inputs(inputs, dtype, device)
    outs_k, _ = forward_backward(kernel_fn, low, ())
    upstream = random_upstream(outs_k)
    outs_k, grads_k = forward_backward(kernel_fn, low, grad_names, upstream)
    outs_64, grads_64 = forward_backward(ref_fn, upcast(cast_inputs(low, dtype, "cpu")),
                                         grad_names, upstream)
    outs_r = grads_r = None
    if dtype in LOW_PRECISION or (grad_rule_2x and dtype == torch.float32):
        outs_r, grads_r = forward_backward(ref_fn, cast_inputs(low, dtype, "cpu"), grad_names,
                                           upstream)
    names = names or [f"output {i}" for i in range(len(outs_k))]
    assert len(outs_k) == len(outs_64)
    for i, (k, e) in enumerate(zip(outs_k, outs_64)):
        assert k.dtype == dtype, f"{names[i]}: dtype {k.dtype}, expected {dtype}"
        assert k.device.type == device
        assert_matches_reference(k, e, outs_r[i] if outs_r else None, name=names[i],
                                 dtype=dtype, tol_factor=tol_factor)
    for g in grad_names:
        k, e = grads_k[g], grads_64[g]
        assert (k is None) == (e is None), f"grad of {g}: kernel {k is None}, reference {e is None}"
        if k is None:
            continue
        assert k.dtype == low[g].dtype, f"grad of {g} has dtype {k.dtype}"
        assert k.shape == low[g].shape, f"grad of {g} has shape {k.shape}"
        assert_matches_reference(k, e, grads_r[g] if grads_r else None, name=f"grad of {g}",
                                 dtype=dtype, tol_factor=grad_tol_factor,
                                 rule_2x=grad_rule_2x and dtype == torch.float32)
    return outs_k, grads_k


# ---- inputs ----------------------------------------------------------------------------------
def make_logits(shape, seed: int = 0, scale: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)


def make_temperature(shape, seed: int = 1, low: float = 0.3, high: float = 2.0,
                     dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)


def batch_shape(shape, dim: int):
    s = list(shape)
    s.pop(dim % len(s))
    return s


def temperature_variants(bshape, seed: int = 7):
    """The temperatures every op accepts: a Python float, a 0-d tensor, one value per row, and a
    tensor that broadcasts to the batch shape (leading dim kept, the rest 1)."""
    out = {"float": 0.7, "scalar": torch.tensor(0.6, dtype=torch.float64),
           "per_row": make_temperature(bshape, seed)}
    if len(bshape) >= 2:
        out["broadcast"] = make_temperature([bshape[0]] + [1] * (len(bshape) - 1), seed + 1)
    return out


def tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality that treats NaN as equal to NaN."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        ((a == b) | (a.isnan() & b.isnan())).all())


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small-tensor tests (idle OpenMP threads spinning on a
    busy shared machine slow small ops tenfold); use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_default_generator():
    """Restores the default CPU generator's state after a test that seeds it."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)
