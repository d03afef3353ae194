"""Testing utilities: inputs, tolerances and checks against the float64 reference, shared by the
test suite, the GPU check and anyone testing code built on concrete_ext.

Conventions:

* Kernels are compared with ``concrete_ext.reference`` run in float64 on the *same* inputs (the
  inputs are rounded to the tested dtype first, then upcast for the reference) and the same explicit
  ``seed``/``offset``, so both see the same Philox draws.
* fp64 and fp32 results must lie within the tolerance table ``TOL`` (fp64: 1e-12; fp32: about
  30 ulps relative plus 8 ulps of the magnitude, which leaves room for sums over a row). fp16 / bf16
  results follow the 2x rule: the kernel's largest error against the fp64 reference is at most
  twice the largest error of the reference itself run in that dtype, plus a floor of
  ``FLOOR_ULPS`` ulps of the result's magnitude.
* Non-finite results (masked categories give exactly 0 / -inf, rows of all -inf logits give NaN)
  must match the reference exactly, element by element.
* ``example_args`` builds valid arguments for any op of the op layer (forward or backward), from
  the op's table row, for tests that sweep every op.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from concrete_ext import reference

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LOW_PRECISION = (torch.float16, torch.bfloat16)
INF = float("inf")

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


# ---- checks ------------------------------------------------------------------------------------
def _nonfinite_equal(a: Tensor, e: Tensor, name: str):
    fa, fe = torch.isfinite(a), torch.isfinite(e)
    bad = fa != fe
    assert not bad.any(), (
        f"{name}: finite pattern differs at {bad.nonzero()[:5].tolist()}: "
        f"got {a[bad][:5].tolist()}, reference {e[bad][:5].tolist()}"
    )
    same = (a[~fa] == e[~fe]) | (a[~fa].isnan() & e[~fe].isnan())
    assert same.all(), (
        f"{name}: non-finite values differ: {a[~fa][~same][:5].tolist()} vs "
        f"{e[~fe][~same][:5].tolist()}"
    )


def assert_matches_reference(
    actual: Tensor,
    expected64: Tensor,
    ref_low: Optional[Tensor] = None,
    *,
    name: str = "result",
    dtype: Optional[torch.dtype] = None,
    scale: Optional[float] = None,
    tol_factor: float = 1.0,
    rule_2x: bool = False,
    tol: Optional[dict] = None,
):
    """Checks a kernel result against the fp64 reference (see the module docstring).

    `dtype` is the precision the result is held to (default: actual.dtype); `ref_low` is the
    reference run in that dtype, needed for fp16/bf16. `scale` overrides the magnitude that scales
    atol (default max(1, max |expected|)); `tol_factor` multiplies the fp64/fp32 table (used for
    quantities summed over long rows, and stated where used); `tol` replaces the table's entry.
    `rule_2x` applies the fp16/bf16 rule to fp32 too (for a result the working precision itself
    limits, stated where used).
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
        assert both.all(), (
            f"{name}: the {dtype} reference is not finite where the fp64 one is; "
            "the 2x rule would be vacuous: use smaller inputs"
        )
        err_k, err_r = err.max().item(), (r - e).abs().max().item()
        floor = FLOOR_ULPS * eps(dtype) * max(1.0, mag)
        assert err_k <= 2 * err_r + floor, (
            f"{name}: {dtype} kernel error {err_k:.3g} > 2 x reference-in-{dtype} error "
            f"{err_r:.3g} + floor {floor:.3g}"
        )
        if dtype in LOW_PRECISION:
            t = TOL[dtype]
            assert err_k <= t["atol"] * s + t["rtol"] * mag, (
                f"{name}: {dtype} kernel error {err_k:.3g} above the table ceiling"
            )
        return
    t = tol or TOL[dtype]
    limit = tol_factor * (t["atol"] * s + t["rtol"] * e.abs())
    bad = err > limit
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} of {e.numel()} values outside the {dtype} tolerance; worst "
        f"error {err.max().item():.3g} (limit there {limit[err.argmax()].item():.3g}); "
        f"got {a[bad][:4].tolist()} expected {e[bad][:4].tolist()}"
    )


def tensors_equal(a: Tensor, b: Tensor) -> bool:
    """Bitwise equality that treats NaN as equal to NaN."""
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and bool(((a == b) | (a.isnan() & b.isnan())).all())
    )


# ---- running an op and its reference -----------------------------------------------------------
def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def forward_backward(
    fn: Callable,
    inputs: Dict[str, object],
    grad_names: Sequence[str],
    upstream: Optional[Sequence[Tensor]] = None,
):
    """Calls fn(**inputs); backpropagates `upstream` (one tensor per output; None: no backward)
    into the inputs named in grad_names, which are made leaves that require grad.

    Returns (outputs detached, {name: grad or None}).
    """
    leaves = {}
    for k, v in inputs.items():
        if isinstance(v, Tensor):
            v = v.detach().clone().requires_grad_(k in grad_names)
        leaves[k] = v
    outs = _as_tuple(fn(**leaves))
    grads = {}
    if upstream is not None and grad_names:
        # The same upstream values serve the kernel (on its device) and the reference (on the CPU).
        pairs = [
            (o, g.to(device=o.device, dtype=o.dtype))
            for o, g in zip(outs, upstream)
            if o.requires_grad
        ]
        gs = torch.autograd.grad(
            [p[0] for p in pairs],
            [leaves[k] for k in grad_names],
            [p[1] for p in pairs],
            allow_unused=True,
        )
        grads = dict(zip(grad_names, gs))
    return tuple(o.detach() for o in outs), grads


def cast_inputs(
    inputs: Dict[str, object],
    dtype: torch.dtype,
    device="cpu",
    keep_scalar_temperature: bool = False,
):
    """Floating tensors rounded to `dtype` on `device`; everything else as is. With
    `keep_scalar_temperature`, a 0-d temperature stays a CPU float64 scalar, as the functional API
    passes Python floats."""
    out = {}
    for k, v in inputs.items():
        if (
            isinstance(v, Tensor)
            and v.is_floating_point()
            and not (keep_scalar_temperature and k.endswith("temperature") and v.dim() == 0)
        ):
            v = v.to(device=device, dtype=dtype)
        out[k] = v
    return out


def upcast(inputs: Dict[str, object]):
    return {
        k: (v.to(torch.float64) if isinstance(v, Tensor) and v.is_floating_point() else v)
        for k, v in inputs.items()
    }


def random_upstream(outputs, seed: int = 1234):
    """Upstream gradients, one per output, from a fixed generator; exactly representable in each
    output's dtype (they are rounded there first)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype).cpu().to(o.device)
        for o in outputs
    ]


def compare_with_reference(
    kernel_fn: Callable,
    ref_fn: Callable,
    inputs: Dict[str, object],
    dtype: torch.dtype,
    grad_names: Sequence[str] = (),
    *,
    device: str = "cpu",
    names: Optional[Sequence[str]] = None,
    tol_factor: float = 1.0,
    grad_tol_factor: float = 1.0,
    grad_rule_2x: bool = False,
    tol: Optional[dict] = None,
    keep_scalar_temperature: bool = False,
):
    """Runs kernel_fn on `inputs` rounded to `dtype` and ref_fn on the same values in float64 (and,
    for fp16/bf16, in `dtype`), forward and backward, and checks every output and every gradient.

    `grad_rule_2x` holds fp32 gradients to the 2x rule as well (see assert_matches_reference).
    Returns (kernel outputs, kernel grads) for further checks.
    """
    low = cast_inputs(inputs, dtype, device, keep_scalar_temperature)
    outs_k, _ = forward_backward(kernel_fn, low, ())
    upstream = random_upstream(outs_k)
    outs_k, grads_k = forward_backward(kernel_fn, low, grad_names, upstream)
    on_cpu = {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in low.items()}
    with reference.noise_as(dtype):  # the float64 reference draws the noise of a `dtype` call
        outs_64, grads_64 = forward_backward(ref_fn, upcast(on_cpu), grad_names, upstream)
    outs_r = grads_r = None
    if dtype in LOW_PRECISION or (grad_rule_2x and dtype == torch.float32):
        outs_r, grads_r = forward_backward(ref_fn, on_cpu, grad_names, upstream)
    names = names or [f"output {i}" for i in range(len(outs_k))]
    assert len(outs_k) == len(outs_64)
    for i, (k, e) in enumerate(zip(outs_k, outs_64)):
        assert k.dtype == dtype, f"{names[i]}: dtype {k.dtype}, expected {dtype}"
        assert k.device.type == torch.device(device).type
        assert_matches_reference(
            k,
            e,
            outs_r[i] if outs_r else None,
            name=names[i],
            dtype=dtype,
            tol_factor=tol_factor,
            tol=tol,
        )
    for g in grad_names:
        k, e = grads_k[g], grads_64[g]
        assert (k is None) == (e is None), f"grad of {g}: kernel {k is None}, reference {e is None}"
        if k is None:
            continue
        assert k.dtype == low[g].dtype, f"grad of {g} has dtype {k.dtype}"
        assert k.shape == low[g].shape, f"grad of {g} has shape {k.shape}"
        assert_matches_reference(
            k,
            e,
            grads_r[g] if grads_r else None,
            name=f"grad of {g}",
            dtype=dtype,
            tol_factor=grad_tol_factor,
            rule_2x=grad_rule_2x and dtype == torch.float32,
            tol=tol,
        )
    return outs_k, grads_k


# ---- inputs ----------------------------------------------------------------------------------
def make_logits(
    shape,
    seed: int = 0,
    scale: float = 1.5,
    dtype=torch.float64,
    device="cpu",
    masked: bool = False,
) -> Tensor:
    """N(0, scale^2) logits; with `masked`, about one in five set to -inf, never a whole row."""
    gen = torch.Generator().manual_seed(seed)
    a = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
    if masked and shape[-1] > 1:
        drop = torch.rand(shape, generator=gen) < 0.2
        drop[..., 0] = False
        a = a.masked_fill(drop, -INF)
    return a.to(device=device, dtype=dtype)


def make_temperature(
    shape, seed: int = 1, low: float = 0.3, high: float = 2.0, dtype=torch.float64, device="cpu"
) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)).to(
        device=device, dtype=dtype
    )


def batch_shape(shape, dim: int):
    s = list(shape)
    s.pop(dim % len(s))
    return s


def temperature_variants(bshape, seed: int = 7):
    """The temperatures every op accepts: a Python float, a 0-d tensor, one value per row, and a
    tensor that broadcasts to the batch shape (leading dim kept, the rest 1)."""
    out = {
        "float": 0.7,
        "scalar": torch.tensor(0.6, dtype=torch.float64),
        "per_row": make_temperature(bshape, seed),
    }
    if len(bshape) >= 2:
        out["broadcast"] = make_temperature([bshape[0]] + [1] * (len(bshape) - 1), seed + 1)
    return out


def example_args(
    sig,
    *,
    dtype=torch.float64,
    dim: int = -1,
    shape=(3, 4, 6),
    seed: int = 0,
    offset: int = 0,
    device="cpu",
    masked: bool = True,
) -> tuple:
    """Valid arguments, in schema order, for the op of signature `sig` (``_ops.SIGNATURES``):
    logits with one masked category (`masked`), a per-row (row ops) or per-last-dim (elementwise
    ops) temperature, values that are samples of the op's family, the explicit (seed, offset); for
    a backward op, the outputs of its forward on those inputs and random upstream gradients, with
    every gradient asked for."""
    from . import _ops

    row = sig.row
    gen = torch.Generator().manual_seed(seed + 1)
    a = make_logits(shape, seed, dtype=torch.float64)
    d = dim % len(shape)
    if masked:
        a.select(d, 1).select(0, 0).fill_(-INF)
    a = a.to(device=device, dtype=dtype)
    elementwise = row.kind == "elementwise"
    tshape = list(shape[-1:]) if elementwise else batch_shape(shape, d)
    t = make_temperature(tshape, seed + 2, dtype=dtype, device=device)
    base: Dict[str, object] = {
        "logits": a,
        "q_logits": a,
        "temperature": t,
        "q_temperature": t,
        "p_logits": (0.5 * a.double()).to(dtype),
        "dim": dim,
        "p_temperature": (0.7 * t.double()).to(dtype),
        "kind": "gumbel",
        "self": a,
        "seed": seed,
        "offset": offset,
        "generator": None,
    }
    if "value" in row.args:  # a point of the op's support
        if row.name == "exp_concrete_log_prob":
            v = _ops.op("exp_concrete_sample")(a, t, dim, seed, 0, None)
        elif row.name == "concrete_log_prob":
            v = _ops.op("concrete_sample")(a, t, dim, seed, 0, None)
        elif row.name == "logit_binary_concrete_log_prob":
            v = _ops.op("logit_binary_concrete_sample")(a.nan_to_num(neginf=-3.0), t, seed, 0, None)
        else:
            v = _ops.op("binary_concrete_sample")(a.nan_to_num(neginf=-3.0), t, seed, 0, None)
            v = v.clamp(1e-3, 1 - 1e-3)
        base["value"] = v
        if elementwise:
            base["logits"] = a.nan_to_num(neginf=-3.0)
    if elementwise and "sample" in row.name:
        base["logits"] = a.nan_to_num(neginf=-3.0)
    if row.name == "noise_from_state":
        base["rng_state"] = torch.tensor([seed, offset], dtype=torch.int64, device=device)
    fwd = _ops.SIGNATURES[(_ops.NAMESPACE, row.name)]
    fwd_args = tuple(base[n] for n in fwd.names)
    if not sig.backward:
        return fwd_args if sig.namespace != _ops.TRITON_NAMESPACE else _triton_args(sig, fwd_args)
    outs = fwd.op(*fwd_args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    values: List[object] = []
    for name in sig.names:
        bind = row.backward.bind.get(name)
        if bind is None:
            values.append(base[name])
        elif bind.startswith(("grad?", "grad")):
            o = outs[int(bind.lstrip("grad?"))]
            values.append(
                torch.randn(o.shape, generator=gen, dtype=torch.float64).to(
                    device=device, dtype=o.dtype
                )
            )
        elif bind.startswith("out"):
            values.append(outs[int(bind[3:])])
        elif bind.startswith("needs:"):
            values.append(True)
        else:
            values.append([True] * len(row.grads))
    return tuple(values)


# ---- inputs broadcast over sample dims (stride 0), as rsample((S,)) passes its parameters ----------
STRIDE0_MODES = ("lead", "lead2", "middle", "mixed")


def stride0_args(args: tuple, mode: str, samples: int = 3) -> tuple:
    """`args` with every tensor of 2 or more dims broadcast over new sample dims without a copy
    (stride 0): "lead" one leading dim of `samples`; "lead2" two leading dims (2, samples);
    "middle" a new dim 1 (a stride-0 dim that is not leading: the kernels copy it); "mixed" as
    "lead" but the first argument (the value or upstream gradient of densities and backward ops,
    the logits of samples) copied out to its full size, so that only the others are broadcast.
    Tensors of fewer dims (a per-category temperature, rng_state) are left as they are: they
    broadcast already. Compare with `contiguous_args` of the result."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.dim() >= 2:
            if mode in ("lead", "mixed"):
                a = a.expand(samples, *a.shape)
            elif mode == "lead2":
                a = a.expand(2, samples, *a.shape)
            elif mode == "middle":
                a = a.unsqueeze(1).expand(a.shape[0], samples, *a.shape[1:])
            else:
                raise ValueError(mode)
            if mode == "mixed" and i == 0:
                a = a.contiguous()
        out.append(a)
    return tuple(out)


def contiguous_args(args: tuple) -> tuple:
    """`args` with every tensor copied out contiguous (the same values)."""
    return tuple(a.contiguous() if isinstance(a, Tensor) else a for a in args)


def assert_bit_equal(x, y) -> None:
    """x and y (tensors, or tuples of them) are the same bit for bit: shape, dtype, strides, and
    every value (NaN where the other has NaN)."""
    if isinstance(x, (tuple, list)):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            assert_bit_equal(u, v)
        return
    assert (x.shape, x.dtype, x.stride()) == (y.shape, y.dtype, y.stride())
    if x.is_floating_point():
        xi, yi = x.detach().cpu(), y.detach().cpu()
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[xi.element_size()]
        assert torch.equal(xi.contiguous().view(bits), yi.contiguous().view(bits))
    else:
        assert torch.equal(x, y)


def _triton_args(sig, fwd_args: tuple) -> tuple:
    """Forward arguments in the Triton namespace's form: (seed, offset, generator) -> rng_state."""
    if not sig.random:
        return fwd_args
    *head, seed, offset, _ = fwd_args
    like = next(a for a in head if isinstance(a, Tensor))
    return (*head, torch.tensor([seed, offset], dtype=torch.int64, device=like.device))


# ---- the Triton tests' variants: looser float tolerances (the interpreter's and Triton's math) ----
TRITON_TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-11),
    torch.float32: dict(rtol=2e-5, atol=4e-6),
}
# Launch configuration that sends every row longer than 4 categories through the looped Triton
# kernels (one row per program, chunks of 16), so that small test sizes cover the large-n path.
LOOPED = dict(max_tile_n=4, chunk=16)
ROW_NS = (1, 2, 3, 4, 7, 20, 33, 129)


def compare(
    kernel: Callable,
    reference: Callable,
    inputs: Dict[str, object],
    dtype,
    device,
    grad_names: Sequence[str] = (),
    factor: float = 1.0,
    grad_factor: float = 1.0,
):
    """compare_with_reference with the Triton tolerances, a 0-d temperature kept a CPU scalar."""
    return compare_with_reference(
        kernel,
        reference,
        inputs,
        dtype,
        grad_names,
        device=device,
        tol=TRITON_TOL.get(dtype),
        tol_factor=factor,
        grad_tol_factor=grad_factor,
        keep_scalar_temperature=True,
    )


def assert_low_precision(actual: Tensor, expected64: Tensor, ref_low: Tensor, name: str = "result"):
    """The fp16 / bf16 2x rule (module docstring) on its own."""
    assert_matches_reference(actual, expected64, ref_low, name=name)


# ---- pytest helpers (pytest is imported only when one of these is used) ------------------------
CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


def use_backend(device_backend):
    """Context manager running the ops in the block on the requested (device, backend)."""
    import concrete_ext as ce

    return ce.backend(device_backend[1])


def backend_params(op_name: str, python: bool = False):
    """(device, backend) pairs an op test runs on: the compiled CPU kernels always; the compiled
    CUDA kernels and Triton on a GPU; Triton on the CPU through TRITON_INTERPRET=1; with `python`,
    the Python kernels too. Pairs that cannot serve `op_name` here are skipped with the backend's
    own reasons."""
    import pytest

    from . import _backend

    pairs = [
        ("cpu", "cpu", ()),
        ("cuda", "cuda", (pytest.mark.cuda,)),
        ("cuda", "triton", (pytest.mark.cuda, pytest.mark.triton)),
        ("cpu", "triton", (pytest.mark.triton,)),
    ]
    if python:
        pairs.append(("cpu", "python", ()))
    out = []
    for device, name, marks in pairs:
        if device == "cuda" and not CUDA:
            reasons = ["no CUDA device is visible"]
        else:
            reasons = _backend.not_supported_reasons(name, torch.device(device), op_name)
        skip = (pytest.mark.skip(reason="; ".join(reasons)),) if reasons else ()
        out.append(pytest.param((device, name), id=f"{device}-{name}", marks=marks + skip))
    return out


def __getattr__(name: str):
    if name == "INTERPRET":  # Triton kernels defined for the interpreter (read when asked)
        import os

        return os.environ.get("TRITON_INTERPRET") == "1"
    if name == "requires_cuda":  # a pytest mark, built on first use
        import pytest

        return pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
    raise AttributeError(name)
