// Host side of the index samplers, categorical_sample and gumbel_top_k: checks, the (rows, n) view,
// the temperature, the int64 outputs (layouts "index" and "topk" of concrete_ext/_table.py: the
// batch shape, then k for top-k, contiguous), then the device's kernel (cpu/index.cpp,
// cuda/index.cu).
#include "host/device.h"
#include "host/ops.h"

namespace concrete_ext {
namespace {

// `out` is contiguous: rows x k int64.
at::Tensor run_index(const at::Tensor& logits, int64_t d, const Temperature* tau, int64_t k,
                     const RngArgs& rng, at::Tensor out, const char* name) {
  const Rows x = to_rows(logits, d, /*periodic=*/true);
  if (x.rows == 0) return out;
  IndexArgs a{x.data.const_data_ptr(),
              out.mutable_data_ptr<int64_t>(),
              x.rows,
              logits.size(d),
              k,
              tau ? tau->arg() : TauArg{},
              false,
              tau == nullptr,
              {},
              dtype_of(logits, name)};
  a.logits_period = x.period_arg();
  // Dividing by a temperature of exactly 1 changes nothing: the CPU kernel skips it.
  a.scale = tau != nullptr && (tau->values.defined() || tau->scalar != 1.0);
  launch(a, logits, &rng, CE_KERNEL(index_sample));
  return out;
}

}  // namespace

at::Tensor categorical_sample_op(const at::Tensor& logits, const at::Tensor& temperature,
                                 int64_t dim, const RngArgs& rng) {
  check_floating(logits, "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  const auto bshape = batch_shape(logits, d);
  const Temperature tau =
      prepare_temperature(temperature, bshape, logits.device(), acc_type(logits.scalar_type()));
  at::Tensor out = at::empty(bshape, logits.options().dtype(at::kLong));
  return run_index(logits, d, &tau, 1, rng, out, "categorical_sample");
}

at::Tensor gumbel_top_k_op(const at::Tensor& logits, int64_t k, int64_t dim, const RngArgs& rng) {
  check_floating(logits, "logits");
  const int64_t d = category_dim(logits, dim, "logits");
  TORCH_CHECK_VALUE(k >= 1 && k <= logits.size(d), "k must be in [1, ", logits.size(d),
                    "] (the number of categories), got ", k);
  auto shape = batch_shape(logits, d);
  shape.push_back(k);
  at::Tensor out = at::empty(shape, logits.options().dtype(at::kLong));
  if (!logits.is_cuda() || k <= kIndexMaxFusedK) {
    return run_index(logits, d, nullptr, k, rng, out, "gumbel_top_k");
  }
  // CUDA, k above what the fused kernel selects: the kernel writes every score (NaN as -inf) and
  // a stable descending sort orders them (equal scores by index, as the reference's sort).
  const Rows x = to_rows(logits, d, /*periodic=*/true);
  if (x.rows == 0) return out;
  at::Tensor scores =
      at::empty({x.rows, logits.size(d)}, logits.options().dtype(acc_type(logits.scalar_type())));
  IndexArgs a{x.data.const_data_ptr(),
              nullptr,
              x.rows,
              logits.size(d),
              k,
              TauArg{},
              false,
              true,
              {},
              dtype_of(logits, "gumbel_top_k"),
              scores.mutable_data_ptr()};
  a.logits_period = x.period_arg();
  launch(a, logits, &rng, CE_KERNEL(index_sample));
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/-1,
                                                /*descending=*/true));
  out.view({x.rows, k}).copy_(order.narrow(1, 0, k));
  return out;
}

}  // namespace concrete_ext
