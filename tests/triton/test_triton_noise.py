"""The random-number contract in Triton: Philox4x32-10 known-answer vectors, the draws of the noise
op bit for bit against the reference, and the noise transforms (docs/ARCHITECTURE.md, "Random numbers")."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from concrete_ext import reference as ref  # noqa: E402
from concrete_ext._triton import KERNELS  # noqa: E402
from concrete_ext._triton import common as cm  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

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


def _signed(u: int) -> int:
    return u - 2**64 if u >= 2**63 else u


@triton.jit
def _kat_kernel(state_ptr, group_ptr, out_ptr):
    """out[4 j + w] = word w of philox_group(state, group[j]) for j < 4."""
    seed, lo, hi = cm.load_state(state_ptr)
    g = tl.load(group_ptr + tl.arange(0, 4))
    c0, c1, c2, c3 = cm.philox_group(seed, lo, hi, g)
    words = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [16])
    tl.store(out_ptr + tl.arange(0, 16), words.to(tl.int64))


@triton.jit
def _draws_at_kernel(state_ptr, idx_ptr, out_ptr, N: tl.constexpr, FP64: tl.constexpr):
    seed, lo, hi = cm.load_state(state_ptr)
    r = cm.draws_at(seed, lo, hi, tl.load(idx_ptr + tl.arange(0, N)), FP64)
    tl.store(out_ptr + tl.arange(0, N), r.to(tl.int64))


@triton.jit
def _draws_run_kernel(state_ptr, first, out_ptr, N: tl.constexpr, FP64: tl.constexpr):
    seed, lo, hi = cm.load_state(state_ptr)
    r = cm.draws_run(seed, lo, hi, first, N, FP64)
    tl.store(out_ptr + tl.arange(0, N), r.to(tl.int64))


@triton.jit
def _transform_kernel(bits_ptr, out_ptr, KIND: tl.constexpr, FP64: tl.constexpr, N: tl.constexpr):
    """The noise transform KIND (1 uniform .. 4 logistic) of given draws: 32-bit, or 64-bit for
    FP64 (int64 holding the unsigned draw's bits)."""
    if FP64:
        r = tl.load(bits_ptr + tl.arange(0, N)).to(tl.uint64, bitcast=True)
    else:
        r = tl.load(bits_ptr + tl.arange(0, N)).to(tl.uint32)
    if KIND == 1:
        v = cm.uniform_from_bits(r, FP64)
    elif KIND == 2:
        v = cm.exponential_from_bits(r, FP64)
    elif KIND == 3:
        v = cm.gumbel_from_bits(r, FP64)
    else:
        v = cm.logistic_from_bits(r, FP64)
    tl.store(out_ptr + tl.arange(0, N), v)


def _state(seed, offset, device):
    return torch.tensor([_signed(seed % 2**64), offset], dtype=torch.int64, device=device)


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_known_answer_vectors(counter, key, expected, device):
    # The counter of philox_group is (offset lo, offset hi, group lo, group hi).
    seed = key[0] | (key[1] << 32)
    offset = counter[0] | (counter[1] << 32)
    group = counter[2] | (counter[3] << 32)
    groups = torch.tensor([_signed(group)] * 4, dtype=torch.int64, device=device)
    out = torch.empty(16, dtype=torch.int64, device=device)
    _kat_kernel[(1,)](_state(seed, _signed(offset), device), groups, out)
    assert [hex(v) for v in out[:4].tolist()] == [hex(v) for v in expected]


def test_draws_at_large_indices(device):
    # Element indices beyond 2^32 groups exercise the high counter word (no tensor that large).
    seed, offset = 0x0123456789ABCDEF, 5
    idx = torch.tensor([0, 1, 2, 3, 2**34 + 1, 2**40 + 6, 2**62 + 3, 12345], dtype=torch.int64)
    out = torch.empty(8, dtype=torch.int64, device=device)
    _draws_at_kernel[(1,)](_state(seed, offset, device), idx.to(device), out, N=8, FP64=False)
    g = idx >> 2
    words = ref.philox4x32_10(
        torch.full_like(g, offset),
        torch.zeros_like(g),
        g & 0xFFFFFFFF,
        g >> 32,
        seed & 0xFFFFFFFF,
        seed >> 32,
    )
    expected = torch.stack(words, 1).gather(1, (idx & 3)[:, None]).squeeze(1)
    assert out.cpu().tolist() == expected.tolist()


def test_64_bit_draws_equal_reference(device):
    # fp64 ops' draws: element i takes words 2 (i % 2), 2 (i % 2) + 1 of group i // 2, per element
    # (draws_at, including indices past 2^32 groups) and as an aligned run (draws_run).
    seed, offset = 0x0123456789ABCDEF, 5
    idx = torch.tensor([0, 1, 2, 3, 2**34 + 1, 2**40 + 6, 2**62 + 3, 12345], dtype=torch.int64)
    out = torch.empty(8, dtype=torch.int64, device=device)
    _draws_at_kernel[(1,)](_state(seed, offset, device), idx.to(device), out, N=8, FP64=True)
    g = idx >> 1
    words = ref.philox4x32_10(
        torch.full_like(g, offset),
        torch.zeros_like(g),
        g & 0xFFFFFFFF,
        g >> 32,
        seed & 0xFFFFFFFF,
        seed >> 32,
    )
    w = torch.stack(words, 1)
    lo = w.gather(1, (2 * (idx & 1))[:, None]).squeeze(1)
    hi = w.gather(1, (2 * (idx & 1) + 1)[:, None]).squeeze(1)
    expected = [(int(h) << 32 | int(l)) - (2**64 if h >= 2**31 else 0) for l, h in zip(lo, hi)]
    assert out.cpu().tolist() == expected
    assert expected[:4] == ref.philox_draws64(4, seed, offset).tolist()
    run = torch.empty(16, dtype=torch.int64, device=device)
    _draws_run_kernel[(1,)](_state(seed, offset, device), 8, run, N=16, FP64=True)
    assert run.cpu().tolist() == ref.philox_draws64(24, seed, offset)[8:].tolist()


@pytest.mark.parametrize("numel", [1, 3, 4, 5, 37, 1030])
@pytest.mark.parametrize("seed, offset", [(0, 0), (123, 7), (-5, 2**33 + 1), (2**63 + 11, 2**40)])
def test_bits_equal_reference(numel, seed, offset, device):
    like = torch.empty(numel, device=device)
    bits = KERNELS["noise_like"](like, "bits", _signed(seed % 2**64), offset, None)
    assert bits.dtype == torch.int64 and bits.shape == like.shape
    assert torch.equal(bits.cpu(), ref.philox_bits(numel, seed % 2**64, offset))


def test_bits_of_tiles_equal_reference(device):
    # Several programs, the last one partial: each program's aligned run of draws.
    with cm.launch_config(block=16):
        bits = KERNELS["noise_like"](torch.empty(3, 23, device=device), "bits", 99, 3, None)
    assert torch.equal(bits.cpu(), ref.philox_bits(69, 99, 3).view(3, 23))


EDGE_BITS = [
    0,
    1,
    2**31 - 2,
    2**31 - 1,
    2**31,
    2**31 + 1,
    2**32 - 129,
    2**32 - 128,
    2**32 - 2,
    2**32 - 1,
    0x9E3779B9,
    12345,
]
# The 64-bit draws of fp64 ops, as int64 (two's complement): both ends, both sides of 2^63, the
# top 2^10 (where 1 - V rounds to 1 and U is clamped) and a few others.
EDGE_DRAWS64 = [
    0,
    1,
    2**63 - 2,
    2**63 - 1,
    -(2**63),
    -(2**63) + 1,
    -1025,
    -1024,
    -2,
    -1,
    0x1E3779B97F4A7C15,
    12345,
]


@pytest.mark.parametrize(
    "kind, code", [("uniform", 1), ("exponential", 2), ("gumbel", 3), ("logistic", 4)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transforms_at_the_edges(kind, code, dtype, device):
    """The transforms of the extreme draws (both ends, both sides of 2^31) and a few others, in
    the math type, against the float64 formulas of the reference."""
    fp64 = dtype == torch.float64
    edges = EDGE_DRAWS64 if fp64 else EDGE_BITS
    bits = torch.tensor(edges + [7] * (16 - len(edges)), dtype=torch.int64)
    out = torch.empty(16, dtype=dtype, device=device)
    _transform_kernel[(1,)](bits.to(device), out, KIND=code, FP64=fp64, N=16)
    expected = ref.noise_from_bits(bits, kind, 64 if fp64 else 32)
    if kind == "uniform" and fp64:
        expected = expected.clamp(max=1 - 2**-53)
    if kind == "uniform" and dtype == torch.float32:
        expected = expected.clamp(max=1 - 2**-24)
    assert torch.isfinite(out).all()
    ulps = 4 * torch.finfo(dtype).eps
    err = (out.cpu().double() - expected).abs() / expected.abs().clamp(min=1e-300)
    if kind in ("gumbel", "logistic"):  # values cross 0: hold them to ulps of max(1, |x|)
        err = (out.cpu().double() - expected).abs() / expected.abs().clamp(min=1.0)
    assert err.max().item() <= ulps, (kind, dtype, err.max().item())
    if kind == "uniform":
        assert (out > 0).all() and (out < 1).all()


@pytest.mark.parametrize("kind", ["uniform", "exponential", "gumbel", "logistic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_noise_matches_reference(kind, dtype, device):
    like = torch.empty(5, 41, dtype=dtype, device=device)
    out = KERNELS["noise_like"](like, kind, 2024, 9, None)
    assert out.dtype == dtype and out.shape == like.shape
    expected = ref.noise(
        like.shape, kind, 2024, 9, torch.float64, draw_bits=ref.draw_bits_of(dtype)
    )
    # A few ulps of max(1, |x|) in the output dtype: fp32 math, rounded once more for fp16/bf16.
    ulps = (4 if dtype in (torch.float32, torch.float64) else 1) * torch.finfo(dtype).eps
    err = (out.cpu().double() - expected).abs() / expected.abs().clamp(min=1.0)
    assert err.max().item() <= ulps, err.max().item()
    if kind == "uniform":
        assert (out > 0).all() and (out < 1).all()


def test_noise_from_generator_matches_reference(device):
    like = torch.empty(4, 9, device=device)
    gen = torch.Generator(device=device).manual_seed(77)
    out = KERNELS["noise_like"](like, "bits", None, 0, gen)
    gen.manual_seed(77)
    seed, offset = ref.resolve_seed(None, 0, gen, device)
    assert torch.equal(out.cpu(), ref.philox_bits(36, seed, offset).view(4, 9))
    # The generator advanced: the next call draws a different seed.
    assert not torch.equal(KERNELS["noise_like"](like, "bits", None, 0, gen), out)


def test_noise_rejects_unknown_kind(device):
    with pytest.raises(ValueError, match="noise kind"):
        KERNELS["noise_like"](torch.empty(3, device=device), "normal", 1, 0, None)


def test_noise_agrees_with_cpu_kernels(device):
    from concrete_ext import _ops

    if not _ops.has_compiled("cpu"):
        pytest.skip("the compiled CPU kernels are not built")
    like = torch.empty(6, 35)
    for kind in ["bits", "uniform", "exponential", "gumbel", "logistic"]:
        cpu = torch.ops.concrete_ext.noise_like(like, kind, 31, 4, None)
        tri = KERNELS["noise_like"](like.to(device), kind, 31, 4, None).cpu()
        if kind == "bits":
            assert torch.equal(cpu, tri)
            continue
        expected = ref.noise(like.shape, kind, 31, 4)
        if not torch.allclose(cpu, expected, rtol=1e-5, atol=1e-5):
            pytest.xfail(
                f"the compiled CPU {kind} noise disagrees with the reference (the "
                "log1m sign of philox.h, fixed on another branch)"
            )
        torch.testing.assert_close(tri, cpu, rtol=4e-7, atol=4e-7)
