"""Helpers of the Triton tests: inputs, tolerances, and running an op forward and backward."""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

import torch

INF = float("inf")
# Set by conftest.py (before triton is imported) when no GPU is visible.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# (rtol, atol) against the float64 reference; atol scales with max(1, max |expected|).
TOL = {torch.float64: (1e-10, 1e-11), torch.float32: (2e-5, 4e-6)}
# Launch configuration that sends every row longer than 4 categories through the looped kernels
# (one row per program, chunks of 16), so that small test sizes cover the large-n path.
LOOPED = dict(max_tile_n=4, chunk=16)
ROW_NS = (1, 2, 3, 4, 7, 20, 33, 129)


def make_logits(shape, seed: int = 0, masked: bool = True, dtype=torch.float64,
                device="cpu") -> torch.Tensor:
    """N(0, 1.5^2) logits; with `masked`, about one in five set to -inf, but never a whole row."""
    gen = torch.Generator().manual_seed(seed)
    a = 1.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
    if masked and shape[-1] > 1:
        drop = torch.rand(shape, generator=gen) < 0.2
        drop[..., 0] = False
        a = a.masked_fill(drop, -INF)
    return a.to(device=device, dtype=dtype)


def make_temperature(shape, seed: int = 1, dtype=torch.float64, device="cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (0.3 + 1.7 * torch.rand(shape, generator=gen, dtype=torch.float64)).to(device=device,
                                                                                   dtype=dtype)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype,
                 name: str = "result", factor: float = 1.0):
    """actual (any device) against the float64 `expected`: the same non-finite values (NaN, +-inf)
    at the same places, the finite ones within TOL[dtype] (times `factor`)."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    fa, fe = torch.isfinite(a), torch.isfinite(e)
    assert torch.equal(fa, fe), f"{name}: finite pattern differs: {a[fa != fe][:5]} vs {e[fa != fe][:5]}"
    same = (a[~fa] == e[~fe]) | (a[~fa].isnan() & e[~fe].isnan())
    assert same.all(), f"{name}: non-finite values differ"
    a, e = a[fe], e[fe]
    if e.numel() == 0:
        return
    rtol, atol = TOL[dtype]
    scale = max(1.0, e.abs().max().item())
    err = (a - e).abs()
    limit = factor * (atol * scale + rtol * e.abs())
    bad = err > limit
    assert not bad.any(), (f"{name}: {int(bad.sum())}/{e.numel()} values off, worst error "
                           f"{err.max().item():.3g}; got {a[bad][:4].tolist()}, expected "
                           f"{e[bad][:4].tolist()}")


def run(fn: Callable, inputs: Dict[str, object], grad_names: Sequence[str] = (),
        upstream: Optional[Callable] = None):
    """fn(**inputs) and, with `upstream` (outputs -> one float64 tensor per output), the gradients
    of the inputs named in grad_names. Returns (outputs, {name: grad}, upstream used)."""
    leaves = {k: (v.detach().clone().requires_grad_(k in grad_names)
                  if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    out = fn(**leaves)
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    grads = {}
    upstream = upstream(outs) if upstream is not None else None
    if upstream is not None and grad_names:
        pairs = [(o, g.to(device=o.device, dtype=o.dtype)) for o, g in zip(outs, upstream)
                 if o.requires_grad]
        gs = torch.autograd.grad([p[0] for p in pairs], [leaves[k] for k in grad_names],
                                 [p[1] for p in pairs], allow_unused=True)
        grads = dict(zip(grad_names, gs))
    return tuple(o.detach() for o in outs), grads, upstream


def upstream_for(outputs, seed: int = 1234):
    """Upstream gradients, one per output, exactly representable in each output's dtype."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype).to(torch.float64)
            for o in outputs]


def cast(inputs: Dict[str, object], dtype: torch.dtype, device) -> Dict[str, object]:
    """Floating tensors rounded to `dtype` on `device` (a CPU scalar temperature stays a CPU
    float64 scalar, as the functional API passes Python floats)."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not (
                k.endswith("temperature") and v.dim() == 0):
            v = v.to(device=device, dtype=dtype)
        out[k] = v
    return out


def compare(kernel: Callable, reference: Callable, inputs: Dict[str, object], dtype, device,
            grad_names: Sequence[str] = (), factor: float = 1.0, grad_factor: float = 1.0):
    """Runs `kernel` on the inputs rounded to `dtype` on `device`, and `reference` on the same
    values in float64 on the CPU, with the same upstream gradients; checks outputs and gradients.
    Returns the kernel's (outputs, grads)."""
    low = cast(inputs, dtype, device)
    outs, grads, up = run(kernel, low, grad_names, upstream_for)
    ref_in = cast({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in low.items()},
                  torch.float64, "cpu")
    routs, rgrads, _ = run(reference, ref_in, grad_names, lambda outs: up)
    assert len(outs) == len(routs)
    for i, (o, r) in enumerate(zip(outs, routs)):
        assert o.dtype == dtype and o.device.type == torch.device(device).type, (o.dtype, o.device)
        assert_close(o, r, dtype, f"output {i}", factor)
    for k in grad_names:
        g, r = grads[k], rgrads[k]
        assert (g is None) == (r is None), f"grad of {k}: {g is None} vs reference {r is None}"
        if g is not None:
            assert g.shape == low[k].shape and g.dtype == low[k].dtype, (k, g.shape, g.dtype)
            assert_close(g, r, dtype, f"grad of {k}", grad_factor)
    return outs, grads


def assert_low_precision(actual: torch.Tensor, expected64: torch.Tensor, ref_low: torch.Tensor,
                         name: str = "result"):
    """fp16 / bf16 rule of DESIGN.md section 5: the kernel's largest error against the float64
    reference is at most twice that of the reference run in the low precision, plus 2 ulps of
    max(1, max |expected|); non-finite entries must match exactly."""
    a = actual.detach().to("cpu", torch.float64)
    e = expected64.detach().to("cpu", torch.float64)
    r = ref_low.detach().to("cpu", torch.float64)
    fe = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), fe), f"{name}: finite pattern differs"
    assert bool(((a[~fe] == e[~fe]) | (a[~fe].isnan() & e[~fe].isnan())).all()), name
    if not fe.any():
        return
    mag = max(1.0, e[fe].abs().max().item())
    err_k = (a[fe] - e[fe]).abs().max().item()
    err_r = (r[fe] - e[fe]).abs().max().item()
    floor = 2 * torch.finfo(actual.dtype).eps * mag
    assert err_k <= 2 * err_r + floor, f"{name}: error {err_k:.3g} > 2 x {err_r:.3g} + {floor:.3g}"
