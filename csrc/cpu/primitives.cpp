// The noise fill of the CPU kernels (primitives.h): Philox and the noise transform over a range of
// elements. The float version is compiled per instruction set (CE_CPU_CLONES) and picked at load
// time.
#include <algorithm>

#include "concrete_ext/math/vec_math.h"
#include "cpu/blocks.h"
#include "cpu/primitives.h"

namespace concrete_ext {
namespace cpu {
namespace {

template <Noise kind, typename acc_t>
inline acc_t noise_from_bits(Draw<acc_t> r) {
  if constexpr (kind == Noise::kUniform) return uniform_from_bits<acc_t>(r);
  if constexpr (kind == Noise::kExponential) return exponential_from_bits<acc_t, vm::VecOps>(r);
  if constexpr (kind == Noise::kGumbel) return gumbel_from_bits<acc_t, vm::VecOps>(r);
  if constexpr (kind == Noise::kLogistic) return logistic_from_bits<acc_t, vm::VecOps>(r);
}

template <Noise kind, typename acc_t>
inline __attribute__((always_inline)) void fill(SeedOffset so, int64_t begin, int64_t count,
                                                acc_t* out) {
  Draw<acc_t> bits[kBlockElems];
  for (int64_t c = 0; c < count; c += kBlockElems) {
    const int64_t m = std::min(kBlockElems, count - c);
    fill_bits(so, begin + c, m, bits);
    acc_t* o = out + c;
    for (int64_t j = 0; j < m; ++j) o[j] = noise_from_bits<kind, acc_t>(bits[j]);
  }
}

template <typename acc_t>
inline __attribute__((always_inline)) void fill_any(Noise kind, SeedOffset so, int64_t begin,
                                                    int64_t count, acc_t* out) {
  switch (kind) {
    case Noise::kUniform:
      return fill<Noise::kUniform>(so, begin, count, out);
    case Noise::kExponential:
      return fill<Noise::kExponential>(so, begin, count, out);
    case Noise::kGumbel:
      return fill<Noise::kGumbel>(so, begin, count, out);
    case Noise::kLogistic:
      return fill<Noise::kLogistic>(so, begin, count, out);
  }
}

}  // namespace

CE_CPU_CLONES void fill_noise(Noise kind, SeedOffset so, int64_t begin, int64_t count, float* out) {
  fill_any(kind, so, begin, count, out);
}
void fill_noise(Noise kind, SeedOffset so, int64_t begin, int64_t count, double* out) {
  fill_any(kind, so, begin, count, out);
}

}  // namespace cpu
}  // namespace concrete_ext
