// CPU kernels of the categorical log-densities (kernels.h): log kappa of ExpConcrete values and
// the Concrete density on the simplex, forward and backward, per block of rows by one per-ISA
// function (CE_BLOCK_CLONES, cpu_vec.h). Formulas: concrete_ext/math/exp_concrete.h.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "concrete_ext/dispatch.h"
#include "exp_concrete_cpu_blocks.h"
#include "kernels.h"

namespace concrete_ext {
namespace cpu {

template <typename scalar_t, typename acc_t>
struct LogProbArgs {
  const scalar_t* v;
  const scalar_t* a;
  scalar_t* o;
  int64_t rows, n;
  TauView<acc_t> tau;
  bool log_space;
};

template <bool kLogSpace, typename scalar_t, typename acc_t>
CE_INLINE void log_prob_rows(const LogProbArgs<scalar_t, acc_t>& p, int64_t r0, int64_t R,
                             acc_t* buf, int64_t st) {
  const int64_t n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *y = c.take(), *s = c.take(), *tau = c.take(), *m = c.take(), *tmp = c.take();
  double *cnt = c.take_double(), *sum_w = c.take_double(), *total = c.take_double(),
         *sum_y = c.take_double();
  tau_values(p.tau, r0, R, false, tau);
  const scalar_t* vb = p.v + r0 * n;
  const scalar_t* ab = p.a + r0 * n;
  const int64_t next = std::min(R, p.rows - (r0 + R)) * n * static_cast<int64_t>(sizeof(scalar_t));
#ifndef PFA
#define PFA 1
#endif
  NextBlock pf{{reinterpret_cast<const char*>(vb + PFA * R * n), reinterpret_cast<const char*>(ab + PFA * R * n)},
               PFA == 0 ? 0 : next};
  if constexpr (!kLogSpace) {
    for (int64_t i = 0; i < R * n; ++i) y[i] = BlockMath<acc_t>::log(static_cast<acc_t>(vb[i]));
  }
  auto yf = [&](int64_t i) CE_LAMBDA {
    if constexpr (kLogSpace) return static_cast<acc_t>(vb[i]);
    else return y[i];
  };
  const bool masked = density_block(R, n, ab, ab, tau, yf, s, tmp, m, cnt, sum_w, total, &pf);
  if constexpr (!kLogSpace) {
    if (masked) {
      rows_sum(R, n, sum_y, tmp, [&](int64_t, int64_t i) CE_LAMBDA {
        const acc_t yi = y[i];
        return ec::masked(static_cast<acc_t>(ab[i])) ? acc_t(0) : yi;
      });
    } else {
      reduce_rows_sum(R, n, y, sum_y);
    }
  }
  finish_log_prob(R, n, tau, tau_is_uniform(p.tau), m, cnt, sum_w, total,
                  kLogSpace ? nullptr : sum_y, p.o + r0);
}

template <typename scalar_t, typename acc_t>
CE_INLINE void log_prob_block_impl(const LogProbArgs<scalar_t, acc_t>& p, int64_t r0, int64_t r1,
                                   acc_t* buf, int64_t st) {
  if (p.log_space) {
    log_prob_rows<true>(p, r0, r1 - r0, buf, st);
  } else {
    log_prob_rows<false>(p, r0, r1 - r0, buf, st);
  }
}

template <typename scalar_t, typename acc_t>
struct LogProbBackwardArgs {
  const scalar_t* v;
  const scalar_t* a;
  const acc_t* g;  // one upstream gradient per row
  scalar_t* gv;    // each of gv, ga, gt may be null
  scalar_t* ga;
  acc_t* gt;
  int64_t n;
  TauView<acc_t> tau;
  bool log_space;
};

template <bool kLogSpace, typename scalar_t, typename acc_t>
CE_INLINE void log_prob_backward_rows(const LogProbBackwardArgs<scalar_t, acc_t>& p, int64_t r0,
                                      int64_t R, acc_t* buf, int64_t st) {
  const int64_t n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *y = c.take(), *s = c.take(), *tau = c.take(), *m = c.take(), *inv_total = c.take(),
        *cntf = c.take(), *tmp = c.take();
  // Gradients nobody asked for go to this block-sized sink (keeps the loops branch-free).
  scalar_t* sink = reinterpret_cast<scalar_t*>(c.take());
  double *cnt = c.take_double(), *total = c.take_double(), *sum_yc = c.take_double();
  tau_values(p.tau, r0, R, false, tau);
  const scalar_t* vb = p.v + r0 * n;
  const scalar_t* ab = p.a + r0 * n;
  const acc_t* gr = p.g + r0;
  scalar_t* gvb = p.gv ? p.gv + r0 * n : sink;
  scalar_t* gab = p.ga ? p.ga + r0 * n : sink;
  if constexpr (!kLogSpace) {
    for (int64_t i = 0; i < R * n; ++i) y[i] = BlockMath<acc_t>::log(static_cast<acc_t>(vb[i]));
  }
  auto yf = [&](int64_t i) CE_LAMBDA {
    if constexpr (kLogSpace) return static_cast<acc_t>(vb[i]);
    else return y[i];
  };
  density_block(R, n, ab, ab, tau, yf, s, tmp, m, cnt, static_cast<double*>(nullptr), total);
  for (int64_t r = 0; r < R; ++r) {
    inv_total[r] = static_cast<acc_t>(1 / total[r]);
    cntf[r] = static_cast<acc_t>(cnt[r]);
  }
  // c_k = 1 - n s_k with s = softmax(w): d/da_k = g c_k, d/dy_k = -g tau c_k; on the simplex
  // d/dx_k = (d/dy_k - g) / x_k (masked categories, x = 0, get 0).
  rows_sum(R, n, sum_yc, tmp, [&](int64_t r, int64_t i) CE_LAMBDA {
    const bool masked = ec::masked(static_cast<acc_t>(ab[i]));
    // Every load before the selects: GCC 12 does not vectorise loads under a condition.
    const acc_t sk = s[i] * inv_total[r];
    const acc_t g = gr[r], yi = yf(i), vi = static_cast<acc_t>(vb[i]);
    const acc_t c1 = acc_t(1) - cntf[r] * sk;
    const acc_t ck = masked ? acc_t(0) : c1;
    gab[i] = static_cast<scalar_t>(g * ck);
    const acc_t dy = -g * tau[r] * ck;
    if constexpr (kLogSpace) {
      gvb[i] = static_cast<scalar_t>(dy);
    } else {
      const acc_t dv = (dy - g) / vi;
      gvb[i] = static_cast<scalar_t>(masked ? acc_t(0) : dv);
    }
    const acc_t yc = yi * ck;
    return masked ? acc_t(0) : yc;
  });
  if (p.gt) {
    for (int64_t r = 0; r < R; ++r) {
      p.gt[r0 + r] = static_cast<acc_t>(
          gr[r] * ec::log_prob_dtau<double>(static_cast<int64_t>(cnt[r]), tau[r], sum_yc[r]));
    }
  }
}

template <typename scalar_t, typename acc_t>
CE_INLINE void log_prob_backward_block_impl(const LogProbBackwardArgs<scalar_t, acc_t>& p,
                                            int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
  if (p.log_space) {
    log_prob_backward_rows<true>(p, r0, r1 - r0, buf, st);
  } else {
    log_prob_backward_rows<false>(p, r0, r1 - r0, buf, st);
  }
}

CE_BLOCK_CLONES(log_prob_block, LogProbArgs)
CE_BLOCK_CLONES(log_prob_backward_block, LogProbBackwardArgs)

void Kernels::log_prob(const at::Tensor& value, const at::Tensor& logits, at::Tensor out,
                       const Temperature& tau, bool log_space) {
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_log_prob_cpu", [&] {
    const LogProbArgs<scalar_t, acc_t> args{value.data_ptr<scalar_t>(), logits.data_ptr<scalar_t>(),
                                            out.data_ptr<scalar_t>(), rows, n, tau.view<acc_t>(),
                                            log_space};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(5, 4),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 log_prob_block(args, r0, r1, buf, st);
                               });
  });
}

void Kernels::log_prob_backward(const at::Tensor& grad, const at::Tensor& value,
                                const at::Tensor& logits, at::Tensor* grad_value,
                                at::Tensor* grad_logits, at::Tensor* grad_tau,
                                const Temperature& tau, bool log_space) {
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_log_prob_backward_cpu", [&] {
    const LogProbBackwardArgs<scalar_t, acc_t> args{
        value.data_ptr<scalar_t>(), logits.data_ptr<scalar_t>(), grad.data_ptr<acc_t>(),
        ptr_or_null<scalar_t>(grad_value), ptr_or_null<scalar_t>(grad_logits),
        ptr_or_null<acc_t>(grad_tau), n, tau.view<acc_t>(), log_space};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(8, 3),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 log_prob_backward_block(args, r0, r1, buf, st);
                               });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
