// Registers every op for the CPU dispatch key and, in a build with the CUDA kernels, the CUDA key.
// The op functions (host/ops.h) serve both: they run the kernel of their tensors' device. The
// schemas are defined once, in Python (concrete_ext/_ops.py), so the ops exist even where _C is not
// built.
#include <torch/library.h>

#include "host/ops.h"

namespace concrete_ext {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

#define CE_RNG_PARAMS \
  std::optional<int64_t> seed, int64_t offset, std::optional<at::Generator> generator
#define CE_RNG \
  RngArgs { seed, offset, generator }

void register_ops(torch::Library& m) {
  m.impl("exp_concrete_sample", [](const Tensor& l, const Tensor& t, int64_t dim, CE_RNG_PARAMS) {
    return sample_op(l, t, dim, CE_RNG, true);
  });
  m.impl("concrete_sample", [](const Tensor& l, const Tensor& t, int64_t dim, CE_RNG_PARAMS) {
    return sample_op(l, t, dim, CE_RNG, false);
  });
  m.impl("exp_concrete_sample_backward",
         [](const Tensor& g, const Tensor& s, const Tensor& t, int64_t dim, bool tg) {
           return sample_backward_op(g, s, t, dim, tg, true);
         });
  m.impl("concrete_sample_backward",
         [](const Tensor& g, const Tensor& s, const Tensor& t, int64_t dim, bool tg) {
           return sample_backward_op(g, s, t, dim, tg, false);
         });
  m.impl("gumbel_softmax_hard", [](const Tensor& l, const Tensor& t, int64_t dim, CE_RNG_PARAMS) {
    return gumbel_softmax_hard_op(l, t, dim, CE_RNG);
  });
  m.impl("gumbel_softmax_hard_backward",
         [](const Tensor& g, const Tensor& l, const Tensor& t, const Tensor& state, int64_t dim,
            bool tg) { return gumbel_softmax_hard_backward_op(g, l, t, state, dim, tg); });
  m.impl("gumbel_max_sample",
         [](const Tensor& l, int64_t dim, CE_RNG_PARAMS) { return gumbel_max_op(l, dim, CE_RNG); });
  m.impl("exp_concrete_log_prob", [](const Tensor& v, const Tensor& l, const Tensor& t,
                                     int64_t dim) { return log_prob_op(v, l, t, dim, true); });
  m.impl("concrete_log_prob", [](const Tensor& v, const Tensor& l, const Tensor& t, int64_t dim) {
    return log_prob_op(v, l, t, dim, false);
  });
  m.impl(
      "exp_concrete_log_prob_backward",
      [](const Tensor& g, const Tensor& v, const Tensor& l, const Tensor& t, int64_t dim,
         std::array<bool, 3> mask) { return log_prob_backward_op(g, v, l, t, dim, mask, true); });
  m.impl("concrete_log_prob_backward", [](const Tensor& g, const Tensor& v, const Tensor& l,
                                          const Tensor& t, int64_t dim, std::array<bool, 3> mask) {
    return log_prob_backward_op(g, v, l, t, dim, mask, false);
  });
  m.impl("relaxed_kl_sample",
         [](const Tensor& ql, const Tensor& qt, const Tensor& pl, const Tensor& pt, int64_t dim,
            CE_RNG_PARAMS) { return relaxed_kl_op(ql, qt, pl, pt, dim, CE_RNG); });
  m.impl("relaxed_kl_sample_backward",
         [](const OptTensor& gy, const OptTensor& gq, const OptTensor& gp, const Tensor& y,
            const Tensor& ql, const Tensor& qt, const Tensor& pl, const Tensor& pt, int64_t dim,
            std::array<bool, 4> mask) {
           return relaxed_kl_backward_op(gy, gq, gp, y, ql, qt, pl, pt, dim, mask);
         });
  m.impl("logit_binary_concrete_sample", [](const Tensor& l, const Tensor& t, CE_RNG_PARAMS) {
    return binary_sample_op(l, t, CE_RNG, true);
  });
  m.impl("binary_concrete_sample", [](const Tensor& l, const Tensor& t, CE_RNG_PARAMS) {
    return binary_sample_op(l, t, CE_RNG, false);
  });
  m.impl("logit_binary_concrete_sample_backward",
         [](const Tensor& g, const Tensor& s, const Tensor& t, bool tg) {
           return binary_sample_backward_op(g, s, t, tg, true);
         });
  m.impl("binary_concrete_sample_backward",
         [](const Tensor& g, const Tensor& s, const Tensor& t, bool tg) {
           return binary_sample_backward_op(g, s, t, tg, false);
         });
  m.impl("logit_binary_concrete_log_prob", [](const Tensor& v, const Tensor& l, const Tensor& t) {
    return binary_log_prob_op(v, l, t, true);
  });
  m.impl("binary_concrete_log_prob", [](const Tensor& v, const Tensor& l, const Tensor& t) {
    return binary_log_prob_op(v, l, t, false);
  });
  m.impl(
      "logit_binary_concrete_log_prob_backward",
      [](const Tensor& g, const Tensor& v, const Tensor& l, const Tensor& t,
         std::array<bool, 3> mask) { return binary_log_prob_backward_op(g, v, l, t, mask, true); });
  m.impl("binary_concrete_log_prob_backward", [](const Tensor& g, const Tensor& v, const Tensor& l,
                                                 const Tensor& t, std::array<bool, 3> mask) {
    return binary_log_prob_backward_op(g, v, l, t, mask, false);
  });
  m.impl("noise_like", [](const Tensor& self, c10::string_view kind, CE_RNG_PARAMS) {
    return noise_op(self, kind, CE_RNG);
  });
  m.impl("categorical_sample", [](const Tensor& l, const Tensor& t, int64_t dim, CE_RNG_PARAMS) {
    return categorical_sample_op(l, t, dim, CE_RNG);
  });
  m.impl("gumbel_top_k", [](const Tensor& l, int64_t k, int64_t dim, CE_RNG_PARAMS) {
    return gumbel_top_k_op(l, k, dim, CE_RNG);
  });
}

}  // namespace
}  // namespace concrete_ext

TORCH_LIBRARY_IMPL(concrete_ext, CPU, m) { concrete_ext::register_ops(m); }
#ifdef CE_WITH_CUDA
TORCH_LIBRARY_IMPL(concrete_ext, CUDA, m) { concrete_ext::register_ops(m); }
#endif
