// Host side of the binary ops (Binary Concrete sample in both forms, their log-densities and
// backward) and of the noise op: checks, broadcasting of the temperature, flat contiguous views,
// then the device's kernel.
#include "host/device.h"
#include "host/ops.h"

namespace concrete_ext {

at::Tensor binary_sample_op(const at::Tensor& logits, const at::Tensor& temperature,
                            const RngArgs& rng, bool logit_space) {
  check_floating(logits, "logits");
  const Temperature tau = prepare_temperature(temperature, logits.sizes(), logits.device(),
                                              acc_type(logits.scalar_type()));
  const Rows a = to_elems(logits, /*periodic=*/true);
  at::Tensor out = at::empty(logits.sizes(), logits.options());
  if (a.rows == 0) return out;
  BinarySampleArgs args{cptr(a.data),
                        mptr(out),
                        a.rows,
                        tau.arg(),
                        {},
                        logit_space,
                        dtype_of(logits, "binary_concrete_sample")};
  args.logits_period = a.period_arg();
  launch(args, logits, &rng, CE_KERNEL(binary_sample));
  return out;
}

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
  const Rows g = to_elems(grad, /*periodic=*/true);
  BinarySampleBackwardArgs args{
      cptr(g.data), cptr(s),   mptr(grad_logits), temperature_grad ? mptr(grad_tau) : nullptr,
      s.numel(),    tau.arg(), logit_space,       dtype_of(s, "binary_concrete_sample_backward")};
  args.grad_period = g.period_arg();
  launch(args, s, nullptr, CE_KERNEL(binary_sample_backward));
  return {grad_logits, grad_tau};
}

at::Tensor binary_log_prob_op(const at::Tensor& value, const at::Tensor& logits,
                              const at::Tensor& temperature, bool logit_space) {
  check_floating(logits, "logits");
  check_same(value, logits, "value", "logits");
  check_same_shape(value, logits, "value", "logits");
  const Temperature tau = prepare_temperature(temperature, logits.sizes(), logits.device(),
                                              acc_type(logits.scalar_type()));
  const Rows a = to_elems(logits, /*periodic=*/true);
  at::Tensor out = at::empty(logits.sizes(), logits.options());
  if (a.rows == 0) return out;
  const Rows v = to_elems(value, /*periodic=*/true);
  BinaryLogProbArgs args{cptr(v.data),
                         cptr(a.data),
                         mptr(out),
                         a.rows,
                         tau.arg(),
                         logit_space,
                         dtype_of(logits, "binary_concrete_log_prob")};
  args.value_period = v.period_arg();
  args.logits_period = a.period_arg();
  launch(args, logits, nullptr, CE_KERNEL(binary_log_prob));
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> binary_log_prob_backward_op(
    const at::Tensor& grad, const at::Tensor& value, const at::Tensor& logits,
    const at::Tensor& temperature, std::array<bool, 3> mask, bool logit_space) {
  check_same(value, logits, "value", "logits");
  check_same_shape(value, logits, "value", "logits");
  check_same_shape(grad, logits, "grad", "logits");
  const at::ScalarType acc = acc_type(logits.scalar_type());
  const Temperature tau = prepare_temperature(temperature, logits.sizes(), logits.device(), acc);
  const Rows a = to_elems(logits, /*periodic=*/true);
  at::Tensor gv = at::empty(logits.sizes(), logits.options());
  at::Tensor ga = at::empty(logits.sizes(), logits.options());
  at::Tensor gt = at::empty(logits.sizes(), logits.options().dtype(acc));
  if (a.rows > 0) {
    const at::Tensor g = grad.to(acc).contiguous();
    const Rows v = to_elems(value, /*periodic=*/true);
    BinaryLogProbBackwardArgs args{cptr(g),
                                   cptr(v.data),
                                   cptr(a.data),
                                   mask[0] ? mptr(gv) : nullptr,
                                   mask[1] ? mptr(ga) : nullptr,
                                   mask[2] ? mptr(gt) : nullptr,
                                   a.rows,
                                   tau.arg(),
                                   logit_space,
                                   dtype_of(logits, "binary_concrete_log_prob_backward")};
    args.value_period = v.period_arg();
    args.logits_period = a.period_arg();
    launch(args, logits, nullptr, CE_KERNEL(binary_log_prob_backward));
  }
  // Gradients not asked for are empty tensors, each its own: outputs of an op must not alias.
  auto none = [&](at::ScalarType t) { return at::empty({0}, logits.options().dtype(t)); };
  const at::ScalarType st = logits.scalar_type();
  return {mask[0] ? gv : none(st), mask[1] ? ga : none(st), mask[2] ? gt : none(acc)};
}

// ---- noise
// ---------------------------------------------------------------------------------------
namespace {
NoiseKind noise_kind(c10::string_view kind) {
  if (kind == "bits") return NoiseKind::kBits;
  if (kind == "uniform") return NoiseKind::kUniform;
  if (kind == "exponential") return NoiseKind::kExponential;
  if (kind == "gumbel") return NoiseKind::kGumbel;
  if (kind == "logistic") return NoiseKind::kLogistic;
  TORCH_CHECK_VALUE(false,
                    "noise kind must be one of 'bits', 'uniform', 'exponential', 'gumbel', "
                    "'logistic', got '",
                    std::string(kind), "'");
}
}  // namespace

at::Tensor noise_op(const at::Tensor& self, c10::string_view kind, const RngArgs& rng) {
  const NoiseKind k = noise_kind(kind);
  if (k != NoiseKind::kBits) check_floating(self, "self");
  at::Tensor out = at::empty(
      self.sizes(), self.options().dtype(k == NoiseKind::kBits ? at::kLong : self.scalar_type()));
  NoiseArgs a{mptr(out),
              out.numel(),
              k,
              {},
              k == NoiseKind::kBits ? DType::kFloat32 : dtype_of(out, "noise")};
  launch(a, out, &rng, CE_KERNEL(noise));
  return out;
}

}  // namespace concrete_ext
