// CUDA kernel of the noise op: the raw Philox draws (int64 holding the uint32 value) or the
// uniform, exponential, Gumbel and logistic variates of philox.h, in the output's dtype.
#include "cuda/elementwise.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

// 1 - (largest value of T below 1): uniform draws are clamped below 1 in the output dtype.
template <typename T>
constexpr double below_one_gap() {
  return std::is_same_v<T, double>      ? 0x1p-53
         : std::is_same_v<T, float>     ? 0x1p-24
         : std::is_same_v<T, c10::Half> ? 0x1p-11
                                        : 0x1p-8;
}

template <typename scalar_t, typename acc_t>
__global__ void noise_kernel(scalar_t* __restrict__ out, int64_t* __restrict__ bits_out,
                             int64_t numel, int kind, at::PhiloxCudaState philox) {
  constexpr int V = 4;
  const SeedOffset so = unpack_seed(philox);
  const scalar_t below_one = static_cast<scalar_t>(1.0 - below_one_gap<scalar_t>());
  // The smallest positive value of the dtype: fp16 would round the smallest draws down to 0.
  const scalar_t above_zero = static_cast<scalar_t>(std::is_same_v<scalar_t, c10::Half> ? 0x1p-24
                                                    : std::is_same_v<scalar_t, float>   ? 0x1p-149
                                                    : std::is_same_v<scalar_t, double>  ? 0x1p-1074
                                                                                        : 0x1p-133);
  for_each_chunk<V>(numel, [&](int64_t i0) {
    // The bits kind runs as <float, float>: 32-bit draws; fp64 variates take 64-bit draws.
    Draw<acc_t> rs[V];
    chunk_bits<V>(so, static_cast<uint64_t>(i0), static_cast<int>(numel - i0 < V ? numel - i0 : V),
                  rs);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (i0 + e >= numel) break;
      const Draw<acc_t> r = rs[e];
      if (kind == 0) {
        bits_out[i0 + e] = static_cast<int64_t>(r);
        continue;
      }
      acc_t v;
      if (kind == 1)
        v = uniform_from_bits<acc_t>(r);
      else if (kind == 2)
        v = exponential_from_bits<acc_t, FastNoiseOps>(r);
      else if (kind == 3)
        v = gumbel_from_bits<acc_t, FastNoiseOps>(r);
      else
        v = logistic_from_bits<acc_t, FastNoiseOps>(r);
      scalar_t o = static_cast<scalar_t>(v);
      if (kind == 1 && !(static_cast<acc_t>(o) < static_cast<acc_t>(below_one))) o = below_one;
      if (kind == 1 && !(static_cast<acc_t>(o) > acc_t(0))) o = above_zero;
      out[i0 + e] = o;
    }
  });
}

}  // namespace

cudaError_t noise(const NoiseArgs& a, const Launch& l) {
  if (a.numel == 0) return cudaSuccess;
  const int kind =
      static_cast<int>(a.kind);  // 0 bits, 1 uniform, 2 exponential, 3 Gumbel, 4 logistic
  if (a.kind == NoiseKind::kBits) {
    noise_kernel<float, float><<<chunk_grid(l, a.numel, 4), kThreads, 0, l.stream>>>(
        nullptr, static_cast<int64_t*>(a.out), a.numel, kind, l.philox);
    return cudaGetLastError();
  }
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    noise_kernel<scalar_t, acc_t><<<chunk_grid(l, a.numel, 4), kThreads, 0, l.stream>>>(
        static_cast<scalar_t*>(a.out), nullptr, a.numel, kind, l.philox);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace concrete_ext
