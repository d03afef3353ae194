// CUDA kernels of the categorical log-densities (exp_concrete_log_prob, concrete_log_prob) and
// of the fused relaxed-KL pass (relaxed_kl_sample), forward and backward.
#include "exp_concrete_cuda.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

// ---- log-densities -------------------------------------------------------------------------------

// y and w = a - tau y of one chunk; masked (and padding) entries get w = -inf.
template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void density_chunk(const scalar_t* __restrict__ value,
                                              const scalar_t* __restrict__ logits, int64_t base,
                                              int64_t k0, int64_t n, bool vec_ok, acc_t tau,
                                              bool log_space, acc_t (&y)[V], acc_t (&w)[V],
                                              bool (&live)[V]) {
  acc_t a[V];
  load_chunk<V>(value + base, k0, n, vec_ok, y, acc_t(1));
  load_chunk<V>(logits + base, k0, n, vec_ok, a, neg_inf<acc_t>());
#pragma unroll
  for (int e = 0; e < V; ++e) {
    if (!log_space) y[e] = LibmOps::log(y[e]);
    live[e] = !ec::masked(a[e]);
    w[e] = live[e] ? ec::w_term(a[e], y[e], tau) : neg_inf<acc_t>();
  }
}

template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
log_prob_kernel(const scalar_t* __restrict__ value, const scalar_t* __restrict__ logits,
                scalar_t* __restrict__ out, int64_t rows, int64_t n, TauView<acc_t> tau,
                bool log_space, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  using R = Reducer<G, acc_t>;
  using RM = Reducer<G, MaxSum<acc_t>>;
  using RD = Reducer<G, double>;  // row sums that feed cancelling differences: in double
  __shared__ union {
    typename R::Storage s;
    typename RM::Storage m;
    typename RD::Storage d;
  } red;
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    const acc_t t = tau.at(row);
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    double sum_w = 0, sum_y = 0;
    acc_t count = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], w[V];
      bool live[V];
      density_chunk<V>(value, logits, base, k0, n, vec_ok, t, log_space, y, w, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<LibmOps>(st, w[e]);
        sum_w += live[e] ? w[e] : acc_t(0);
        sum_y += live[e] ? y[e] : acc_t(0);
        count += live[e] ? acc_t(1) : acc_t(0);
      }
    });
    st = RM::all_reduce(st, MaxSumOp(), red.m);
    sum_w = RD::all_reduce(sum_w, SumOp(), red.d);
    sum_y = RD::all_reduce(sum_y, SumOp(), red.d);
    count = R::all_reduce(count, SumOp(), red.s);
    if (lane == 0) {
      const int64_t nc = static_cast<int64_t>(count);
      acc_t lp = ec::log_prob<acc_t>(nc, t, static_cast<acc_t>(sum_w), st.lse());
      if (!log_space) lp -= static_cast<acc_t>(sum_y);
      out[row] = static_cast<scalar_t>(lp);
    }
  }
}

template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
log_prob_backward_kernel(const acc_t* __restrict__ grad, const scalar_t* __restrict__ value,
                         const scalar_t* __restrict__ logits, scalar_t* __restrict__ grad_value,
                         scalar_t* __restrict__ grad_logits, acc_t* __restrict__ grad_tau,
                         int64_t rows, int64_t n, TauView<acc_t> tau, bool log_space,
                         bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  using R = Reducer<G, acc_t>;
  using RM = Reducer<G, MaxSum<acc_t>>;
  using RD = Reducer<G, double>;  // row sums that feed cancelling differences: in double
  __shared__ union {
    typename R::Storage s;
    typename RM::Storage m;
    typename RD::Storage d;
  } red;
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    const acc_t t = tau.at(row), g = grad[row];
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    acc_t count = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], w[V];
      bool live[V];
      density_chunk<V>(value, logits, base, k0, n, vec_ok, t, log_space, y, w, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<LibmOps>(st, w[e]);
        count += live[e] ? acc_t(1) : acc_t(0);
      }
    });
    st = RM::all_reduce(st, MaxSumOp(), red.m);
    const int64_t nc = static_cast<int64_t>(R::all_reduce(count, SumOp(), red.s));
    const acc_t lse = st.lse();
    double sum_yc = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], w[V], dv[V], da[V];
      bool live[V];
      density_chunk<V>(value, logits, base, k0, n, vec_ok, t, log_space, y, w, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const acc_t c = live[e] ? ec::one_minus_ns<acc_t>(nc, LibmOps::exp(w[e] - lse)) : acc_t(0);
        da[e] = g * c;
        const acc_t dy = -g * t * c;
        // On the simplex d/dx = (d/dy - 1) / x with x = exp(y); masked categories get 0.
        dv[e] = log_space ? dy : (live[e] ? (dy - g) * LibmOps::exp(-y[e]) : acc_t(0));
        sum_yc += live[e] ? y[e] * c : acc_t(0);
      }
      if (grad_logits) store_chunk<V>(grad_logits + base, k0, n, vec_ok, da);
      if (grad_value) store_chunk<V>(grad_value + base, k0, n, vec_ok, dv);
    });
    if (grad_tau) {
      const double syc = RD::all_reduce(sum_yc, SumOp(), red.d);
      if (lane == 0) grad_tau[row] = g * ec::log_prob_dtau<acc_t>(nc, t, static_cast<acc_t>(syc));
    }
  }
}

// ---- relaxed KL ---------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
relaxed_kl_kernel(const scalar_t* __restrict__ q_logits, const scalar_t* __restrict__ p_logits,
                  scalar_t* __restrict__ y_out, scalar_t* __restrict__ log_q,
                  scalar_t* __restrict__ log_p, int64_t rows, int64_t n, TauView<acc_t> tq,
                  TauView<acc_t> tp, at::PhiloxCudaState philox, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  constexpr int CC = LOOPED ? 1 : C;
  using R = Reducer<G, acc_t>;
  using RM = Reducer<G, MaxSum<acc_t>>;
  using RD = Reducer<G, double>;  // row sums that feed cancelling differences: in double
  __shared__ union {
    typename R::Storage s;
    typename RM::Storage m;
    typename RD::Storage d;
  } red;
  const SeedOffset so = unpack_seed(philox);
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    const acc_t tauq = tq.at(row), taup = tp.at(row), inv = acc_t(1) / tauq;
    acc_t z[CC][V];
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V];
      perturbed_chunk<V>(q_logits, base, k0, n, vec_ok, so, inv, zc);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<FastNoiseOps>(st, zc[e]);
        if constexpr (!LOOPED) z[c][e] = zc[e];
      }
    });
    st = RM::all_reduce(st, MaxSumOp(), red.m);
    const acc_t lse = st.lse();
    // y as returned (rounded to scalar_t), and both densities at it over q's unmasked categories.
    MaxSum<acc_t> sq = MaxSum<acc_t>::identity(), sp = MaxSum<acc_t>::identity();
    double swq = 0, swp = 0;
    acc_t count = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V], aq[V], ap[V], y[V];
      if constexpr (LOOPED) {
        perturbed_chunk<V>(q_logits, base, k0, n, vec_ok, so, inv, zc);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) zc[e] = z[c][e];
      }
      load_chunk<V>(q_logits + base, k0, n, vec_ok, aq, neg_inf<acc_t>());
      load_chunk<V>(p_logits + base, k0, n, vec_ok, ap, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) y[e] = static_cast<acc_t>(static_cast<scalar_t>(zc[e] - lse));
      store_chunk<V>(y_out + base, k0, n, vec_ok, y);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const bool live = !ec::masked(aq[e]);
        const acc_t wq = live ? ec::w_term(aq[e], y[e], tauq) : neg_inf<acc_t>();
        const acc_t wp = live ? ec::w_term(ap[e], y[e], taup) : neg_inf<acc_t>();
        online_add<LibmOps>(sq, wq);
        online_add<LibmOps>(sp, wp);
        swq += live ? wq : acc_t(0);
        swp += live ? wp : acc_t(0);
        count += live ? acc_t(1) : acc_t(0);
      }
    });
    sq = RM::all_reduce(sq, MaxSumOp(), red.m);
    sp = RM::all_reduce(sp, MaxSumOp(), red.m);
    swq = RD::all_reduce(swq, SumOp(), red.d);
    swp = RD::all_reduce(swp, SumOp(), red.d);
    count = R::all_reduce(count, SumOp(), red.s);
    if (lane == 0) {
      const int64_t nc = static_cast<int64_t>(count);
      log_q[row] = static_cast<scalar_t>(ec::log_prob<acc_t>(nc, tauq, static_cast<acc_t>(swq), sq.lse()));
      log_p[row] = static_cast<scalar_t>(ec::log_prob<acc_t>(nc, taup, static_cast<acc_t>(swp), sp.lse()));
    }
  }
}

template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
relaxed_kl_backward_kernel(const scalar_t* __restrict__ grad_y, const acc_t* __restrict__ grad_lq,
                           const acc_t* __restrict__ grad_lp, const scalar_t* __restrict__ y_in,
                           const scalar_t* __restrict__ q_logits,
                           const scalar_t* __restrict__ p_logits, scalar_t* __restrict__ gq_logits,
                           acc_t* __restrict__ gq_tau, scalar_t* __restrict__ gp_logits,
                           acc_t* __restrict__ gp_tau, int64_t rows, int64_t n, TauView<acc_t> tq,
                           TauView<acc_t> tp, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  using R = Reducer<G, acc_t>;
  using RM = Reducer<G, MaxSum<acc_t>>;
  using RD = Reducer<G, double>;  // row sums that feed cancelling differences: in double
  __shared__ union {
    typename R::Storage s;
    typename RM::Storage m;
    typename RD::Storage d;
  } red;
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    const acc_t tauq = tq.at(row), taup = tp.at(row), invq = acc_t(1) / tauq;
    const acc_t gq = grad_lq ? grad_lq[row] : acc_t(0), gp = grad_lp ? grad_lp[row] : acc_t(0);
    // One chunk's y, logits and w_q, w_p (-inf where q masks or beyond the row).
    auto chunk = [&](int64_t k0, acc_t (&y)[V], acc_t (&wq)[V], acc_t (&wp)[V], bool (&live)[V]) {
      acc_t aq[V], ap[V];
      load_chunk<V>(y_in + base, k0, n, vec_ok, y, neg_inf<acc_t>());
      load_chunk<V>(q_logits + base, k0, n, vec_ok, aq, neg_inf<acc_t>());
      load_chunk<V>(p_logits + base, k0, n, vec_ok, ap, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) {
        live[e] = !ec::masked(aq[e]);
        wq[e] = live[e] ? ec::w_term(aq[e], y[e], tauq) : neg_inf<acc_t>();
        wp[e] = live[e] ? ec::w_term(ap[e], y[e], taup) : neg_inf<acc_t>();
      }
    };
    MaxSum<acc_t> sq = MaxSum<acc_t>::identity(), sp = MaxSum<acc_t>::identity();
    acc_t count = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], wq[V], wp[V];
      bool live[V];
      chunk(k0, y, wq, wp, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<LibmOps>(sq, wq[e]);
        online_add<LibmOps>(sp, wp[e]);
        count += live[e] ? acc_t(1) : acc_t(0);
      }
    });
    sq = RM::all_reduce(sq, MaxSumOp(), red.m);
    sp = RM::all_reduce(sp, MaxSumOp(), red.m);
    const int64_t nc = static_cast<int64_t>(R::all_reduce(count, SumOp(), red.s));
    const acc_t lq = sq.lse(), lp = sp.lse();
    // dY_k = gy_k - g_q tau_q c^q_k - g_p tau_p c^p_k, c = 1 - n softmax(w).
    auto per_elem = [&](int64_t k0, acc_t (&y)[V], acc_t (&cq)[V], acc_t (&cp)[V],
                        acc_t (&dY)[V], bool (&live)[V]) {
      acc_t wq[V], wp[V], gy[V];
      chunk(k0, y, wq, wp, live);
      if (grad_y) {
        load_chunk<V>(grad_y + base, k0, n, vec_ok, gy, acc_t(0));
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) gy[e] = 0;
      }
#pragma unroll
      for (int e = 0; e < V; ++e) {
        cq[e] = live[e] ? ec::one_minus_ns<acc_t>(nc, LibmOps::exp(wq[e] - lq)) : acc_t(0);
        cp[e] = live[e] ? ec::one_minus_ns<acc_t>(nc, LibmOps::exp(wp[e] - lp)) : acc_t(0);
        dY[e] = live[e] ? gy[e] - gq * tauq * cq[e] - gp * taup * cp[e] : acc_t(0);
      }
    };
    double sdy = 0, sdyy = 0, sxy = 0, syq = 0, syp = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], cq[V], cp[V], dY[V];
      bool live[V];
      per_elem(k0, y, cq, cp, dY, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const acc_t yk = live[e] ? y[e] : acc_t(0);
        sdy += dY[e];
        sdyy += dY[e] * yk;
        sxy += (live[e] ? LibmOps::exp(y[e]) : acc_t(0)) * yk;
        syq += yk * cq[e];
        syp += yk * cp[e];
      }
    });
    sdy = RD::all_reduce(sdy, SumOp(), red.d);
    sdyy = RD::all_reduce(sdyy, SumOp(), red.d);
    sxy = RD::all_reduce(sxy, SumOp(), red.d);
    syq = RD::all_reduce(syq, SumOp(), red.d);
    syp = RD::all_reduce(syp, SumOp(), red.d);
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t y[V], cq[V], cp[V], dY[V], oq[V], op[V];
      bool live[V];
      per_elem(k0, y, cq, cp, dY, live);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const acc_t dz = ec::dz_from_log(dY[e], y[e], LibmOps::exp(y[e]), static_cast<acc_t>(sdy));
        oq[e] = dz * invq + gq * cq[e];
        op[e] = gp * cp[e];
      }
      if (gq_logits) store_chunk<V>(gq_logits + base, k0, n, vec_ok, oq);
      if (gp_logits) store_chunk<V>(gp_logits + base, k0, n, vec_ok, op);
    });
    if (lane == 0) {
      if (gq_tau) {
        gq_tau[row] = static_cast<acc_t>(-invq * (sdyy - sxy * sdy)) +
                      gq * ec::log_prob_dtau<acc_t>(nc, tauq, static_cast<acc_t>(syq));
      }
      if (gp_tau) gp_tau[row] = gp * ec::log_prob_dtau<acc_t>(nc, taup, static_cast<acc_t>(syp));
    }
  }
}

template <typename scalar_t, typename acc_t>
struct LogProbRun {
    const scalar_t *v, *a; scalar_t* o; int64_t rows, n; TauView<acc_t> tv; bool log_space,
        vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      log_prob_kernel<scalar_t, acc_t, G, C, L><<<row_grid<G>(rows), Group<G>::kBlock, 0, stream>>>(
          v, a, o, rows, n, tv, log_space, vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

template <typename scalar_t, typename acc_t>
struct LogProbBackwardRun {
    const acc_t* g; const scalar_t *v, *a; scalar_t *gv, *ga; acc_t* gt; int64_t rows, n;
    TauView<acc_t> tv; bool log_space, vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      log_prob_backward_kernel<scalar_t, acc_t, G, C, L>
          <<<row_grid<G>(rows), Group<G>::kBlock, 0, stream>>>(g, v, a, gv, ga, gt, rows, n, tv,
                                                               log_space, vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

template <typename scalar_t, typename acc_t>
struct RelaxedKlRun {
    const scalar_t *aq, *ap; scalar_t *yo, *lq, *lp; int64_t rows, n; TauView<acc_t> tvq, tvp;
    at::PhiloxCudaState philox; bool vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      relaxed_kl_kernel<scalar_t, acc_t, G, C, L><<<row_grid<G>(rows), Group<G>::kBlock, 0, stream>>>(
          aq, ap, yo, lq, lp, rows, n, tvq, tvp, philox, vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

template <typename scalar_t, typename acc_t>
struct RelaxedKlBackwardRun {
    const scalar_t* gy; const acc_t *glq, *glp; const scalar_t *yv, *aq, *ap;
    scalar_t* gaq; acc_t* gtq; scalar_t* gap; acc_t* gtp; int64_t rows, n;
    TauView<acc_t> tvq, tvp; bool vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      relaxed_kl_backward_kernel<scalar_t, acc_t, G, C, L>
          <<<row_grid<G>(rows), Group<G>::kBlock, 0, stream>>>(
              gy, glq, glp, yv, aq, ap, gaq, gtq, gap, gtp, rows, n, tvq, tvp, vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

}  // namespace

void Kernels::log_prob(const at::Tensor& value, const at::Tensor& logits, at::Tensor out,
                       const Temperature& tau, bool log_space) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), n = logits.size(1);
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_log_prob_cuda", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {v, a});
    const TauView<acc_t> tv = tau.view<acc_t>();
    using Run = LogProbRun<scalar_t, acc_t>;
    dispatch_looped<scalar_t>(n, Run{v, a, o, rows, n, tv, log_space, vec_ok, stream.stream()});
  });
}

void Kernels::log_prob_backward(const at::Tensor& grad, const at::Tensor& value,
                                const at::Tensor& logits, at::Tensor* grad_value,
                                at::Tensor* grad_logits, at::Tensor* grad_tau,
                                const Temperature& tau, bool log_space) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), n = logits.size(1);
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_log_prob_backward_cuda", [&] {
    const acc_t* g = grad.data_ptr<acc_t>();
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* gv = opt_ptr<scalar_t>(grad_value);
    scalar_t* ga = opt_ptr<scalar_t>(grad_logits);
    acc_t* gt = opt_ptr<acc_t>(grad_tau);
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {v, a, gv, ga});
    const TauView<acc_t> tv = tau.view<acc_t>();
    using Run = LogProbBackwardRun<scalar_t, acc_t>;
    dispatch_looped<scalar_t>(n, Run{g, v, a, gv, ga, gt, rows, n, tv, log_space, vec_ok, stream.stream()});
  });
}

void Kernels::relaxed_kl(const at::Tensor& q_logits, const at::Tensor& p_logits, at::Tensor& y,
                         at::Tensor log_q, at::Tensor log_p, const Temperature& tq,
                         const Temperature& tp, const RngArgs& rng) {
  const c10::cuda::CUDAGuard guard(q_logits.device());
  const int64_t rows = q_logits.size(0), n = q_logits.size(1);
  const at::PhiloxCudaState philox = philox_state(rng, q_logits.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(q_logits.scalar_type(), "relaxed_kl_sample_cuda", [&] {
    const scalar_t* aq = q_logits.data_ptr<scalar_t>();
    const scalar_t* ap = p_logits.data_ptr<scalar_t>();
    scalar_t* yo = y.data_ptr<scalar_t>();
    scalar_t* lq = log_q.data_ptr<scalar_t>();
    scalar_t* lp = log_p.data_ptr<scalar_t>();
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {aq, ap, yo});
    const TauView<acc_t> tvq = tq.view<acc_t>(), tvp = tp.view<acc_t>();
    using Run = RelaxedKlRun<scalar_t, acc_t>;
    dispatch_short<scalar_t>(n, Run{aq, ap, yo, lq, lp, rows, n, tvq, tvp, philox, vec_ok, stream.stream()});
  });
}

void Kernels::relaxed_kl_backward(const at::Tensor& grad_y, const at::Tensor& grad_log_q,
                                  const at::Tensor& grad_log_p, const at::Tensor& y,
                                  const at::Tensor& q_logits, const at::Tensor& p_logits,
                                  at::Tensor* grad_q_logits, at::Tensor* grad_q_tau,
                                  at::Tensor* grad_p_logits, at::Tensor* grad_p_tau,
                                  const Temperature& tq, const Temperature& tp) {
  const c10::cuda::CUDAGuard guard(q_logits.device());
  const int64_t rows = q_logits.size(0), n = q_logits.size(1);
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(q_logits.scalar_type(), "relaxed_kl_sample_backward_cuda", [&] {
    const scalar_t* gy = grad_y.defined() ? grad_y.data_ptr<scalar_t>() : nullptr;
    const acc_t* glq = grad_log_q.defined() ? grad_log_q.data_ptr<acc_t>() : nullptr;
    const acc_t* glp = grad_log_p.defined() ? grad_log_p.data_ptr<acc_t>() : nullptr;
    const scalar_t* yv = y.data_ptr<scalar_t>();
    const scalar_t* aq = q_logits.data_ptr<scalar_t>();
    const scalar_t* ap = p_logits.data_ptr<scalar_t>();
    scalar_t* gaq = opt_ptr<scalar_t>(grad_q_logits);
    scalar_t* gap = opt_ptr<scalar_t>(grad_p_logits);
    acc_t* gtq = opt_ptr<acc_t>(grad_q_tau);
    acc_t* gtp = opt_ptr<acc_t>(grad_p_tau);
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {gy, yv, aq, ap, gaq, gap});
    const TauView<acc_t> tvq = tq.view<acc_t>(), tvp = tp.view<acc_t>();
    using Run = RelaxedKlBackwardRun<scalar_t, acc_t>;
    dispatch_looped<scalar_t>(n, Run{gy, glq, glp, yv, aq, ap, gaq, gtq, gap, gtp, rows, n, tvq, tvp,
                                       vec_ok, stream.stream()});
  });
}


}  // namespace cuda
}  // namespace concrete_ext
