// CPU kernels of the binary ops (kernels.h): Binary Concrete sample (on (0, 1) or in logit form),
// its backward, and both log-densities with their backward; elementwise over flat tensors in
// blocks of kBlockElems, the logistic noise from the vectorised primitive (cpu_loops.h).
// Formulas: concrete_ext/math/binary_concrete.h.
#include <ATen/ATen.h>

#include "concrete_ext/dispatch.h"
#include "concrete_ext/math/binary_concrete.h"
#include "cpu_loops.h"
#include "cpu_vec.h"
#include "kernels.h"

namespace concrete_ext {
namespace cpu {

namespace bc = binary_concrete;

// ---- block bodies over elements [i0, i1) (one per-ISA function per op and dtype) --------------

template <typename scalar_t, typename acc_t>
struct BinarySampleArgs {
  const scalar_t* a;
  scalar_t* o;
  TauView<acc_t> tau;
  SeedOffset so;
  bool logit_space;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void binary_sample_block_impl(const BinarySampleArgs<scalar_t, acc_t>& p, int64_t i0,
                                        int64_t i1, acc_t* buf, int64_t st) {
  const int64_t m = i1 - i0;
  Carver<acc_t> c{buf, st};
  acc_t *l = c.take(), *inv = c.take();
  fill_noise(Noise::kLogistic, p.so, i0, m, l);
  tau_values(p.tau, i0, m, true, inv);
  const scalar_t* ab = p.a + i0;
  scalar_t* ob = p.o + i0;
  if (p.logit_space) {
    for (int64_t j = 0; j < m; ++j) {
      ob[j] = static_cast<scalar_t>(bc::sample_logit(static_cast<acc_t>(ab[j]), l[j], inv[j]));
    }
  } else {
    for (int64_t j = 0; j < m; ++j) {
      ob[j] = static_cast<scalar_t>(
          bc::sample<acc_t, vm::VecOps>(static_cast<acc_t>(ab[j]), l[j], inv[j]));
    }
  }
}

template <typename scalar_t, typename acc_t>
struct BinarySampleBackwardArgs {
  const scalar_t* s;
  const scalar_t* g;
  scalar_t* da;
  acc_t* gt;  // may be null
  TauView<acc_t> tau;
  bool logit_space;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void binary_sample_backward_block_impl(const BinarySampleBackwardArgs<scalar_t, acc_t>& p,
                                                 int64_t i0, int64_t i1, acc_t* buf, int64_t st) {
  const int64_t m = i1 - i0;
  Carver<acc_t> c{buf, st};
  acc_t *inv = c.take(), *sink = c.take();
  tau_values(p.tau, i0, m, true, inv);
  const scalar_t* sb = p.s + i0;
  const scalar_t* gb = p.g + i0;
  scalar_t* db = p.da + i0;
  acc_t* tb = p.gt ? p.gt + i0 : sink;
  if (p.logit_space) {
    for (int64_t j = 0; j < m; ++j) {
      acc_t d, t;
      bc::sample_logit_backward(static_cast<acc_t>(gb[j]), static_cast<acc_t>(sb[j]), inv[j], &d, &t);
      db[j] = static_cast<scalar_t>(d);
      tb[j] = t;
    }
  } else {
    for (int64_t j = 0; j < m; ++j) {
      acc_t d, t;
      bc::sample_backward<acc_t, vm::VecOps>(static_cast<acc_t>(gb[j]), static_cast<acc_t>(sb[j]),
                                             inv[j], &d, &t);
      db[j] = static_cast<scalar_t>(d);
      tb[j] = t;
    }
  }
}

template <typename scalar_t, typename acc_t>
struct BinaryLogProbArgs {
  const scalar_t* v;
  const scalar_t* a;
  scalar_t* o;
  TauView<acc_t> tau;
  bool logit_space;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void binary_log_prob_block_impl(const BinaryLogProbArgs<scalar_t, acc_t>& p, int64_t i0,
                                          int64_t i1, acc_t* buf, int64_t st) {
  const int64_t m = i1 - i0;
  Carver<acc_t> c{buf, st};
  acc_t* tau = c.take();
  tau_values(p.tau, i0, m, false, tau);
  const scalar_t* vb = p.v + i0;
  const scalar_t* ab = p.a + i0;
  scalar_t* ob = p.o + i0;
  if (p.logit_space) {
    for (int64_t j = 0; j < m; ++j) {
      ob[j] = static_cast<scalar_t>(bc::logit_log_prob<acc_t, vm::VecOps>(
          static_cast<acc_t>(vb[j]), static_cast<acc_t>(ab[j]), tau[j]));
    }
  } else {
    for (int64_t j = 0; j < m; ++j) {
      ob[j] = static_cast<scalar_t>(bc::log_prob<acc_t, vm::VecOps>(
          static_cast<acc_t>(vb[j]), static_cast<acc_t>(ab[j]), tau[j]));
    }
  }
}

template <typename scalar_t, typename acc_t>
struct BinaryLogProbBackwardArgs {
  const scalar_t* v;
  const scalar_t* a;
  const acc_t* g;
  scalar_t* gv;  // each of gv, ga, gt may be null
  scalar_t* ga;
  acc_t* gt;
  TauView<acc_t> tau;
  bool logit_space;
};

template <typename scalar_t, typename acc_t>
CE_INLINE void binary_log_prob_backward_block_impl(
    const BinaryLogProbBackwardArgs<scalar_t, acc_t>& p, int64_t i0, int64_t i1, acc_t* buf,
    int64_t st) {
  const int64_t m = i1 - i0;
  Carver<acc_t> c{buf, st};
  acc_t *tau = c.take(), *sink_t = c.take();
  scalar_t* sink = reinterpret_cast<scalar_t*>(c.take());
  tau_values(p.tau, i0, m, false, tau);
  const scalar_t* vb = p.v + i0;
  const scalar_t* ab = p.a + i0;
  const acc_t* gb = p.g + i0;
  scalar_t* gvb = p.gv ? p.gv + i0 : sink;
  scalar_t* gab = p.ga ? p.ga + i0 : sink;
  acc_t* gtb = p.gt ? p.gt + i0 : sink_t;
  auto store = [&](int64_t j, acc_t dv, acc_t da, acc_t dt) CE_LAMBDA {
    gvb[j] = static_cast<scalar_t>(gb[j] * dv);
    gab[j] = static_cast<scalar_t>(gb[j] * da);
    gtb[j] = gb[j] * dt;
  };
  if (p.logit_space) {
    for (int64_t j = 0; j < m; ++j) {
      acc_t dv, da, dt;
      bc::logit_log_prob_grads<acc_t, vm::VecOps>(static_cast<acc_t>(vb[j]),
                                                  static_cast<acc_t>(ab[j]), tau[j], &dv, &da, &dt);
      store(j, dv, da, dt);
    }
  } else {
    for (int64_t j = 0; j < m; ++j) {
      acc_t dv, da, dt;
      bc::log_prob_grads<acc_t, vm::VecOps>(static_cast<acc_t>(vb[j]), static_cast<acc_t>(ab[j]),
                                            tau[j], &dv, &da, &dt);
      store(j, dv, da, dt);
    }
  }
}

CE_BLOCK_CLONES(binary_sample_block, BinarySampleArgs)
CE_BLOCK_CLONES(binary_sample_backward_block, BinarySampleBackwardArgs)
CE_BLOCK_CLONES(binary_log_prob_block, BinaryLogProbArgs)
CE_BLOCK_CLONES(binary_log_prob_backward_block, BinaryLogProbBackwardArgs)

namespace {
template <typename T>
T* ptr_or_null(at::Tensor* t) { return t ? t->data_ptr<T>() : nullptr; }
}  // namespace

void Kernels::binary_sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,
                            const RngArgs& rng, bool logit_space) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  const int64_t numel = logits.numel();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_sample_cpu", [&] {
    const BinarySampleArgs<scalar_t, acc_t> args{logits.data_ptr<scalar_t>(),
                                                 out.data_ptr<scalar_t>(), tau.view<acc_t>(), so,
                                                 logit_space};
    parallel_element_blocks<acc_t>(numel, 2, [&](int64_t i0, int64_t i1, acc_t* buf, int64_t st) {
      binary_sample_block(args, i0, i1, buf, st);
    });
  });
}

void Kernels::binary_sample_backward(const at::Tensor& grad, const at::Tensor& sample,
                                     at::Tensor& grad_logits, const Temperature& tau,
                                     at::Tensor* grad_tau, bool logit_space) {
  const int64_t numel = sample.numel();
  CE_DISPATCH_FLOATING(sample.scalar_type(), "binary_concrete_sample_backward_cpu", [&] {
    const BinarySampleBackwardArgs<scalar_t, acc_t> args{
        sample.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), grad_logits.data_ptr<scalar_t>(),
        ptr_or_null<acc_t>(grad_tau), tau.view<acc_t>(), logit_space};
    parallel_element_blocks<acc_t>(numel, 2, [&](int64_t i0, int64_t i1, acc_t* buf, int64_t st) {
      binary_sample_backward_block(args, i0, i1, buf, st);
    });
  });
}

void Kernels::binary_log_prob(const at::Tensor& value, const at::Tensor& logits, at::Tensor& out,
                              const Temperature& tau, bool logit_space) {
  const int64_t numel = logits.numel();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_log_prob_cpu", [&] {
    const BinaryLogProbArgs<scalar_t, acc_t> args{value.data_ptr<scalar_t>(),
                                                  logits.data_ptr<scalar_t>(),
                                                  out.data_ptr<scalar_t>(), tau.view<acc_t>(),
                                                  logit_space};
    parallel_element_blocks<acc_t>(numel, 1, [&](int64_t i0, int64_t i1, acc_t* buf, int64_t st) {
      binary_log_prob_block(args, i0, i1, buf, st);
    });
  });
}

void Kernels::binary_log_prob_backward(const at::Tensor& grad, const at::Tensor& value,
                                       const at::Tensor& logits, at::Tensor* grad_value,
                                       at::Tensor* grad_logits, at::Tensor* grad_tau,
                                       const Temperature& tau, bool logit_space) {
  const int64_t numel = logits.numel();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_log_prob_backward_cpu", [&] {
    const BinaryLogProbBackwardArgs<scalar_t, acc_t> args{
        value.data_ptr<scalar_t>(), logits.data_ptr<scalar_t>(), grad.data_ptr<acc_t>(),
        ptr_or_null<scalar_t>(grad_value), ptr_or_null<scalar_t>(grad_logits),
        ptr_or_null<acc_t>(grad_tau), tau.view<acc_t>(), logit_space};
    parallel_element_blocks<acc_t>(numel, 3, [&](int64_t i0, int64_t i1, acc_t* buf, int64_t st) {
      binary_log_prob_backward_block(args, i0, i1, buf, st);
    });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
