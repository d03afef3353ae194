// CPU kernels of the categorical log-densities: log kappa of ExpConcrete values
// (exp_concrete_log_prob) and the Concrete density on the simplex (concrete_log_prob), forward and
// backward. Per block of rows: the density's row state (categorical.h) and the per-row combination
// in double. Formulas: concrete_ext/math/exp_concrete.h.
#include "cpu/blocks.h"
#include "cpu/categorical.h"
#include "cpu/kernels.h"

namespace concrete_ext {
namespace cpu {
namespace {

struct LogProb {
  template <typename T>
  struct Params {
    TauView<T> tau;
    bool log_space;
  };
  // in: value, logits; row_out: log-density
  template <bool kLogSpace, typename T>
  static CE_INLINE void rows(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n;
    T *y = s.take<T>(), *sw = s.take<T>(), *tau = s.take<T>(), *m = s.take<T>(), *tmp = s.take<T>();
    double *cnt = s.take<double>(), *sum_w = s.take<double>(), *total = s.take<double>(),
           *sum_y = s.take<double>();
    tau_values(p.tau, b.r0, R, false, tau);
    const T* vb = b.in[0];
    const T* ab = b.in[1];
    Prefetch pf = b.prefetch();
    if constexpr (!kLogSpace) {
      for (int64_t i = 0; i < R * n; ++i) y[i] = BlockMath<T>::log(vb[i]);
    }
    auto yf = [&](int64_t i) CE_LAMBDA {
      if constexpr (kLogSpace)
        return vb[i];
      else
        return y[i];
    };
    const bool masked =
        density_block<true>(R, n, ab, ab, tau, yf, sw, tmp, m, cnt, sum_w, total, &pf);
    if constexpr (!kLogSpace) {
      if (masked) {
        rows_sum(R, n, sum_y, tmp, [&](int64_t, int64_t i) CE_LAMBDA {
          const T yi = y[i];
          return ec::masked(ab[i]) ? T(0) : yi;
        });
      } else {
        reduce_rows_sum(R, n, y, sum_y);
      }
    }
    finish_log_prob(R, n, tau, tau_is_uniform(p.tau), m, cnt, sum_w, total,
                    kLogSpace ? nullptr : sum_y, b.row_out[0]);
  }
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    if (p.log_space) {
      rows<true>(p, b, s);
    } else {
      rows<false>(p, b, s);
    }
  }
};

struct LogProbBackward {
  template <typename T>
  struct Params {
    const T* g;  // one upstream gradient per row
    T* gt;       // per row, nullable
    TauView<T> tau;
    bool log_space;
  };
  // in: value, logits; out: d value, d logits (each may be absent)
  template <bool kLogSpace, typename T>
  static CE_INLINE void rows(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n, r0 = b.r0;
    T *y = s.take<T>(), *sw = s.take<T>(), *tau = s.take<T>(), *m = s.take<T>(),
      *inv_total = s.take<T>(), *cntf = s.take<T>(), *tmp = s.take<T>();
    double *cnt = s.take<double>(), *total = s.take<double>(), *sum_yc = s.take<double>();
    tau_values(p.tau, r0, R, false, tau);
    const T* vb = b.in[0];
    const T* ab = b.in[1];
    const T* gr = p.g + r0;
    // Gradients nobody asked for go to a block-sized sink (keeps the loops branch-free).
    T* gvb = b.out[0] ? b.out[0] : s.take<T>();
    T* gab = b.out[1] ? b.out[1] : s.take<T>();
    if constexpr (!kLogSpace) {
      for (int64_t i = 0; i < R * n; ++i) y[i] = BlockMath<T>::log(vb[i]);
    }
    auto yf = [&](int64_t i) CE_LAMBDA {
      if constexpr (kLogSpace)
        return vb[i];
      else
        return y[i];
    };
    Prefetch pf = b.prefetch();
    density_block<false>(R, n, ab, ab, tau, yf, sw, tmp, m, cnt, static_cast<double*>(nullptr),
                         total, &pf);
    for (int64_t r = 0; r < R; ++r) {
      inv_total[r] = static_cast<T>(1 / total[r]);
      cntf[r] = static_cast<T>(cnt[r]);
    }
    // c_k = 1 - n s_k with s = softmax(w): d/da_k = g c_k, d/dy_k = -g tau c_k; on the simplex
    // d/dx_k = (d/dy_k - g) / x_k (masked categories, x = 0, get 0).
    auto grads = [&](int64_t r, int64_t i) CE_LAMBDA {
      const bool masked = ec::masked(ab[i]);
      // Every load before the selects: GCC 12 does not vectorise loads under a condition.
      const T sk = sw[i] * inv_total[r];
      const T g = gr[r], yi = yf(i), vi = vb[i];
      const T c1 = T(1) - cntf[r] * sk;
      const T ck = masked ? T(0) : c1;
      gab[i] = g * ck;
      const T dy = -g * tau[r] * ck;
      if constexpr (kLogSpace) {
        gvb[i] = dy;
      } else {
        const T dv = (dy - g) / vi;
        gvb[i] = masked ? T(0) : dv;
      }
      const T yc = yi * ck;
      return masked ? T(0) : yc;
    };
    // The row sums of y c feed only d temperature: without it, one pass with no reduction.
    if (p.gt) {
      rows_sum(R, n, sum_yc, tmp, grads);
    } else {
      for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { grads(r, i); });
    }
    if (p.gt) {
      for (int64_t r = 0; r < R; ++r) {
        p.gt[r0 + r] = static_cast<T>(
            gr[r] * ec::log_prob_dtau<double>(static_cast<int64_t>(cnt[r]), tau[r], sum_yc[r]));
      }
    }
  }
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    if (p.log_space) {
      rows<true>(p, b, s);
    } else {
      rows<false>(p, b, s);
    }
  }
};

CE_CPU_KERNEL(LogProb)
CE_CPU_KERNEL(LogProbBackward)

}  // namespace

void concrete_log_prob(const LogProbArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const LogProb::Params<T> p{tau_view<T>(a.tau), a.log_space};
    Io<scalar_t> io;
    io.period[io.n_in] = a.value_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.value);
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.row_out[io.n_row_out++] = static_cast<scalar_t*>(a.out);
    CE_RUN_ROW_BLOCKS(LogProb, scalar_t, p, io, a.rows, a.n);
  });
}

void concrete_log_prob_backward(const LogProbBackwardArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const LogProbBackward::Params<T> p{static_cast<const T*>(a.grad), static_cast<T*>(a.grad_tau),
                                       tau_view<T>(a.tau), a.log_space};
    Io<scalar_t> io;
    io.period[io.n_in] = a.value_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.value);
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_value);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_logits);
    CE_RUN_ROW_BLOCKS(LogProbBackward, scalar_t, p, io, a.rows, a.n);
  });
}

}  // namespace cpu
}  // namespace concrete_ext
