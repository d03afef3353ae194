// CPU kernels of the relaxed-KL pass (relaxed_kl_sample): y ~ ExpConcrete(q) with log kappa_q(y)
// and log kappa_p(y) in one pass over each block of rows, and its backward. Formulas:
// concrete_ext/math/exp_concrete.h (Eq. 28 of the paper).
#include "cpu/blocks.h"
#include "cpu/categorical.h"
#include "cpu/kernels.h"

namespace concrete_ext {
namespace cpu {
namespace {

// Rounds the block's sample to the op's dtype (a no-op for fp32 and fp64).
inline void round_to_dtype(DType dtype, float* x, int64_t count) {
  if (dtype == DType::kFloat16) round_to<c10::Half>(x, count);
  if (dtype == DType::kBFloat16) round_to<c10::BFloat16>(x, count);
}
inline void round_to_dtype(DType, double*, int64_t) {}

struct RelaxedKl {
  template <typename T>
  struct Params {
    TauView<T> tq, tp;
    SeedOffset so;
    DType dtype;
  };
  // in: q logits, p logits; out: y; row_out: log kappa_q(y), log kappa_p(y)
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n, r0 = b.r0;
    T *z = s.take<T>(), *e = s.take<T>(), *inv = s.take<T>(), *m = s.take<T>(), *ls = s.take<T>(),
      *tq = s.take<T>(), *tp = s.take<T>(), *tmp = s.take<T>();
    double *sums = s.take<double>(), *cnt = s.take<double>(), *sum_w = s.take<double>(),
           *total = s.take<double>();
    tau_values(p.tq, r0, R, true, inv);
    tau_values(p.tq, r0, R, false, tq);
    tau_values(p.tp, r0, R, false, tp);
    const T* aqb = b.in[0];
    const T* apb = b.in[1];
    perturbed_block(aqb, r0, R, n, inv, p.so, z, e, m, sums);
    for (int64_t r = 0; r < R; ++r) ls[r] = BlockMath<T>::log(static_cast<T>(sums[r]));
    // The densities are those of the sample as returned (rounded to the op's dtype), so that they
    // equal exp_concrete_log_prob of it and the backward sees the same y.
    T* yv = b.out[0];
    for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { yv[i] = z[i] - ls[r]; });
    round_to_dtype(p.dtype, yv, R * n);
    // log kappa_q(y) and log kappa_p(y) over the categories q does not mask.
    auto yf = [&](int64_t i) CE_LAMBDA { return yv[i]; };
    density_block<true>(R, n, aqb, aqb, tq, yf, e, tmp, m, cnt, sum_w, total);
    finish_log_prob(R, n, tq, tau_is_uniform(p.tq), m, cnt, sum_w, total,
                    static_cast<const double*>(nullptr), b.row_out[0]);
    density_block<false>(R, n, apb, aqb, tp, yf, e, tmp, m, cnt, sum_w, total);
    finish_log_prob(R, n, tp, tau_is_uniform(p.tp), m, cnt, sum_w, total,
                    static_cast<const double*>(nullptr), b.row_out[1]);
  }
};

struct RelaxedKlBackward {
  template <typename T>
  struct Params {
    const T* glq;  // per row, nullable (then 0)
    const T* glp;  // per row, nullable (then 0)
    T* gtq;        // per row, nullable
    T* gtp;        // per row, nullable
    TauView<T> tq, tp;
  };
  // in: y, q logits, p logits, d y (nullable: 0); out: d q logits, d p logits (each may be absent)
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n, r0 = b.r0;
    T *x = s.take<T>(), *sq = s.take<T>(), *sp = s.take<T>(), *dY = s.take<T>();
    T *tauq = s.take<T>(), *taup = s.take<T>(), *mq = s.take<T>(), *mp = s.take<T>(),
      *itq = s.take<T>(), *itp = s.take<T>(), *cntf = s.take<T>(), *gq = s.take<T>(),
      *gp = s.take<T>(), *sdyf = s.take<T>(), *tmp = s.take<T>();
    double *cnt = s.take<double>(), *totq = s.take<double>(), *totp = s.take<double>(),
           *sdy = s.take<double>(), *sdyy = s.take<double>(), *sxy = s.take<double>(),
           *syq = s.take<double>(), *syp = s.take<double>();
    tau_values(p.tq, r0, R, false, tauq);
    tau_values(p.tp, r0, R, false, taup);
    for (int64_t r = 0; r < R; ++r) {
      gq[r] = p.glq ? p.glq[r0 + r] : T(0);
      gp[r] = p.glp ? p.glp[r0 + r] : T(0);
    }
    const T* yr = b.in[0];
    const T* aqb = b.in[1];
    const T* apb = b.in[2];
    const T* gyb = b.in[3];
    if (!gyb) {
      T* zeros = s.take<T>();
      for (int64_t i = 0; i < R * n; ++i) zeros[i] = T(0);
      gyb = zeros;
    }
    // Gradients nobody asked for go to a block-sized sink (keeps the loops branch-free).
    T* gaqb = b.out[0] ? b.out[0] : s.take<T>();
    T* gapb = b.out[1] ? b.out[1] : s.take<T>();
    for (int64_t i = 0; i < R * n; ++i) x[i] = BlockMath<T>::exp_nonpos(yr[i]);
    // softmax(w_q) and softmax(w_p) over the categories q does not mask.
    auto yf = [&](int64_t i) CE_LAMBDA { return yr[i]; };
    density_block<false>(R, n, aqb, aqb, tauq, yf, sq, tmp, mq, cnt, static_cast<double*>(nullptr),
                         totq);
    density_block<false>(R, n, apb, aqb, taup, yf, sp, tmp, mp, cnt, static_cast<double*>(nullptr),
                         totp);
    for (int64_t r = 0; r < R; ++r) {
      itq[r] = static_cast<T>(1 / totq[r]);
      itp[r] = static_cast<T>(1 / totp[r]);
      cntf[r] = static_cast<T>(cnt[r]);
    }
    // dY_k = gy_k - g_q tau_q c^q_k - g_p tau_p c^p_k with c = 1 - n s; sq, sp become c^q, c^p.
    rows_sum(R, n, sdy, dY, [&](int64_t r, int64_t i) CE_LAMBDA {
      const bool masked = ec::masked(aqb[i]);
      // Every load before the selects: GCC 12 does not vectorise loads under a condition.
      const T cq1 = T(1) - cntf[r] * (sq[i] * itq[r]);
      const T cp1 = T(1) - cntf[r] * (sp[i] * itp[r]);
      const T cq = masked ? T(0) : cq1;
      const T cp = masked ? T(0) : cp1;
      const T d1 = gyb[i] - gq[r] * tauq[r] * cq - gp[r] * taup[r] * cp;
      const T d = masked ? T(0) : d1;
      sq[i] = cq;
      sp[i] = cp;
      dY[i] = d;
      return d;
    });
    auto ym = [&](int64_t i) CE_LAMBDA {
      const T yi = yr[i];
      return ec::masked(aqb[i]) ? T(0) : yi;
    };
    // These row sums feed only the temperature gradients: skipped when neither is wanted.
    if (p.gtq) {
      rows_sum(R, n, sdyy, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return dY[i] * ym(i); });
      rows_sum(R, n, sxy, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return x[i] * ym(i); });
      rows_sum(R, n, syq, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return ym(i) * sq[i]; });
    }
    if (p.gtp) {
      rows_sum(R, n, syp, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return ym(i) * sp[i]; });
    }
    for (int64_t r = 0; r < R; ++r) {
      sdyf[r] = static_cast<T>(sdy[r]);
      itq[r] = T(1) / tauq[r];
    }
    for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA {
      const T dz = ec::dz_from_log(dY[i], yr[i], x[i], sdyf[r]);
      gaqb[i] = dz * itq[r] + gq[r] * sq[i];
      gapb[i] = gp[r] * sp[i];
    });
    for (int64_t r = 0; r < R; ++r) {
      const int64_t count = static_cast<int64_t>(cnt[r]);
      // sum_k dz_k y_k = sum dY y - (sum x y)(sum dY).
      if (p.gtq) {
        p.gtq[r0 + r] = static_cast<T>(-itq[r] * (sdyy[r] - sxy[r] * sdy[r]) +
                                       gq[r] * ec::log_prob_dtau<double>(count, tauq[r], syq[r]));
      }
      if (p.gtp) {
        p.gtp[r0 + r] = static_cast<T>(gp[r] * ec::log_prob_dtau<double>(count, taup[r], syp[r]));
      }
    }
  }
};

CE_CPU_KERNEL(RelaxedKl)
CE_CPU_KERNEL(RelaxedKlBackward)

}  // namespace

void relaxed_kl(const RelaxedKlArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const RelaxedKl::Params<T> p{tau_view<T>(a.tq), tau_view<T>(a.tp), a.so, a.dtype};
    Io<scalar_t> io;
    io.period[io.n_in] = a.q_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.q_logits);
    io.period[io.n_in] = a.p_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.p_logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.y);
    io.row_out[io.n_row_out++] = static_cast<scalar_t*>(a.log_q);
    io.row_out[io.n_row_out++] = static_cast<scalar_t*>(a.log_p);
    CE_RUN_ROW_BLOCKS(RelaxedKl, scalar_t, p, io, a.rows, a.n);
  });
}

void relaxed_kl_backward(const RelaxedKlBackwardArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const RelaxedKlBackward::Params<T> p{static_cast<const T*>(a.grad_log_q),
                                         static_cast<const T*>(a.grad_log_p),
                                         static_cast<T*>(a.grad_q_tau),
                                         static_cast<T*>(a.grad_p_tau),
                                         tau_view<T>(a.tq),
                                         tau_view<T>(a.tp)};
    Io<scalar_t> io;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.y);
    io.period[io.n_in] = a.q_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.q_logits);
    io.period[io.n_in] = a.p_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.p_logits);
    io.period[io.n_in] = a.grad_y_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.grad_y);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_q_logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_p_logits);
    CE_RUN_ROW_BLOCKS(RelaxedKlBackward, scalar_t, p, io, a.rows, a.n);
  });
}

}  // namespace cpu
}  // namespace concrete_ext
