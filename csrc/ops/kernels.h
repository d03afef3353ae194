// The per-device kernel sets the host templates (exp_concrete.h, binary_concrete.h, noise.h) call.
// Every tensor argument is contiguous; row ops see (rows, n), binary ops see flat tensors.
#pragma once

#include <ATen/ATen.h>

#include "concrete_ext/host.h"
#include "rng_args.h"

namespace concrete_ext {

#define CE_DECLARE_KERNELS                                                                      \
  /* categorical (rows, n) */                                                                   \
  static void sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,         \
                     const RngArgs& rng, bool log_space);                                       \
  static void sample_backward(const at::Tensor& grad, const at::Tensor& sample,                 \
                              at::Tensor& grad_logits, const Temperature& tau,                  \
                              at::Tensor* grad_tau, bool log_space);                            \
  /* one-hot of argmax(logits + g); writes [seed, offset] to rng_state when it is defined */    \
  static void gumbel_max(const at::Tensor& logits, at::Tensor& out, const RngArgs& rng,         \
                         const at::Tensor& rng_state);                                          \
  static void gumbel_softmax_hard_backward(const at::Tensor& grad, const at::Tensor& logits,    \
                                           at::Tensor& grad_logits, const Temperature& tau,     \
                                           const at::Tensor& rng_state, at::Tensor* grad_tau);  \
  static void log_prob(const at::Tensor& value, const at::Tensor& logits, at::Tensor out,       \
                       const Temperature& tau, bool log_space);                                 \
  static void log_prob_backward(const at::Tensor& grad, const at::Tensor& value,                \
                                const at::Tensor& logits, at::Tensor* grad_value,               \
                                at::Tensor* grad_logits, at::Tensor* grad_tau,                  \
                                const Temperature& tau, bool log_space);                        \
  static void relaxed_kl(const at::Tensor& q_logits, const at::Tensor& p_logits, at::Tensor& y, \
                         at::Tensor log_q, at::Tensor log_p, const Temperature& tq,             \
                         const Temperature& tp, const RngArgs& rng);                            \
  static void relaxed_kl_backward(const at::Tensor& grad_y, const at::Tensor& grad_log_q,       \
                                  const at::Tensor& grad_log_p, const at::Tensor& y,            \
                                  const at::Tensor& q_logits, const at::Tensor& p_logits,       \
                                  at::Tensor* grad_q_logits, at::Tensor* grad_q_tau,            \
                                  at::Tensor* grad_p_logits, at::Tensor* grad_p_tau,            \
                                  const Temperature& tq, const Temperature& tp);                \
  /* binary, elementwise over flat tensors */                                                   \
  static void binary_sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,  \
                            const RngArgs& rng, bool logit_space);                              \
  static void binary_sample_backward(const at::Tensor& grad, const at::Tensor& sample,          \
                                     at::Tensor& grad_logits, const Temperature& tau,           \
                                     at::Tensor* grad_tau, bool logit_space);                   \
  static void binary_log_prob(const at::Tensor& value, const at::Tensor& logits,                \
                              at::Tensor& out, const Temperature& tau, bool logit_space);       \
  static void binary_log_prob_backward(const at::Tensor& grad, const at::Tensor& value,         \
                                       const at::Tensor& logits, at::Tensor* grad_value,        \
                                       at::Tensor* grad_logits, at::Tensor* grad_tau,           \
                                       const Temperature& tau, bool logit_space);               \
  /* noise: kind 0 bits (int64), 1 uniform, 2 exponential, 3 Gumbel, 4 logistic */             \
  static void noise(at::Tensor& out, int64_t kind, const RngArgs& rng);

namespace cpu {
struct Kernels {
  CE_DECLARE_KERNELS
};
}  // namespace cpu

namespace cuda {
struct Kernels {
  CE_DECLARE_KERNELS
};
}  // namespace cuda

}  // namespace concrete_ext
