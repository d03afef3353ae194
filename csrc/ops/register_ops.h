// Registers every op's kernel for one dispatch key: CE_REGISTER_OPS(CPU, cpu::Kernels) in
// register_cpu.cpp and CE_REGISTER_OPS(CUDA, cuda::Kernels) in register_cuda.cu. The schemas are
// defined once, in Python (concrete_ext/_ops.py), so the ops exist even where _C is not built.
#pragma once

#include <torch/library.h>

#include "binary_concrete.h"
#include "exp_concrete.h"

#define CE_RNG_PARAMS \
  std::optional<int64_t> seed, int64_t offset, std::optional<at::Generator> generator
#define CE_RNG RngArgs{seed, offset, generator}

#define CE_REGISTER_OPS(KEY, B)                                                                   \
  TORCH_LIBRARY_IMPL(concrete_ext, KEY, m) {                                                      \
    using namespace concrete_ext;                                                                 \
    m.impl("exp_concrete_sample", [](const at::Tensor& l, const at::Tensor& t, int64_t dim,       \
                                     CE_RNG_PARAMS) { return sample_op<B>(l, t, dim, CE_RNG, true); }); \
    m.impl("concrete_sample", [](const at::Tensor& l, const at::Tensor& t, int64_t dim,           \
                                 CE_RNG_PARAMS) { return sample_op<B>(l, t, dim, CE_RNG, false); }); \
    m.impl("exp_concrete_sample_backward",                                                        \
           [](const at::Tensor& g, const at::Tensor& s, const at::Tensor& t, int64_t dim,         \
              bool tg) { return sample_backward_op<B>(g, s, t, dim, tg, true); });                \
    m.impl("concrete_sample_backward",                                                            \
           [](const at::Tensor& g, const at::Tensor& s, const at::Tensor& t, int64_t dim,         \
              bool tg) { return sample_backward_op<B>(g, s, t, dim, tg, false); });               \
    m.impl("gumbel_softmax_hard", [](const at::Tensor& l, const at::Tensor& t, int64_t dim,       \
                                     CE_RNG_PARAMS) {                                             \
      return gumbel_softmax_hard_op<B>(l, t, dim, CE_RNG);                                        \
    });                                                                                           \
    m.impl("gumbel_softmax_hard_backward",                                                        \
           [](const at::Tensor& g, const at::Tensor& l, const at::Tensor& t,                      \
              const at::Tensor& state, int64_t dim, bool tg) {                                    \
             return gumbel_softmax_hard_backward_op<B>(g, l, t, state, dim, tg);                  \
           });                                                                                    \
    m.impl("gumbel_max_sample", [](const at::Tensor& l, int64_t dim, CE_RNG_PARAMS) {             \
      return gumbel_max_op<B>(l, dim, CE_RNG);                                                    \
    });                                                                                           \
    m.impl("exp_concrete_log_prob", [](const at::Tensor& v, const at::Tensor& l,                  \
                                       const at::Tensor& t, int64_t dim) {                        \
      return log_prob_op<B>(v, l, t, dim, true);                                                  \
    });                                                                                           \
    m.impl("concrete_log_prob", [](const at::Tensor& v, const at::Tensor& l, const at::Tensor& t, \
                                   int64_t dim) { return log_prob_op<B>(v, l, t, dim, false); }); \
    m.impl("exp_concrete_log_prob_backward",                                                      \
           [](const at::Tensor& g, const at::Tensor& v, const at::Tensor& l, const at::Tensor& t, \
              int64_t dim, std::array<bool, 3> mask) {                                            \
             return log_prob_backward_op<B>(g, v, l, t, dim, mask, true);                         \
           });                                                                                    \
    m.impl("concrete_log_prob_backward",                                                          \
           [](const at::Tensor& g, const at::Tensor& v, const at::Tensor& l, const at::Tensor& t, \
              int64_t dim, std::array<bool, 3> mask) {                                            \
             return log_prob_backward_op<B>(g, v, l, t, dim, mask, false);                        \
           });                                                                                    \
    m.impl("relaxed_kl_sample", [](const at::Tensor& ql, const at::Tensor& qt,                    \
                                   const at::Tensor& pl, const at::Tensor& pt, int64_t dim,       \
                                   CE_RNG_PARAMS) {                                               \
      return relaxed_kl_op<B>(ql, qt, pl, pt, dim, CE_RNG);                                       \
    });                                                                                           \
    m.impl("relaxed_kl_sample_backward",                                                          \
           [](const std::optional<at::Tensor>& gy, const std::optional<at::Tensor>& gq,           \
              const std::optional<at::Tensor>& gp, const at::Tensor& y, const at::Tensor& ql,     \
              const at::Tensor& qt, const at::Tensor& pl, const at::Tensor& pt, int64_t dim,      \
              std::array<bool, 4> mask) {                                                         \
             return relaxed_kl_backward_op<B>(gy, gq, gp, y, ql, qt, pl, pt, dim, mask);          \
           });                                                                                    \
    m.impl("logit_binary_concrete_sample", [](const at::Tensor& l, const at::Tensor& t,           \
                                              CE_RNG_PARAMS) {                                    \
      return binary_sample_op<B>(l, t, CE_RNG, true);                                             \
    });                                                                                           \
    m.impl("binary_concrete_sample", [](const at::Tensor& l, const at::Tensor& t,                 \
                                        CE_RNG_PARAMS) {                                          \
      return binary_sample_op<B>(l, t, CE_RNG, false);                                            \
    });                                                                                           \
    m.impl("logit_binary_concrete_sample_backward",                                               \
           [](const at::Tensor& g, const at::Tensor& s, const at::Tensor& t, bool tg) {           \
             return binary_sample_backward_op<B>(g, s, t, tg, true);                              \
           });                                                                                    \
    m.impl("binary_concrete_sample_backward",                                                     \
           [](const at::Tensor& g, const at::Tensor& s, const at::Tensor& t, bool tg) {           \
             return binary_sample_backward_op<B>(g, s, t, tg, false);                             \
           });                                                                                    \
    m.impl("logit_binary_concrete_log_prob",                                                      \
           [](const at::Tensor& v, const at::Tensor& l, const at::Tensor& t) {                    \
             return binary_log_prob_op<B>(v, l, t, true);                                         \
           });                                                                                    \
    m.impl("binary_concrete_log_prob",                                                            \
           [](const at::Tensor& v, const at::Tensor& l, const at::Tensor& t) {                    \
             return binary_log_prob_op<B>(v, l, t, false);                                        \
           });                                                                                    \
    m.impl("logit_binary_concrete_log_prob_backward",                                             \
           [](const at::Tensor& g, const at::Tensor& v, const at::Tensor& l, const at::Tensor& t, \
              std::array<bool, 3> mask) {                                                         \
             return binary_log_prob_backward_op<B>(g, v, l, t, mask, true);                       \
           });                                                                                    \
    m.impl("binary_concrete_log_prob_backward",                                                   \
           [](const at::Tensor& g, const at::Tensor& v, const at::Tensor& l, const at::Tensor& t, \
              std::array<bool, 3> mask) {                                                         \
             return binary_log_prob_backward_op<B>(g, v, l, t, mask, false);                      \
           });                                                                                    \
    m.impl("noise_like", [](const at::Tensor& self, c10::string_view kind, CE_RNG_PARAMS) {       \
      return noise_op<B>(self, kind, CE_RNG);                                                     \
    });                                                                                           \
  }
