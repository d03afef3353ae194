// Host-side preparation shared by every op and both devices: the (rows, n) view of a row op, the
// outputs' layout, the temperature, the seed, and the kernel arguments' pointers and dtype.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "concrete_ext/kernel_args.h"
#include "host/checks.h"

namespace concrete_ext {

// The random-number arguments every sampling op takes: an explicit (seed, offset), or a generator
// (the default one when None). Each device turns them into its own seed state (host/device.h).
struct RngArgs {
  std::optional<int64_t> seed;
  int64_t offset;
  std::optional<at::Generator> generator;
};

// The math type of an op's dtype: double for fp64, float for the others.
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The kernels' dtype of a tensor; `op` names the kernel in the error for other dtypes (the message
// of ATen's dtype dispatch).
inline DType dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kDouble:
      return DType::kFloat64;
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      break;
  }
  TORCH_CHECK_NOT_IMPLEMENTED(false, '"', op, (t.is_cuda() ? "_cuda" : "_cpu"),
                              "\" not implemented for '", c10::toString(t.scalar_type()), "'");
}

// Data pointer of a tensor, or null for an absent one (an undefined tensor or a null pointer).
inline const void* cptr(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }
inline void* mptr(const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }
inline void* mptr(at::Tensor* t) { return t ? t->mutable_data_ptr() : nullptr; }

// Whether the kernels of t's device read inputs with a period (kernel_args.h): row r of an input
// broadcast over leading dims read at row r % period of its distinct rows, without a copy. Both
// devices' kernels do (CPU and CUDA: every op).
inline bool reads_periodic(const at::Tensor& /*t*/) { return true; }

// t without its leading broadcast dims: t[0, ..., 0] over the longest prefix of at most `max_dims`
// dims that have stride 0 (or size 1); t itself when there is none. A view, nothing is copied.
inline at::Tensor drop_broadcast_dims(const at::Tensor& t, int64_t max_dims) {
  int64_t k = 0;
  while (k < max_dims && (t.stride(k) == 0 || t.size(k) == 1)) ++k;
  if (k == 0) return t;
  return t.as_strided(t.sizes().slice(k), t.strides().slice(k), t.storage_offset());
}

// A tensor seen as (rows, n) with the category dim last, contiguous: a copy only if that view of
// the tensor is not contiguous already. With `periodic` (an input whose kernel reads a period),
// leading dims broadcast with stride 0 are not copied out: `data` holds the distinct rows only
// (`period` of them; row r of the op reads row r % period), copied only if those are not
// contiguous. A stride-0 dim that is not leading is copied out as before.
struct Rows {
  at::Tensor data;  // (period, n), contiguous
  int64_t rows;
  int64_t period;  // == rows unless leading dims are broadcast
  // The kernels' period argument: 0 when every row is stored.
  int64_t period_arg() const { return period < rows ? period : 0; }
};

inline Rows to_rows(const at::Tensor& t, int64_t dim, bool periodic = false) {
  // The common case (category dim last, contiguous) is the tensor itself: no view to build, which
  // a small call would pay for in dispatcher round trips.
  if (dim == t.dim() - 1 && t.is_contiguous()) {
    const int64_t rows = t.numel() / t.size(dim);
    return Rows{t, rows, rows};
  }
  const at::Tensor moved = t.movedim(dim, -1);
  const int64_t n = t.size(dim);
  const int64_t rows = moved.numel() / n;
  if (periodic && rows > 0 && reads_periodic(t)) {
    const at::Tensor distinct = drop_broadcast_dims(moved, moved.dim() - 1).contiguous();
    return Rows{distinct.view({-1, n}), rows, distinct.numel() / n};
  }
  return Rows{moved.contiguous().view({-1, n}), rows, rows};
}

// The elements of a binary op's input, flat and contiguous: the same with n = 1 (the periodic
// form keeps the distinct elements of an input broadcast over leading dims).
inline Rows to_elems(const at::Tensor& t, bool periodic = false) {
  const int64_t numel = t.numel();
  if (t.is_contiguous()) return Rows{t, numel, numel};
  if (periodic && numel > 0 && reads_periodic(t)) {
    const at::Tensor distinct = drop_broadcast_dims(t, t.dim()).contiguous();
    return Rows{distinct, numel, distinct.numel()};
  }
  return Rows{t.contiguous(), numel, numel};
}

// An empty output whose strides are those of a contiguous tensor in the layout with the category
// dim moved last (the fake kernels allocate the same); returns (the output in the caller's dim
// order, its (rows, n) view).
inline std::pair<at::Tensor, at::Tensor> empty_rows_like(const at::Tensor& t, int64_t dim,
                                                         at::ScalarType dtype) {
  if (dim == t.dim() - 1) {  // already the moved layout: the (rows, n) view is not needed
    at::Tensor out = at::empty(t.sizes(), t.options().dtype(dtype));
    return {out, out};
  }
  std::vector<int64_t> moved(t.sizes().begin(), t.sizes().end());
  const int64_t n = moved[dim];
  moved.erase(moved.begin() + dim);
  moved.push_back(n);
  at::Tensor out = at::empty(moved, t.options().dtype(dtype));
  at::Tensor view2d = out.view({-1, n});
  return {out.movedim(-1, dim), view2d};
}

// The batch shape of a row op: the shape without the category dim.
inline std::vector<int64_t> batch_shape(const at::Tensor& t, int64_t dim) {
  std::vector<int64_t> s(t.sizes().begin(), t.sizes().end());
  s.erase(s.begin() + dim);
  return s;
}

// The temperature as the kernels read it: a host scalar, or a tensor in the op's math type with
// one value per row (or per element), or a single value read with stride 0.
struct Temperature {
  at::Tensor values;  // undefined when the temperature is a host scalar
  double scalar = 1.0;
  int64_t stride = 0;
  int64_t period = 0;  // > 0: values holds that many, broadcast over the leading dims
  TauArg arg() const {
    return values.defined() ? TauArg{values.const_data_ptr(), stride, 0.0, period}
                            : TauArg{nullptr, 0, scalar, 0};
  }
};

// The value of a one-element floating CPU tensor, read from memory (item() is a dispatcher call).
inline double host_scalar(const at::Tensor& t) {
  if (t.is_neg()) return t.item<double>();
  switch (t.scalar_type()) {
    case at::kDouble:
      return *t.const_data_ptr<double>();
    case at::kFloat:
      return *t.const_data_ptr<float>();
    case at::kHalf:
      return static_cast<float>(*t.const_data_ptr<at::Half>());
    case at::kBFloat16:
      return static_cast<float>(*t.const_data_ptr<at::BFloat16>());
    default:
      return t.item<double>();
  }
}

// `shape` is the batch shape of a row op or the full shape of a binary op. A temperature with one
// element that lives on the CPU is read on the host (no device copy, no sync); any other must be on
// the op's device and broadcast to `shape`.
inline Temperature prepare_temperature(const at::Tensor& temperature, at::IntArrayRef shape,
                                       const at::Device& device, at::ScalarType acc) {
  check_floating(temperature, "temperature");
  Temperature t;
  if (temperature.numel() == 1 && temperature.device().is_cpu()) {
    t.scalar = host_scalar(temperature);
    return t;
  }
  TORCH_CHECK_VALUE(temperature.device() == device, "temperature is on ", temperature.device(),
                    " but the op's tensors are on ", device,
                    " (a temperature on another device must be a single value on the CPU)");
  TORCH_CHECK_VALUE(at::is_expandable_to(temperature.sizes(), shape), "temperature of shape ",
                    temperature.sizes(), " does not broadcast to the batch shape ", shape);
  if (temperature.numel() == 1) {
    t.values = temperature.to(acc).reshape({1});
    t.stride = 0;
  } else if (reads_periodic(temperature)) {
    // Leading dims of `shape` that the temperature broadcasts over are not copied out: the kernels
    // read value i % period.
    const at::Tensor expanded = temperature.expand(shape);
    const at::Tensor distinct = drop_broadcast_dims(expanded, expanded.dim());
    t.values = distinct.to(acc).contiguous().view({-1});
    if (distinct.numel() == 1) {  // one value broadcast everywhere: read it once, as a scalar's
      t.stride = 0;
    } else {
      t.stride = 1;
      if (distinct.numel() < expanded.numel()) t.period = distinct.numel();
    }
  } else {
    t.values = temperature.to(acc).expand(shape).contiguous().view({-1});
    t.stride = 1;
  }
  return t;
}

// Seed of a call on the CPU: explicit (seed, offset), or a fresh 64-bit seed from the generator
// (the CPU generator is a Mersenne twister; torch.manual_seed makes the draws reproducible).
inline SeedOffset cpu_seed(const RngArgs& rng) {
  if (rng.seed.has_value()) {
    return SeedOffset{static_cast<uint64_t>(*rng.seed), static_cast<uint64_t>(rng.offset)};
  }
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      rng.generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return SeedOffset{gen->random64(), 0};
}

// The [seed, offset] the hard Gumbel-softmax forward saves for its backward, read on the host.
inline SeedOffset read_rng_state(const at::Tensor& state) {
  TORCH_CHECK_VALUE(state.numel() == 2 && state.scalar_type() == at::kLong,
                    "rng_state must be an int64 tensor of 2 elements [seed, offset]");
  const at::Tensor s = state.cpu().contiguous();
  const int64_t* p = s.const_data_ptr<int64_t>();
  return SeedOffset{static_cast<uint64_t>(p[0]), static_cast<uint64_t>(p[1])};
}

}  // namespace concrete_ext
