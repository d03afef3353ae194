// Host side of the categorical ops (Concrete / ExpConcrete sample and log-density, the
// straight-through Gumbel-softmax, Gumbel-max and the relaxed-KL pass): argument checks, the
// (rows, n) view, temperature and outputs, shared by the CPU and CUDA registrations. `Backend` is
// cpu::Kernels or cuda::Kernels (kernels.h); each takes (rows, n) contiguous tensors.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "concrete_ext/checks.h"
#include "concrete_ext/host.h"
#include "kernels.h"
#include "rng_args.h"

namespace concrete_ext {

inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// ---- sampling ----------------------------------------------------------------------------------
template <typename Backend>
at::Tensor sample_op(const at::Tensor& logits, const at::Tensor& temperature, int64_t dim,
                     const RngArgs& rng, bool log_space) {
  check_floating(logits, "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  auto [out, out2d] = empty_rows_like(logits, d, logits.scalar_type());
  const Temperature tau = prepare_temperature(temperature, batch_shape(logits, d),
                                              logits.device(), acc_type(logits.scalar_type()));
  const Rows x = to_rows(logits, d);
  if (x.rows == 0) return out;
  Backend::sample(x.data, out2d, tau, rng, log_space);
  return out;
}

// Returns (d logits, d temperature per row or an empty tensor).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor> sample_backward_op(const at::Tensor& grad,
                                                      const at::Tensor& sample,
                                                      const at::Tensor& temperature, int64_t dim,
                                                      bool temperature_grad, bool log_space) {
  const int64_t d = category_dim(sample, dim, "sample");
  check_same(grad, sample, "grad", "sample");
  check_same_shape(grad, sample, "grad", "sample");
  auto [grad_logits, gl2d] = empty_rows_like(sample, d, sample.scalar_type());
  const auto bshape = batch_shape(sample, d);
  const at::ScalarType acc = acc_type(sample.scalar_type());
  at::Tensor grad_tau = temperature_grad ? at::empty(bshape, sample.options().dtype(acc))
                                         : at::empty({0}, sample.options().dtype(acc));
  const Temperature tau = prepare_temperature(temperature, bshape, sample.device(), acc);
  const Rows s = to_rows(sample, d);
  if (s.rows == 0) return {grad_logits, grad_tau.zero_()};
  const Rows g = to_rows(grad, d);
  Backend::sample_backward(g.data, s.data, gl2d, tau, temperature_grad ? &grad_tau : nullptr,
                           log_space);
  return {grad_logits, grad_tau};
}

// ---- straight-through Gumbel-softmax and Gumbel-max ---------------------------------------------
// Forward: the one-hot of argmax_k (logits_k + g_k) and the rng_state [seed, offset] the backward
// needs to recompute the soft sample.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor> gumbel_softmax_hard_op(const at::Tensor& logits,
                                                          const at::Tensor& temperature,
                                                          int64_t dim, const RngArgs& rng) {
  check_floating(logits, "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  // Validated here although the forward value does not depend on it, so that a bad temperature
  // fails at the call, not in backward.
  prepare_temperature(temperature, batch_shape(logits, d), logits.device(),
                      acc_type(logits.scalar_type()));
  auto [out, out2d] = empty_rows_like(logits, d, logits.scalar_type());
  at::Tensor state = at::empty({2}, logits.options().dtype(at::kLong));
  const Rows x = to_rows(logits, d);
  Backend::gumbel_max(x.data, out2d, rng, state);
  return {out, state};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> gumbel_softmax_hard_backward_op(
    const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& temperature,
    const at::Tensor& rng_state, int64_t dim, bool temperature_grad) {
  const int64_t d = category_dim(logits, dim, "logits");
  check_same(grad, logits, "grad", "logits");
  check_same_shape(grad, logits, "grad", "logits");
  TORCH_CHECK_VALUE(rng_state.numel() == 2 && rng_state.scalar_type() == at::kLong &&
                        rng_state.device() == logits.device(),
                    "rng_state must be the int64 [seed, offset] tensor the forward returned");
  auto [grad_logits, gl2d] = empty_rows_like(logits, d, logits.scalar_type());
  const auto bshape = batch_shape(logits, d);
  const at::ScalarType acc = acc_type(logits.scalar_type());
  at::Tensor grad_tau = temperature_grad ? at::empty(bshape, logits.options().dtype(acc))
                                         : at::empty({0}, logits.options().dtype(acc));
  const Temperature tau = prepare_temperature(temperature, bshape, logits.device(), acc);
  const Rows x = to_rows(logits, d);
  if (x.rows == 0) return {grad_logits, grad_tau.zero_()};
  const Rows g = to_rows(grad, d);
  Backend::gumbel_softmax_hard_backward(g.data, x.data, gl2d, tau, rng_state,
                                        temperature_grad ? &grad_tau : nullptr);
  return {grad_logits, grad_tau};
}

template <typename Backend>
at::Tensor gumbel_max_op(const at::Tensor& logits, int64_t dim, const RngArgs& rng) {
  check_floating(logits, "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  auto [out, out2d] = empty_rows_like(logits, d, logits.scalar_type());
  const Rows x = to_rows(logits, d);
  Backend::gumbel_max(x.data, out2d, rng, at::Tensor());
  return out;
}

// ---- log-densities -----------------------------------------------------------------------------
// value and logits have one shape (the Python layer broadcasts them); the result has the batch shape.
template <typename Backend>
at::Tensor log_prob_op(const at::Tensor& value, const at::Tensor& logits,
                       const at::Tensor& temperature, int64_t dim, bool log_space) {
  check_floating(logits, "logits");
  check_same(value, logits, "value", "logits");
  check_same_shape(value, logits, "value", "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  const auto bshape = batch_shape(logits, d);
  const Temperature tau =
      prepare_temperature(temperature, bshape, logits.device(), acc_type(logits.scalar_type()));
  at::Tensor out = at::empty(bshape, logits.options());
  const Rows a = to_rows(logits, d);
  if (a.rows == 0) return out;
  const Rows v = to_rows(value, d);
  Backend::log_prob(v.data, a.data, out.view({-1}), tau, log_space);
  return out;
}

// Returns (d value, d logits, d temperature per row); entries not asked for by output_mask are
// empty tensors.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> log_prob_backward_op(
    const at::Tensor& grad, const at::Tensor& value, const at::Tensor& logits,
    const at::Tensor& temperature, int64_t dim, std::array<bool, 3> mask, bool log_space) {
  check_same(value, logits, "value", "logits");
  check_same_shape(value, logits, "value", "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  const auto bshape = batch_shape(logits, d);
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(bshape), "grad has shape ", grad.sizes(),
                    " but the log-density has shape ", bshape);
  const at::ScalarType acc = acc_type(logits.scalar_type());
  const Temperature tau = prepare_temperature(temperature, bshape, logits.device(), acc);
  auto [gv, gv2d] = empty_rows_like(logits, d, logits.scalar_type());
  auto [ga, ga2d] = empty_rows_like(logits, d, logits.scalar_type());
  at::Tensor gt = at::empty(bshape, logits.options().dtype(acc));
  const Rows a = to_rows(logits, d);
  if (a.rows > 0) {
    const Rows v = to_rows(value, d);
    const at::Tensor g = grad.to(acc).contiguous().view({-1});
    Backend::log_prob_backward(g, v.data, a.data, mask[0] ? &gv2d : nullptr,
                               mask[1] ? &ga2d : nullptr, mask[2] ? &gt : nullptr, tau,
                               log_space);
  }
  // Gradients not asked for are empty tensors, each its own: outputs of an op must not alias.
  auto none = [&](at::ScalarType t) { return at::empty({0}, logits.options().dtype(t)); };
  const at::ScalarType st = logits.scalar_type();
  return {mask[0] ? gv : none(st), mask[1] ? ga : none(st), mask[2] ? gt : none(acc)};
}

// ---- relaxed KL: y ~ ExpConcrete(q), log kappa_q(y), log kappa_p(y) in one pass ------------------
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> relaxed_kl_op(
    const at::Tensor& q_logits, const at::Tensor& q_temperature, const at::Tensor& p_logits,
    const at::Tensor& p_temperature, int64_t dim, const RngArgs& rng) {
  check_floating(q_logits, "q_logits");
  check_same(p_logits, q_logits, "p_logits", "q_logits");
  check_same_shape(p_logits, q_logits, "p_logits", "q_logits");
  const int64_t d = category_dim(q_logits, dim, "q_logits");
  const auto bshape = batch_shape(q_logits, d);
  const at::ScalarType acc = acc_type(q_logits.scalar_type());
  const Temperature tq = prepare_temperature(q_temperature, bshape, q_logits.device(), acc);
  const Temperature tp = prepare_temperature(p_temperature, bshape, q_logits.device(), acc);
  auto [y, y2d] = empty_rows_like(q_logits, d, q_logits.scalar_type());
  at::Tensor log_q = at::empty(bshape, q_logits.options());
  at::Tensor log_p = at::empty(bshape, q_logits.options());
  const Rows aq = to_rows(q_logits, d);
  if (aq.rows == 0) return {y, log_q, log_p};
  const Rows ap = to_rows(p_logits, d);
  Backend::relaxed_kl(aq.data, ap.data, y2d, log_q.view({-1}), log_p.view({-1}), tq, tp, rng);
  return {y, log_q, log_p};
}

// Returns (d q_logits, d q_temperature per row, d p_logits, d p_temperature per row).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> relaxed_kl_backward_op(
    const std::optional<at::Tensor>& grad_sample, const std::optional<at::Tensor>& grad_log_q,
    const std::optional<at::Tensor>& grad_log_p, const at::Tensor& sample,
    const at::Tensor& q_logits, const at::Tensor& q_temperature, const at::Tensor& p_logits,
    const at::Tensor& p_temperature, int64_t dim, std::array<bool, 4> mask) {
  check_same(sample, q_logits, "sample", "q_logits");
  check_same(p_logits, q_logits, "p_logits", "q_logits");
  check_same_shape(sample, q_logits, "sample", "q_logits");
  check_same_shape(p_logits, q_logits, "p_logits", "q_logits");
  const int64_t d = category_dim(q_logits, dim, "q_logits");
  const auto bshape = batch_shape(q_logits, d);
  const at::ScalarType acc = acc_type(q_logits.scalar_type());
  const Temperature tq = prepare_temperature(q_temperature, bshape, q_logits.device(), acc);
  const Temperature tp = prepare_temperature(p_temperature, bshape, q_logits.device(), acc);
  auto [gaq, gaq2d] = empty_rows_like(q_logits, d, q_logits.scalar_type());
  auto [gap, gap2d] = empty_rows_like(q_logits, d, q_logits.scalar_type());
  at::Tensor gtq = at::empty(bshape, q_logits.options().dtype(acc));
  at::Tensor gtp = at::empty(bshape, q_logits.options().dtype(acc));
  const Rows y = to_rows(sample, d);
  if (y.rows > 0) {
    at::Tensor gy;
    if (grad_sample.has_value() && grad_sample->defined()) {
      check_same(*grad_sample, sample, "grad_sample", "sample");
      check_same_shape(*grad_sample, sample, "grad_sample", "sample");
      gy = to_rows(*grad_sample, d).data;
    }
    auto per_row = [&](const std::optional<at::Tensor>& g, const char* name) {
      if (!g.has_value() || !g->defined()) return at::Tensor();
      TORCH_CHECK_VALUE(g->sizes() == at::IntArrayRef(bshape), name, " has shape ", g->sizes(),
                        " but the log-density has shape ", bshape);
      return g->to(acc).contiguous().view({-1});
    };
    Backend::relaxed_kl_backward(gy, per_row(grad_log_q, "grad_log_q"),
                                 per_row(grad_log_p, "grad_log_p"), y.data,
                                 to_rows(q_logits, d).data, to_rows(p_logits, d).data,
                                 mask[0] ? &gaq2d : nullptr, mask[1] ? &gtq : nullptr,
                                 mask[2] ? &gap2d : nullptr, mask[3] ? &gtp : nullptr, tq, tp);
  }
  // Gradients not asked for are empty tensors, each its own: outputs of an op must not alias.
  auto none = [&](at::ScalarType t) { return at::empty({0}, q_logits.options().dtype(t)); };
  const at::ScalarType st = q_logits.scalar_type();
  return {mask[0] ? gaq : none(st), mask[1] ? gtq : none(acc), mask[2] ? gap : none(st),
          mask[3] ? gtp : none(acc)};
}

}  // namespace concrete_ext
