"""The 32-bit draw -> noise transforms are finite and in range for every draw.

* Exhaustively at the extremes (the reference transform of docs/ARCHITECTURE.md, "Random numbers", float64, then
  rounded to every working dtype): the 2^20 smallest draws, the 2^20 largest and the 2^21 around
  the half-way point 2^31, where the transforms switch from U to 1 - U.
* By sampling elsewhere: 2^22 draws of the compiled kernels in fp64 / fp32 / fp16 / bf16, every
  value finite and in range, and the draws that fall in the extreme windows equal to the reference
  transform of the same bits within a few ulps.

tests/ops/test_noise.py checks five extreme draws, 2^20 kernel draws in fp32 / fp64 and 2^16 draws
against the reference; csrc/tests/test_headers.cpp the C++ transforms on the same five extremes
and 2 x 10^5 random draws. (An exhaustive pass over all 2^32 draws belongs in that C++ test, where
it takes seconds: see docs/RELIABILITY.md.)
"""

import math

import pytest
import torch

import concrete_ext as ce
from concrete_ext import reference as R

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = ("uniform", "exponential", "gumbel", "logistic")
M32 = 2**32
WINDOW = 2**20
# Bounds from the two extreme draws r = 0 and r = 2^32 - 1, U = (r + 1/2) 2^-32 (exact in float64).
U_MIN = 0.5 * 2.0**-32
E_MAX = -math.log(U_MIN)
BOUNDS = {
    "uniform": (U_MIN, 1 - U_MIN),
    "exponential": (-math.log1p(-U_MIN), E_MAX),
    "gumbel": (-math.log(E_MAX), -math.log(-math.log1p(-U_MIN))),
    "logistic": (-E_MAX, E_MAX),
}
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _in_bounds(v, kind, dtype):
    lo, hi = BOUNDS[kind]
    # rounding to `dtype` may move a bound by half an ulp of it
    slack = torch.finfo(dtype).eps * max(abs(lo), abs(hi), 1.0) if dtype != torch.float64 else 0
    if kind == "uniform":
        return (v > 0) & (v < 1)
    return (v >= lo - slack) & (v <= hi + slack)


@pytest.mark.parametrize("kind", KINDS)
def test_reference_transform_exhaustive_at_the_extremes(kind):
    regions = [
        torch.arange(0, WINDOW),
        torch.arange(2**31 - WINDOW, 2**31 + WINDOW),
        torch.arange(M32 - WINDOW, M32),
    ]
    for bits in regions:
        v = R.noise_from_bits(bits, kind)
        assert torch.isfinite(v).all() and _in_bounds(v, kind, torch.float64).all()
        d = v.diff()  # monotone in the draw; E = -log U decreases
        assert ((d < 0) if kind == "exponential" else (d > 0)).all()
        for dtype in DTYPES[1:]:
            vd = v.to(dtype)
            if kind == "uniform":  # the kernels clamp U into (0, 1) after rounding, as here
                vd = vd.clamp(min=R._above_zero(dtype), max=R._below_one(dtype))
            assert torch.isfinite(vd).all(), dtype
            assert _in_bounds(vd.double(), kind, dtype).all(), dtype
            dd = vd.double().diff()
            assert ((dd <= 0) if kind == "exponential" else (dd >= 0)).all(), dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_noise_finite_in_range_and_exact_at_the_extremes(dtype):
    n, seed = 2**22, 20261130
    bits = ce.noise("bits", (n,), seed=seed)
    extreme = (bits < 2**16) | (bits >= M32 - 2**16) | ((bits - 2**31).abs() < 2**16)
    assert extreme.sum() >= 128  # about 192 expected: the windows are not empty
    eps32 = torch.finfo(torch.float32).eps
    for kind in KINDS:
        v = ce.noise(kind, (n,), dtype=dtype, seed=seed)
        assert v.dtype == dtype and torch.isfinite(v).all(), kind
        assert _in_bounds(v.double(), kind, dtype).all(), kind
        got = v[extreme].double()
        r = R.noise_from_bits(bits[extreme], kind)
        rd = r.to(dtype)
        if kind == "uniform":
            rd = rd.clamp(min=R._above_zero(dtype), max=R._below_one(dtype))
        ulp = (torch.nextafter(rd.abs(), torch.tensor(math.inf, dtype=dtype)) - rd.abs()).double()
        floor = 1.0 if kind in ("gumbel", "logistic") else 0.0
        tol = ulp + (
            4 * eps32 * r.abs().clamp(min=floor)
            if dtype != torch.float64
            else 1e-13 * r.abs().clamp(min=1.0)
        )
        err = (got - r).abs()
        assert (err <= tol).all(), (kind, err.max().item(), bits[extreme][err.argmax()].item())
