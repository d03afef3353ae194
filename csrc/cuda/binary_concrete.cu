// CUDA kernels of the binary ops: Binary Concrete samples (Philox noise in registers, one call per
// 4 elements), their backward, and both log-densities and their backward. Each thread handles
// chunks of V elements (16-byte loads when aligned) in a grid-stride loop (elementwise.cuh).
// Formulas: concrete_ext/math/binary_concrete.h.
#include "concrete_ext/math/binary_concrete.h"
#include "cuda/elementwise.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

namespace bc = binary_concrete;

// Per-element temperature of a chunk: tau.at(i) (stride 0 or 1, or the host scalar).
template <int V, typename acc_t>
__device__ __forceinline__ void tau_chunk(TauView<acc_t> tau, int64_t i0, int64_t numel,
                                          acc_t (&t)[V]) {
#pragma unroll
  for (int e = 0; e < V; ++e) t[e] = i0 + e < numel ? tau.at(i0 + e) : acc_t(1);
}

template <typename scalar_t, typename acc_t>
__global__ void binary_sample_kernel(const scalar_t* __restrict__ logits,
                                     scalar_t* __restrict__ out, int64_t numel, TauView<acc_t> tau,
                                     at::PhiloxCudaState philox, bool logit_space, bool vec_ok,
                                     int64_t logits_period) {
  constexpr int V = vec_size<scalar_t>();
  const SeedOffset so = unpack_seed(philox);
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t a[V], t[V], o[V];
    Draw<acc_t> r[V];
    load_elems<V>(logits, i0, numel, logits_period, vec_ok, a, acc_t(0));
    tau_chunk<V>(tau, i0, numel, t);
    chunk_bits<V>(so, static_cast<uint64_t>(i0), static_cast<int>(numel - i0 < V ? numel - i0 : V),
                  r);
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
                                              TauView<acc_t> tau, bool logit_space, bool vec_ok,
                                              int64_t grad_period) {
  constexpr int V = vec_size<scalar_t>();
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t g[V], s[V], t[V], d[V], dt[V];
    load_elems<V>(grad, i0, numel, grad_period, vec_ok, g, acc_t(0));
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
                                       TauView<acc_t> tau, bool logit_space, bool vec_ok,
                                       int64_t value_period, int64_t logits_period) {
  constexpr int V = vec_size<scalar_t>();
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t v[V], a[V], t[V], o[V];
    load_elems<V>(value, i0, numel, value_period, vec_ok, v, acc_t(0.5));
    load_elems<V>(logits, i0, numel, logits_period, vec_ok, a, acc_t(0));
    tau_chunk<V>(tau, i0, numel, t);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      o[e] = logit_space ? bc::logit_log_prob(v[e], a[e], t[e]) : bc::log_prob(v[e], a[e], t[e]);
    }
    store_chunk<V>(out, i0, numel, vec_ok, o);
  });
}

template <typename scalar_t, typename acc_t>
__global__ void binary_log_prob_backward_kernel(const acc_t* __restrict__ grad,
                                                const scalar_t* __restrict__ value,
                                                const scalar_t* __restrict__ logits,
                                                scalar_t* __restrict__ grad_value,
                                                scalar_t* __restrict__ grad_logits,
                                                acc_t* __restrict__ grad_tau, int64_t numel,
                                                TauView<acc_t> tau, bool logit_space, bool vec_ok,
                                                int64_t value_period, int64_t logits_period) {
  constexpr int V = vec_size<scalar_t>();
  for_each_chunk<V>(numel, [&](int64_t i0) {
    acc_t v[V], a[V], t[V], dv[V], da[V], dt[V];
    load_elems<V>(value, i0, numel, value_period, vec_ok, v, acc_t(0.5));
    load_elems<V>(logits, i0, numel, logits_period, vec_ok, a, acc_t(0));
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

}  // namespace

cudaError_t binary_sample(const BinarySampleArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    constexpr int V = vec_size<scalar_t>();
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    auto* o = static_cast<scalar_t*>(a.out);
    binary_sample_kernel<scalar_t, acc_t><<<chunk_grid(l, a.numel, V), kThreads, 0, l.stream>>>(
        logits, o, a.numel, tau_view<acc_t>(a.tau), l.philox, a.logit_space,
        rows_vectorizable<scalar_t>(a.numel, {logits, o}) &&
            periodic_vectorizable<scalar_t>({a.logits_period}),
        a.logits_period);
    return cudaGetLastError();
  });
}

cudaError_t binary_sample_backward(const BinarySampleBackwardArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    constexpr int V = vec_size<scalar_t>();
    const auto* g = static_cast<const scalar_t*>(a.grad);
    const auto* s = static_cast<const scalar_t*>(a.sample);
    auto* d = static_cast<scalar_t*>(a.grad_logits);
    binary_sample_backward_kernel<scalar_t, acc_t>
        <<<chunk_grid(l, a.numel, V), kThreads, 0, l.stream>>>(
            g, s, d, static_cast<acc_t*>(a.grad_tau), a.numel, tau_view<acc_t>(a.tau),
            a.logit_space,
            rows_vectorizable<scalar_t>(a.numel, {g, s, d}) &&
                periodic_vectorizable<scalar_t>({a.grad_period}),
            a.grad_period);
    return cudaGetLastError();
  });
}

cudaError_t binary_log_prob(const BinaryLogProbArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    constexpr int V = vec_size<scalar_t>();
    const auto* v = static_cast<const scalar_t*>(a.value);
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    auto* o = static_cast<scalar_t*>(a.out);
    binary_log_prob_kernel<scalar_t, acc_t><<<chunk_grid(l, a.numel, V), kThreads, 0, l.stream>>>(
        v, logits, o, a.numel, tau_view<acc_t>(a.tau), a.logit_space,
        rows_vectorizable<scalar_t>(a.numel, {v, logits, o}) &&
            periodic_vectorizable<scalar_t>({a.value_period, a.logits_period}),
        a.value_period, a.logits_period);
    return cudaGetLastError();
  });
}

cudaError_t binary_log_prob_backward(const BinaryLogProbBackwardArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    constexpr int V = vec_size<scalar_t>();
    const auto* v = static_cast<const scalar_t*>(a.value);
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    auto* gv = static_cast<scalar_t*>(a.grad_value);
    auto* ga = static_cast<scalar_t*>(a.grad_logits);
    binary_log_prob_backward_kernel<scalar_t, acc_t>
        <<<chunk_grid(l, a.numel, V), kThreads, 0, l.stream>>>(
            static_cast<const acc_t*>(a.grad), v, logits, gv, ga, static_cast<acc_t*>(a.grad_tau),
            a.numel, tau_view<acc_t>(a.tau), a.logit_space,
            rows_vectorizable<scalar_t>(a.numel, {v, logits, gv, ga}) &&
                periodic_vectorizable<scalar_t>({a.value_period, a.logits_period}),
            a.value_period, a.logits_period);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace concrete_ext
