// Plain structs passed by value from the host code to the CPU loops and CUDA kernels; no torch
// headers, so they are usable in device code.
#pragma once

#include <cstdint>

#include "concrete_ext/philox.h"

namespace concrete_ext {

// Temperature of a row (row ops) or of an element (binary ops): either one value for all, or a
// pointer with stride 0 (one device scalar) or 1 (one value per row / element). A period P > 0
// means the pointer holds P values and row (element) i reads value i % P: a temperature broadcast
// over leading sample dims, read without a copy.
template <typename acc_t>
struct TauView {
  const acc_t* ptr;
  int64_t stride;
  acc_t value;
  int64_t period = 0;
  CE_HOST_DEVICE acc_t at(int64_t i) const {
    return ptr ? ptr[(period ? i % period : i) * stride] : value;
  }
};

// The (seed, offset) pair of a call, offset in 4-word Philox blocks (philox.h).
struct SeedOffset {
  uint64_t seed;
  uint64_t offset;
};

}  // namespace concrete_ext
