// CPU kernels of concrete_sample / exp_concrete_sample and their backward (from the saved sample
// alone). Per block of rows: the Gumbel noise, the tempered softmax (categorical.h) and the store,
// as whole-block passes that vectorise. Formulas: concrete_ext/math/exp_concrete.h.
#include "cpu/blocks.h"
#include "cpu/categorical.h"
#include "cpu/kernels.h"

namespace concrete_ext {
namespace cpu {
namespace {

struct Sample {
  template <typename T>
  struct Params {
    TauView<T> tau;
    SeedOffset so;
    bool log_space;
  };
  // in: logits; out: sample
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n;
    T *z = s.take<T>(), *e = s.take<T>(), *inv = s.take<T>(), *rs = s.take<T>();
    double* sums = s.take<double>();
    tau_values(p.tau, b.r0, R, true, inv);
    perturbed_block(b.in[0], b.r0, R, n, inv, p.so, z, e, rs, sums);
    T* ob = b.out[0];
    if (p.log_space) {
      for (int64_t r = 0; r < R; ++r) rs[r] = BlockMath<T>::log(static_cast<T>(sums[r]));
      for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { ob[i] = z[i] - rs[r]; });
    } else {
      for (int64_t r = 0; r < R; ++r) rs[r] = T(1) / static_cast<T>(sums[r]);
      for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { ob[i] = e[i] * rs[r]; });
    }
  }
};

struct SampleBackward {
  template <typename T>
  struct Params {
    T* gt;  // d temperature per row, null when not wanted
    TauView<T> tau;
    bool log_space;
  };
  // in: sample, grad; out: d logits
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t R = b.R, n = b.n;
    T *inv = s.take<T>(), *rs = s.take<T>(), *tmp = s.take<T>();
    double *row_sum = s.take<double>(), *acc = s.take<double>();
    tau_values(p.tau, b.r0, R, true, inv);
    const T* v = b.in[0];
    const T* gb = b.in[1];
    T* db = b.out[0];
    Prefetch pf = b.prefetch();
    pf.part(1, 2);
    if (p.log_space) {
      // dz = dy - x sum(dy) over the unmasked categories; dtau from sum_k dz_k y_k.
      rows_sum(R, n, row_sum, tmp,
               [&](int64_t, int64_t i) CE_LAMBDA { return ec::unmasked_dy(gb[i], v[i]); });
      for (int64_t r = 0; r < R; ++r) rs[r] = static_cast<T>(row_sum[r]);
      auto dz_at = [&](int64_t r, int64_t i) CE_LAMBDA {
        const T dz = ec::dz_from_log(gb[i], v[i], BlockMath<T>::exp_nonpos(v[i]), rs[r]);
        db[i] = dz * inv[r];
        return dz;
      };
      if (p.gt) {
        rows_sum(R, n, acc, tmp, [&](int64_t r, int64_t i) CE_LAMBDA {
          return ec::dtau_term_log(dz_at(r, i), v[i]);
        });
      } else {
        for_each_row(R, n, dz_at);
      }
    } else {
      // dz = x (dx - sum(x dx)); dtau from sum_k dz_k log x_k.
      rows_sum(R, n, row_sum, tmp, [&](int64_t, int64_t i) CE_LAMBDA { return v[i] * gb[i]; });
      for (int64_t r = 0; r < R; ++r) rs[r] = static_cast<T>(row_sum[r]);
      auto dz_at = [&](int64_t r, int64_t i) CE_LAMBDA {
        const T dz = ec::dz_from_simplex(gb[i], v[i], rs[r]);
        db[i] = dz * inv[r];
        return dz;
      };
      if (p.gt) {
        rows_sum(R, n, acc, tmp, [&](int64_t r, int64_t i) CE_LAMBDA {
          return ec::dtau_term_simplex(dz_at(r, i), v[i], BlockMath<T>::log(v[i]));
        });
      } else {
        for_each_row(R, n, dz_at);
      }
    }
    pf.part(2, 2);
    if (p.gt) {
      for (int64_t r = 0; r < R; ++r) p.gt[b.r0 + r] = static_cast<T>(-inv[r] * acc[r]);
    }
  }
};

CE_CPU_KERNEL(Sample)
CE_CPU_KERNEL(SampleBackward)

}  // namespace

void concrete_sample(const SampleArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const Sample::Params<T> p{tau_view<T>(a.tau), a.so, a.log_space};
    Io<scalar_t> io;
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.out);
    CE_RUN_ROW_BLOCKS(Sample, scalar_t, p, io, a.rows, a.n);
  });
}

void concrete_sample_backward(const SampleBackwardArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const SampleBackward::Params<T> p{static_cast<T*>(a.grad_tau), tau_view<T>(a.tau), a.log_space};
    Io<scalar_t> io;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.sample);
    io.period[io.n_in] = a.grad_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.grad);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_logits);
    CE_RUN_ROW_BLOCKS(SampleBackward, scalar_t, p, io, a.rows, a.n);
  });
}

}  // namespace cpu
}  // namespace concrete_ext
