// CPU kernels of the hard Gumbel-softmax: gumbel_max_sample (also the straight-through forward)
// and the straight-through backward, which recomputes the soft sample from the saved
// (seed, offset). Formulas: concrete_ext/math/exp_concrete.h and math/gumbel_max.h.
#include <limits>

#include "cpu/blocks.h"
#include "cpu/categorical.h"
#include "cpu/kernels.h"

namespace concrete_ext {
namespace cpu {
namespace {

struct GumbelMax {
  template <typename T>
  struct Params {
    SeedOffset so;
  };
  // in: logits; out: one-hot (NaN rows where no category beats -inf)
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n;
    T *v = s.take<T>(), *m = s.take<T>();
    int64_t* idx = s.take<int64_t>();
    fill_noise(Noise::kGumbel, p.so, b.r0 * n, R * n, v);
    const T* ab = b.in[0];
    rows_max(R, n, m, v, [&](int64_t, int64_t i) CE_LAMBDA {
      const T x = ab[i] + v[i];
      v[i] = x;
      return x;
    });
    // The first maximum wins ties; NaN never wins (as ArgMaxOp in math/gumbel_max.h). A row where
    // no category beat -inf (all -inf or NaN logits) has no distribution and samples NaN.
    for (int64_t r = 0; r < R; ++r) {
      const T* vr = v + r * n;
      int64_t k = 0;
      while (k < n && !(vr[k] == m[r])) ++k;
      idx[r] = m[r] > -kInfinity<T> ? k : -1;
    }
    T* ob = b.out[0];
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA {
      const int64_t k = i - r * n;
      ob[i] = idx[r] < 0 ? nan : (k == idx[r] ? T(1) : T(0));
    });
  }
};

struct HardBackward {
  template <typename T>
  struct Params {
    T* gt;  // per row, nullable
    TauView<T> tau;
    SeedOffset so;
  };
  // in: logits, grad; out: d logits
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n;
    T *z = s.take<T>(), *e = s.take<T>(), *inv = s.take<T>(), *m = s.take<T>(),
      *inv_sum = s.take<T>(), *tmp = s.take<T>();
    double *sums = s.take<double>(), *sxg = s.take<double>(), *acc = s.take<double>();
    tau_values(p.tau, b.r0, R, true, inv);
    // The soft sample, recomputed from (seed, offset): x = e / sum, log x = z - log(sum).
    perturbed_block(b.in[0], b.r0, R, n, inv, p.so, z, e, m, sums);
    for (int64_t r = 0; r < R; ++r) inv_sum[r] = T(1) / static_cast<T>(sums[r]);
    const T* gb = b.in[1];
    T* db = b.out[0];
    rows_sum(R, n, sxg, tmp,
             [&](int64_t r, int64_t i) CE_LAMBDA { return e[i] * inv_sum[r] * gb[i]; });
    for (int64_t r = 0; r < R; ++r) m[r] = static_cast<T>(sxg[r]);
    rows_sum(R, n, acc, tmp, [&](int64_t r, int64_t i) CE_LAMBDA {
      const T x = e[i] * inv_sum[r];
      const T dz = ec::dz_from_simplex(gb[i], x, m[r]);
      db[i] = dz * inv[r];
      return ec::dtau_term_simplex(dz, x, z[i]);
    });
    if (p.gt) {
      for (int64_t r = 0; r < R; ++r) p.gt[b.r0 + r] = static_cast<T>(-inv[r] * acc[r]);
    }
  }
};

CE_CPU_KERNEL(GumbelMax)
CE_CPU_KERNEL(HardBackward)

}  // namespace

void gumbel_max(const GumbelMaxArgs& a) {
  if (a.rows == 0) return;
  CE_CPU_DISPATCH(a.dtype, [&] {
    const GumbelMax::Params<T> p{a.so};
    Io<scalar_t> io;
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.out);
    CE_RUN_ROW_BLOCKS(GumbelMax, scalar_t, p, io, a.rows, a.n);
  });
}

void gumbel_softmax_hard_backward(const HardBackwardArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const HardBackward::Params<T> p{static_cast<T*>(a.grad_tau), tau_view<T>(a.tau), a.so};
    Io<scalar_t> io;
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.period[io.n_in] = a.grad_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.grad);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_logits);
    CE_RUN_ROW_BLOCKS(HardBackward, scalar_t, p, io, a.rows, a.n);
  });
}

}  // namespace cpu
}  // namespace concrete_ext
