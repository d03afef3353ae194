// CPU kernels of the relaxed-KL pass (kernels.h): y ~ ExpConcrete(q) with log kappa_q(y) and
// log kappa_p(y), and its backward, per block of rows by one per-ISA function (CE_BLOCK_CLONES,
// cpu_vec.h). Formulas: concrete_ext/math/exp_concrete.h (Eq. 28 of the paper).
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "concrete_ext/dispatch.h"
#include "exp_concrete_cpu_blocks.h"
#include "kernels.h"

namespace concrete_ext {
namespace cpu {

template <typename scalar_t, typename acc_t>
struct RelaxedKlArgs {
  const scalar_t* aq;
  const scalar_t* ap;
  scalar_t* y;
  scalar_t* lq;
  scalar_t* lp;
  int64_t n;
  TauView<acc_t> tq, tp;
  SeedOffset so;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void relaxed_kl_block_impl(const RelaxedKlArgs<scalar_t, acc_t>& p, int64_t r0,
                                     int64_t r1, acc_t* buf, int64_t st) {
  const int64_t R = r1 - r0, n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *z = c.take(), *e = c.take(), *yv = c.take(), *inv = c.take(), *m = c.take(),
        *ls = c.take(), *tq = c.take(), *tp = c.take(), *tmp = c.take();
  double *sums = c.take_double(), *cnt = c.take_double(), *sum_w = c.take_double(),
         *total = c.take_double();
  tau_values(p.tq, r0, R, true, inv);
  tau_values(p.tq, r0, R, false, tq);
  tau_values(p.tp, r0, R, false, tp);
  perturbed_block(p.aq, r0, R, n, inv, p.so, z, e, m, sums);
  for (int64_t r = 0; r < R; ++r) ls[r] = BlockMath<acc_t>::log(static_cast<acc_t>(sums[r]));
  scalar_t* yo = p.y + r0 * n;
  for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA {
    // The densities are those of the sample as returned (rounded to scalar_t), so that they
    // equal exp_concrete_log_prob of it and the backward sees the same y.
    const scalar_t yk = static_cast<scalar_t>(z[i] - ls[r]);
    yo[i] = yk;
    yv[i] = static_cast<acc_t>(yk);
  });
  // log kappa_q(y) and log kappa_p(y) over the categories q does not mask.
  const scalar_t* aqb = p.aq + r0 * n;
  const scalar_t* apb = p.ap + r0 * n;
  auto yf = [&](int64_t i) CE_LAMBDA { return yv[i]; };
  for (int side = 0; side < 2; ++side) {
    const acc_t* t = side == 0 ? tq : tp;
    density_block(R, n, side == 0 ? aqb : apb, aqb, t, yf, e, tmp, m, cnt, sum_w, total);
    finish_log_prob(R, n, t, tau_is_uniform(side == 0 ? p.tq : p.tp), m, cnt, sum_w, total,
                    static_cast<const double*>(nullptr), (side == 0 ? p.lq : p.lp) + r0);
  }
}

template <typename scalar_t, typename acc_t>
struct RelaxedKlBackwardArgs {
  const scalar_t* y;
  const scalar_t* aq;
  const scalar_t* ap;
  const scalar_t* gy;   // may be null (then 0)
  const acc_t* glq;     // may be null (then 0)
  const acc_t* glp;     // may be null (then 0)
  scalar_t* gaq;        // each of the four outputs may be null
  scalar_t* gap;
  acc_t* gtq;
  acc_t* gtp;
  int64_t n;
  TauView<acc_t> tq, tp;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void relaxed_kl_backward_block_impl(const RelaxedKlBackwardArgs<scalar_t, acc_t>& p,
                                              int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
  const int64_t R = r1 - r0, n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *yr = c.take(), *x = c.take(), *sq = c.take(), *sp = c.take(), *dY = c.take();
  acc_t *tauq = c.take(), *taup = c.take(), *mq = c.take(), *mp = c.take(), *itq = c.take(),
        *itp = c.take(), *cntf = c.take(), *gq = c.take(), *gp = c.take(), *sdyf = c.take(),
        *tmp = c.take();
  scalar_t* sink = reinterpret_cast<scalar_t*>(c.take());
  scalar_t* zeros = reinterpret_cast<scalar_t*>(c.take());
  double *cnt = c.take_double(), *totq = c.take_double(), *totp = c.take_double(),
         *sdy = c.take_double(), *sdyy = c.take_double(), *sxy = c.take_double(),
         *syq = c.take_double(), *syp = c.take_double();
  tau_values(p.tq, r0, R, false, tauq);
  tau_values(p.tp, r0, R, false, taup);
  for (int64_t r = 0; r < R; ++r) {
    gq[r] = p.glq ? p.glq[r0 + r] : acc_t(0);
    gp[r] = p.glp ? p.glp[r0 + r] : acc_t(0);
  }
  const scalar_t* yb = p.y + r0 * n;
  const scalar_t* aqb = p.aq + r0 * n;
  const scalar_t* apb = p.ap + r0 * n;
  const scalar_t* gyb = p.gy ? p.gy + r0 * n : zeros;
  if (!p.gy) {
    for (int64_t i = 0; i < R * n; ++i) zeros[i] = scalar_t(0);
  }
  scalar_t* gaqb = p.gaq ? p.gaq + r0 * n : sink;
  scalar_t* gapb = p.gap ? p.gap + r0 * n : sink;
  for (int64_t i = 0; i < R * n; ++i) {
    yr[i] = static_cast<acc_t>(yb[i]);
    x[i] = BlockMath<acc_t>::exp_nonpos(yr[i]);
  }
  // softmax(w_q) and softmax(w_p) over the categories q does not mask.
  auto yf = [&](int64_t i) CE_LAMBDA { return yr[i]; };
  density_block(R, n, aqb, aqb, tauq, yf, sq, tmp, mq, cnt, static_cast<double*>(nullptr), totq);
  density_block(R, n, apb, aqb, taup, yf, sp, tmp, mp, cnt, static_cast<double*>(nullptr), totp);
  for (int64_t r = 0; r < R; ++r) {
    itq[r] = static_cast<acc_t>(1 / totq[r]);
    itp[r] = static_cast<acc_t>(1 / totp[r]);
    cntf[r] = static_cast<acc_t>(cnt[r]);
  }
  // dY_k = gy_k - g_q tau_q c^q_k - g_p tau_p c^p_k with c = 1 - n s; sq, sp become c^q, c^p.
  rows_sum(R, n, sdy, dY, [&](int64_t r, int64_t i) CE_LAMBDA {
    const bool masked = ec::masked(static_cast<acc_t>(aqb[i]));
    // Every load before the selects: GCC 12 does not vectorise loads under a condition.
    const acc_t cq1 = acc_t(1) - cntf[r] * (sq[i] * itq[r]);
    const acc_t cp1 = acc_t(1) - cntf[r] * (sp[i] * itp[r]);
    const acc_t cq = masked ? acc_t(0) : cq1;
    const acc_t cp = masked ? acc_t(0) : cp1;
    const acc_t d1 = static_cast<acc_t>(gyb[i]) - gq[r] * tauq[r] * cq - gp[r] * taup[r] * cp;
    const acc_t d = masked ? acc_t(0) : d1;
    sq[i] = cq;
    sp[i] = cp;
    dY[i] = d;
    return d;
  });
  auto ym = [&](int64_t i) CE_LAMBDA {
    const acc_t yi = yr[i];
    return ec::masked(static_cast<acc_t>(aqb[i])) ? acc_t(0) : yi;
  };
  rows_sum(R, n, sdyy, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return dY[i] * ym(i); });
  rows_sum(R, n, sxy, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return x[i] * ym(i); });
  rows_sum(R, n, syq, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return ym(i) * sq[i]; });
  rows_sum(R, n, syp, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return ym(i) * sp[i]; });
  for (int64_t r = 0; r < R; ++r) {
    sdyf[r] = static_cast<acc_t>(sdy[r]);
    itq[r] = acc_t(1) / tauq[r];
  }
  for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA {
    const acc_t dz = ec::dz_from_log(dY[i], yr[i], x[i], sdyf[r]);
    gaqb[i] = static_cast<scalar_t>(dz * itq[r] + gq[r] * sq[i]);
    gapb[i] = static_cast<scalar_t>(gp[r] * sp[i]);
  });
  for (int64_t r = 0; r < R; ++r) {
    const int64_t count = static_cast<int64_t>(cnt[r]);
    // sum_k dz_k y_k = sum dY y - (sum x y)(sum dY).
    if (p.gtq) {
      p.gtq[r0 + r] = static_cast<acc_t>(-itq[r] * (sdyy[r] - sxy[r] * sdy[r]) +
                                         gq[r] * ec::log_prob_dtau<double>(count, tauq[r], syq[r]));
    }
    if (p.gtp) {
      p.gtp[r0 + r] = static_cast<acc_t>(gp[r] * ec::log_prob_dtau<double>(count, taup[r], syp[r]));
    }
  }
}

CE_BLOCK_CLONES(relaxed_kl_block, RelaxedKlArgs)
CE_BLOCK_CLONES(relaxed_kl_backward_block, RelaxedKlBackwardArgs)

void Kernels::relaxed_kl(const at::Tensor& q_logits, const at::Tensor& p_logits, at::Tensor& y,
                         at::Tensor log_q, at::Tensor log_p, const Temperature& tq,
                         const Temperature& tp, const RngArgs& rng) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  const int64_t rows = q_logits.size(0), n = q_logits.size(1);
  CE_DISPATCH_FLOATING(q_logits.scalar_type(), "relaxed_kl_sample_cpu", [&] {
    const RelaxedKlArgs<scalar_t, acc_t> args{
        q_logits.data_ptr<scalar_t>(), p_logits.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
        log_q.data_ptr<scalar_t>(), log_p.data_ptr<scalar_t>(), n, tq.view<acc_t>(),
        tp.view<acc_t>(), so};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(9, 4),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 relaxed_kl_block(args, r0, r1, buf, st);
                               });
  });
}

void Kernels::relaxed_kl_backward(const at::Tensor& grad_y, const at::Tensor& grad_log_q,
                                  const at::Tensor& grad_log_p, const at::Tensor& y,
                                  const at::Tensor& q_logits, const at::Tensor& p_logits,
                                  at::Tensor* grad_q_logits, at::Tensor* grad_q_tau,
                                  at::Tensor* grad_p_logits, at::Tensor* grad_p_tau,
                                  const Temperature& tq, const Temperature& tp) {
  const int64_t rows = q_logits.size(0), n = q_logits.size(1);
  CE_DISPATCH_FLOATING(q_logits.scalar_type(), "relaxed_kl_sample_backward_cpu", [&] {
    const RelaxedKlBackwardArgs<scalar_t, acc_t> args{
        y.data_ptr<scalar_t>(),
        q_logits.data_ptr<scalar_t>(),
        p_logits.data_ptr<scalar_t>(),
        grad_y.defined() ? grad_y.data_ptr<scalar_t>() : nullptr,
        grad_log_q.defined() ? grad_log_q.data_ptr<acc_t>() : nullptr,
        grad_log_p.defined() ? grad_log_p.data_ptr<acc_t>() : nullptr,
        ptr_or_null<scalar_t>(grad_q_logits),
        ptr_or_null<scalar_t>(grad_p_logits),
        ptr_or_null<acc_t>(grad_q_tau),
        ptr_or_null<acc_t>(grad_p_tau),
        n,
        tq.view<acc_t>(),
        tp.view<acc_t>()};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(18, 8),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 relaxed_kl_backward_block(args, r0, r1, buf, st);
                               });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
