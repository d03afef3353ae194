// The noise of the CPU kernels: Philox draws of a range of elements and their transform to uniform,
// exponential, Gumbel or logistic noise (philox.h), compiled per instruction set in primitives.cpp.
#pragma once

#include <cstdint>

#include "concrete_ext/params.h"
#include "concrete_ext/philox.h"

namespace concrete_ext {
namespace cpu {

// Draws of elements [begin, begin + count) of the call `so`: one Philox call per aligned group of
// four, the (at most six) unaligned draws at the ends one call each.
inline void fill_bits(SeedOffset so, int64_t begin, int64_t count, uint32_t* out) {
  int64_t i = 0;
  for (; i < count && ((begin + i) & 3) != 0; ++i) {
    out[i] = philox_draw(so.seed, so.offset, static_cast<uint64_t>(begin + i));
  }
  const int64_t groups = (count - i) >> 2;
  const uint64_t g0 = static_cast<uint64_t>(begin + i) >> 2;
  uint32_t* o = out + i;
  for (int64_t g = 0; g < groups; ++g) {
    const uint4x32 b = philox_group(so.seed, so.offset, g0 + static_cast<uint64_t>(g));
    o[4 * g] = b.x;
    o[4 * g + 1] = b.y;
    o[4 * g + 2] = b.z;
    o[4 * g + 3] = b.w;
  }
  for (i += groups * 4; i < count; ++i) {
    out[i] = philox_draw(so.seed, so.offset, static_cast<uint64_t>(begin + i));
  }
}

// 64-bit draws (fp64 ops) of elements [begin, begin + count): element i takes words 2 (i % 2) and
// 2 (i % 2) + 1 of group i / 2 (philox.h), one Philox call per aligned pair.
inline void fill_bits(SeedOffset so, int64_t begin, int64_t count, uint64_t* out) {
  int64_t i = 0;
  if (count > 0 && (begin & 1) != 0) {
    out[0] = philox_draw64(so.seed, so.offset, static_cast<uint64_t>(begin));
    i = 1;
  }
  const int64_t pairs = (count - i) >> 1;
  const uint64_t g0 = static_cast<uint64_t>(begin + i) >> 1;
  uint64_t* o = out + i;
  for (int64_t g = 0; g < pairs; ++g) {
    const uint4x32 b = philox_group(so.seed, so.offset, g0 + static_cast<uint64_t>(g));
    o[2 * g] = static_cast<uint64_t>(b.y) << 32 | b.x;
    o[2 * g + 1] = static_cast<uint64_t>(b.w) << 32 | b.z;
  }
  if (i + 2 * pairs < count) {
    out[count - 1] = philox_draw64(so.seed, so.offset, static_cast<uint64_t>(begin + count - 1));
  }
}

enum class Noise { kUniform, kExponential, kGumbel, kLogistic };

// Noise of elements [begin, begin + count) of the call `so`; float from 32-bit draws with the
// vectorised transforms (vm::VecOps), double from 64-bit draws with libm.
void fill_noise(Noise kind, SeedOffset so, int64_t begin, int64_t count, float* out);
void fill_noise(Noise kind, SeedOffset so, int64_t begin, int64_t count, double* out);

}  // namespace cpu
}  // namespace concrete_ext
