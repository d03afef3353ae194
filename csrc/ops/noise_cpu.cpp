// CPU kernel of the noise op: the raw Philox draws (int64 holding the uint32 value) or the
// uniform, exponential, Gumbel and logistic variates of philox.h, in the output's dtype.
#include <ATen/ATen.h>

#include <type_traits>

#include "concrete_ext/dispatch.h"
#include "cpu_loops.h"
#include "kernels.h"

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
}  // namespace

void Kernels::noise(at::Tensor& out, int64_t kind, const RngArgs& rng) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  const int64_t numel = out.numel();
  if (kind == 0) {
    int64_t* o = out.data_ptr<int64_t>();
    at::parallel_for(0, ceil_div(numel, kBlockElems), 1, [&](int64_t b0, int64_t b1) {
      uint32_t bits[kBlockElems];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i0 = b * kBlockElems, m = std::min(kBlockElems, numel - i0);
        fill_bits(so, i0, m, bits);
        for (int64_t j = 0; j < m; ++j) o[i0 + j] = bits[j];
      }
    });
    return;
  }
  const Noise nk = kind == 1 ? Noise::kUniform
                 : kind == 2 ? Noise::kExponential
                 : kind == 3 ? Noise::kGumbel
                             : Noise::kLogistic;
  CE_DISPATCH_FLOATING(out.scalar_type(), "noise_cpu", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    // Uniform draws stay inside (0, 1) in the output dtype too (fp16/bf16 would round some up to
    // 1, fp16 the smallest ones down to 0).
    const scalar_t below_one = static_cast<scalar_t>(1.0 - largest_below_one_gap<scalar_t>());
    const scalar_t above_zero = static_cast<scalar_t>(smallest_positive<scalar_t>());
    parallel_element_blocks<acc_t>(numel, 1, [&](int64_t i0, int64_t i1, acc_t* buf, int64_t) {
      fill_noise(nk, so, i0, i1 - i0, buf);
      for (int64_t i = i0; i < i1; ++i) {
        scalar_t v = static_cast<scalar_t>(buf[i - i0]);
        if (nk == Noise::kUniform && !(v < below_one)) v = below_one;
        if (nk == Noise::kUniform && !(v > above_zero)) v = above_zero;
        o[i] = v;
      }
    });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
