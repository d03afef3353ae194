// CUDA kernels of concrete_sample / exp_concrete_sample and their backward: Philox noise in
// registers and the tempered (log-)softmax of each row in one launch; backward from the saved
// sample alone. Scaffold and configurations: row_kernel.cuh.
#include "cuda/categorical.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

struct Sample {
  template <typename scalar_t>
  struct Params {
    const scalar_t* logits;
    scalar_t* out;
    int64_t rows, n;
    TauView<acc_type<scalar_t>> tau;
    at::PhiloxCudaState philox;
    bool log_space, vec_ok;
    int64_t logits_period;
  };
  static constexpr Ladder kLadder = Ladder::kFull;
  static constexpr int kArrays = 1;

  template <typename scalar_t>
  __device__ __forceinline__ static SeedOffset start(const Params<scalar_t>& p) {
    return unpack_seed(p.philox);
  }

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const SeedOffset& so,
                                             int64_t row, int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    constexpr int CC = LOOPED ? 1 : C;
    const int64_t n = p.n, base = row * n, a_base = wrap(row, p.logits_period) * n;
    const bool vec_ok = p.vec_ok, log_space = p.log_space;
    const acc_t inv = acc_t(1) / p.tau.at(row);
    acc_t z[CC][V];
    acc_t m, s;
    if constexpr (LOOPED) {
      MaxSum<acc_t> st = MaxSum<acc_t>::identity();
      for_chunks<G, C, V, LOOPED>(n, lane, [&](int, int64_t k0) {
        acc_t zc[V];
        perturbed_chunk<V>(p.logits, a_base, base, k0, n, vec_ok, so, inv, zc);
#pragma unroll
        for (int e = 0; e < V; ++e) online_add<FastNoiseOps>(st, zc[e]);
      });
      st = red.max_sum(st);
      m = st.max;
      s = st.sum;
    } else {
      acc_t mx = neg_inf<acc_t>();
#pragma unroll
      for (int c = 0; c < CC; ++c) {
#pragma unroll
        for (int e = 0; e < V; ++e) z[c][e] = neg_inf<acc_t>();
      }
      for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
        perturbed_chunk<V>(p.logits, a_base, base, k0, n, vec_ok, so, inv, z[c]);
#pragma unroll
        for (int e = 0; e < V; ++e) mx = z[c][e] > mx ? z[c][e] : mx;
      });
      m = red.max(mx);
      acc_t sum = 0;
#pragma unroll
      for (int c = 0; c < CC; ++c) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          // exp(-inf - m) = 0 for padding and masked categories; NaN when the whole row is masked.
          const acc_t ex = FastNoiseOps::exp(z[c][e] - m);
          sum += ex;
          if (!log_space) z[c][e] = ex;
        }
      }
      s = red.sum(sum);
    }
    const acc_t lse = m + LibmOps::log(s), inv_s = acc_t(1) / s;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t o[V];
      if constexpr (LOOPED) {
        perturbed_chunk<V>(p.logits, a_base, base, k0, n, vec_ok, so, inv, o);
#pragma unroll
        for (int e = 0; e < V; ++e)
          o[e] = log_space ? o[e] - lse : FastNoiseOps::exp(o[e] - m) * inv_s;
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = log_space ? z[c][e] - lse : z[c][e] * inv_s;
      }
      store_chunk<V>(p.out + base, k0, n, vec_ok, o);
    });
  }
};

struct SampleBackward : Stateless {
  template <typename scalar_t>
  struct Params {
    const scalar_t* grad;
    const scalar_t* sample;
    scalar_t* grad_logits;
    acc_type<scalar_t>* grad_tau;  // nullable
    int64_t rows, n;
    TauView<acc_type<scalar_t>> tau;
    bool log_space, vec_ok;
    int64_t grad_period;
  };
  static constexpr Ladder kLadder = Ladder::kFull;
  static constexpr int kArrays = 2;

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const NoState&, int64_t row,
                                             int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    constexpr int CC = LOOPED ? 1 : C;
    const int64_t n = p.n, base = row * n, g_base = wrap(row, p.grad_period) * n;
    const bool vec_ok = p.vec_ok, log_space = p.log_space;
    const acc_t inv = acc_t(1) / p.tau.at(row);
    acc_t sv[CC][V], gv[CC][V];
    // Pass 1: sum of dy over unmasked entries (log form) or sum of x dx (simplex form), in double
    // (rows up to 2^17 elements).
    double part = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t s[V], g[V];
      load_chunk<V>(p.sample + base, k0, n, vec_ok, s, log_space ? neg_inf<acc_t>() : acc_t(0));
      load_chunk<V>(p.grad + g_base, k0, n, vec_ok, g, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) {
        part += log_space ? ec::unmasked_dy(g[e], s[e]) : s[e] * g[e];
        if constexpr (!LOOPED) {
          sv[c][e] = s[e];
          gv[c][e] = g[e];
        }
      }
    });
    const acc_t total = static_cast<acc_t>(red.sum_double(part));
    // Pass 2: d logits, and the temperature term.
    double acc = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t s[V], g[V], d[V];
      if constexpr (LOOPED) {
        load_chunk<V>(p.sample + base, k0, n, vec_ok, s, log_space ? neg_inf<acc_t>() : acc_t(0));
        load_chunk<V>(p.grad + g_base, k0, n, vec_ok, g, acc_t(0));
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          s[e] = sv[c][e];
          g[e] = gv[c][e];
        }
      }
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (log_space) {
          const acc_t dz = ec::dz_from_log(g[e], s[e], FastNoiseOps::exp(s[e]), total);
          d[e] = dz * inv;
          if (p.grad_tau) acc += ec::dtau_term_log(dz, s[e]);
        } else {
          const acc_t dz = ec::dz_from_simplex(g[e], s[e], total);
          d[e] = dz * inv;
          if (p.grad_tau)
            acc += ec::dtau_term_simplex(dz, s[e], s[e] > acc_t(0) ? LibmOps::log(s[e]) : acc_t(0));
        }
      }
      store_chunk<V>(p.grad_logits + base, k0, n, vec_ok, d);
    });
    if (p.grad_tau) {  // uniform across the group: every thread takes the branch or none does
      const double t = red.sum_double(acc);
      if (lane == 0) p.grad_tau[row] = -inv * static_cast<acc_t>(t);
    }
  }
};

}  // namespace

cudaError_t concrete_sample(const SampleArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    auto* out = static_cast<scalar_t*>(a.out);
    const Sample::Params<scalar_t> p{logits,
                                     out,
                                     a.rows,
                                     a.n,
                                     tau_view<acc_t>(a.tau),
                                     l.philox,
                                     a.log_space,
                                     rows_vectorizable<scalar_t>(a.n, {logits, out}),
                                     a.logits_period};
    return launch_rows<Sample>(p, l);
  });
}

cudaError_t concrete_sample_backward(const SampleBackwardArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* g = static_cast<const scalar_t*>(a.grad);
    const auto* s = static_cast<const scalar_t*>(a.sample);
    auto* d = static_cast<scalar_t*>(a.grad_logits);
    const SampleBackward::Params<scalar_t> p{g,
                                             s,
                                             d,
                                             static_cast<acc_t*>(a.grad_tau),
                                             a.rows,
                                             a.n,
                                             tau_view<acc_t>(a.tau),
                                             a.log_space,
                                             rows_vectorizable<scalar_t>(a.n, {g, s, d}),
                                             a.grad_period};
    return launch_rows<SampleBackward>(p, l);
  });
}

}  // namespace cuda
}  // namespace concrete_ext
