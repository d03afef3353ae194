"""Triton kernel of the noise op: the raw Philox draws or the uniform / exponential / Gumbel /
logistic noise of the random-number contract (common.py, philox.h), shaped like a tensor."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm

KINDS = {"bits": 0, "uniform": 1, "exponential": 2, "gumbel": 3, "logistic": 4}
# 1 - (largest value below 1) of the fp16 and bf16 outputs: uniform draws that round up to 1 there
# are clamped below 1, as the CPU kernel does.
_GAP = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


@triton.jit
def _noise_kernel(
    out_ptr,
    state_ptr,
    numel,
    below_one,
    KIND: tl.constexpr,
    FP64: tl.constexpr,
    CLAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out[i] = f(r_i) for the flat index i, r_i the Philox draw of element i (32-bit; 64-bit for
    fp64 variates):
    KIND 0: r_i (as int64); 1: U; 2: E = -log U; 3: G = -log E; 4: L = log U - log(1 - U)
    (transforms of common.py in fp32, or fp64 for fp64 outputs). CLAMP: fp16/bf16 uniform outputs
    that round to 1 become `below_one`. One program: BLOCK (a multiple of 4) consecutive elements,
    one Philox call per four (per two for 64-bit draws)."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    idx = start + tl.arange(0, BLOCK)
    mask = idx < numel
    seed, lo, hi = cm.load_state(state_ptr)
    if KIND == 0:
        r = cm.draws_run(seed, lo, hi, start, BLOCK, False)
        tl.store(out_ptr + idx, r.to(tl.int64), mask=mask)
    else:
        r = cm.draws_run(seed, lo, hi, start, BLOCK, FP64)
        if KIND == 1:
            v = cm.uniform_from_bits(r, FP64)
        elif KIND == 2:
            v = cm.exponential_from_bits(r, FP64)
        elif KIND == 3:
            v = cm.gumbel_from_bits(r, FP64)
        else:
            v = cm.logistic_from_bits(r, FP64)
        out = v.to(out_ptr.dtype.element_ty)
        if CLAMP:
            out = tl.where(out.to(tl.float32) < below_one, out.to(tl.float32), below_one)
            out = out.to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + idx, out, mask=mask)


def _kind(kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(
            f"noise kind must be one of 'bits', 'uniform', 'exponential', 'gumbel', "
            f"'logistic', got '{kind}'"
        )
    return KINDS[kind]


def noise_like_op(self: Tensor, kind: str, rng_state: Tensor) -> Tensor:
    """Noise shaped like `self` (its values are not read) for the call rng_state = [seed, offset]:
    int64 draws for kind "bits", else noise in self's dtype."""
    k = _kind(kind)
    if k != 0:
        cm.check_floating(self, "self")
    out = torch.empty(self.shape, dtype=torch.int64 if k == 0 else self.dtype, device=self.device)
    numel = out.numel()
    if numel == 0:
        return out
    grid, block, warps = cm.elem_launch(numel)
    clamp = k == 1 and self.dtype in _GAP
    cm.launch(_noise_kernel)[grid](
        out,
        rng_state,
        numel,
        1.0 - _GAP.get(self.dtype, 0.0),
        KIND=k,
        FP64=self.dtype == torch.float64,
        CLAMP=clamp,
        BLOCK=block,
        num_warps=warps,
    )
    return out


# The host functions, by op name, with the signature of torch.ops.concrete_ext_triton.<name>.
HOST = {
    "noise_like": noise_like_op,
}
