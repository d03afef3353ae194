// Host side of the binary ops (Binary Concrete sample in both forms, their log-densities and
// backward): checks, broadcasting of the temperature, flat contiguous views; shared by the CPU and
// CUDA registrations (register_ops.h).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "concrete_ext/checks.h"
#include "concrete_ext/host.h"
#include "exp_concrete.h"
#include "kernels.h"

namespace concrete_ext {

template <typename Backend>
at::Tensor binary_sample_op(const at::Tensor& logits, const at::Tensor& temperature,
                            const RngArgs& rng, bool logit_space) {
  check_floating(logits, "logits");
  const Temperature tau = prepare_temperature(temperature, logits.sizes(), logits.device(),
                                              acc_type(logits.scalar_type()));
  const at::Tensor a = logits.contiguous();
  at::Tensor out = at::empty_like(a, at::MemoryFormat::Contiguous);
  if (a.numel() == 0) return out;
  Backend::binary_sample(a, out, tau, rng, logit_space);
  return out;
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> binary_sample_backward_op(const at::Tensor& grad,
                                                             const at::Tensor& sample,
                                                             const at::Tensor& temperature,
                                                             bool temperature_grad,
                                                             bool logit_space) {
  check_same(grad, sample, "grad", "sample");
  check_same_shape(grad, sample, "grad", "sample");
  const at::ScalarType acc = acc_type(sample.scalar_type());
  const Temperature tau = prepare_temperature(temperature, sample.sizes(), sample.device(), acc);
  const at::Tensor s = sample.contiguous();
  at::Tensor grad_logits = at::empty_like(s, at::MemoryFormat::Contiguous);
  at::Tensor grad_tau = temperature_grad ? at::empty(s.sizes(), s.options().dtype(acc))
                                         : at::empty({0}, s.options().dtype(acc));
  if (s.numel() == 0) return {grad_logits, grad_tau};
  Backend::binary_sample_backward(grad.contiguous(), s, grad_logits, tau,
                                  temperature_grad ? &grad_tau : nullptr, logit_space);
  return {grad_logits, grad_tau};
}

template <typename Backend>
at::Tensor binary_log_prob_op(const at::Tensor& value, const at::Tensor& logits,
                              const at::Tensor& temperature, bool logit_space) {
  check_floating(logits, "logits");
  check_same(value, logits, "value", "logits");
  check_same_shape(value, logits, "value", "logits");
  const Temperature tau = prepare_temperature(temperature, logits.sizes(), logits.device(),
                                              acc_type(logits.scalar_type()));
  const at::Tensor a = logits.contiguous();
  at::Tensor out = at::empty_like(a, at::MemoryFormat::Contiguous);
  if (a.numel() == 0) return out;
  Backend::binary_log_prob(value.contiguous(), a, out, tau, logit_space);
  return out;
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> binary_log_prob_backward_op(
    const at::Tensor& grad, const at::Tensor& value, const at::Tensor& logits,
    const at::Tensor& temperature, std::array<bool, 3> mask, bool logit_space) {
  check_same(value, logits, "value", "logits");
  check_same_shape(value, logits, "value", "logits");
  check_same_shape(grad, logits, "grad", "logits");
  const at::ScalarType acc = acc_type(logits.scalar_type());
  const Temperature tau = prepare_temperature(temperature, logits.sizes(), logits.device(), acc);
  const at::Tensor a = logits.contiguous();
  at::Tensor gv = at::empty_like(a, at::MemoryFormat::Contiguous);
  at::Tensor ga = at::empty_like(a, at::MemoryFormat::Contiguous);
  at::Tensor gt = at::empty(a.sizes(), a.options().dtype(acc));
  if (a.numel() > 0) {
    Backend::binary_log_prob_backward(grad.to(acc).contiguous(), value.contiguous(), a,
                                      mask[0] ? &gv : nullptr, mask[1] ? &ga : nullptr,
                                      mask[2] ? &gt : nullptr, tau, logit_space);
  }
  // Gradients not asked for are empty tensors, each its own: outputs of an op must not alias.
  auto none = [&](at::ScalarType t) { return at::empty({0}, a.options().dtype(t)); };
  const at::ScalarType st = a.scalar_type();
  return {mask[0] ? gv : none(st), mask[1] ? ga : none(st), mask[2] ? gt : none(acc)};
}

// ---- noise ---------------------------------------------------------------------------------------
inline int64_t noise_kind(c10::string_view kind) {
  if (kind == "bits") return 0;
  if (kind == "uniform") return 1;
  if (kind == "exponential") return 2;
  if (kind == "gumbel") return 3;
  if (kind == "logistic") return 4;
  TORCH_CHECK_VALUE(false, "noise kind must be one of 'bits', 'uniform', 'exponential', 'gumbel', "
                    "'logistic', got '", std::string(kind), "'");
}

// Noise shaped like `self` (its values are not read): int64 draws for "bits", else self's dtype.
template <typename Backend>
at::Tensor noise_op(const at::Tensor& self, c10::string_view kind, const RngArgs& rng) {
  const int64_t k = noise_kind(kind);
  if (k != 0) check_floating(self, "self");
  at::Tensor out = at::empty(self.sizes(), self.options().dtype(k == 0 ? at::kLong
                                                                        : self.scalar_type()));
  Backend::noise(out, k, rng);
  return out;
}

}  // namespace concrete_ext
