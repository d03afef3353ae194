// CUDA kernels of the categorical log-densities (exp_concrete_log_prob, concrete_log_prob), forward
// and backward: the row's online log-sum-exp of w = a - tau y and its sums, one pass per reduction.
// Scaffold and configurations: row_kernel.cuh.
#include "cuda/categorical.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

// y and w = a - tau y of one chunk (value and logits at their stored rows v_base, a_base); masked
// (and padding) entries get w = -inf.
template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void density_chunk(const scalar_t* __restrict__ value,
                                              const scalar_t* __restrict__ logits, int64_t v_base,
                                              int64_t a_base, int64_t k0, int64_t n, bool vec_ok,
                                              acc_t tau, bool log_space, acc_t (&y)[V],
                                              acc_t (&w)[V], bool (&live)[V]) {
  acc_t a[V];
  load_chunk<V>(value + v_base, k0, n, vec_ok, y, acc_t(1));
  load_chunk<V>(logits + a_base, k0, n, vec_ok, a, neg_inf<acc_t>());
#pragma unroll
  for (int e = 0; e < V; ++e) {
    if (!log_space) y[e] = LibmOps::log(y[e]);
    live[e] = !ec::masked(a[e]);
    w[e] = live[e] ? ec::w_term(a[e], y[e], tau) : neg_inf<acc_t>();
  }
}

struct LogProb : Stateless {
  template <typename scalar_t>
  struct Params {
    const scalar_t* value;
    const scalar_t* logits;
    scalar_t* out;
    int64_t rows, n;
    TauView<acc_type<scalar_t>> tau;
    bool log_space, vec_ok;
    int64_t value_period, logits_period;
  };
  static constexpr Ladder kLadder = Ladder::kLooped;
  static constexpr int kArrays = 1;

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const NoState&, int64_t row,
                                             int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    const int64_t n = p.n;
    const int64_t v_base = wrap(row, p.value_period) * n, a_base = wrap(row, p.logits_period) * n;
    const acc_t t = p.tau.at(row);
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    // Row sums that feed cancelling differences: in double.
    double sum_w = 0, sum_y = 0;
    acc_t count = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], w[V];
      bool live[V];
      density_chunk<V>(p.value, p.logits, v_base, a_base, k0, n, p.vec_ok, t, p.log_space, y, w,
                       live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<LibmOps>(st, w[e]);
        sum_w += live[e] ? w[e] : acc_t(0);
        sum_y += live[e] ? y[e] : acc_t(0);
        count += live[e] ? acc_t(1) : acc_t(0);
      }
    });
    st = red.max_sum(st);
    sum_w = red.sum_double(sum_w);
    sum_y = red.sum_double(sum_y);
    count = red.sum(count);
    if (lane == 0) {
      const int64_t nc = static_cast<int64_t>(count);
      acc_t lp = ec::log_prob<acc_t>(nc, t, static_cast<acc_t>(sum_w), st.lse());
      if (!p.log_space) lp -= static_cast<acc_t>(sum_y);
      p.out[row] = static_cast<scalar_t>(lp);
    }
  }
};

struct LogProbBackward : Stateless {
  template <typename scalar_t>
  struct Params {
    const acc_type<scalar_t>* grad;  // one per row
    const scalar_t* value;
    const scalar_t* logits;
    scalar_t* grad_value;          // nullable
    scalar_t* grad_logits;         // nullable
    acc_type<scalar_t>* grad_tau;  // nullable
    int64_t rows, n;
    TauView<acc_type<scalar_t>> tau;
    bool log_space, vec_ok;
    int64_t value_period, logits_period;
  };
  static constexpr Ladder kLadder = Ladder::kLooped;
  static constexpr int kArrays = 1;

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const NoState&, int64_t row,
                                             int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    const int64_t n = p.n, base = row * n;
    const int64_t v_base = wrap(row, p.value_period) * n, a_base = wrap(row, p.logits_period) * n;
    const bool vec_ok = p.vec_ok, log_space = p.log_space;
    const acc_t t = p.tau.at(row), g = ldg(p.grad + row);
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    acc_t count = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], w[V];
      bool live[V];
      density_chunk<V>(p.value, p.logits, v_base, a_base, k0, n, vec_ok, t, log_space, y, w, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<LibmOps>(st, w[e]);
        count += live[e] ? acc_t(1) : acc_t(0);
      }
    });
    st = red.max_sum(st);
    const int64_t nc = static_cast<int64_t>(red.sum(count));
    const acc_t lse = st.lse();
    double sum_yc = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], w[V], dv[V], da[V];
      bool live[V];
      density_chunk<V>(p.value, p.logits, v_base, a_base, k0, n, vec_ok, t, log_space, y, w, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const acc_t c = live[e] ? ec::one_minus_ns<acc_t>(nc, LibmOps::exp(w[e] - lse)) : acc_t(0);
        da[e] = g * c;
        const acc_t dy = -g * t * c;
        // On the simplex d/dx = (d/dy - 1) / x with x = exp(y); masked categories get 0.
        dv[e] = log_space ? dy : (live[e] ? (dy - g) * LibmOps::exp(-y[e]) : acc_t(0));
        sum_yc += live[e] ? y[e] * c : acc_t(0);
      }
      if (p.grad_logits) store_chunk<V>(p.grad_logits + base, k0, n, vec_ok, da);
      if (p.grad_value) store_chunk<V>(p.grad_value + base, k0, n, vec_ok, dv);
    });
    if (p.grad_tau) {
      const double syc = red.sum_double(sum_yc);
      if (lane == 0) p.grad_tau[row] = g * ec::log_prob_dtau<acc_t>(nc, t, static_cast<acc_t>(syc));
    }
  }
};

}  // namespace

cudaError_t concrete_log_prob(const LogProbArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* v = static_cast<const scalar_t*>(a.value);
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    const LogProb::Params<scalar_t> p{v,
                                      logits,
                                      static_cast<scalar_t*>(a.out),
                                      a.rows,
                                      a.n,
                                      tau_view<acc_t>(a.tau),
                                      a.log_space,
                                      rows_vectorizable<scalar_t>(a.n, {v, logits}),
                                      a.value_period,
                                      a.logits_period};
    return launch_rows<LogProb>(p, l);
  });
}

cudaError_t concrete_log_prob_backward(const LogProbBackwardArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* v = static_cast<const scalar_t*>(a.value);
    const auto* logits = static_cast<const scalar_t*>(a.logits);
    auto* gv = static_cast<scalar_t*>(a.grad_value);
    auto* ga = static_cast<scalar_t*>(a.grad_logits);
    const LogProbBackward::Params<scalar_t> p{static_cast<const acc_t*>(a.grad),
                                              v,
                                              logits,
                                              gv,
                                              ga,
                                              static_cast<acc_t*>(a.grad_tau),
                                              a.rows,
                                              a.n,
                                              tau_view<acc_t>(a.tau),
                                              a.log_space,
                                              rows_vectorizable<scalar_t>(a.n, {v, logits, gv, ga}),
                                              a.value_period,
                                              a.logits_period};
    return launch_rows<LogProbBackward>(p, l);
  });
}

}  // namespace cuda
}  // namespace concrete_ext
