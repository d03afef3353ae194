// Host side of the categorical ops (Concrete / ExpConcrete sample and log-density, the
// straight-through Gumbel-softmax, Gumbel-max and the relaxed-KL pass): checks, the (rows, n)
// views, temperature and outputs, then the device's kernel.
#include "host/device.h"
#include "host/ops.h"

namespace concrete_ext {
namespace {

const void* rows_ptr(const Rows& r) { return r.data.const_data_ptr(); }

// Gradients not asked for are empty tensors, each its own: outputs of an op must not alias.
at::Tensor none_like(const at::Tensor& t, at::ScalarType dtype) {
  return at::empty({0}, t.options().dtype(dtype));
}

}  // namespace

// ---- sampling ----------------------------------------------------------------------------------
at::Tensor sample_op(const at::Tensor& logits, const at::Tensor& temperature, int64_t dim,
                     const RngArgs& rng, bool log_space) {
  check_floating(logits, "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  auto [out, out2d] = empty_rows_like(logits, d, logits.scalar_type());
  const Temperature tau = prepare_temperature(temperature, batch_shape(logits, d), logits.device(),
                                              acc_type(logits.scalar_type()));
  const Rows x = to_rows(logits, d, /*periodic=*/true);
  if (x.rows == 0) return out;
  SampleArgs a{rows_ptr(x), mptr(out2d), x.rows,    logits.size(d),
               tau.arg(),   {},          log_space, dtype_of(logits, "concrete_sample")};
  a.logits_period = x.period_arg();
  launch(a, logits, &rng, CE_KERNEL(concrete_sample));
  return out;
}

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
  const Rows g = to_rows(grad, d, /*periodic=*/true);
  SampleBackwardArgs a{
      rows_ptr(g),    rows_ptr(s), mptr(gl2d), temperature_grad ? mptr(grad_tau) : nullptr, s.rows,
      sample.size(d), tau.arg(),   log_space,  dtype_of(sample, "concrete_sample_backward")};
  a.grad_period = g.period_arg();
  launch(a, sample, nullptr, CE_KERNEL(concrete_sample_backward));
  return {grad_logits, grad_tau};
}

// ---- straight-through Gumbel-softmax and Gumbel-max ---------------------------------------------
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
  const Rows x = to_rows(logits, d, /*periodic=*/true);
  GumbelMaxArgs a{rows_ptr(x),
                  mptr(out2d),
                  x.rows,
                  logits.size(d),
                  {},
                  logits.is_cuda() ? state.mutable_data_ptr<int64_t>() : nullptr,
                  dtype_of(logits, "gumbel_max")};
  a.logits_period = x.period_arg();
  launch(a, logits, &rng, CE_KERNEL(gumbel_max));
  if (!logits.is_cuda()) {  // the CUDA kernel writes the state on the device
    int64_t* p = state.mutable_data_ptr<int64_t>();
    p[0] = static_cast<int64_t>(a.so.seed);
    p[1] = static_cast<int64_t>(a.so.offset);
  }
  return {out, state};
}

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
  const Rows x = to_rows(logits, d, /*periodic=*/true);
  if (x.rows == 0) return {grad_logits, grad_tau.zero_()};
  const Rows g = to_rows(grad, d, /*periodic=*/true);
  // CPU: the [seed, offset] read on the host; CUDA: read by the kernel from device memory.
  const at::Tensor state = rng_state.contiguous();
  HardBackwardArgs a{rows_ptr(g), rows_ptr(x),
                     mptr(gl2d),  temperature_grad ? mptr(grad_tau) : nullptr,
                     x.rows,      logits.size(d),
                     tau.arg(),   {},
                     nullptr,     dtype_of(logits, "gumbel_softmax_hard_backward")};
  a.grad_period = g.period_arg();
  a.logits_period = x.period_arg();
  if (logits.is_cuda()) {
    a.rng_state = state.const_data_ptr<int64_t>();
  } else {
    a.so = read_rng_state(rng_state);
  }
  launch(a, logits, nullptr, CE_KERNEL(gumbel_softmax_hard_backward));
  return {grad_logits, grad_tau};
}

at::Tensor gumbel_max_op(const at::Tensor& logits, int64_t dim, const RngArgs& rng) {
  check_floating(logits, "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  auto [out, out2d] = empty_rows_like(logits, d, logits.scalar_type());
  const Rows x = to_rows(logits, d, /*periodic=*/true);
  GumbelMaxArgs a{rows_ptr(x),
                  mptr(out2d),
                  x.rows,
                  logits.size(d),
                  {},
                  nullptr,
                  dtype_of(logits, "gumbel_max")};
  a.logits_period = x.period_arg();
  launch(a, logits, &rng, CE_KERNEL(gumbel_max));
  return out;
}

// ---- log-densities -----------------------------------------------------------------------------
// value and logits have one shape (the Python layer broadcasts them); the result has the batch
// shape.
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
  const Rows a = to_rows(logits, d, /*periodic=*/true);
  if (a.rows == 0) return out;
  const Rows v = to_rows(value, d, /*periodic=*/true);
  LogProbArgs args{rows_ptr(v),    rows_ptr(a), mptr(out), a.rows,
                   logits.size(d), tau.arg(),   log_space, dtype_of(logits, "concrete_log_prob")};
  args.value_period = v.period_arg();
  args.logits_period = a.period_arg();
  launch(args, logits, nullptr, CE_KERNEL(concrete_log_prob));
  return out;
}

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
  const Rows a = to_rows(logits, d, /*periodic=*/true);
  if (a.rows > 0) {
    const Rows v = to_rows(value, d, /*periodic=*/true);
    const at::Tensor g = grad.to(acc).contiguous().view({-1});
    LogProbBackwardArgs args{cptr(g),
                             rows_ptr(v),
                             rows_ptr(a),
                             mask[0] ? mptr(gv2d) : nullptr,
                             mask[1] ? mptr(ga2d) : nullptr,
                             mask[2] ? mptr(gt) : nullptr,
                             a.rows,
                             logits.size(d),
                             tau.arg(),
                             log_space,
                             dtype_of(logits, "concrete_log_prob_backward")};
    args.value_period = v.period_arg();
    args.logits_period = a.period_arg();
    launch(args, logits, nullptr, CE_KERNEL(concrete_log_prob_backward));
  }
  const at::ScalarType st = logits.scalar_type();
  return {mask[0] ? gv : none_like(logits, st), mask[1] ? ga : none_like(logits, st),
          mask[2] ? gt : none_like(logits, acc)};
}

// ---- relaxed KL: y ~ ExpConcrete(q), log kappa_q(y), log kappa_p(y) in one pass
// ------------------
std::tuple<at::Tensor, at::Tensor, at::Tensor> relaxed_kl_op(const at::Tensor& q_logits,
                                                             const at::Tensor& q_temperature,
                                                             const at::Tensor& p_logits,
                                                             const at::Tensor& p_temperature,
                                                             int64_t dim, const RngArgs& rng) {
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
  const Rows aq = to_rows(q_logits, d, /*periodic=*/true);
  if (aq.rows == 0) return {y, log_q, log_p};
  const Rows ap = to_rows(p_logits, d, /*periodic=*/true);
  RelaxedKlArgs a{rows_ptr(aq),
                  rows_ptr(ap),
                  mptr(y2d),
                  mptr(log_q),
                  mptr(log_p),
                  aq.rows,
                  q_logits.size(d),
                  tq.arg(),
                  tp.arg(),
                  {},
                  dtype_of(q_logits, "relaxed_kl_sample")};
  a.q_period = aq.period_arg();
  a.p_period = ap.period_arg();
  launch(a, q_logits, &rng, CE_KERNEL(relaxed_kl));
  return {y, log_q, log_p};
}

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
    Rows gy{at::Tensor(), y.rows, y.rows};
    if (grad_sample.has_value() && grad_sample->defined()) {
      check_same(*grad_sample, sample, "grad_sample", "sample");
      check_same_shape(*grad_sample, sample, "grad_sample", "sample");
      gy = to_rows(*grad_sample, d, /*periodic=*/true);
    }
    auto per_row = [&](const std::optional<at::Tensor>& g, const char* name) {
      if (!g.has_value() || !g->defined()) return at::Tensor();
      TORCH_CHECK_VALUE(g->sizes() == at::IntArrayRef(bshape), name, " has shape ", g->sizes(),
                        " but the log-density has shape ", bshape);
      return g->to(acc).contiguous().view({-1});
    };
    const at::Tensor glq = per_row(grad_log_q, "grad_log_q");
    const at::Tensor glp = per_row(grad_log_p, "grad_log_p");
    const Rows aq = to_rows(q_logits, d, /*periodic=*/true);
    const Rows ap = to_rows(p_logits, d, /*periodic=*/true);
    RelaxedKlBackwardArgs a{cptr(gy.data),
                            cptr(glq),
                            cptr(glp),
                            rows_ptr(y),
                            cptr(aq.data),
                            cptr(ap.data),
                            mask[0] ? mptr(gaq2d) : nullptr,
                            mask[1] ? mptr(gtq) : nullptr,
                            mask[2] ? mptr(gap2d) : nullptr,
                            mask[3] ? mptr(gtp) : nullptr,
                            y.rows,
                            q_logits.size(d),
                            tq.arg(),
                            tp.arg(),
                            dtype_of(q_logits, "relaxed_kl_sample_backward")};
    a.grad_y_period = gy.period_arg();
    a.q_period = aq.period_arg();
    a.p_period = ap.period_arg();
    launch(a, q_logits, nullptr, CE_KERNEL(relaxed_kl_backward));
  }
  const at::ScalarType st = q_logits.scalar_type();
  return {mask[0] ? gaq : none_like(q_logits, st), mask[1] ? gtq : none_like(q_logits, acc),
          mask[2] ? gap : none_like(q_logits, st), mask[3] ? gtp : none_like(q_logits, acc)};
}

}  // namespace concrete_ext
