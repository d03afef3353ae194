// The scaffold of every CUDA row kernel: row groups, their reductions, the ladder of launch
// configurations, and one kernel template and one launch template for all row kernels.
//
// Row kernels give each row a group of G threads: a logical warp (G <= 32, several rows per
// 128-thread block) or a whole block (G = 128 ... 1024). Chunk c of lane l starts at element
// (c * G + l) * V (common.cuh). In "register" configurations each thread keeps its C chunks in
// registers between the passes over the row; rows longer than the largest register configuration
// use the "looped" configuration, which walks the row once per pass and recomputes (re-reads,
// regenerates the noise of) each chunk.
//
// A row kernel K is a struct with
//   template <typename scalar_t> struct Params   arguments, with `int64_t rows, n` among them
//   static constexpr Ladder kLadder; static constexpr int kArrays   which configurations it runs
//   template <typename scalar_t> __device__ static State start(const Params&)   per-thread state
//       read once before the row loop (e.g. the seed); kernels without one derive from Stateless
//   template <int G, int C, bool LOOPED, typename scalar_t>
//   __device__ static void row(const Params&, const State&, int64_t row, int lane, Reduce<G, acc_t>&)
// and launch_rows<K>(params, launch) runs it with the configuration the ladder picks for n.
#pragma once

#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include "concrete_ext/math/gumbel_max.h"
#include "concrete_ext/math/softmax.h"
#include "cuda/common.cuh"

namespace concrete_ext {
namespace cuda {

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

// The reductions a row kernel runs over its group, sharing one block of shared memory: max and sum
// in the math type, sums in double (row sums that feed cancelling differences), the online
// log-sum-exp state and the Gumbel-max pair. Every thread of the group gets each result.
template <int G, typename acc_t>
struct Reduce {
  union Storage {
    typename Reducer<G, acc_t>::Storage s;
    typename Reducer<G, double>::Storage d;
    typename Reducer<G, MaxSum<acc_t>>::Storage m;
    typename Reducer<G, ArgMax<acc_t>>::Storage a;
  };
  Storage& st;
  __device__ __forceinline__ acc_t max(acc_t v) { return Reducer<G, acc_t>::all_reduce(v, MaxOp(), st.s); }
  __device__ __forceinline__ acc_t sum(acc_t v) { return Reducer<G, acc_t>::all_reduce(v, SumOp(), st.s); }
  __device__ __forceinline__ double sum_double(double v) {
    return Reducer<G, double>::all_reduce(v, SumOp(), st.d);
  }
  __device__ __forceinline__ MaxSum<acc_t> max_sum(MaxSum<acc_t> v) {
    return Reducer<G, MaxSum<acc_t>>::all_reduce(v, MaxSumOp(), st.m);
  }
  __device__ __forceinline__ ArgMax<acc_t> arg_max(ArgMax<acc_t> v) {
    return Reducer<G, ArgMax<acc_t>>::all_reduce(v, ArgMaxOp(), st.a);
  }
};

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

// ---- the ladder of configurations ---------------------------------------------------------------
// kFull: the sampling ops (the hot ones) and their backward; kShort: the other kernels that keep
// one array of chunks between passes; kLooped: kernels that keep nothing between passes (they
// re-read each chunk, from L1/L2 for rows that fit there), group sizes only.
enum class Ladder { kFull, kShort, kLooped };

// Register budget: a kernel caching NARR arrays of C chunks keeps C * V * NARR values per thread.
// We allow 32 registers of cached values in 128- and 256-thread blocks and 16 in 1024-thread
// blocks (__launch_bounds__(1024) leaves 64 registers per thread); more spilled to local memory
// (ptxas -warn-spills), e.g. 2 KiB per thread for bf16 with 64 cached values.
template <typename scalar_t, int NARR>
struct Budget {
  static constexpr int V = vec_size<scalar_t>();
  static constexpr int W = sizeof(acc_type<scalar_t>) / 4;  // registers per value
  static constexpr int CW = 32 / (V * NARR * W) > 1 ? 32 / (V * NARR * W) : 1;
  static constexpr int CB = 16 / (V * NARR * W) > 1 ? 16 / (V * NARR * W) : 1;
};

// The smallest configuration that holds a row of n elements, else the looped one; calls
// run.template run<G, C, LOOPED>().
//
// kFull: block-level groups of 128 to 1024 threads keep C chunks each, so rows up to 1024 * C * V
// elements stay in registers; the forward (NARR = 1) accepts the few spilled registers of C = CW at
// 1024 threads (36 bytes per thread for fp32) to keep rows of 32768 fp32 elements out of the
// looped path, which generates the noise twice.
template <Ladder L, typename scalar_t, int NARR, typename Run>
void pick_config(int64_t n, const Run& run) {
  constexpr int V = vec_size<scalar_t>();
  if constexpr (L == Ladder::kFull) {
    using B = Budget<scalar_t, NARR>;
    constexpr int CW = B::CW, CB = NARR == 1 ? B::CW : B::CB;
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
  } else if constexpr (L == Ladder::kShort) {
    using B = Budget<scalar_t, 1>;
    constexpr int CW = B::CW;
    if (n <= V) return run.template run<1, 1, false>();
    if (n <= 4 * V) return run.template run<4, 1, false>();
    if (n <= 32 * V) return run.template run<32, 1, false>();
    if constexpr (CW >= 4) {
      if (n <= 128 * V) return run.template run<32, 4, false>();
    }
    if (n <= 256 * CW * V) return run.template run<256, CW, false>();
    return run.template run<B::W == 1 ? 1024 : 256, 1, true>();
  } else {
    constexpr bool kWide = sizeof(acc_type<scalar_t>) == 8;  // fp64: fewer threads, no spills
    if (n <= V) return run.template run<1, 1, true>();
    if (n <= 4 * V) return run.template run<4, 1, true>();
    if (n <= 64 * V) return run.template run<32, 1, true>();
    if (kWide || n <= 1024 * V) return run.template run<256, 1, true>();
    if constexpr (!kWide) return run.template run<1024, 1, true>();
  }
}

// ---- the kernel and its launch ------------------------------------------------------------------
struct NoState {};
// Base of the row kernels that keep no per-thread state across rows.
struct Stateless {
  template <class P>
  __device__ __forceinline__ static NoState start(const P&) { return {}; }
};

// One row kernel: each group of G threads takes rows in a grid-stride loop.
template <class K, typename scalar_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
row_kernel(const typename K::template Params<scalar_t> p) {
  using acc_t = acc_type<scalar_t>;
  __shared__ typename Reduce<G, acc_t>::Storage storage;
  Reduce<G, acc_t> red{storage};
  const auto state = K::start(p);
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < p.rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    K::template row<G, C, LOOPED>(p, state, row, lane, red);
  }
}

template <class K, typename scalar_t>
struct RowLauncher {
  const typename K::template Params<scalar_t>& p;
  const Launch& l;
  template <int G, int C, bool LOOPED>
  void run() const {
    const dim3 grid(static_cast<unsigned>(
        grid_for(l, p.rows, Group<G>::kRowsPerBlock, Group<G>::kBlock)));
    row_kernel<K, scalar_t, G, C, LOOPED><<<grid, Group<G>::kBlock, 0, l.stream>>>(p);
  }
};

// Launches K over the rows of p with the configuration K's ladder picks for p.n; an empty batch
// still runs one block (a kernel may write per-call state, as gumbel_max's rng_state).
template <class K, typename scalar_t>
cudaError_t launch_rows(const typename K::template Params<scalar_t>& p, const Launch& l) {
  pick_config<K::kLadder, scalar_t, K::kArrays>(p.n, RowLauncher<K, scalar_t>{p, l});
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace concrete_ext
