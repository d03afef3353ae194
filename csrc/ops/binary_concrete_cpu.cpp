// CPU kernels of the binary ops (kernels.h): Binary Concrete sample (on (0, 1) or in logit form),
// its backward, and both log-densities with their backward; elementwise over flat tensors in
// blocks of kBlockElems, the logistic noise from the vectorised primitive (cpu_loops.h).
// Formulas: concrete_ext/math/binary_concrete.h.
#include <ATen/ATen.h>

#include "concrete_ext/dispatch.h"
#include "concrete_ext/math/binary_concrete.h"
#include "cpu_loops.h"
#include "kernels.h"

namespace concrete_ext {
namespace cpu {
namespace {
namespace bc = binary_concrete;
template <typename T>
T* ptr_or_null(at::Tensor* t) { return t ? t->data_ptr<T>() : nullptr; }
}  // namespace

void Kernels::binary_sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,
                            const RngArgs& rng, bool logit_space) {
  const SeedOffset so = cpu_seed(rng.generator, rng.seed, rng.offset);
  const int64_t numel = logits.numel();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_sample_cpu", [&] {
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const TauView<acc_t> tv = tau.view<acc_t>();
    parallel_element_blocks<acc_t>(numel, 1, [&](int64_t i0, int64_t i1, acc_t* l, int64_t) {
      fill_noise(Noise::kLogistic, so, i0, i1 - i0, l);
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t inv = acc_t(1) / tv.at(i);
        const acc_t ai = static_cast<acc_t>(a[i]);
        o[i] = static_cast<scalar_t>(logit_space ? bc::sample_logit(ai, l[i - i0], inv)
                                                 : bc::sample<acc_t, vm::VecOps>(ai, l[i - i0], inv));
      }
    });
  });
}

void Kernels::binary_sample_backward(const at::Tensor& grad, const at::Tensor& sample,
                                     at::Tensor& grad_logits, const Temperature& tau,
                                     at::Tensor* grad_tau, bool logit_space) {
  const int64_t numel = sample.numel();
  CE_DISPATCH_FLOATING(sample.scalar_type(), "binary_concrete_sample_backward_cpu", [&] {
    const scalar_t* s = sample.data_ptr<scalar_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    scalar_t* da = grad_logits.data_ptr<scalar_t>();
    acc_t* gt = ptr_or_null<acc_t>(grad_tau);
    const TauView<acc_t> tv = tau.view<acc_t>();
    at::parallel_for(0, numel, kTaskElems, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t inv = acc_t(1) / tv.at(i);
        acc_t d, t;
        if (logit_space) {
          bc::sample_logit_backward(static_cast<acc_t>(g[i]), static_cast<acc_t>(s[i]), inv, &d, &t);
        } else {
          bc::sample_backward<acc_t, vm::VecOps>(static_cast<acc_t>(g[i]), static_cast<acc_t>(s[i]),
                                                inv, &d, &t);
        }
        da[i] = static_cast<scalar_t>(d);
        if (gt) gt[i] = t;
      }
    });
  });
}

void Kernels::binary_log_prob(const at::Tensor& value, const at::Tensor& logits, at::Tensor& out,
                              const Temperature& tau, bool logit_space) {
  const int64_t numel = logits.numel();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_log_prob_cpu", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const TauView<acc_t> tv = tau.view<acc_t>();
    at::parallel_for(0, numel, kTaskElems, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t vi = static_cast<acc_t>(v[i]), ai = static_cast<acc_t>(a[i]), t = tv.at(i);
        o[i] = static_cast<scalar_t>(logit_space ? bc::logit_log_prob<acc_t, vm::VecOps>(vi, ai, t)
                                                 : bc::log_prob<acc_t, vm::VecOps>(vi, ai, t));
      }
    });
  });
}

void Kernels::binary_log_prob_backward(const at::Tensor& grad, const at::Tensor& value,
                                       const at::Tensor& logits, at::Tensor* grad_value,
                                       at::Tensor* grad_logits, at::Tensor* grad_tau,
                                       const Temperature& tau, bool logit_space) {
  const int64_t numel = logits.numel();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "binary_concrete_log_prob_backward_cpu", [&] {
    const scalar_t* v = value.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    const acc_t* g = grad.data_ptr<acc_t>();
    scalar_t* gv = ptr_or_null<scalar_t>(grad_value);
    scalar_t* ga = ptr_or_null<scalar_t>(grad_logits);
    acc_t* gt = ptr_or_null<acc_t>(grad_tau);
    const TauView<acc_t> tv = tau.view<acc_t>();
    at::parallel_for(0, numel, kTaskElems, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t vi = static_cast<acc_t>(v[i]), ai = static_cast<acc_t>(a[i]), t = tv.at(i);
        acc_t dv, da, dt;
        if (logit_space) {
          bc::logit_log_prob_grads<acc_t, vm::VecOps>(vi, ai, t, &dv, &da, &dt);
        } else {
          bc::log_prob_grads<acc_t, vm::VecOps>(vi, ai, t, &dv, &da, &dt);
        }
        if (gv) gv[i] = static_cast<scalar_t>(g[i] * dv);
        if (ga) ga[i] = static_cast<scalar_t>(g[i] * da);
        if (gt) gt[i] = g[i] * dt;
      }
    });
  });
}

}  // namespace cpu
}  // namespace concrete_ext
