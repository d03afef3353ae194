// Gumbel-max (zero temperature, paper Prop. 1c): the category argmax_k (a_k + g_k). Ties go to the
// lower index, so CPU, CUDA and Triton agree. The (value, index) pair is reduced by CUB on the GPU.
#pragma once

#include <cstdint>

#include "concrete_ext/math/softmax.h"

namespace concrete_ext {

template <typename T>
struct ArgMax {
  T value;
  int64_t index;
  CE_HOST_DEVICE static ArgMax identity() { return ArgMax{-INFINITY_T<T>(), INT64_MAX}; }
};

struct ArgMaxOp {
  template <typename T>
  CE_HOST_DEVICE ArgMax<T> operator()(const ArgMax<T>& a, const ArgMax<T>& b) const {
    // NaN compares false both ways: a NaN value never wins, so a row with a NaN logit still
    // yields a valid index.
    if (a.value > b.value) return a;
    if (b.value > a.value) return b;
    return a.index <= b.index ? a : b;
  }
};

}  // namespace concrete_ext
