// CPU kernels of the categorical ops (kernels.h): Concrete / ExpConcrete sample and backward,
// straight-through Gumbel-softmax backward, Gumbel-max, log-densities and the relaxed-KL pass.
// Rows are processed in blocks of about kBlockElems elements (cpu_loops.h): the noise and the exps
// of a whole block go through the vectorised primitives, the per-row reductions are plain loops.
// Formulas: concrete_ext/math/exp_concrete.h.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "concrete_ext/dispatch.h"
#include "concrete_ext/math/exp_concrete.h"
#include "cpu_loops.h"
#include "kernels.h"

namespace concrete_ext {
namespace cpu {
namespace {

namespace ec = exp_concrete;

template <typename T>
constexpr T kInf = std::numeric_limits<T>::infinity();

// Row reductions (sums over the n categories) accumulate in double for every dtype: a float
// running sum over a long row drifts (about 1e-4 relative at n = 2^17, ten times the error of
// torch's own fp32 reductions), which shows in the samples' normaliser and the log-densities.
using sum_t = double;

// Rows [r0, r1) of the perturbed softmax: z = (a + g) / tau - max (per row), e = exp(z) and
// sums[r - r0] = sum_k e. A row of all -inf logits gets NaN z, e and sum.
template <typename scalar_t, typename acc_t>
void perturbed_rows(const scalar_t* a, int64_t r0, int64_t r1, int64_t n, TauView<acc_t> tau,
                    SeedOffset so, acc_t* z, acc_t* e, acc_t* sums) {
  const int64_t count = (r1 - r0) * n;
  fill_noise(Noise::kGumbel, so, r0 * n, count, z);
  const scalar_t* ab = a + r0 * n;
  for (int64_t r = 0; r < r1 - r0; ++r) {
    const acc_t inv = acc_t(1) / tau.at(r0 + r);
    acc_t* zr = z + r * n;
    const scalar_t* ar = ab + r * n;
    acc_t m = -kInf<acc_t>;
    for (int64_t k = 0; k < n; ++k) {
      const acc_t v = ec::perturb(static_cast<acc_t>(ar[k]), zr[k], inv);
      zr[k] = v;
      m = v > m ? v : m;
    }
    for (int64_t k = 0; k < n; ++k) zr[k] -= m;
  }
  exp_array(z, e, count);
  for (int64_t r = 0; r < r1 - r0; ++r) {
    const acc_t* er = e + r * n;
    sum_t s = 0;
    for (int64_t k = 0; k < n; ++k) s += er[k];
    sums[r] = static_cast<acc_t>(s);
  }
}

// Row state of a log-density: y (log of the value), w = a - tau y (-inf where masked), and
// exp(w - LSE(w)) in `s`. Returns (number of unmasked categories, sum of w, sum of y, LSE(w)).
struct RowDensity {
  int64_t n;
  double sum_w;
  double sum_y;
  double lse;
};

template <typename scalar_t, typename acc_t>
RowDensity density_row(const scalar_t* v, const scalar_t* a, int64_t n, acc_t tau, bool log_space,
                       acc_t* y, acc_t* s) {
  for (int64_t k = 0; k < n; ++k) y[k] = static_cast<acc_t>(v[k]);
  if (!log_space) log_array(y, y, n);
  acc_t m = -kInf<acc_t>;
  sum_t sum_w = 0, sum_y = 0;
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k) {
    const acc_t ak = static_cast<acc_t>(a[k]);
    const bool masked = ec::masked(ak);
    const acc_t w = masked ? -kInf<acc_t> : ec::w_term(ak, y[k], tau);
    s[k] = w;
    m = w > m ? w : m;
    sum_w += masked ? acc_t(0) : w;
    sum_y += masked ? acc_t(0) : y[k];
    count += masked ? 0 : 1;
  }
  for (int64_t k = 0; k < n; ++k) s[k] -= m;
  exp_array(s, s, n);
  sum_t total = 0;
  for (int64_t k = 0; k < n; ++k) total += s[k];
  const acc_t inv_total = static_cast<acc_t>(1 / total);
  for (int64_t k = 0; k < n; ++k) s[k] *= inv_total;
  return RowDensity{count, sum_w, sum_y, static_cast<double>(m) + std::log(total)};
}

template <typename T>
T* ptr_or_null(at::Tensor* t) { return t ? t->data_ptr<T>() : nullptr; }

}  // namespace

void Kernels::sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,
                     const RngArgs& rng, bool log_space) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_sample_cpu", [&] {
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const TauView<acc_t> tv = tau.view<acc_t>();
    parallel_row_blocks<acc_t>(rows, n, 3, [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
      acc_t *z = buf, *e = buf + st, *sums = buf + 2 * st;
      perturbed_rows(a, r0, r1, n, tv, so, z, e, sums);
      scalar_t* ob = o + r0 * n;
      for (int64_t r = 0; r < r1 - r0; ++r) {
        if (log_space) {
          const acc_t ls = std::log(sums[r]);
          for (int64_t k = 0; k < n; ++k) ob[r * n + k] = static_cast<scalar_t>(z[r * n + k] - ls);
        } else {
          const acc_t inv = acc_t(1) / sums[r];
          for (int64_t k = 0; k < n; ++k) ob[r * n + k] = static_cast<scalar_t>(e[r * n + k] * inv);
        }
      }
    });
  });
}

void Kernels::sample_backward(const at::Tensor& grad, const at::Tensor& sample,
                              at::Tensor& grad_logits, const Temperature& tau,
                              at::Tensor* grad_tau, bool log_space) {
  const int64_t rows = sample.size(0), n = sample.size(1);
  CE_DISPATCH_FLOATING(sample.scalar_type(), "concrete_sample_backward_cpu", [&] {
    const scalar_t* s = sample.data_ptr<scalar_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    scalar_t* da = grad_logits.data_ptr<scalar_t>();
    acc_t* gt = ptr_or_null<acc_t>(grad_tau);
    const TauView<acc_t> tv = tau.view<acc_t>();
    parallel_row_blocks<acc_t>(rows, n, 2, [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
      acc_t *v = buf, *u = buf + st;  // v: the sample in acc_t; u: exp(y) or log(x)
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* sr = s + r * n;
        const scalar_t* gr = g + r * n;
        scalar_t* dr = da + r * n;
        const acc_t inv = acc_t(1) / tv.at(r);
        for (int64_t k = 0; k < n; ++k) v[k] = static_cast<acc_t>(sr[k]);
        sum_t acc = 0;
        if (log_space) {
          exp_array(v, u, n);
          sum_t sdy_sum = 0;
          for (int64_t k = 0; k < n; ++k) sdy_sum += ec::unmasked_dy(static_cast<acc_t>(gr[k]), v[k]);
          const acc_t sdy = static_cast<acc_t>(sdy_sum);
          for (int64_t k = 0; k < n; ++k) {
            const acc_t dz = ec::dz_from_log(static_cast<acc_t>(gr[k]), v[k], u[k], sdy);
            dr[k] = static_cast<scalar_t>(dz * inv);
            acc += ec::dtau_term_log(dz, v[k]);
          }
        } else {
          sum_t sxdx_sum = 0;
          for (int64_t k = 0; k < n; ++k) sxdx_sum += v[k] * static_cast<acc_t>(gr[k]);
          const acc_t sxdx = static_cast<acc_t>(sxdx_sum);
          if (gt) log_array(v, u, n);
          for (int64_t k = 0; k < n; ++k) {
            const acc_t dz = ec::dz_from_simplex(static_cast<acc_t>(gr[k]), v[k], sxdx);
            dr[k] = static_cast<scalar_t>(dz * inv);
            if (gt) acc += ec::dtau_term_simplex(dz, v[k], u[k]);
          }
        }
        if (gt) gt[r] = static_cast<acc_t>(-inv * acc);
      }
    });
  });
}

void Kernels::gumbel_max(const at::Tensor& logits, at::Tensor& out, const RngArgs& rng,
                         const at::Tensor& rng_state) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  if (rng_state.defined()) {
    int64_t* p = rng_state.data_ptr<int64_t>();
    p[0] = static_cast<int64_t>(so.seed);
    p[1] = static_cast<int64_t>(so.offset);
  }
  const int64_t rows = logits.size(0), n = logits.size(1);
  if (rows == 0) return;
  CE_DISPATCH_FLOATING(logits.scalar_type(), "gumbel_max_cpu", [&] {
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_row_blocks<acc_t>(rows, n, 1, [&](int64_t r0, int64_t r1, acc_t* g, int64_t) {
      fill_noise(Noise::kGumbel, so, r0 * n, (r1 - r0) * n, g);
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* ar = a + r * n;
        const acc_t* gr = g + (r - r0) * n;
        // First maximum wins ties; NaN never wins (as ArgMaxOp in math/gumbel_max.h).
        acc_t best = -kInf<acc_t>;
        int64_t idx = 0;
        for (int64_t k = 0; k < n; ++k) {
          const acc_t v = static_cast<acc_t>(ar[k]) + gr[k];
          if (v > best) {
            best = v;
            idx = k;
          }
        }
        scalar_t* orow = o + r * n;
        if (!(best > -kInf<acc_t>)) {
          // No category beat -inf: the logits are all -inf (or NaN), the row has no
          // distribution and samples NaN, as the Concrete samples do.
          for (int64_t k = 0; k < n; ++k) orow[k] = std::numeric_limits<scalar_t>::quiet_NaN();
          continue;
        }
        for (int64_t k = 0; k < n; ++k) orow[k] = scalar_t(0);
        orow[idx] = scalar_t(1);
      }
    });
  });
}

void Kernels::gumbel_softmax_hard_backward(const at::Tensor& grad, const at::Tensor& logits,
                                           at::Tensor& grad_logits, const Temperature& tau,
                                           const at::Tensor& rng_state, at::Tensor* grad_tau) {
  const SeedOffset so = read_rng_state(rng_state);
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "gumbel_softmax_hard_backward_cpu", [&] {
    const scalar_t* a = logits.data_ptr<scalar_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    scalar_t* da = grad_logits.data_ptr<scalar_t>();
    acc_t* gt = ptr_or_null<acc_t>(grad_tau);
    const TauView<acc_t> tv = tau.view<acc_t>();
    parallel_row_blocks<acc_t>(rows, n, 3, [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
      acc_t *z = buf, *e = buf + st, *sums = buf + 2 * st;
      // The soft sample, recomputed from (seed, offset): x = e / sum, log x = z - log(sum).
      perturbed_rows(a, r0, r1, n, tv, so, z, e, sums);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = (r - r0) * n;
        const scalar_t* gr = g + r * n;
        scalar_t* dr = da + r * n;
        const acc_t inv = acc_t(1) / tv.at(r), inv_sum = acc_t(1) / sums[r - r0];
        sum_t sxg_sum = 0;
        for (int64_t k = 0; k < n; ++k) sxg_sum += e[b + k] * inv_sum * static_cast<acc_t>(gr[k]);
        const acc_t sxg = static_cast<acc_t>(sxg_sum);
        sum_t acc = 0;
        for (int64_t k = 0; k < n; ++k) {
          const acc_t x = e[b + k] * inv_sum;
          const acc_t dz = ec::dz_from_simplex(static_cast<acc_t>(gr[k]), x, sxg);
          dr[k] = static_cast<scalar_t>(dz * inv);
          acc += ec::dtau_term_simplex(dz, x, z[b + k]);
        }
        if (gt) gt[r] = static_cast<acc_t>(-inv * acc);
      }
    });
  });
}

void Kernels::log_prob(const at::Tensor& value, const at::Tensor& logits, at::Tensor out,
                       const Temperature& tau, bool log_space) {
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_log_prob_cpu", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const TauView<acc_t> tv = tau.view<acc_t>();
    parallel_row_blocks<acc_t>(rows, n, 2, [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
      for (int64_t r = r0; r < r1; ++r) {
        const acc_t t = tv.at(r);
        const RowDensity d = density_row(v + r * n, a + r * n, n, t, log_space, buf, buf + st);
        // Combined in double: sum_w and n LSE(w) are large and cancel.
        double lp = ec::log_prob<double>(d.n, static_cast<double>(t), d.sum_w, d.lse);
        if (!log_space) lp -= d.sum_y;
        o[r] = static_cast<scalar_t>(lp);
      }
    });
  });
}

void Kernels::log_prob_backward(const at::Tensor& grad, const at::Tensor& value,
                                const at::Tensor& logits, at::Tensor* grad_value,
                                at::Tensor* grad_logits, at::Tensor* grad_tau,
                                const Temperature& tau, bool log_space) {
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_log_prob_backward_cpu", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    const acc_t* g = grad.data_ptr<acc_t>();
    scalar_t* gv = ptr_or_null<scalar_t>(grad_value);
    scalar_t* ga = ptr_or_null<scalar_t>(grad_logits);
    acc_t* gt = ptr_or_null<acc_t>(grad_tau);
    const TauView<acc_t> tv = tau.view<acc_t>();
    parallel_row_blocks<acc_t>(rows, n, 2, [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
      acc_t *y = buf, *s = buf + st;
      for (int64_t r = r0; r < r1; ++r) {
        const acc_t t = tv.at(r), gr = g[r];
        const scalar_t* vr = v + r * n;
        const scalar_t* ar = a + r * n;
        const RowDensity d = density_row(vr, ar, n, t, log_space, y, s);
        sum_t sum_yc = 0;
        for (int64_t k = 0; k < n; ++k) {
          const bool masked = ec::masked(static_cast<acc_t>(ar[k]));
          const acc_t c = masked ? acc_t(0) : ec::one_minus_ns<acc_t>(d.n, s[k]);
          if (ga) ga[r * n + k] = static_cast<scalar_t>(gr * c);
          if (gv) {
            const acc_t dy = -gr * t * c;
            // On the simplex d/dx = (d/dy - 1) / x; masked categories (x = 0) get 0.
            const acc_t dv = log_space ? dy
                                       : (masked ? acc_t(0)
                                                 : (dy - gr) / static_cast<acc_t>(vr[k]));
            gv[r * n + k] = static_cast<scalar_t>(dv);
          }
          sum_yc += masked ? acc_t(0) : y[k] * c;
        }
        if (gt) gt[r] = static_cast<acc_t>(gr * ec::log_prob_dtau<double>(d.n, t, sum_yc));
      }
    });
  });
}

void Kernels::relaxed_kl(const at::Tensor& q_logits, const at::Tensor& p_logits, at::Tensor& y,
                         at::Tensor log_q, at::Tensor log_p, const Temperature& tq,
                         const Temperature& tp, const RngArgs& rng) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  const int64_t rows = q_logits.size(0), n = q_logits.size(1);
  CE_DISPATCH_FLOATING(q_logits.scalar_type(), "relaxed_kl_sample_cpu", [&] {
    const scalar_t* aq = q_logits.data_ptr<scalar_t>();
    const scalar_t* ap = p_logits.data_ptr<scalar_t>();
    scalar_t* yo = y.data_ptr<scalar_t>();
    scalar_t* lq = log_q.data_ptr<scalar_t>();
    scalar_t* lp = log_p.data_ptr<scalar_t>();
    const TauView<acc_t> tvq = tq.view<acc_t>(), tvp = tp.view<acc_t>();
    parallel_row_blocks<acc_t>(rows, n, 5, [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
      acc_t *z = buf, *e = buf + st, *sums = buf + 2 * st, *yv = buf + 3 * st, *s = buf + 4 * st;
      perturbed_rows(aq, r0, r1, n, tvq, so, z, e, sums);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = (r - r0) * n;
        const acc_t ls = std::log(sums[r - r0]);
        for (int64_t k = 0; k < n; ++k) {
          // The densities are those of the sample as returned (rounded to scalar_t), so that
          // they equal exp_concrete_log_prob of it and the backward sees the same y.
          const scalar_t yk = static_cast<scalar_t>(z[b + k] - ls);
          yo[r * n + k] = yk;
          yv[k] = static_cast<acc_t>(yk);
        }
        // log kappa_q(y) and log kappa_p(y) over the categories q does not mask.
        for (int side = 0; side < 2; ++side) {
          const scalar_t* ar = (side == 0 ? aq : ap) + r * n;
          const scalar_t* mr = aq + r * n;
          const acc_t t = side == 0 ? tvq.at(r) : tvp.at(r);
          acc_t m = -kInf<acc_t>;
          sum_t sum_w = 0;
          int64_t count = 0;
          for (int64_t k = 0; k < n; ++k) {
            const bool masked = ec::masked(static_cast<acc_t>(mr[k]));
            const acc_t w = masked ? -kInf<acc_t>
                                   : ec::w_term(static_cast<acc_t>(ar[k]), yv[k], t);
            s[k] = w;
            m = w > m ? w : m;
            sum_w += masked ? acc_t(0) : w;
            count += masked ? 0 : 1;
          }
          for (int64_t k = 0; k < n; ++k) s[k] -= m;
          exp_array(s, s, n);
          sum_t total = 0;
          for (int64_t k = 0; k < n; ++k) total += s[k];
          const double l = ec::log_prob<double>(count, static_cast<double>(t), sum_w,
                                                static_cast<double>(m) + std::log(total));
          (side == 0 ? lq : lp)[r] = static_cast<scalar_t>(l);
        }
      }
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
    const scalar_t* yv = y.data_ptr<scalar_t>();
    const scalar_t* aq = q_logits.data_ptr<scalar_t>();
    const scalar_t* ap = p_logits.data_ptr<scalar_t>();
    const scalar_t* gy = grad_y.defined() ? grad_y.data_ptr<scalar_t>() : nullptr;
    const acc_t* glq = grad_log_q.defined() ? grad_log_q.data_ptr<acc_t>() : nullptr;
    const acc_t* glp = grad_log_p.defined() ? grad_log_p.data_ptr<acc_t>() : nullptr;
    scalar_t* gaq = ptr_or_null<scalar_t>(grad_q_logits);
    scalar_t* gap = ptr_or_null<scalar_t>(grad_p_logits);
    acc_t* gtq = ptr_or_null<acc_t>(grad_q_tau);
    acc_t* gtp = ptr_or_null<acc_t>(grad_p_tau);
    const TauView<acc_t> tvq = tq.view<acc_t>(), tvp = tp.view<acc_t>();
    parallel_row_blocks<acc_t>(rows, n, 5, [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
      acc_t *yr = buf, *x = buf + st, *sq = buf + 2 * st, *sp = buf + 3 * st, *dY = buf + 4 * st;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* aqr = aq + r * n;
        const scalar_t* apr = ap + r * n;
        const acc_t tauq = tvq.at(r), taup = tvp.at(r);
        const acc_t gq = glq ? glq[r] : acc_t(0), gp = glp ? glp[r] : acc_t(0);
        for (int64_t k = 0; k < n; ++k) yr[k] = static_cast<acc_t>(yv[r * n + k]);
        exp_array(yr, x, n);
        // softmax(w_q) and softmax(w_p) over the categories q does not mask.
        int64_t count = 0;
        for (int side = 0; side < 2; ++side) {
          const scalar_t* ar = side == 0 ? aqr : apr;
          const acc_t t = side == 0 ? tauq : taup;
          acc_t* s = side == 0 ? sq : sp;
          acc_t m = -kInf<acc_t>;
          count = 0;
          for (int64_t k = 0; k < n; ++k) {
            const bool masked = ec::masked(static_cast<acc_t>(aqr[k]));
            const acc_t w = masked ? -kInf<acc_t>
                                   : ec::w_term(static_cast<acc_t>(ar[k]), yr[k], t);
            s[k] = w;
            m = w > m ? w : m;
            count += masked ? 0 : 1;
          }
          for (int64_t k = 0; k < n; ++k) s[k] -= m;
          exp_array(s, s, n);
          sum_t total = 0;
          for (int64_t k = 0; k < n; ++k) total += s[k];
          const acc_t inv_total = static_cast<acc_t>(1 / total);
          for (int64_t k = 0; k < n; ++k) s[k] *= inv_total;
        }
        sum_t sdy_sum = 0, sdyy = 0, sxy = 0, syq = 0, syp = 0;
        for (int64_t k = 0; k < n; ++k) {
          const bool masked = ec::masked(static_cast<acc_t>(aqr[k]));
          const acc_t cq = masked ? acc_t(0) : ec::one_minus_ns<acc_t>(count, sq[k]);
          const acc_t cp = masked ? acc_t(0) : ec::one_minus_ns<acc_t>(count, sp[k]);
          const acc_t g0 = gy ? static_cast<acc_t>(gy[r * n + k]) : acc_t(0);
          const acc_t d = masked ? acc_t(0) : g0 - gq * tauq * cq - gp * taup * cp;
          sq[k] = cq;
          sp[k] = cp;
          dY[k] = d;
          const acc_t yk = masked ? acc_t(0) : yr[k];
          sdy_sum += d;
          sdyy += d * yk;
          sxy += x[k] * yk;
          syq += yk * cq;
          syp += yk * cp;
        }
        const acc_t invq = acc_t(1) / tauq;
        const acc_t sdy = static_cast<acc_t>(sdy_sum);
        for (int64_t k = 0; k < n; ++k) {
          const acc_t dz = ec::dz_from_log(dY[k], yr[k], x[k], sdy);
          if (gaq) gaq[r * n + k] = static_cast<scalar_t>(dz * invq + gq * sq[k]);
          if (gap) gap[r * n + k] = static_cast<scalar_t>(gp * sp[k]);
        }
        // sum_k dz_k y_k = sum dY y - (sum x y)(sum dY).
        if (gtq) {
          gtq[r] = static_cast<acc_t>(-invq * (sdyy - sxy * sdy_sum) +
                                      gq * ec::log_prob_dtau<double>(count, tauq, syq));
        }
        if (gtp) gtp[r] = static_cast<acc_t>(gp * ec::log_prob_dtau<double>(count, taup, syp));
      }
    });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
