// Device steps shared by the categorical CUDA kernels (concrete_sample.cu, gumbel_softmax.cu,
// concrete_log_prob.cu, relaxed_kl.cu). Formulas: concrete_ext/math/exp_concrete.h.
#pragma once

#include "concrete_ext/math/exp_concrete.h"
#include "cuda/row_kernel.cuh"

namespace concrete_ext {
namespace cuda {

namespace ec = exp_concrete;

// Online (max, sum exp) update of a thread's running state with one value. The sampling kernels
// use the SFU exp (Ops = FastNoiseOps); the log-densities use the accurate one (LibmOps), because
// their gradients take 1 - n softmax(w), which cancels for large n and amplifies any error in the
// log-sum-exp (with __expf, concrete_log_prob backward at n = 8192 in bf16 was 5x further from the
// float64 truth than the CPU kernel).
template <typename Ops, typename T>
__device__ __forceinline__ void online_add(MaxSum<T>& st, T v) {
  if (v > st.max) {
    st.sum = st.sum * Ops::exp(st.max - v) + T(1);
    st.max = v;
  } else if (v > neg_inf<T>()) {
    st.sum += Ops::exp(v - st.max);
  }
}

// The perturbed logits z = (a + g) / tau of one chunk (-inf beyond the row end): the logits at
// a_base (their stored row), the noise of the output row at base (row * n).
template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void perturbed_chunk(const scalar_t* __restrict__ a, int64_t a_base,
                                                int64_t base, int64_t k0, int64_t n, bool vec_ok,
                                                SeedOffset so, acc_t inv_tau, acc_t (&z)[V]) {
  acc_t av[V];
  load_chunk<V>(a + a_base, k0, n, vec_ok, av, neg_inf<acc_t>());
  Draw<acc_t> r[V];
  const int valid = static_cast<int>(n - k0 < V ? n - k0 : V);
  chunk_bits<V>(so, static_cast<uint64_t>(base + k0), valid, r);
#pragma unroll
  for (int e = 0; e < V; ++e) {
    z[e] = k0 + e < n ? ec::perturb(av[e], gumbel_from_bits<acc_t, FastNoiseOps>(r[e]), inv_tau)
                      : neg_inf<acc_t>();
  }
}

}  // namespace cuda
}  // namespace concrete_ext
