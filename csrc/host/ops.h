// The host side of every op, for both devices: argument checks, the (rows, n) views, the
// temperature, the outputs, then the device's kernel (host/device.h). register.cpp registers these
// functions for the CPU and CUDA dispatch keys under the schemas defined in concrete_ext/_ops.py.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "host/tensors.h"

namespace concrete_ext {

// ---- categorical (categorical.cpp)
// ---------------------------------------------------------------
at::Tensor sample_op(const at::Tensor& logits, const at::Tensor& temperature, int64_t dim,
                     const RngArgs& rng, bool log_space);
// (d logits, d temperature per row or an empty tensor)
std::tuple<at::Tensor, at::Tensor> sample_backward_op(const at::Tensor& grad,
                                                      const at::Tensor& sample,
                                                      const at::Tensor& temperature, int64_t dim,
                                                      bool temperature_grad, bool log_space);
// (one-hot of argmax_k (logits_k + g_k), rng_state [seed, offset] for the backward)
std::tuple<at::Tensor, at::Tensor> gumbel_softmax_hard_op(const at::Tensor& logits,
                                                          const at::Tensor& temperature,
                                                          int64_t dim, const RngArgs& rng);
std::tuple<at::Tensor, at::Tensor> gumbel_softmax_hard_backward_op(
    const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& temperature,
    const at::Tensor& rng_state, int64_t dim, bool temperature_grad);
at::Tensor gumbel_max_op(const at::Tensor& logits, int64_t dim, const RngArgs& rng);
at::Tensor log_prob_op(const at::Tensor& value, const at::Tensor& logits,
                       const at::Tensor& temperature, int64_t dim, bool log_space);
// (d value, d logits, d temperature per row); gradients not asked for are empty tensors
std::tuple<at::Tensor, at::Tensor, at::Tensor> log_prob_backward_op(
    const at::Tensor& grad, const at::Tensor& value, const at::Tensor& logits,
    const at::Tensor& temperature, int64_t dim, std::array<bool, 3> mask, bool log_space);
// (y ~ ExpConcrete(q), log kappa_q(y), log kappa_p(y))
std::tuple<at::Tensor, at::Tensor, at::Tensor> relaxed_kl_op(const at::Tensor& q_logits,
                                                             const at::Tensor& q_temperature,
                                                             const at::Tensor& p_logits,
                                                             const at::Tensor& p_temperature,
                                                             int64_t dim, const RngArgs& rng);
// (d q_logits, d q_temperature per row, d p_logits, d p_temperature per row)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> relaxed_kl_backward_op(
    const std::optional<at::Tensor>& grad_sample, const std::optional<at::Tensor>& grad_log_q,
    const std::optional<at::Tensor>& grad_log_p, const at::Tensor& sample,
    const at::Tensor& q_logits, const at::Tensor& q_temperature, const at::Tensor& p_logits,
    const at::Tensor& p_temperature, int64_t dim, std::array<bool, 4> mask);

// ---- binary and noise (binary.cpp)
// -----------------------------------------------------------------
at::Tensor binary_sample_op(const at::Tensor& logits, const at::Tensor& temperature,
                            const RngArgs& rng, bool logit_space);
std::tuple<at::Tensor, at::Tensor> binary_sample_backward_op(const at::Tensor& grad,
                                                             const at::Tensor& sample,
                                                             const at::Tensor& temperature,
                                                             bool temperature_grad,
                                                             bool logit_space);
at::Tensor binary_log_prob_op(const at::Tensor& value, const at::Tensor& logits,
                              const at::Tensor& temperature, bool logit_space);
std::tuple<at::Tensor, at::Tensor, at::Tensor> binary_log_prob_backward_op(
    const at::Tensor& grad, const at::Tensor& value, const at::Tensor& logits,
    const at::Tensor& temperature, std::array<bool, 3> mask, bool logit_space);
// Noise shaped like `self` (its values are not read): int64 draws for "bits", else self's dtype.
at::Tensor noise_op(const at::Tensor& self, c10::string_view kind, const RngArgs& rng);

// ---- index samplers (index.cpp)
// ------------------------------------------------------------------
at::Tensor categorical_sample_op(const at::Tensor& logits, const at::Tensor& temperature,
                                 int64_t dim, const RngArgs& rng);
at::Tensor gumbel_top_k_op(const at::Tensor& logits, int64_t k, int64_t dim, const RngArgs& rng);

}  // namespace concrete_ext
