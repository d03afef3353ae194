// Building blocks of the CUDA kernels: the seed state, row groups and their CUB reductions, chunked
// (vectorised) loads and stores, the Philox draws of a chunk, and the launch-configuration ladder.
//
// Row kernels give each row a group of G threads: a logical warp (G <= 32, several rows per
// 128-thread block) or a whole block (G = 256 or 1024). A thread owns chunks of V consecutive
// elements (V * sizeof(scalar_t) = 16 bytes for 16-bit types and fp32; 32 bytes, two 16-byte
// loads, for fp64), chunk c of lane l at element (c * G + l) * V, so a group's loads are
// coalesced. In "register" configurations each thread keeps its C chunks in registers between the
// passes over the row; rows longer than the largest register configuration use the "looped"
// configuration, which walks the row once per pass and recomputes (re-reads, regenerates the
// noise of) each chunk.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include <mutex>
#include <tuple>

#include "concrete_ext/math/gumbel_max.h"
#include "concrete_ext/math/softmax.h"
#include "concrete_ext/params.h"
#include "concrete_ext/philox.h"
#include "rng_args.h"

namespace concrete_ext {
namespace cuda {

// ---- seeds --------------------------------------------------------------------------------------
// An explicit (seed, offset), or the generator's Philox state advanced by 4 (one 4-word block per
// counter group, as philox.h's layout needs). Under CUDA-graph capture the state holds device
// pointers that each replay advances, so every replay draws fresh noise, as torch.rand does.
inline at::PhiloxCudaState philox_state(const RngArgs& rng, const at::Device& device) {
  if (rng.seed.has_value()) {
    return at::PhiloxCudaState(static_cast<uint64_t>(*rng.seed),
                               static_cast<uint64_t>(rng.offset) * 4);
  }
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      rng.generator, at::cuda::detail::getDefaultCUDAGenerator(device.index()));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->philox_cuda_state(4);
}

__device__ __forceinline__ SeedOffset unpack_seed(const at::PhiloxCudaState& state) {
  const auto so = at::cuda::philox::unpack(state);
  return SeedOffset{std::get<0>(so), std::get<1>(so) / 4};
}

// ---- fast device math for the noise and the softmax --------------------------------------------
// The sampling kernels are compute-bound on an H200 with accurate libm (first measurement: fp32
// sample forward at 29-34% of copy bandwidth at 2^26 elements, 0.38-0.44 ms), so fp32 noise uses
// the SFU: __logf (3 ulp; 2^-21.4 absolute on [0.5, 2], i.e. about 3e-7 absolute for Gumbel noise
// near 0), __expf (2 ulp), and philox.h's atanh series for log1p(-v) (no log near 1). fp64 stays on
// the accurate libm.
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

// ---- row groups and reductions ------------------------------------------------------------------
template <int G>
struct Group {
  static constexpr bool kWarpLevel = G <= 32;
  static constexpr int kBlock = kWarpLevel ? 128 : G;
  static constexpr int kRowsPerBlock = kWarpLevel ? kBlock / G : 1;
  __device__ __forceinline__ static int lane() { return threadIdx.x % G; }
  __device__ __forceinline__ static int slot() { return threadIdx.x / G; }
  // The lanes of this thread's logical warp, for the broadcast shuffle.
  __device__ __forceinline__ static unsigned mask() {
    if constexpr (G >= 32) {
      return 0xffffffffu;
    } else {
      return ((1u << G) - 1u) << ((threadIdx.x % 32) / G * G);
    }
  }
};

template <typename T>
__device__ __forceinline__ T shfl(T v, int src, int width, unsigned mask) {
  return __shfl_sync(mask, v, src, width);
}
template <typename T>
__device__ __forceinline__ MaxSum<T> shfl(MaxSum<T> v, int src, int width, unsigned mask) {
  return MaxSum<T>{__shfl_sync(mask, v.max, src, width), __shfl_sync(mask, v.sum, src, width)};
}
template <typename T>
__device__ __forceinline__ ArgMax<T> shfl(ArgMax<T> v, int src, int width, unsigned mask) {
  return ArgMax<T>{__shfl_sync(mask, v.value, src, width),
                   static_cast<int64_t>(__shfl_sync(mask, static_cast<long long>(v.index), src, width))};
}

struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a > b ? a : (b > a ? b : a); }
};
struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a + b; }
};

// All-reduce over a row group with CUB (WarpReduce for logical warps, BlockReduce for blocks);
// every thread of the group gets the result. T is a scalar, MaxSum or ArgMax.
template <int G, typename T>
struct Reducer {
  using WR = cub::WarpReduce<T, (G < 32 ? (G > 1 ? G : 2) : 32)>;
  using BR = cub::BlockReduce<T, (G > 32 ? G : 64)>;
  union Storage {
    typename WR::TempStorage warp[Group<G>::kRowsPerBlock];
    struct {
      typename BR::TempStorage temp;
      T result;
    } block;
  };

  template <typename Op>
  __device__ __forceinline__ static T all_reduce(T v, Op op, Storage& s) {
    if constexpr (G == 1) {
      return v;
    } else if constexpr (G <= 32) {
      const T r = WR(s.warp[Group<G>::slot()]).Reduce(v, op);
      return shfl(r, 0, G, Group<G>::mask());
    } else {
      const T r = BR(s.block.temp).Reduce(v, op);
      if (threadIdx.x == 0) s.block.result = r;
      __syncthreads();
      const T out = s.block.result;
      __syncthreads();  // the storage is reused by the next reduction
      return out;
    }
  }
};

// ---- chunks ---------------------------------------------------------------------------------------
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// V = 16 bytes of scalar_t, at least 4 (one Philox call serves 4 elements).
template <typename scalar_t>
constexpr int vec_size() {
  return sizeof(scalar_t) >= 4 ? 4 : 16 / static_cast<int>(sizeof(scalar_t));
}

template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_chunk(const scalar_t* __restrict__ p, int64_t k0, int64_t n,
                                           bool vec_ok, acc_t (&out)[V], acc_t pad) {
  if (vec_ok) {  // n % V == 0 and the row pointer is aligned: the chunk is whole
    const Vec<scalar_t, V> x = *reinterpret_cast<const Vec<scalar_t, V>*>(p + k0);
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = static_cast<acc_t>(x.v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = k0 + e < n ? static_cast<acc_t>(p[k0 + e]) : pad;
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

// Calls f(c, k0) for the chunks this thread owns: c < C at k0 = (c * G + lane) * V in register
// configurations (c is a compile-time index after unrolling, so per-chunk arrays stay in
// registers), or every chunk k0 = lane * V, lane * V + G * V, ... with c = 0 when looped.
template <int G, int C, int V, bool LOOPED, typename F>
__device__ __forceinline__ void for_chunks(int64_t n, int lane, F&& f) {
  if constexpr (LOOPED) {
    for (int64_t k0 = static_cast<int64_t>(lane) * V; k0 < n; k0 += static_cast<int64_t>(G) * V) {
      f(0, k0);
    }
  } else {
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int64_t k0 = (static_cast<int64_t>(c) * G + lane) * V;
      if (k0 < n) f(c, k0);
    }
  }
}

// ---- launching --------------------------------------------------------------------------------------
inline bool aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <typename scalar_t>
bool rows_vectorizable(int64_t n, std::initializer_list<const void*> ptrs) {
  constexpr int V = vec_size<scalar_t>();
  if (n % V != 0) return false;
  for (const void* p : ptrs) {
    if (p != nullptr && !aligned(p, static_cast<int64_t>(V) * sizeof(scalar_t))) return false;
  }
  return true;
}

// Blocks for a grid-stride loop over `units` (rows or chunks): enough to fill the GPU several
// times over, no more.
inline int64_t grid_for(int64_t units, int per_block, int block_threads) {
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t resident = static_cast<int64_t>(prop->multiProcessorCount) *
                           (prop->maxThreadsPerMultiProcessor / block_threads);
  const int64_t needed = (units + per_block - 1) / per_block;
  return std::max<int64_t>(1, std::min<int64_t>(needed, resident * 4));
}

// The ladder of row configurations for a row of n elements: the smallest configuration that holds
// the row, else the looped one. `run` is a functor with
// `template <int G, int C, bool LOOPED> void run() const`.
//
// Register budget: a kernel caching NARR arrays of C chunks keeps C * V * NARR values per thread.
// We allow 32 registers of cached values in 128- and 256-thread blocks and 16 in 1024-thread
// blocks (__launch_bounds__(1024) leaves 64 registers per thread); more spilled to local memory
// in the first build (ptxas -warn-spills), e.g. 2 KiB per thread for bf16 with 64 cached values.
template <typename scalar_t, int NARR>
struct Ladder {
  static constexpr int V = vec_size<scalar_t>();
  static constexpr int W = sizeof(at::opmath_type<scalar_t>) / 4;  // registers per value
  static constexpr int CW = 32 / (V * NARR * W) > 1 ? 32 / (V * NARR * W) : 1;
  static constexpr int CB = 16 / (V * NARR * W) > 1 ? 16 / (V * NARR * W) : 1;
};

// Full ladder: the sampling ops (the hot ones) and their backward. Block-level groups of 128 to
// 1024 threads keep C chunks each, so rows up to 1024 * C * V elements stay in registers; the
// forward (NARR = 1) accepts the few spilled registers of C = CW at 1024 threads (36 bytes per
// thread for fp32) to keep rows of 32768 fp32 elements out of the looped path, which generates
// the noise twice.
template <typename scalar_t, int NARR, typename Run>
void dispatch_full(int64_t n, const Run& run) {
  using L = Ladder<scalar_t, NARR>;
  constexpr int V = L::V, CW = L::CW, CB = NARR == 1 ? L::CW : L::CB;
  if (n <= V) return run.template run<1, 1, false>();
  if (n <= 2 * V) return run.template run<2, 1, false>();
  if (n <= 4 * V) return run.template run<4, 1, false>();
  if (n <= 8 * V) return run.template run<8, 1, false>();
  if (n <= 16 * V) return run.template run<16, 1, false>();
  if (n <= 32 * V) return run.template run<32, 1, false>();
  if constexpr (CW >= 2) {
    if (n <= 64 * V) return run.template run<32, 2, false>();
  }
  if constexpr (CW >= 4) {
    if (n <= 128 * V) return run.template run<32, 4, false>();
  }
  if constexpr (CW >= 8) {
    if (n <= 256 * V) return run.template run<32, 8, false>();
  }
  if (n <= 128 * CW * V) return run.template run<128, CW, false>();
  if (n <= 256 * CW * V) return run.template run<256, CW, false>();
  if (n <= 512 * CW * V) return run.template run<512, CW, false>();
  if constexpr (1024 * CB > 512 * CW) {
    if (n <= 1024 * CB * V) return run.template run<1024, CB, false>();
  }
  return run.template run<1024, 1, true>();
}

// Short ladder: the other kernels that keep one array of chunks between passes.
template <typename scalar_t, typename Run>
void dispatch_short(int64_t n, const Run& run) {
  using L = Ladder<scalar_t, 1>;
  constexpr int V = L::V, CW = L::CW;
  if (n <= V) return run.template run<1, 1, false>();
  if (n <= 4 * V) return run.template run<4, 1, false>();
  if (n <= 32 * V) return run.template run<32, 1, false>();
  if constexpr (CW >= 4) {
    if (n <= 128 * V) return run.template run<32, 4, false>();
  }
  if (n <= 256 * CW * V) return run.template run<256, CW, false>();
  return run.template run<L::W == 1 ? 1024 : 256, 1, true>();
}

// Group sizes only, for kernels that keep nothing between passes (they re-read each chunk, from
// L1/L2 for rows that fit there).
template <typename scalar_t, typename Run>
void dispatch_looped(int64_t n, const Run& run) {
  constexpr int V = vec_size<scalar_t>();
  constexpr bool kWide = sizeof(at::opmath_type<scalar_t>) == 8;  // fp64: fewer threads, no spills
  if (n <= V) return run.template run<1, 1, true>();
  if (n <= 4 * V) return run.template run<4, 1, true>();
  if (n <= 64 * V) return run.template run<32, 1, true>();
  if (kWide || n <= 1024 * V) return run.template run<256, 1, true>();
  if constexpr (!kWide) return run.template run<1024, 1, true>();
}

}  // namespace cuda
}  // namespace concrete_ext
