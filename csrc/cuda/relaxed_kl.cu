// CUDA kernels of the fused relaxed-KL pass (relaxed_kl_sample): y ~ ExpConcrete(q) and both
// log-densities at it in one launch, and the backward. Scaffold and configurations: row_kernel.cuh.
#include "cuda/categorical.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

struct RelaxedKl {
  template <typename scalar_t>
  struct Params {
    const scalar_t* q_logits;
    const scalar_t* p_logits;
    scalar_t* y;
    scalar_t* log_q;
    scalar_t* log_p;
    int64_t rows, n;
    TauView<acc_type<scalar_t>> tq, tp;
    at::PhiloxCudaState philox;
    bool vec_ok;
    int64_t q_period, p_period;  // q_logits, p_logits
  };
  static constexpr Ladder kLadder = Ladder::kShort;
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
    const int64_t n = p.n, base = row * n;
    const int64_t q_base = wrap(row, p.q_period) * n, p_base = wrap(row, p.p_period) * n;
    const bool vec_ok = p.vec_ok;
    const acc_t tauq = p.tq.at(row), taup = p.tp.at(row), inv = acc_t(1) / tauq;
    acc_t z[CC][V];
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V];
      perturbed_chunk<V>(p.q_logits, q_base, base, k0, n, vec_ok, so, inv, zc);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<FastNoiseOps>(st, zc[e]);
        if constexpr (!LOOPED) z[c][e] = zc[e];
      }
    });
    st = red.max_sum(st);
    const acc_t lse = st.lse();
    // y as returned (rounded to scalar_t), and both densities at it over q's unmasked categories;
    // row sums that feed cancelling differences in double.
    MaxSum<acc_t> sq = MaxSum<acc_t>::identity(), sp = MaxSum<acc_t>::identity();
    double swq = 0, swp = 0;
    acc_t count = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V], aq[V], ap[V], y[V];
      if constexpr (LOOPED) {
        perturbed_chunk<V>(p.q_logits, q_base, base, k0, n, vec_ok, so, inv, zc);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) zc[e] = z[c][e];
      }
      load_chunk<V>(p.q_logits + q_base, k0, n, vec_ok, aq, neg_inf<acc_t>());
      load_chunk<V>(p.p_logits + p_base, k0, n, vec_ok, ap, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) y[e] = static_cast<acc_t>(static_cast<scalar_t>(zc[e] - lse));
      store_chunk<V>(p.y + base, k0, n, vec_ok, y);
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
    sq = red.max_sum(sq);
    sp = red.max_sum(sp);
    swq = red.sum_double(swq);
    swp = red.sum_double(swp);
    count = red.sum(count);
    if (lane == 0) {
      const int64_t nc = static_cast<int64_t>(count);
      p.log_q[row] =
          static_cast<scalar_t>(ec::log_prob<acc_t>(nc, tauq, static_cast<acc_t>(swq), sq.lse()));
      p.log_p[row] =
          static_cast<scalar_t>(ec::log_prob<acc_t>(nc, taup, static_cast<acc_t>(swp), sp.lse()));
    }
  }
};

struct RelaxedKlBackward : Stateless {
  template <typename scalar_t>
  struct Params {
    const scalar_t* grad_y;                // nullable
    const acc_type<scalar_t>* grad_log_q;  // per row, nullable
    const acc_type<scalar_t>* grad_log_p;  // per row, nullable
    const scalar_t* y;
    const scalar_t* q_logits;
    const scalar_t* p_logits;
    scalar_t* grad_q_logits;         // nullable
    acc_type<scalar_t>* grad_q_tau;  // nullable
    scalar_t* grad_p_logits;         // nullable
    acc_type<scalar_t>* grad_p_tau;  // nullable
    int64_t rows, n;
    TauView<acc_type<scalar_t>> tq, tp;
    bool vec_ok;
    int64_t grad_y_period, q_period, p_period;
  };
  static constexpr Ladder kLadder = Ladder::kLooped;
  static constexpr int kArrays = 1;

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const NoState&, int64_t row,
                                             int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    const int64_t n = p.n, base = row * n;
    const int64_t q_base = wrap(row, p.q_period) * n, p_base = wrap(row, p.p_period) * n;
    const int64_t gy_base = wrap(row, p.grad_y_period) * n;
    const bool vec_ok = p.vec_ok;
    const acc_t tauq = p.tq.at(row), taup = p.tp.at(row), invq = acc_t(1) / tauq;
    const acc_t gq = p.grad_log_q ? ldg(p.grad_log_q + row) : acc_t(0);
    const acc_t gp = p.grad_log_p ? ldg(p.grad_log_p + row) : acc_t(0);
    // One chunk's y, logits and w_q, w_p (-inf where q masks or beyond the row).
    auto chunk = [&](int64_t k0, acc_t(&y)[V], acc_t(&wq)[V], acc_t(&wp)[V], bool (&live)[V]) {
      acc_t aq[V], ap[V];
      load_chunk<V>(p.y + base, k0, n, vec_ok, y, neg_inf<acc_t>());
      load_chunk<V>(p.q_logits + q_base, k0, n, vec_ok, aq, neg_inf<acc_t>());
      load_chunk<V>(p.p_logits + p_base, k0, n, vec_ok, ap, acc_t(0));
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
    sq = red.max_sum(sq);
    sp = red.max_sum(sp);
    const int64_t nc = static_cast<int64_t>(red.sum(count));
    const acc_t lq = sq.lse(), lp = sp.lse();
    // dY_k = gy_k - g_q tau_q c^q_k - g_p tau_p c^p_k, c = 1 - n softmax(w).
    auto per_elem = [&](int64_t k0, acc_t(&y)[V], acc_t(&cq)[V], acc_t(&cp)[V], acc_t(&dY)[V],
                        bool (&live)[V]) {
      acc_t wq[V], wp[V], gy[V];
      chunk(k0, y, wq, wp, live);
      if (p.grad_y) {
        load_chunk<V>(p.grad_y + gy_base, k0, n, vec_ok, gy, acc_t(0));
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
    // Row sums that feed cancelling differences: in double.
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
    sdy = red.sum_double(sdy);
    sdyy = red.sum_double(sdyy);
    sxy = red.sum_double(sxy);
    syq = red.sum_double(syq);
    syp = red.sum_double(syp);
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
      if (p.grad_q_logits) store_chunk<V>(p.grad_q_logits + base, k0, n, vec_ok, oq);
      if (p.grad_p_logits) store_chunk<V>(p.grad_p_logits + base, k0, n, vec_ok, op);
    });
    if (lane == 0) {
      if (p.grad_q_tau) {
        p.grad_q_tau[row] = static_cast<acc_t>(-invq * (sdyy - sxy * sdy)) +
                            gq * ec::log_prob_dtau<acc_t>(nc, tauq, static_cast<acc_t>(syq));
      }
      if (p.grad_p_tau)
        p.grad_p_tau[row] = gp * ec::log_prob_dtau<acc_t>(nc, taup, static_cast<acc_t>(syp));
    }
  }
};

}  // namespace

cudaError_t relaxed_kl(const RelaxedKlArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* aq = static_cast<const scalar_t*>(a.q_logits);
    const auto* ap = static_cast<const scalar_t*>(a.p_logits);
    auto* y = static_cast<scalar_t*>(a.y);
    const RelaxedKl::Params<scalar_t> p{aq,
                                        ap,
                                        y,
                                        static_cast<scalar_t*>(a.log_q),
                                        static_cast<scalar_t*>(a.log_p),
                                        a.rows,
                                        a.n,
                                        tau_view<acc_t>(a.tq),
                                        tau_view<acc_t>(a.tp),
                                        l.philox,
                                        rows_vectorizable<scalar_t>(a.n, {aq, ap, y}),
                                        a.q_period,
                                        a.p_period};
    return launch_rows<RelaxedKl>(p, l);
  });
}

cudaError_t relaxed_kl_backward(const RelaxedKlBackwardArgs& a, const Launch& l) {
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    const auto* gy = static_cast<const scalar_t*>(a.grad_y);
    const auto* y = static_cast<const scalar_t*>(a.y);
    const auto* aq = static_cast<const scalar_t*>(a.q_logits);
    const auto* ap = static_cast<const scalar_t*>(a.p_logits);
    auto* gaq = static_cast<scalar_t*>(a.grad_q_logits);
    auto* gap = static_cast<scalar_t*>(a.grad_p_logits);
    const RelaxedKlBackward::Params<scalar_t> p{
        gy,
        static_cast<const acc_t*>(a.grad_log_q),
        static_cast<const acc_t*>(a.grad_log_p),
        y,
        aq,
        ap,
        gaq,
        static_cast<acc_t*>(a.grad_q_tau),
        gap,
        static_cast<acc_t*>(a.grad_p_tau),
        a.rows,
        a.n,
        tau_view<acc_t>(a.tq),
        tau_view<acc_t>(a.tp),
        rows_vectorizable<scalar_t>(a.n, {gy, y, aq, ap, gaq, gap}),
        a.grad_y_period,
        a.q_period,
        a.p_period};
    return launch_rows<RelaxedKlBackward>(p, l);
  });
}

}  // namespace cuda
}  // namespace concrete_ext
