// The scaffold of the elementwise CUDA kernels (binary_concrete.cu, noise.cu): 256-thread blocks in
// a grid-stride loop over chunks of V elements.
#pragma once

#include "cuda/common.cuh"

namespace concrete_ext {
namespace cuda {

constexpr int kThreads = 256;

// Calls f(i0) for every chunk [i0, i0 + V) of [0, numel) this thread owns.
template <int V, typename F>
__device__ __forceinline__ void for_each_chunk(int64_t numel, F&& f) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t i0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V; i0 < numel;
       i0 += step) {
    f(i0);
  }
}

inline dim3 chunk_grid(const Launch& l, int64_t numel, int V) {
  return dim3(static_cast<unsigned>(grid_for(l, (numel + V - 1) / V, kThreads, kThreads)));
}

}  // namespace cuda
}  // namespace concrete_ext
