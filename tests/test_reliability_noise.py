"""The draw -> noise transforms (32-bit draws; 64-bit for fp64 ops) are finite and in range for
every draw.

* Exhaustively at the extremes (the reference transform of docs/ARCHITECTURE.md, "Random numbers", float64, then
  rounded to every working dtype): the 2^20 smallest draws, the 2^20 largest and the 2^21 around
  the half-way point 2^31, where the transforms switch from U to 1 - U; the same windows of the
  64-bit draws of fp64 ops (around 0, 2^63 and 2^64).
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


def _bounds(u_min):
    """Bounds of the noise from the two extreme draws r = 0 and r = 2^w - 1, U = (r + 1/2) 2^-w
    (exact in float64)."""
    e_max = -math.log(u_min)
    return {
        "uniform": (u_min, 1 - u_min),
        "exponential": (-math.log1p(-u_min), e_max),
        "gumbel": (-math.log(e_max), -math.log(-math.log1p(-u_min))),
        "logistic": (-e_max, e_max),
    }


BOUNDS = {32: _bounds(0.5 * 2.0**-32), 64: _bounds(0.5 * 2.0**-64)}
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _in_bounds(v, kind, dtype, width=32):
    lo, hi = BOUNDS[width][kind]
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


@pytest.mark.parametrize("kind", KINDS)
def test_reference_64_bit_transform_exhaustive_at_the_extremes(kind):
    # The 64-bit draws of fp64 ops (int64 two's complement of the unsigned draw), in unsigned
    # order: the smallest, both sides of 2^63 and the largest. Neighbouring draws above 2^53 round
    # to the same float64, so the noise is non-decreasing (non-increasing for E), not strictly.
    h = 2**63
    regions = [
        torch.arange(0, WINDOW),
        torch.cat([torch.arange(-WINDOW, 0) + (h - 1) + 1, torch.arange(-h, -h + WINDOW)]),
        torch.arange(-WINDOW, 0),
    ]
    for draws in regions:
        v = R.noise_from_bits(draws, kind, 64)
        if kind == "uniform":  # 1 - V rounds to 1 for the top 2^10 draws: the kernels clamp
            v = v.clamp(max=R._below_one(torch.float64))
        assert torch.isfinite(v).all() and _in_bounds(v, kind, torch.float64, 64).all()
        d = v.diff()
        assert ((d <= 0) if kind == "exponential" else (d >= 0)).all()
    # The ends reach 2^-65: 32 more bits of tail than the 32-bit draws' 2^-33.
    ends = torch.tensor([0, -1])
    u = R.noise_from_bits(ends, "uniform", 64)
    assert u[0].item() == 2.0**-65 and u[1].item() == 1.0  # rounds to 1: the kernels clamp
    e = R.noise_from_bits(ends, "exponential", 64)
    assert e[0].item() == pytest.approx(65 * math.log(2)) and e[1].item() == 2.0**-65


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_noise_finite_in_range_and_exact_at_the_extremes(dtype):
    n, seed = 2**22, 20261130
    width = R.draw_bits_of(dtype)
    if width == 64:  # fp64: the 64-bit draws, windows on their high word
        draws = R.philox_draws64(n, seed)
        high = (draws >> 32) & (M32 - 1)
    else:
        draws = high = ce.noise("bits", (n,), seed=seed)
    extreme = (high < 2**16) | (high >= M32 - 2**16) | ((high - 2**31).abs() < 2**16)
    assert extreme.sum() >= 128  # about 192 expected: the windows are not empty
    eps32 = torch.finfo(torch.float32).eps
    for kind in KINDS:
        v = ce.noise(kind, (n,), dtype=dtype, seed=seed)
        assert v.dtype == dtype and torch.isfinite(v).all(), kind
        assert _in_bounds(v.double(), kind, dtype, width).all(), kind
        got = v[extreme].double()
        r = R.noise_from_bits(draws[extreme], kind, width)
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
        assert (err <= tol).all(), (kind, err.max().item(), draws[extreme][err.argmax()].item())
