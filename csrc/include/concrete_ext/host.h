// Host-side preparation shared by every op and both devices: the (rows, n) view of a row op, the
// temperature, and the seed. Each op's .cpp calls these, then its CPU loop or CUDA launcher.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Optional.h>

#include <mutex>
#include <optional>

#include "concrete_ext/checks.h"
#include "concrete_ext/params.h"

namespace concrete_ext {

// A tensor seen as (rows, n) with the category dim last, contiguous. `moved_sizes` is the shape
// with the category dim moved last; outputs are allocated in that shape and moved back, so their
// strides are those of a contiguous tensor in the moved layout (the fake kernels do the same).
struct Rows {
  at::Tensor data;  // (rows, n), contiguous
  int64_t rows;
  int64_t n;
  int64_t dim;      // wrapped category dim of the original tensor
};

inline Rows to_rows(const at::Tensor& t, int64_t dim) {
  const at::Tensor moved = t.movedim(dim, -1).contiguous();
  const int64_t n = t.size(dim);
  return Rows{moved.view({-1, n}), moved.numel() / n, n, dim};
}

// Empty output with the layout described above; returns (tensor in the caller's dim order,
// its (rows, n) view).
inline std::pair<at::Tensor, at::Tensor> empty_rows_like(const at::Tensor& t, int64_t dim,
                                                         at::ScalarType dtype) {
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

// The temperature as the kernels read it: a host scalar, or a device tensor in the op's math type
// with one value per row (or per element) or a single value read with stride 0.
struct Temperature {
  at::Tensor values;  // undefined when the temperature is a host scalar
  double scalar = 1.0;
  int64_t stride = 0;
  template <typename acc_t>
  TauView<acc_t> view() const {
    if (!values.defined()) return TauView<acc_t>{nullptr, 0, static_cast<acc_t>(scalar)};
    return TauView<acc_t>{values.data_ptr<acc_t>(), stride, acc_t(0)};
  }
};

// `shape` is the batch shape of a row op or the full shape of a binary op. A temperature with one
// element that lives on the CPU is read on the host (no device copy, no sync); any other must be on
// the op's device and broadcast to `shape`.
inline Temperature prepare_temperature(const at::Tensor& temperature, at::IntArrayRef shape,
                                       const at::Device& device, at::ScalarType acc) {
  check_floating(temperature, "temperature");
  Temperature t;
  if (temperature.numel() == 1 && temperature.device().is_cpu()) {
    t.scalar = temperature.item<double>();
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
  } else {
    t.values = temperature.to(acc).expand(shape).contiguous().view({-1});
    t.stride = 1;
  }
  return t;
}

// Seed of a call on the CPU: explicit (seed, offset), or a fresh 64-bit seed from the generator
// (the CPU generator is a Mersenne twister; torch.manual_seed makes the draws reproducible).
inline SeedOffset cpu_seed(const std::optional<at::Generator>& generator,
                           std::optional<int64_t> seed, int64_t offset) {
  if (seed.has_value()) {
    return SeedOffset{static_cast<uint64_t>(*seed), static_cast<uint64_t>(offset)};
  }
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return SeedOffset{gen->random64(), 0};
}

// The rng_state tensor saved for the straight-through backward: int64 [seed, offset].
inline at::Tensor rng_state_tensor(const SeedOffset& so) {
  at::Tensor t = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  int64_t* p = t.data_ptr<int64_t>();
  p[0] = static_cast<int64_t>(so.seed);
  p[1] = static_cast<int64_t>(so.offset);
  return t;
}

inline SeedOffset read_rng_state(const at::Tensor& state) {
  TORCH_CHECK_VALUE(state.numel() == 2 && state.scalar_type() == at::kLong,
                    "rng_state must be an int64 tensor of 2 elements [seed, offset]");
  const at::Tensor s = state.cpu().contiguous();
  const int64_t* p = s.data_ptr<int64_t>();
  return SeedOffset{static_cast<uint64_t>(p[0]), static_cast<uint64_t>(p[1])};
}

}  // namespace concrete_ext
