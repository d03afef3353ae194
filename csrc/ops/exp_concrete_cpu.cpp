// CPU kernels of the categorical sampling ops (kernels.h): Concrete / ExpConcrete sample and
// backward, Gumbel-max and the straight-through Gumbel-softmax backward. Rows are processed in
// blocks of about kBlockElems elements (cpu_loops.h), each block by one per-ISA function
// (CE_BLOCK_CLONES, cpu_vec.h) whose passes over the whole block vectorise, short rows included.
// Formulas: concrete_ext/math/exp_concrete.h.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "concrete_ext/dispatch.h"
#include "exp_concrete_cpu_blocks.h"
#include "kernels.h"

namespace concrete_ext {
namespace cpu {

template <typename scalar_t, typename acc_t>
struct SampleArgs {
  const scalar_t* a;
  scalar_t* o;
  int64_t n;
  TauView<acc_t> tau;
  SeedOffset so;
  bool log_space;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void sample_block_impl(const SampleArgs<scalar_t, acc_t>& p, int64_t r0, int64_t r1,
                                 acc_t* buf, int64_t st) {
  const int64_t R = r1 - r0, n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *z = c.take(), *e = c.take(), *inv = c.take(), *rs = c.take();
  double* sums = c.take_double();
  tau_values(p.tau, r0, R, true, inv);
  perturbed_block(p.a, r0, R, n, inv, p.so, z, e, rs, sums);
  scalar_t* ob = p.o + r0 * n;
  if (p.log_space) {
    for (int64_t r = 0; r < R; ++r) rs[r] = BlockMath<acc_t>::log(static_cast<acc_t>(sums[r]));
    for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { ob[i] = static_cast<scalar_t>(z[i] - rs[r]); });
  } else {
    for (int64_t r = 0; r < R; ++r) rs[r] = acc_t(1) / static_cast<acc_t>(sums[r]);
    for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { ob[i] = static_cast<scalar_t>(e[i] * rs[r]); });
  }
}

template <typename scalar_t, typename acc_t>
struct SampleBackwardArgs {
  const scalar_t* s;
  const scalar_t* g;
  scalar_t* da;
  acc_t* gt;  // null when tau needs no gradient
  int64_t n;
  TauView<acc_t> tau;
  bool log_space;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void sample_backward_block_impl(const SampleBackwardArgs<scalar_t, acc_t>& p, int64_t r0,
                                          int64_t r1, acc_t* buf, int64_t st) {
  const int64_t R = r1 - r0, n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *v = c.take(), *inv = c.take(), *rs = c.take(), *tmp = c.take();
  double *row_sum = c.take_double(), *acc = c.take_double();
  tau_values(p.tau, r0, R, true, inv);
  const scalar_t* sb = p.s + r0 * n;
  const scalar_t* gb = p.g + r0 * n;
  scalar_t* db = p.da + r0 * n;
  if (p.log_space) {
    // dz = dy - x sum(dy) over the unmasked categories; dtau from sum_k dz_k y_k.
    rows_sum(R, n, row_sum, tmp, [&](int64_t, int64_t i) CE_LAMBDA {
      const acc_t vi = static_cast<acc_t>(sb[i]);
      v[i] = vi;
      return ec::unmasked_dy(static_cast<acc_t>(gb[i]), vi);
    });
    for (int64_t r = 0; r < R; ++r) rs[r] = static_cast<acc_t>(row_sum[r]);
    auto dz_at = [&](int64_t r, int64_t i) CE_LAMBDA {
      const acc_t dz = ec::dz_from_log(static_cast<acc_t>(gb[i]), v[i],
                                       BlockMath<acc_t>::exp_nonpos(v[i]), rs[r]);
      db[i] = static_cast<scalar_t>(dz * inv[r]);
      return dz;
    };
    if (p.gt) {
      rows_sum(R, n, acc, tmp, [&](int64_t r, int64_t i) CE_LAMBDA { return ec::dtau_term_log(dz_at(r, i), v[i]); });
    } else {
      for_each_row(R, n, dz_at);
    }
  } else {
    // dz = x (dx - sum(x dx)); dtau from sum_k dz_k log x_k.
    rows_sum(R, n, row_sum, tmp, [&](int64_t, int64_t i) CE_LAMBDA {
      const acc_t vi = static_cast<acc_t>(sb[i]);
      v[i] = vi;
      return vi * static_cast<acc_t>(gb[i]);
    });
    for (int64_t r = 0; r < R; ++r) rs[r] = static_cast<acc_t>(row_sum[r]);
    auto dz_at = [&](int64_t r, int64_t i) CE_LAMBDA {
      const acc_t dz = ec::dz_from_simplex(static_cast<acc_t>(gb[i]), v[i], rs[r]);
      db[i] = static_cast<scalar_t>(dz * inv[r]);
      return dz;
    };
    if (p.gt) {
      rows_sum(R, n, acc, tmp, [&](int64_t r, int64_t i) CE_LAMBDA {
        return ec::dtau_term_simplex(dz_at(r, i), v[i], BlockMath<acc_t>::log(v[i]));
      });
    } else {
      for_each_row(R, n, dz_at);
    }
  }
  if (p.gt) {
    for (int64_t r = 0; r < R; ++r) p.gt[r0 + r] = static_cast<acc_t>(-inv[r] * acc[r]);
  }
}

template <typename scalar_t, typename acc_t>
struct GumbelMaxArgs {
  const scalar_t* a;
  scalar_t* o;
  int64_t n;
  SeedOffset so;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void gumbel_max_block_impl(const GumbelMaxArgs<scalar_t, acc_t>& p, int64_t r0,
                                     int64_t r1, acc_t* buf, int64_t st) {
  const int64_t R = r1 - r0, n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *v = c.take(), *m = c.take();
  int64_t* idx = reinterpret_cast<int64_t*>(c.take_double());
  fill_noise(Noise::kGumbel, p.so, r0 * n, R * n, v);
  const scalar_t* ab = p.a + r0 * n;
  rows_max(R, n, m, v, [&](int64_t, int64_t i) CE_LAMBDA {
    const acc_t x = static_cast<acc_t>(ab[i]) + v[i];
    v[i] = x;
    return x;
  });
  // The first maximum wins ties; NaN never wins (as ArgMaxOp in math/gumbel_max.h). A row where
  // no category beat -inf (all -inf or NaN logits) has no distribution and samples NaN.
  for (int64_t r = 0; r < R; ++r) {
    const acc_t* vr = v + r * n;
    int64_t k = 0;
    while (k < n && !(vr[k] == m[r])) ++k;
    idx[r] = m[r] > -kInfinity<acc_t> ? k : -1;
  }
  scalar_t* ob = p.o + r0 * n;
  const scalar_t nan = std::numeric_limits<scalar_t>::quiet_NaN();
  for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA {
    const int64_t k = i - r * n;
    ob[i] = idx[r] < 0 ? nan : (k == idx[r] ? scalar_t(1) : scalar_t(0));
  });
}

template <typename scalar_t, typename acc_t>
struct HardBackwardArgs {
  const scalar_t* a;
  const scalar_t* g;
  scalar_t* da;
  acc_t* gt;
  int64_t n;
  TauView<acc_t> tau;
  SeedOffset so;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void hard_backward_block_impl(const HardBackwardArgs<scalar_t, acc_t>& p, int64_t r0,
                                        int64_t r1, acc_t* buf, int64_t st) {
  const int64_t R = r1 - r0, n = p.n;
  Carver<acc_t> c{buf, st};
  acc_t *z = c.take(), *e = c.take(), *inv = c.take(), *m = c.take(), *inv_sum = c.take(),
        *tmp = c.take();
  double *sums = c.take_double(), *sxg = c.take_double(), *acc = c.take_double();
  tau_values(p.tau, r0, R, true, inv);
  // The soft sample, recomputed from (seed, offset): x = e / sum, log x = z - log(sum).
  perturbed_block(p.a, r0, R, n, inv, p.so, z, e, m, sums);
  for (int64_t r = 0; r < R; ++r) inv_sum[r] = acc_t(1) / static_cast<acc_t>(sums[r]);
  const scalar_t* gb = p.g + r0 * n;
  scalar_t* db = p.da + r0 * n;
  rows_sum(R, n, sxg, tmp, [&](int64_t r, int64_t i) CE_LAMBDA {
    return e[i] * inv_sum[r] * static_cast<acc_t>(gb[i]);
  });
  for (int64_t r = 0; r < R; ++r) m[r] = static_cast<acc_t>(sxg[r]);
  rows_sum(R, n, acc, tmp, [&](int64_t r, int64_t i) CE_LAMBDA {
    const acc_t x = e[i] * inv_sum[r];
    const acc_t dz = ec::dz_from_simplex(static_cast<acc_t>(gb[i]), x, m[r]);
    db[i] = static_cast<scalar_t>(dz * inv[r]);
    return ec::dtau_term_simplex(dz, x, z[i]);
  });
  if (p.gt) {
    for (int64_t r = 0; r < R; ++r) p.gt[r0 + r] = static_cast<acc_t>(-inv[r] * acc[r]);
  }
}

CE_BLOCK_CLONES(sample_block, SampleArgs)
CE_BLOCK_CLONES(sample_backward_block, SampleBackwardArgs)
CE_BLOCK_CLONES(gumbel_max_block, GumbelMaxArgs)
CE_BLOCK_CLONES(hard_backward_block, HardBackwardArgs)

void Kernels::sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,
                     const RngArgs& rng, bool log_space) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_sample_cpu", [&] {
    const SampleArgs<scalar_t, acc_t> args{logits.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                           n, tau.view<acc_t>(), so, log_space};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(4, 1),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 sample_block(args, r0, r1, buf, st);
                               });
  });
}

void Kernels::sample_backward(const at::Tensor& grad, const at::Tensor& sample,
                              at::Tensor& grad_logits, const Temperature& tau,
                              at::Tensor* grad_tau, bool log_space) {
  const int64_t rows = sample.size(0), n = sample.size(1);
  CE_DISPATCH_FLOATING(sample.scalar_type(), "concrete_sample_backward_cpu", [&] {
    const SampleBackwardArgs<scalar_t, acc_t> args{
        sample.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), grad_logits.data_ptr<scalar_t>(),
        ptr_or_null<acc_t>(grad_tau), n, tau.view<acc_t>(), log_space};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(4, 2),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 sample_backward_block(args, r0, r1, buf, st);
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
    const GumbelMaxArgs<scalar_t, acc_t> args{logits.data_ptr<scalar_t>(),
                                              out.data_ptr<scalar_t>(), n, so};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(2, 1),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 gumbel_max_block(args, r0, r1, buf, st);
                               });
  });
}

void Kernels::gumbel_softmax_hard_backward(const at::Tensor& grad, const at::Tensor& logits,
                                           at::Tensor& grad_logits, const Temperature& tau,
                                           const at::Tensor& rng_state, at::Tensor* grad_tau) {
  const SeedOffset so = read_rng_state(rng_state);
  const int64_t rows = logits.size(0), n = logits.size(1);
  CE_DISPATCH_FLOATING(logits.scalar_type(), "gumbel_softmax_hard_backward_cpu", [&] {
    const HardBackwardArgs<scalar_t, acc_t> args{
        logits.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), grad_logits.data_ptr<scalar_t>(),
        ptr_or_null<acc_t>(grad_tau), n, tau.view<acc_t>(), so};
    parallel_row_blocks<acc_t>(rows, n, scratch_buffers<acc_t>(6, 3),
                               [&](int64_t r0, int64_t r1, acc_t* buf, int64_t st) {
                                 hard_backward_block(args, r0, r1, buf, st);
                               });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
