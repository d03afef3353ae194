// CPU kernel of the noise op: the raw Philox draws (int64 holding the uint32 value) or the uniform,
// exponential, Gumbel and logistic variates of philox.h, in the output's dtype.
#include <algorithm>
#include <type_traits>

#include "cpu/blocks.h"
#include "cpu/kernels.h"
#include "cpu/primitives.h"

namespace concrete_ext {
namespace cpu {
namespace {
// 1 - (largest value of T below 1).
template <typename T>
double largest_below_one_gap() {
  if constexpr (std::is_same_v<T, double>) return 0x1p-53;
  if constexpr (std::is_same_v<T, float>) return 0x1p-24;
  if constexpr (std::is_same_v<T, c10::Half>) return 0x1p-11;
  return 0x1p-8;  // bfloat16
}
// The smallest positive value of T (subnormal). Only float16 needs it: U >= 2^-33 is representable
// in every other type, but U < 2^-25 (draws r < 128) rounds to 0 in float16.
template <typename T>
double smallest_positive() {
  if constexpr (std::is_same_v<T, double>) return 0x1p-1074;
  if constexpr (std::is_same_v<T, float>) return 0x1p-149;
  if constexpr (std::is_same_v<T, c10::Half>) return 0x1p-24;
  return 0x1p-133;  // bfloat16
}

template <typename Body>
void for_element_blocks(int64_t numel, int64_t grain, const Body& body) {
  at::parallel_for(0, ceil_div(numel, kBlockElems), grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlockElems;
      body(i0, std::min(kBlockElems, numel - i0));
    }
  });
}
}  // namespace

void noise(const NoiseArgs& a) {
  const int64_t numel = a.numel;
  if (a.kind == NoiseKind::kBits) {
    int64_t* o = static_cast<int64_t*>(a.out);
    for_element_blocks(numel, 1, [&](int64_t i0, int64_t m) {
      uint32_t bits[kBlockElems];
      fill_bits(a.so, i0, m, bits);
      for (int64_t j = 0; j < m; ++j) o[i0 + j] = bits[j];
    });
    return;
  }
  const Noise nk = a.kind == NoiseKind::kUniform       ? Noise::kUniform
                   : a.kind == NoiseKind::kExponential ? Noise::kExponential
                   : a.kind == NoiseKind::kGumbel      ? Noise::kGumbel
                                                       : Noise::kLogistic;
  CE_CPU_DISPATCH(a.dtype, [&] {
    scalar_t* o = static_cast<scalar_t*>(a.out);
    // Uniform draws stay inside (0, 1) in the output dtype too (fp16/bf16 would round some up to
    // 1, fp16 the smallest ones down to 0).
    const scalar_t below_one = static_cast<scalar_t>(1.0 - largest_below_one_gap<scalar_t>());
    const scalar_t above_zero = static_cast<scalar_t>(smallest_positive<scalar_t>());
    for_element_blocks(numel, std::max<int64_t>(1, kTaskElems / kBlockElems), [&](int64_t i0, int64_t m) {
      T buf[kBlockElems];
      fill_noise(nk, a.so, i0, m, buf);
      for (int64_t j = 0; j < m; ++j) {
        scalar_t v = static_cast<scalar_t>(buf[j]);
        if (nk == Noise::kUniform && !(v < below_one)) v = below_one;
        if (nk == Noise::kUniform && !(v > above_zero)) v = above_zero;
        o[i0 + j] = v;
      }
    });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
