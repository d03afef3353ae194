// CUDA kernels of the hard Gumbel-softmax: gumbel_max_sample (also the straight-through forward)
// and the straight-through backward, which recomputes the soft sample from the saved
// (seed, offset). Scaffold and configurations: row_kernel.cuh.
#include "cuda/categorical.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

struct GumbelMax {
  template <typename scalar_t>
  struct Params {
    const scalar_t* logits;
    scalar_t* out;
    int64_t rows, n;
    at::PhiloxCudaState philox;
    int64_t* rng_state;  // nullable: [seed, offset] of the call, for the straight-through backward
    bool vec_ok;
    int64_t logits_period;
  };
  static constexpr Ladder kLadder = Ladder::kLooped;
  static constexpr int kArrays = 1;

  template <typename scalar_t>
  __device__ __forceinline__ static SeedOffset start(const Params<scalar_t>& p) {
    const SeedOffset so = unpack_seed(p.philox);
    if (p.rng_state != nullptr && blockIdx.x == 0 && threadIdx.x == 0) {
      p.rng_state[0] = static_cast<int64_t>(so.seed);
      p.rng_state[1] = static_cast<int64_t>(so.offset);
    }
    return so;
  }

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const SeedOffset& so,
                                             int64_t row, int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    const int64_t n = p.n, base = row * n, a_base = wrap(row, p.logits_period) * n;
    const bool vec_ok = p.vec_ok;
    ArgMax<acc_t> best = ArgMax<acc_t>::identity();
    // The same chunks as the register configurations, but nothing needs keeping.
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t z[V];
      perturbed_chunk<V>(p.logits, a_base, base, k0, n, vec_ok, so, acc_t(1), z);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        // NaN never wins (a NaN score counts as -inf), as on the CPU.
        const acc_t v = z[e] == z[e] ? z[e] : neg_inf<acc_t>();
        if (k0 + e < n) best = ArgMaxOp()(best, ArgMax<acc_t>{v, k0 + e});
      }
    });
    best = red.arg_max(best);
    // No category beat -inf (all logits -inf, or NaN): the row has no distribution and samples
    // NaN, as the Concrete samples do (and the CPU kernel).
    const bool none = !(best.value > neg_inf<acc_t>());
    const int64_t idx = best.index;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t o[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        o[e] = none ? NAN_T<acc_t>() : (k0 + e == idx ? acc_t(1) : acc_t(0));
      }
      store_chunk<V>(p.out + base, k0, n, vec_ok, o);
    });
  }
};

struct HardBackward {
  template <typename scalar_t>
  struct Params {
    const scalar_t* grad;
    const scalar_t* logits;
    scalar_t* grad_logits;
    acc_type<scalar_t>* grad_tau;  // nullable
    int64_t rows, n;
    TauView<acc_type<scalar_t>> tau;
    const int64_t* rng_state;  // [seed, offset] of the forward
    bool vec_ok;
    int64_t grad_period, logits_period;
  };
  static constexpr Ladder kLadder = Ladder::kShort;
  static constexpr int kArrays = 1;

  template <typename scalar_t>
  __device__ __forceinline__ static SeedOffset start(const Params<scalar_t>& p) {
    return SeedOffset{static_cast<uint64_t>(ldg(p.rng_state)),
                      static_cast<uint64_t>(ldg(p.rng_state + 1))};
  }

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const SeedOffset& so,
                                             int64_t row, int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    constexpr int CC = LOOPED ? 1 : C;
    const int64_t n = p.n, base = row * n;
    const int64_t g_base = wrap(row, p.grad_period) * n, a_base = wrap(row, p.logits_period) * n;
    const bool vec_ok = p.vec_ok;
    const acc_t inv = acc_t(1) / p.tau.at(row);
    acc_t z[CC][V];
    // Pass 1: log-sum-exp of z.
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V];
      perturbed_chunk<V>(p.logits, a_base, base, k0, n, vec_ok, so, inv, zc);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<FastNoiseOps>(st, zc[e]);
        if constexpr (!LOOPED) z[c][e] = zc[e];
      }
    });
    st = red.max_sum(st);
    const acc_t lse = st.lse();
    auto soft = [&](int c, int64_t k0, acc_t(&zc)[V]) {
      if constexpr (LOOPED) {
        perturbed_chunk<V>(p.logits, a_base, base, k0, n, vec_ok, so, inv, zc);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) zc[e] = z[c][e];
      }
    };
    // Pass 2: sum_k x_k g_k.
    acc_t part = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V], g[V];
      soft(c, k0, zc);
      load_chunk<V>(p.grad + g_base, k0, n, vec_ok, g, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) part += FastNoiseOps::exp(zc[e] - lse) * g[e];
    });
    const acc_t sxg = red.sum(part);
    // Pass 3: gradients.
    acc_t acc = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V], g[V], d[V];
      soft(c, k0, zc);
      load_chunk<V>(p.grad + g_base, k0, n, vec_ok, g, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const acc_t x = FastNoiseOps::exp(zc[e] - lse);
        const acc_t dz = ec::dz_from_simplex(g[e], x, sxg);
        d[e] = dz * inv;
        acc += ec::dtau_term_simplex(dz, x, zc[e] - lse);
      }
      store_chunk<V>(p.grad_logits + base, k0, n, vec_ok, d);
    });
    if (p.grad_tau) {
      const acc_t t = red.sum(acc);
      if (lane == 0) p.grad_tau[row] = -inv * t;
    }
  }
};

}  // namespace

cudaError_t gumbel_max(const GumbelMaxArgs& a, const Launch& l) {
  if (a.rows == 0 && a.rng_state == nullptr) return cudaSuccess;
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    auto* out = static_cast<scalar_t*>(a.out);
    const GumbelMax::Params<scalar_t> p{logits,
                                        out,
                                        a.rows,
                                        a.n,
                                        l.philox,
                                        a.rng_state,
                                        rows_vectorizable<scalar_t>(a.n, {logits, out}),
                                        a.logits_period};
    return launch_rows<GumbelMax>(p, l);
  });
}

cudaError_t gumbel_softmax_hard_backward(const HardBackwardArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* g = static_cast<const scalar_t*>(a.grad);
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    auto* d = static_cast<scalar_t*>(a.grad_logits);
    const HardBackward::Params<scalar_t> p{g,
                                           logits,
                                           d,
                                           static_cast<acc_t*>(a.grad_tau),
                                           a.rows,
                                           a.n,
                                           tau_view<acc_t>(a.tau),
                                           a.rng_state,
                                           rows_vectorizable<scalar_t>(a.n, {g, logits, d}),
                                           a.grad_period,
                                           a.logits_period};
    return launch_rows<HardBackward>(p, l);
  });
}

}  // namespace cuda
}  // namespace concrete_ext
