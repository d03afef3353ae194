// Building blocks of every CUDA kernel: the seed, the fast noise math, chunked (vectorised) loads
// and stores, the Philox draws of a chunk, grids, and the dtype dispatch.
//
// A thread owns chunks of V consecutive elements (V * sizeof(scalar_t) = 16 bytes for the 16-bit
// types and fp32; 32 bytes, two 16-byte loads, for fp64), so a group's loads coalesce; vectorised
// access needs n % V == 0 and aligned row pointers, else the kernel falls back to element loads.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <tuple>
#include <type_traits>

#include <ATen/cuda/PhiloxCudaState.h>
#include <ATen/cuda/detail/UnpackRaw.cuh>

#include "concrete_ext/kernel_args.h"
#include "concrete_ext/params.h"
#include "concrete_ext/philox.h"
#include "cuda/kernels.h"

namespace concrete_ext {
namespace cuda {

// The math type of an op's dtype: double for fp64, float for the others.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// dtype dispatch: scalar_t is the op's dtype, acc_t its math type.
#define CE_CUDA_DISPATCH(DTYPE, ...)           \
  [&] {                                        \
    switch (DTYPE) {                           \
      case ::concrete_ext::DType::kFloat64: {  \
        using scalar_t = double;               \
        using acc_t = double;                  \
        return __VA_ARGS__();                  \
      }                                        \
      case ::concrete_ext::DType::kFloat32: {  \
        using scalar_t = float;                \
        using acc_t = float;                   \
        return __VA_ARGS__();                  \
      }                                        \
      case ::concrete_ext::DType::kFloat16: {  \
        using scalar_t = c10::Half;            \
        using acc_t = float;                   \
        return __VA_ARGS__();                  \
      }                                        \
      case ::concrete_ext::DType::kBFloat16: { \
        using scalar_t = c10::BFloat16;        \
        using acc_t = float;                   \
        return __VA_ARGS__();                  \
      }                                        \
    }                                          \
    return cudaErrorInvalidValue;              \
  }()

// ---- seeds --------------------------------------------------------------------------------------
// (seed, offset in 4-word blocks) of a call; the state's offset counts words (4 per group).
__device__ __forceinline__ SeedOffset unpack_seed(const at::PhiloxCudaState& state) {
  const auto so = at::cuda::philox::unpack(state);
  return SeedOffset{std::get<0>(so), std::get<1>(so) / 4};
}

// ---- fast device math for the noise and the softmax --------------------------------------------
// The sampling kernels are compute-bound, so fp32 noise uses the SFU: __logf (3 ulp; 2^-21.4
// absolute on [0.5, 2], i.e. about 3e-7 absolute for Gumbel noise near 0), __expf (2 ulp), and
// philox.h's atanh series for log1p(-v) (no log near 1). fp64 stays on the accurate libm.
struct FastNoiseOps {
  static __device__ __forceinline__ float log(float x) { return __logf(x); }
  static __device__ __forceinline__ float exp(float x) { return __expf(x); }
  static __device__ __forceinline__ float log1m(float v) {
    return log1m_series(v, [](float a, float b) { return __fdividef(a, b); });
  }
  static __device__ __forceinline__ double log(double x) { return ::log(x); }
  static __device__ __forceinline__ double exp(double x) { return ::exp(x); }
  static __device__ __forceinline__ double log1m(double v) { return ::log1p(-v); }
};

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -INFINITY_T<T>();
}
template <typename T>
__device__ __forceinline__ T NAN_T() {
  return std::numeric_limits<T>::quiet_NaN();
}

// ---- chunks
// ---------------------------------------------------------------------------------------
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// V = 16 bytes of scalar_t, at least 4 (one Philox call serves 4 elements).
template <typename scalar_t>
constexpr int vec_size() {
  return sizeof(scalar_t) >= 4 ? 4 : 16 / static_cast<int>(sizeof(scalar_t));
}

// Loads of a kernel's inputs, through the read-only data cache (__ldg): no kernel writes what it
// reads, and the pointers sit in a params struct, where __restrict__ does not reach the loads.
__device__ __forceinline__ float ldg(const float* p) { return __ldg(p); }
__device__ __forceinline__ double ldg(const double* p) { return __ldg(p); }
__device__ __forceinline__ int64_t ldg(const int64_t* p) {
  return static_cast<int64_t>(__ldg(reinterpret_cast<const long long*>(p)));
}
__device__ __forceinline__ c10::Half ldg(const c10::Half* p) {
  return c10::Half(__ldg(reinterpret_cast<const unsigned short*>(p)), c10::Half::from_bits());
}
__device__ __forceinline__ c10::BFloat16 ldg(const c10::BFloat16* p) {
  return c10::BFloat16(__ldg(reinterpret_cast<const unsigned short*>(p)),
                       c10::BFloat16::from_bits());
}
// A chunk of 16 or 32 bytes, as 16-byte loads.
template <typename T, int V>
__device__ __forceinline__ Vec<T, V> ldg(const Vec<T, V>* p) {
  static_assert(sizeof(Vec<T, V>) % 16 == 0, "chunks are whole 16-byte words");
  Vec<T, V> x;
  const uint4* src = reinterpret_cast<const uint4*>(p);
  uint4* dst = reinterpret_cast<uint4*>(&x);
#pragma unroll
  for (int j = 0; j < static_cast<int>(sizeof(Vec<T, V>) / 16); ++j) dst[j] = __ldg(src + j);
  return x;
}

template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_chunk(const scalar_t* __restrict__ p, int64_t k0, int64_t n,
                                           bool vec_ok, acc_t (&out)[V], acc_t pad) {
  if (vec_ok) {  // n % V == 0 and the row pointer is aligned: the chunk is whole
    const Vec<scalar_t, V> x = ldg(reinterpret_cast<const Vec<scalar_t, V>*>(p + k0));
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = static_cast<acc_t>(x.v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = k0 + e < n ? static_cast<acc_t>(ldg(p + k0 + e)) : pad;
  }
}

// Row (or element) i of an input with a period P (kernel_args.h): its stored row i % P; i itself
// when P = 0 (every row stored).
__device__ __forceinline__ int64_t wrap(int64_t i, int64_t period) {
  return period ? i % period : i;
}

// The elements i0 .. i0 + V - 1 of a flat input with a period P (element i at p[i % P]): a chunk
// of the stored elements when vec_ok, which then also needs P % V == 0 (periodic_vectorizable), so
// that a chunk never wraps; else element loads.
template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_elems(const scalar_t* __restrict__ p, int64_t i0,
                                           int64_t numel, int64_t period, bool vec_ok,
                                           acc_t (&out)[V], acc_t pad) {
  if (period == 0) {
    load_chunk<V>(p, i0, numel, vec_ok, out, pad);
  } else if (vec_ok) {
    load_chunk<V>(p, i0 % period, period, true, out, pad);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) {
      out[e] = i0 + e < numel ? static_cast<acc_t>(ldg(p + (i0 + e) % period)) : pad;
    }
  }
}

template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_chunk(scalar_t* __restrict__ p, int64_t k0, int64_t n,
                                            bool vec_ok, const acc_t (&v)[V]) {
  if (vec_ok) {
    Vec<scalar_t, V> x;
#pragma unroll
    for (int e = 0; e < V; ++e) x.v[e] = static_cast<scalar_t>(v[e]);
    *reinterpret_cast<Vec<scalar_t, V>*>(p + k0) = x;
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (k0 + e < n) p[k0 + e] = static_cast<scalar_t>(v[e]);
    }
  }
}

// The draws of elements L0 .. L0 + V - 1 (only the first `valid` are needed): one Philox call per
// group of four when L0 is a multiple of 4, one more when the chunk straddles groups.
template <int V>
__device__ __forceinline__ void chunk_bits(SeedOffset so, uint64_t L0, int valid,
                                           uint32_t (&r)[V]) {
  const uint64_t g0 = L0 >> 2;
  const int s = static_cast<int>(L0 & 3);
  if (s == 0 && valid >= V) {  // aligned whole chunk (every chunk when n % 4 == 0): no selects
#pragma unroll
    for (int j = 0; j < V / 4; ++j) {
      const uint4x32 q = philox_group(so.seed, so.offset, g0 + j);
      r[4 * j] = q.x;
      r[4 * j + 1] = q.y;
      r[4 * j + 2] = q.z;
      r[4 * j + 3] = q.w;
    }
    return;
  }
  uint4x32 q[V / 4 + 1];
#pragma unroll
  for (int j = 0; j <= V / 4; ++j) {
    q[j] = 4 * j < s + valid ? philox_group(so.seed, so.offset, g0 + j) : uint4x32{0, 0, 0, 0};
  }
#pragma unroll
  for (int e = 0; e < V; ++e) {
    const int idx = s + e;
    const uint4x32 sel = (idx >> 2) == (e >> 2) ? q[e >> 2] : q[(e >> 2) + 1];
    r[e] = sel[idx & 3];
  }
}

// The 64-bit draws of an fp64 op's elements L0 .. L0 + V - 1: the 32-bit draws 2 L0 .. 2 L0 + 2V -
// 1 of the same stream paired (philox.h), one Philox call per two elements.
template <int V>
__device__ __forceinline__ void chunk_bits(SeedOffset so, uint64_t L0, int valid,
                                           uint64_t (&r)[V]) {
  uint32_t w[2 * V];
  chunk_bits<2 * V>(so, 2 * L0, 2 * valid, w);
#pragma unroll
  for (int e = 0; e < V; ++e) r[e] = static_cast<uint64_t>(w[2 * e + 1]) << 32 | w[2 * e];
}

// ---- host side of a launch
// -------------------------------------------------------------------------
inline bool aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Whether rows of n elements can be read and written in whole chunks: n % V == 0 and every pointer
// (null ones are absent tensors) aligned to a chunk.
template <typename scalar_t>
bool rows_vectorizable(int64_t n, std::initializer_list<const void*> ptrs) {
  constexpr int V = vec_size<scalar_t>();
  if (n % V != 0) return false;
  for (const void* p : ptrs) {
    if (p != nullptr && !aligned(p, static_cast<int64_t>(V) * sizeof(scalar_t))) return false;
  }
  return true;
}

// Whether chunks of V elements of flat inputs with these periods (0: none) never wrap: every
// period a multiple of V. Row inputs need no such check: their stored rows are whole rows.
template <typename scalar_t>
bool periodic_vectorizable(std::initializer_list<int64_t> periods) {
  constexpr int V = vec_size<scalar_t>();
  for (const int64_t p : periods) {
    if (p % V != 0) return false;
  }
  return true;
}

// Blocks for a grid-stride loop over `units` (rows or chunks): enough to fill the GPU several
// times over, no more.
inline int64_t grid_for(const Launch& l, int64_t units, int per_block, int block_threads) {
  const int64_t resident = static_cast<int64_t>(l.sms) * (l.threads_per_sm / block_threads);
  const int64_t needed = (units + per_block - 1) / per_block;
  return std::max<int64_t>(1, std::min<int64_t>(needed, resident * 4));
}

}  // namespace cuda
}  // namespace concrete_ext
