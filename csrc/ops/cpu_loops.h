// Building blocks of the CPU kernels: parallel iteration over blocks of rows, per-task scratch, and
// the noise fill (Philox + transform) that every random op shares.
//
// Speed: the transcendental-heavy loops (noise, exp) are written branch-free with the vm::VecOps
// polynomials so that GCC vectorises them, and each kernel's block function is compiled for
// x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, picked at load time
// (CE_CPU_CLONES). Measured on the 2-core AMD EPYC (Zen 4) dev box: the Gumbel transform runs at
// about 3 ns per element vectorised against about 30 ns with glibc logf calls.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "concrete_ext/math/vec_math.h"
#include "concrete_ext/params.h"
#include "concrete_ext/philox.h"

#if defined(CE_CPU_CLONES)
// set by the includer (a vectorisation check compiles one ISA only)
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CE_CPU_CLONES
#endif

namespace concrete_ext {
namespace cpu {

// Elements per block: the scratch of a block (a few arrays of this many floats) stays in L1/L2.
constexpr int64_t kBlockElems = 2048;
// Elements per parallel task, so that small tensors are not split across threads.
constexpr int64_t kTaskElems = 1 << 15;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Calls body(r0, r1, scratch) for consecutive blocks of rows [r0, r1) holding about kBlockElems
// elements (one row per block when rows are longer), in parallel over blocks. `scratch` points to
// `buffers` arrays of max(kBlockElems, n) acc_t each, private to the task.
template <typename acc_t, typename Body>
void parallel_row_blocks(int64_t rows, int64_t n, int buffers, const Body& body) {
  const int64_t rows_per_block = std::max<int64_t>(1, kBlockElems / n);
  const int64_t blocks = ceil_div(rows, rows_per_block);
  const int64_t grain = std::max<int64_t>(1, kTaskElems / (rows_per_block * n));
  const int64_t stride = std::max<int64_t>(kBlockElems, rows_per_block * n);
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> scratch(static_cast<size_t>(stride) * buffers);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * rows_per_block;
      const int64_t r1 = std::min(rows, r0 + rows_per_block);
      body(r0, r1, scratch.data(), stride);
    }
  });
}

// The same over a flat range of elements (binary ops): body(i0, i1, scratch) with i1 - i0 <= kBlockElems.
template <typename acc_t, typename Body>
void parallel_element_blocks(int64_t numel, int buffers, const Body& body) {
  const int64_t blocks = ceil_div(numel, kBlockElems);
  const int64_t grain = std::max<int64_t>(1, kTaskElems / kBlockElems);
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> scratch(static_cast<size_t>(kBlockElems) * buffers);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlockElems;
      body(i0, std::min(numel, i0 + kBlockElems), scratch.data(), kBlockElems);
    }
  });
}

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

enum class Noise { kUniform, kExponential, kGumbel, kLogistic };

// The hot primitives, compiled once per instruction set (cpu_primitives.cpp): noise of elements
// [begin, begin + count) of the call `so`, and elementwise exp / log over arrays.
void fill_noise(Noise kind, SeedOffset so, int64_t begin, int64_t count, float* out);
void fill_noise(Noise kind, SeedOffset so, int64_t begin, int64_t count, double* out);
void exp_array(const float* in, float* out, int64_t count);
void exp_array(const double* in, double* out, int64_t count);
void log_array(const float* in, float* out, int64_t count);
void log_array(const double* in, double* out, int64_t count);

}  // namespace cpu
}  // namespace concrete_ext
