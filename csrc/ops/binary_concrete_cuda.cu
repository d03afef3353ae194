// CUDA kernels of the elementwise ops (kernels.h): Binary Concrete samples (Philox noise in
// registers, one call per 4 elements), their backward, both log-densities and their backward, and
// the noise op. Each thread handles chunks of V elements (16-byte loads when aligned) in a
// grid-stride loop. Formulas: concrete_ext/math/binary_concrete.h.
#include "concrete_ext/dispatch.h"
#include "concrete_ext/math/binary_concrete.h"
#include "cuda_common.cuh"
#include "kernels.h"

namespace concrete_ext {
namespace cuda {
namespace {

namespace bc = binary_concrete;

// Calls f(i0) for every chunk [i0, i0 + V) of [0, numel) this thread owns.
template <int V, typename F>
__device__ __forceinline__ void for_each_chunk(int64_t numel, F&& f) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t i0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V; i0 < numel;
       i0 += step) {
    f(i0);
  }
}

// Per-element temperature of a chunk: tau.at(i) (stride 0 or 1, or the host scalar).
template <int V, typename acc_t>
__device__ __forceinline__ void tau_chunk(TauView<acc_t> tau, int64_t i0, int64_t numel,
                                          acc_t (&t)[V]) {
#pragma unroll
  for (int e = 0; e < V; ++e) t[e] = i0 + e < numel ? tau.at(i0 + e) : acc_t(1);
}

template <typename scalar_t, typename acc_t>
__global__ void binary_sample_kernel(const scalar_t* __restrict__ logits,
                                     scalar_t* __restrict__ out, int64_t numel,
                                     TauView<acc_t> tau, at::PhiloxCudaState philox,
                                     bool logit_space, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  const SeedOffset so = unpack_seed(philox);
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t a[V], t[V], o[V];
    uint32_t r[V];
    load_chunk<V>(logits, i0, numel, vec_ok, a, acc_t(0));
    tau_chunk<V>(tau, i0, numel, t);
    chunk_bits<V>(so, static_cast<uint64_t>(i0), static_cast<int>(numel - i0 < V ? numel - i0 : V), r);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const acc_t l = logistic_from_bits<acc_t, FastNoiseOps>(r[e]);
      const acc_t inv = acc_t(1) / t[e];
      o[e] = logit_space ? bc::sample_logit(a[e], l, inv) : bc::sample(a[e], l, inv);
    }
    store_chunk<V>(out, i0, numel, vec_ok, o);
  });
}

template <typename scalar_t, typename acc_t>
__global__ void binary_sample_backward_kernel(const scalar_t* __restrict__ grad,
                                              const scalar_t* __restrict__ sample,
                                              scalar_t* __restrict__ grad_logits,
                                              acc_t* __restrict__ grad_tau, int64_t numel,
                                              TauView<acc_t> tau, bool logit_space, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t g[V], s[V], t[V], d[V], dt[V];
    load_chunk<V>(grad, i0, numel, vec_ok, g, acc_t(0));
    load_chunk<V>(sample, i0, numel, vec_ok, s, acc_t(0.5));
    tau_chunk<V>(tau, i0, numel, t);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const acc_t inv = acc_t(1) / t[e];
      if (logit_space) {
        bc::sample_logit_backward(g[e], s[e], inv, &d[e], &dt[e]);
      } else {
        bc::sample_backward(g[e], s[e], inv, &d[e], &dt[e]);
      }
    }
    store_chunk<V>(grad_logits, i0, numel, vec_ok, d);
    if (grad_tau) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (i0 + e < numel) grad_tau[i0 + e] = dt[e];
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
__global__ void binary_log_prob_kernel(const scalar_t* __restrict__ value,
                                       const scalar_t* __restrict__ logits,
                                       scalar_t* __restrict__ out, int64_t numel,
                                       TauView<acc_t> tau, bool logit_space, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t v[V], a[V], t[V], o[V];
    load_chunk<V>(value, i0, numel, vec_ok, v, acc_t(0.5));
    load_chunk<V>(logits, i0, numel, vec_ok, a, acc_t(0));
    tau_chunk<V>(tau, i0, numel, t);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      o[e] = logit_space ? bc::logit_log_prob(v[e], a[e], t[e]) : bc::log_prob(v[e], a[e], t[e]);
    }
    store_chunk<V>(out, i0, numel, vec_ok, o);
  });
}

template <typename scalar_t, typename acc_t>
__global__ void binary_log_prob_backward_kernel(
    const acc_t* __restrict__ grad, const scalar_t* __restrict__ value,
    const scalar_t* __restrict__ logits, scalar_t* __restrict__ grad_value,
    scalar_t* __restrict__ grad_logits, acc_t* __restrict__ grad_tau, int64_t numel,
    TauView<acc_t> tau, bool logit_space, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t v[V], a[V], t[V], dv[V], da[V], dt[V];
    load_chunk<V>(value, i0, numel, vec_ok, v, acc_t(0.5));
    load_chunk<V>(logits, i0, numel, vec_ok, a, acc_t(0));
    tau_chunk<V>(tau, i0, numel, t);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const acc_t g = i0 + e < numel ? grad[i0 + e] : acc_t(0);
      if (logit_space) {
        bc::logit_log_prob_grads(v[e], a[e], t[e], &dv[e], &da[e], &dt[e]);
      } else {
        bc::log_prob_grads(v[e], a[e], t[e], &dv[e], &da[e], &dt[e]);
      }
      dv[e] *= g;
      da[e] *= g;
      dt[e] *= g;
    }
    if (grad_value) store_chunk<V>(grad_value, i0, numel, vec_ok, dv);
    if (grad_logits) store_chunk<V>(grad_logits, i0, numel, vec_ok, da);
    if (grad_tau) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (i0 + e < numel) grad_tau[i0 + e] = dt[e];
      }
    }
  });
}

// 1 - (largest value of T below 1): uniform draws are clamped below 1 in the output dtype.
template <typename T>
constexpr double below_one_gap() {
  return std::is_same_v<T, double> ? 0x1p-53
       : std::is_same_v<T, float>  ? 0x1p-24
       : std::is_same_v<T, c10::Half> ? 0x1p-11 : 0x1p-8;
}

template <typename scalar_t, typename acc_t>
__global__ void noise_kernel(scalar_t* __restrict__ out, int64_t* __restrict__ bits_out,
                             int64_t numel, int kind, at::PhiloxCudaState philox) {
  constexpr int V = 4;
  const SeedOffset so = unpack_seed(philox);
  const scalar_t below_one = static_cast<scalar_t>(1.0 - below_one_gap<scalar_t>());
  // The smallest positive value of the dtype: fp16 would round the smallest draws down to 0.
  const scalar_t above_zero = static_cast<scalar_t>(
      std::is_same_v<scalar_t, c10::Half> ? 0x1p-24 : std::is_same_v<scalar_t, float> ? 0x1p-149
      : std::is_same_v<scalar_t, double> ? 0x1p-1074 : 0x1p-133);
  for_each_chunk<V>(numel, [&](int64_t i0) {
    const uint4x32 q = philox_group(so.seed, so.offset, static_cast<uint64_t>(i0) >> 2);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (i0 + e >= numel) break;
      const uint32_t r = q[e];
      if (kind == 0) {
        bits_out[i0 + e] = static_cast<int64_t>(r);
        continue;
      }
      acc_t v;
      if (kind == 1) v = uniform_from_bits<acc_t>(r);
      else if (kind == 2) v = exponential_from_bits<acc_t, FastNoiseOps>(r);
      else if (kind == 3) v = gumbel_from_bits<acc_t, FastNoiseOps>(r);
      else v = logistic_from_bits<acc_t, FastNoiseOps>(r);
      scalar_t o = static_cast<scalar_t>(v);
      if (kind == 1 && !(static_cast<acc_t>(o) < static_cast<acc_t>(below_one))) o = below_one;
      if (kind == 1 && !(static_cast<acc_t>(o) > acc_t(0))) o = above_zero;
      out[i0 + e] = o;
    }
  });
}

constexpr int kThreads = 256;

inline dim3 chunk_grid(int64_t numel, int V) {
  return dim3(static_cast<unsigned>(grid_for((numel + V - 1) / V, kThreads, kThreads)));
}

template <typename T>
T* opt_ptr(at::Tensor* t) { return t ? t->data_ptr<T>() : nullptr; }

}  // namespace

void Kernels::binary_sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,
                            const RngArgs& rng, bool logit_space) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t numel = logits.numel();
  const at::PhiloxCudaState philox = philox_state(rng, logits.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_sample_cuda", [&] {
    constexpr int V = vec_size<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    binary_sample_kernel<scalar_t, acc_t><<<chunk_grid(numel, V), kThreads, 0, stream>>>(
        a, o, numel, tau.view<acc_t>(), philox, logit_space,
        rows_vectorizable<scalar_t>(numel, {a, o}));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void Kernels::binary_sample_backward(const at::Tensor& grad, const at::Tensor& sample,
                                     at::Tensor& grad_logits, const Temperature& tau,
                                     at::Tensor* grad_tau, bool logit_space) {
  const c10::cuda::CUDAGuard guard(sample.device());
  const int64_t numel = sample.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(sample.scalar_type(), "binary_concrete_sample_backward_cuda", [&] {
    constexpr int V = vec_size<scalar_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* s = sample.data_ptr<scalar_t>();
    scalar_t* d = grad_logits.data_ptr<scalar_t>();
    binary_sample_backward_kernel<scalar_t, acc_t><<<chunk_grid(numel, V), kThreads, 0, stream>>>(
        g, s, d, opt_ptr<acc_t>(grad_tau), numel, tau.view<acc_t>(), logit_space,
        rows_vectorizable<scalar_t>(numel, {g, s, d}));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void Kernels::binary_log_prob(const at::Tensor& value, const at::Tensor& logits, at::Tensor& out,
                              const Temperature& tau, bool logit_space) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t numel = logits.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_log_prob_cuda", [&] {
    constexpr int V = vec_size<scalar_t>();
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    binary_log_prob_kernel<scalar_t, acc_t><<<chunk_grid(numel, V), kThreads, 0, stream>>>(
        v, a, o, numel, tau.view<acc_t>(), logit_space,
        rows_vectorizable<scalar_t>(numel, {v, a, o}));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void Kernels::binary_log_prob_backward(const at::Tensor& grad, const at::Tensor& value,
                                       const at::Tensor& logits, at::Tensor* grad_value,
                                       at::Tensor* grad_logits, at::Tensor* grad_tau,
                                       const Temperature& tau, bool logit_space) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t numel = logits.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_log_prob_backward_cuda", [&] {
    constexpr int V = vec_size<scalar_t>();
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* gv = opt_ptr<scalar_t>(grad_value);
    scalar_t* ga = opt_ptr<scalar_t>(grad_logits);
    binary_log_prob_backward_kernel<scalar_t, acc_t><<<chunk_grid(numel, V), kThreads, 0, stream>>>(
        grad.data_ptr<acc_t>(), v, a, gv, ga, opt_ptr<acc_t>(grad_tau), numel, tau.view<acc_t>(),
        logit_space, rows_vectorizable<scalar_t>(numel, {v, a, gv, ga}));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void Kernels::noise(at::Tensor& out, int64_t kind, const RngArgs& rng) {
  const c10::cuda::CUDAGuard guard(out.device());
  const int64_t numel = out.numel();
  const at::PhiloxCudaState philox = philox_state(rng, out.device());
  if (numel == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (kind == 0) {
    noise_kernel<float, float><<<chunk_grid(numel, 4), kThreads, 0, stream>>>(
        nullptr, out.data_ptr<int64_t>(), numel, 0, philox);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  CE_DISPATCH_FLOATING(out.scalar_type(), "noise_cuda", [&] {
    noise_kernel<scalar_t, acc_t><<<chunk_grid(numel, 4), kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), nullptr, numel, static_cast<int>(kind), philox);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace concrete_ext
