"""The random-number contract (docs/ARCHITECTURE.md, "Random numbers"): Philox4x32-10 known answers, the kernels' raw
32-bit draws equal to the reference's bit for bit, the uniform / exponential / Gumbel / logistic
transforms within a few ulps of the reference, their values at the extreme draws, and seeding
through torch generators."""

import pytest
import torch

import concrete_ext as ce
from concrete_ext import reference as R
from concrete_ext.testing import (
    DEVICES,
    LOW_PRECISION,
    backend_params,
    requires_cuda,
    use_backend,
)

KINDS = ("uniform", "exponential", "gumbel", "logistic")
M32 = 2**32

# Random123 known-answer vectors: counter words 0-3, key words 0-1 -> output words 0-3.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

# (seed, offset) pairs covering 0, the top of the 64-bit range (given as a Python int above
# 2**63 and as the same value as a negative int64) and offsets with a non-zero high word.
SEEDS = [
    (0, 0),
    (1, 0),
    (123456789, 17),
    (2**64 - 1, 2**40 + 3),
    (-1, 5),
    (2**63, 2**62),
    (0x299F31D0A4093822, 0x85A308D3),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_reference_philox_known_answers(counter, key, expected):
    c = [torch.tensor([w], dtype=torch.int64) for w in counter]
    out = R.philox4x32_10(*c, *key)
    assert [int(w.item()) for w in out] == list(expected)


def test_kernel_bits_known_answer():
    # counter (offset lo, offset hi, group lo, group hi) = 0, key = (seed lo, seed hi) = 0:
    # elements 0..3 of the call (seed 0, offset 0) are the first known-answer vector.
    bits = ce.noise("bits", (4,), seed=0, offset=0)
    assert bits.dtype == torch.int64
    assert bits.tolist() == list(KAT[0][2])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed,offset", SEEDS)
@pytest.mark.parametrize("shape", [(1,), (3,), (5,), (4097,), (3, 7, 5), (2048 * 3 + 3,)])
def test_bits_equal_reference(device, seed, offset, shape):
    k = ce.noise("bits", shape, seed=seed, offset=offset, device=device)
    r = R.noise(shape, "bits", seed, offset)
    assert k.dtype == torch.int64 and k.shape == torch.Size(shape) and k.device.type == device
    k = k.cpu()
    assert torch.equal(k, r)
    assert int(k.min()) >= 0 and int(k.max()) < M32


def test_bits_negative_seed_is_the_same_64_bit_seed():
    a = ce.noise("bits", (64,), seed=-1, offset=3)
    b = ce.noise("bits", (64,), seed=2**64 - 1, offset=3)
    assert torch.equal(a, b)


def test_bits_layout_is_the_row_major_index():
    # Element i of any shape is draw i of the call: shape does not change the stream.
    flat = ce.noise("bits", (6 * 7,), seed=99, offset=4)
    assert torch.equal(ce.noise("bits", (6, 7), seed=99, offset=4).flatten(), flat)
    # Each element takes word i % 4 of group i // 4.
    c = torch.tensor([4]), torch.tensor([0]), torch.tensor([2]), torch.tensor([0])
    words = R.philox4x32_10(*c, 99, 0)
    assert flat[8:12].tolist() == [int(w) for w in words]


def _ulp_error(k: torch.Tensor, r: torch.Tensor, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """|k - r| in ulps of dtype at |r| (Gumbel and logistic noise cross 0, where only absolute
    precision is meaningful: their ulps are taken at max(|r|, 1))."""
    floor = 1.0 if kind in ("gumbel", "logistic") else 0.0
    return (k.double() - r).abs() / (r.abs().clamp(min=floor) * torch.finfo(dtype).eps)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_within_few_ulps_of_reference(kind, dtype):
    n = 1 << 17
    for seed, offset in [(7, 3), (2**64 - 5, 2**33)]:
        k = ce.noise(kind, (n,), dtype=dtype, seed=seed, offset=offset)
        assert k.dtype == dtype
        r = R.noise((n,), kind, seed, offset, torch.float64, draw_bits=R.draw_bits_of(dtype))
        err = _ulp_error(k, r, kind, dtype)
        assert err.max().item() <= 4.0, f"{kind} {dtype}: {err.max().item():.2f} ulps"


@pytest.mark.parametrize("device_backend", backend_params("noise_like", python=True))
def test_fp64_noise_takes_64_bit_draws(device_backend):
    # 32-bit draws put every U on the grid (r + 1/2) 2^-32 (in the upper half too: 1 - (k + 1/2)
    # 2^-32); fp64 ops draw 64 bits, so their U are off that grid, except about one in 2^21.
    n = 4096
    with use_backend(device_backend):
        u = ce.noise("uniform", (n,), dtype=torch.float64, device=device_backend[0], seed=99)
    u = u.cpu()
    assert torch.equal(u, R.noise((n,), "uniform", 99, 0, torch.float64))  # the 64-bit layout
    on_grid = lambda v: (v * 2**32 - 0.5) % 1 == 0  # noqa: E731
    assert on_grid(R.noise((n,), "uniform", 99, 0, torch.float64, draw_bits=32)).all()
    assert on_grid(u).float().mean().item() < 0.01
    # And its Gumbel noise, within a few ulps of the reference of the same draws.
    with use_backend(device_backend):
        g = ce.noise("gumbel", (n,), dtype=torch.float64, device=device_backend[0], seed=99)
    r = R.noise((n,), "gumbel", 99, 0, torch.float64)
    assert _ulp_error(g.cpu(), r, "gumbel", torch.float64).max().item() <= 4.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_noise_is_the_rounded_fp32_noise(kind, dtype):
    # Noise is computed in fp32 and rounded once: within 1 ulp of the reference's rounding of
    # the exact value (the fp32 value can straddle a rounding boundary), plus the fp32 error of
    # test_noise_within_few_ulps_of_reference (absolute near 0 for Gumbel / logistic noise,
    # which matters where the fp16 spacing is finer: subnormal logistic values).
    n = 1 << 16
    k = ce.noise(kind, (n,), dtype=dtype, seed=11, offset=1)
    r = R.noise((n,), kind, 11, 1, dtype=dtype)
    assert k.dtype == dtype
    a = r.abs()
    ulp = (torch.nextafter(a, torch.full_like(a, float("inf"))) - a).double()  # incl. subnormals
    floor = 1.0 if kind in ("gumbel", "logistic") else 0.0
    fp32_err = 4 * torch.finfo(torch.float32).eps * a.double().clamp(min=floor)
    assert ((k.double() - r.double()).abs() <= ulp + fp32_err).all()
    assert torch.isfinite(k).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_uniform_strictly_inside_unit_interval(dtype):
    # 2^16 draws hold draws whose uniform rounds up to 1 in fp16/bf16 (r > 2^32 - 2^20): the
    # kernel clamps them to the largest value below 1 (the test checks such draws are present).
    n = 1 << 16
    bits = ce.noise("bits", (n,), seed=5)
    u = ce.noise("uniform", (n,), dtype=dtype, seed=5)
    assert (u > 0).all() and (u < 1).all()
    if dtype in LOW_PRECISION:
        near_one = bits >= M32 - 2**20
        assert near_one.any()
        assert (u[near_one] == 1 - torch.finfo(dtype).eps / 2).any()


def test_fp16_uniform_of_the_smallest_draws_is_positive():
    # Draw r < 128 gives U = (r + 1/2) 2^-32 < 2^-25, which rounds to 0 in fp16; the kernel and
    # the reference return the smallest positive fp16 instead. (seed 2024, offset 0) has r = 10
    # at index 1177885 (found by a search over the stream).
    i = 1177885
    bits = ce.noise("bits", (i + 1,), seed=2024)
    assert int(bits[i]) == 10
    k = ce.noise("uniform", (i + 1,), dtype=torch.float16, seed=2024)
    r = R.noise((i + 1,), "uniform", 2024, dtype=torch.float16)
    assert k[i].item() == r[i].item() == 2.0**-24
    assert (k > 0).all()


EXTREME_DRAWS = [0, 1, 2**31 - 1, 2**31, 2**32 - 1]
# Ranges of the transforms over all 2^32 draws (docs/ARCHITECTURE.md, "Random numbers"): the extremes of
# -log(U) are at U = 2^-33 (22.87) and 1 - 2^-33 (1.16e-10).
RANGES = {
    "uniform": (2.0**-33, 1 - 2.0**-33),
    "exponential": (2.0**-33 * 0.99, 22.875),
    "gumbel": (-3.1355, 22.875),
    "logistic": (-22.875, 22.875),
}


@pytest.mark.parametrize("kind", KINDS)
def test_transforms_at_extreme_draws(kind):
    bits = torch.tensor(EXTREME_DRAWS, dtype=torch.int64)
    v = R.noise_from_bits(bits, kind)
    lo, hi = RANGES[kind]
    assert torch.isfinite(v).all()
    assert (v >= lo).all() and (v <= hi).all(), v.tolist()
    # Monotone in the draw (the exponential decreases, the others increase).
    d = v.diff()
    assert ((d < 0) if kind == "exponential" else (d > 0)).all(), v.tolist()
    if kind == "uniform":
        assert (v > 0).all() and (v < 1).all()
        assert v[0].item() == 0.5 * 2.0**-32 and 1 - v[-1].item() == 0.5 * 2.0**-32
    if kind == "logistic":
        # Odd about r = 2^31 - 1/2: L(r) = -L(2^32 - 1 - r), exactly.
        mirror = R.noise_from_bits(M32 - 1 - bits, kind)
        assert torch.equal(v, -mirror)
    # In every working dtype: finite, uniform still strictly inside (0, 1) after rounding.
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        vd = v.to(dtype)
        if kind == "uniform":
            vd = vd.clamp(min=R._above_zero(dtype), max=R._below_one(dtype))
            assert (vd > 0).all() and (vd < 1).all()
        assert torch.isfinite(vd).all()


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_noise_in_range_over_many_draws(kind):
    n = 1 << 20
    lo, hi = RANGES[kind]
    for dtype in (torch.float32, torch.float64):
        v = ce.noise(kind, (n,), dtype=dtype, seed=31337)
        assert torch.isfinite(v).all()
        assert v.min().item() >= lo * (1 + 1e-6) - 1e-6 and v.max().item() <= hi
    # The sample reaches into both tails (a check that the range test is not vacuous).
    bits = ce.noise("bits", (n,), seed=31337)
    assert int(bits.min()) < 2**14 and int(bits.max()) > M32 - 2**14


# ---- seeding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ("bits",) + KINDS)
def test_manual_seed_reproduces(kind, fresh_default_generator):
    torch.manual_seed(1234)
    a = ce.noise(kind, (257,))
    b = ce.noise(kind, (257,))
    torch.manual_seed(1234)
    a2 = ce.noise(kind, (257,))
    b2 = ce.noise(kind, (257,))
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.equal(a, b)  # consecutive calls draw fresh seeds
    torch.manual_seed(1235)
    assert not torch.equal(ce.noise(kind, (257,)), a)


def test_generator_reproduces_and_leaves_default_alone(fresh_default_generator):
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    g1 = torch.Generator().manual_seed(42)
    g2 = torch.Generator().manual_seed(42)
    g3 = torch.Generator().manual_seed(43)
    a = ce.noise("gumbel", (100,), generator=g1)
    assert torch.equal(a, ce.noise("gumbel", (100,), generator=g2))
    assert not torch.equal(a, ce.noise("gumbel", (100,), generator=g3))
    assert not torch.equal(a, ce.noise("gumbel", (100,), generator=g1))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_explicit_seed_ignores_generator_state(fresh_default_generator):
    torch.manual_seed(1)
    a = ce.noise("uniform", (50,), seed=77, offset=2)
    torch.manual_seed(2)
    assert torch.equal(a, ce.noise("uniform", (50,), seed=77, offset=2))
    assert not torch.equal(a, ce.noise("uniform", (50,), seed=77, offset=3))
    assert not torch.equal(a, ce.noise("uniform", (50,), seed=78, offset=2))


def test_noise_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        ce.noise("normal", (3,), seed=0)
    with pytest.raises(ValueError, match="offset"):
        ce.noise("uniform", (3,), seed=0, offset=-1)
    with pytest.raises(ValueError, match="offset"):
        ce.noise("uniform", (3,), offset=4)  # an offset without a seed
    with pytest.raises(TypeError, match="seed"):
        ce.noise("uniform", (3,), seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        ce.noise("uniform", (3,), seed=2**64)
    with pytest.raises(TypeError, match="generator"):
        ce.noise("uniform", (3,), generator=42)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_noise_op_opcheck(requires_grad):
    like = torch.empty(3, 5).requires_grad_(requires_grad)
    for kind in ("bits", "gumbel", "logistic", "uniform"):
        torch.library.opcheck(torch.ops.concrete_ext.noise_like.default, (like, kind, 5, 2, None))
    assert not torch.ops.concrete_ext.noise_like(like, "gumbel", 5, 2, None).requires_grad


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("kind", ("bits",) + KINDS)
def test_cuda_noise_equals_cpu(kind):
    n = 4097
    c = ce.noise(kind, (n,), device="cuda", seed=2**64 - 3, offset=9)
    k = ce.noise(kind, (n,), seed=2**64 - 3, offset=9)
    if kind == "bits":
        assert torch.equal(c.cpu(), k)
    else:
        r = R.noise((n,), kind, 2**64 - 3, 9, torch.float64, draw_bits=32)
        assert _ulp_error(c.cpu(), r, kind, torch.float32).max().item() <= 4.0
        # fp64: the 64-bit draws, as the CPU kernel and the reference take them
        c64 = ce.noise(kind, (n,), dtype=torch.float64, device="cuda", seed=2**64 - 3, offset=9)
        r64 = R.noise((n,), kind, 2**64 - 3, 9, torch.float64)
        assert _ulp_error(c64.cpu(), r64, kind, torch.float64).max().item() <= 4.0
