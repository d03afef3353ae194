// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
// transforms from one 32-bit draw to the noise every op uses. Shared by the CPU loops, the CUDA
// kernels and the C++ unit test; no torch headers here so the test builds with a plain compiler.
//
// Random-number contract (docs/ARCHITECTURE.md, "Random numbers"):
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (offset & 0xffffffff, offset >> 32, group & 0xffffffff, group >> 32)
//   group   = i / 4 and the draw of element i is word i % 4 of philox(counter, key),
// where i is the element's linear index in the canonical (rows, n) layout of the op and `offset`
// counts 4-word blocks. This is exactly curand's layout for curand_init(seed, subsequence = i / 4,
// offset = 4 * offset): a call that advances torch's CUDA generator by 4 owns the counters it uses
// and never overlaps torch.rand's draws.
//
// fp64 ops draw 64 bits per element: element i takes the 32-bit draws 2i (low half) and 2i + 1
// (high half) of the same stream, i.e. words 2 (i % 2) and 2 (i % 2) + 1 of group i / 2, so their
// noise reaches U = 2^-65 (Gumbel up to 45.05) where 32 bits stop at 2^-33 (22.87). Same counters,
// same offset increment: only the groups i / 2 instead of i / 4.
#pragma once

#include <cstdint>
#include <cmath>
#include <type_traits>

#include "concrete_ext/math/libm.h"

namespace concrete_ext {

struct uint4x32 {
  uint32_t x, y, z, w;
  CE_HOST_DEVICE uint32_t operator[](int i) const {
    return i == 0 ? x : (i == 1 ? y : (i == 2 ? z : w));
  }
};

namespace philox_detail {
constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kW1 = 0xBB67AE85u;  // sqrt(3) - 1

CE_HOST_DEVICE uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
#endif
}

CE_HOST_DEVICE uint4x32 round(uint4x32 c, uint32_t k0, uint32_t k1) {
  uint32_t hi0, hi1;
  const uint32_t lo0 = mulhilo(kM0, c.x, &hi0);
  const uint32_t lo1 = mulhilo(kM1, c.z, &hi1);
  return uint4x32{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
}
}  // namespace philox_detail

// Philox4x32 with 10 rounds, as in Random123's philox4x32_R(10, ctr, key).
CE_HOST_DEVICE uint4x32 philox4x32_10(uint4x32 ctr, uint32_t k0, uint32_t k1) {
  using namespace philox_detail;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 9; ++r) {
    ctr = round(ctr, k0, k1);
    k0 += kW0;
    k1 += kW1;
  }
  return round(ctr, k0, k1);
}

// The four draws of group `group` for a call with (seed, offset).
CE_HOST_DEVICE uint4x32 philox_group(uint64_t seed, uint64_t offset, uint64_t group) {
  const uint4x32 ctr{static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                     static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32)};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// The draw of element i (slow path: one Philox call per element; kernels share one call per group).
CE_HOST_DEVICE uint32_t philox_draw(uint64_t seed, uint64_t offset, uint64_t i) {
  return philox_group(seed, offset, i >> 2)[static_cast<int>(i & 3)];
}

// The 64-bit draw of element i of an fp64 op (slow path, as philox_draw).
CE_HOST_DEVICE uint64_t philox_draw64(uint64_t seed, uint64_t offset, uint64_t i) {
  const uint4x32 q = philox_group(seed, offset, i >> 1);
  return (i & 1) ? (static_cast<uint64_t>(q.w) << 32 | q.z)
                 : (static_cast<uint64_t>(q.y) << 32 | q.x);
}

// The draw type of an op whose math type is T: 64 bits for fp64 ops, 32 otherwise.
template <typename T>
struct DrawOf {
  using type = uint32_t;
};
template <>
struct DrawOf<double> {
  using type = uint64_t;
};
template <typename T>
using Draw = typename DrawOf<T>::type;

// ---- draw -> noise -------------------------------------------------------------------------
// U = (r + 1/2) 2^-32 lies strictly inside (0, 1) for every r. In fp32, U itself rounds to 1 for
// r near 2^32, so the transforms never form U in the upper half: they use V = 1 - U, exact as
// (2^32 - 1 - r + 1/2) 2^-32, and log1p(-V). T is float (fp32/fp16/bf16 ops) or double (fp64 ops).
// The formulas are written with selects, not branches, and take log(x) and log1m(v) = log1p(-v)
// (v in (0, 1/2]) from a policy `Ops`, so one text serves the CPU loops (LibmOps, math/libm.h;
// vm::VecOps, math/vec_math.h) and the CUDA kernels (FastNoiseOps, csrc/ops/cuda_common.cuh).

// A draw argument as the transforms take it: any unsigned integer of 4 bytes is a 32-bit draw, of 8
// bytes a 64-bit draw (unsigned long and unsigned long long are both uint64_t's width).
template <typename R>
using DrawBits = std::conditional_t<sizeof(R) == 8, uint64_t, uint32_t>;
template <typename R>
CE_HOST_DEVICE DrawBits<R> as_draw(R r) {
  static_assert(std::is_unsigned<R>::value && (sizeof(R) == 4 || sizeof(R) == 8),
                "a draw is a 32- or 64-bit unsigned integer");
  return static_cast<DrawBits<R>>(r);
}

// Whether draw r is in the lower half (U < 1/2): r < 2^31 for 32-bit draws, r < 2^63 for 64-bit.
CE_HOST_DEVICE bool lower_half(uint32_t r) { return r < 0x80000000u; }
CE_HOST_DEVICE bool lower_half(uint64_t r) { return r < 0x8000000000000000ull; }

// log1p(-v) = -2 atanh(t), t = v / (2 - v) in (0, 1/3] for v in (0, 1/2]: an odd series in t
// truncated after t^15 (relative truncation error < (1/3)^16 / 17 = 1.4e-9), so float needs no
// log near 1; branch-free, vectorisable on the CPU and cheap on the GPU. `div` is the division
// (exact on the CPU, __fdividef on the GPU).
template <typename Div>
CE_HOST_DEVICE float log1m_series(float v, Div div) {
  const float t = div(v, 2.0f - v);
  const float t2 = t * t;
  float p = 1.0f / 15.0f;
  p = p * t2 + 1.0f / 13.0f;
  p = p * t2 + 1.0f / 11.0f;
  p = p * t2 + 1.0f / 9.0f;
  p = p * t2 + 1.0f / 7.0f;
  p = p * t2 + 1.0f / 5.0f;
  p = p * t2 + 1.0f / 3.0f;
  p = p * t2 + 1.0f;
  return -2.0f * t * p;
}

// (r + 1/2) 2^-32, computed in T (used for r < 2^31).
template <typename T>
CE_HOST_DEVICE T lower_uniform(uint32_t r) {
  return (static_cast<T>(r) + T(0.5)) * T(2.3283064365386963e-10);  // 2^-32
}
// 1 - U = (2^32 - 1 - r + 1/2) 2^-32, computed in T (used for r >= 2^31).
template <typename T>
CE_HOST_DEVICE T upper_complement(uint32_t r) {
  return (static_cast<T>(0xFFFFFFFFu - r) + T(0.5)) * T(2.3283064365386963e-10);
}
// The same for 64-bit draws, fp64 only: (r + 1/2) 2^-64 and (2^64 - 1 - r + 1/2) 2^-64, the
// integer rounded to double first (round to nearest, as every backend converts). The conversion
// goes through int64 (both are below 2^63 where used; the unused half is discarded by a select),
// which CPUs convert natively.
template <typename T>
CE_HOST_DEVICE T lower_uniform(uint64_t r) {
  static_assert(sizeof(T) == 8, "64-bit draws are for fp64 ops");
  return (static_cast<T>(static_cast<int64_t>(r)) + T(0.5)) * T(0x1p-64);
}
template <typename T>
CE_HOST_DEVICE T upper_complement(uint64_t r) {
  static_assert(sizeof(T) == 8, "64-bit draws are for fp64 ops");
  return (static_cast<T>(static_cast<int64_t>(~r)) + T(0.5)) * T(0x1p-64);
}

// U ~ Uniform(0, 1), strictly inside: values that would round to 1 are clamped to the largest T
// below 1 (fp32: only for r >= 2^32 - 2^7; fp64 from 64-bit draws: r >= 2^64 - 2^10).
template <typename T, typename R>
CE_HOST_DEVICE T uniform_from_bits(R r_in) {
  const auto r = as_draw(r_in);
  const T below_one =
      T(1) - (sizeof(T) == 4 ? T(5.9604644775390625e-08) : T(1.1102230246251565e-16));
  const T u = lower_half(r) ? lower_uniform<T>(r) : T(1) - upper_complement<T>(r);
  return u < below_one ? u : below_one;
}

// E = -log U ~ Exponential(1); positive and finite for every draw: in [1.16e-10, 22.87] from 32
// bits, [2.71e-20, 45.05] from 64: -log U in the lower half, -log1p(-V) in the upper.
template <typename T, typename Ops = LibmOps, typename R>
CE_HOST_DEVICE T exponential_from_bits(R r_in) {
  const auto r = as_draw(r_in);
  // Both halves are evaluated and one is selected: branch-free, so vectorisable.
  const T lo = -Ops::log(lower_uniform<T>(r));
  const T hi = -Ops::log1m(upper_complement<T>(r));
  return lower_half(r) ? lo : hi;
}

// G = -log(-log U) ~ Gumbel(0, 1); in about [-3.13, 22.87] from 32 bits ([-3.81, 45.05] from 64)
// and non-decreasing in r.
template <typename T, typename Ops = LibmOps, typename R>
CE_HOST_DEVICE T gumbel_from_bits(R r) {
  return -Ops::log(exponential_from_bits<T, Ops>(as_draw(r)));
}

// L = log U - log(1 - U) ~ Logistic(0, 1); in about [-22.87, 22.87] ([-45.05, 45.05] from 64
// bits), non-decreasing and odd about the middle (L(r) = -L(~r)).
template <typename T, typename Ops = LibmOps, typename R>
CE_HOST_DEVICE T logistic_from_bits(R r_in) {
  const auto r = as_draw(r_in);
  const bool lower = lower_half(r);
  const T u = lower ? lower_uniform<T>(r) : upper_complement<T>(r);  // min(U, 1 - U) in (0, 1/2]
  const T l = Ops::log(u) - Ops::log1m(u);
  return lower ? l : -l;
}

}  // namespace concrete_ext
