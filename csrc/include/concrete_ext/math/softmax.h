// Scalar helpers every row formula uses, on host and device, and the log-sum-exp state that the
// row reductions (CPU loops, CUB reductions in the CUDA kernels) share.
#pragma once

#include <cstdint>
#include <limits>

#include "concrete_ext/math/libm.h"

namespace concrete_ext {

template <typename T>
CE_HOST_DEVICE constexpr T INFINITY_T() {
  return std::numeric_limits<T>::infinity();
}

// softplus(x) = log(1 + e^x) and sigmoid(x), stable for large |x|; written as selects.
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T softplus(T x) {
  const T e = Ops::exp(x > T(0) ? -x : x);  // in (0, 1]
  return (x > T(0) ? x : T(0)) + Ops::log1p(e);
}
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T sigmoid(T x) {
  const T e = Ops::exp(x > T(0) ? -x : x);
  const T r = T(1) / (T(1) + e);
  return x > T(0) ? r : e * r;
}

// log Gamma(n) = log((n - 1)!) for a count of categories n >= 1 (exact sum for small n).
template <typename T>
CE_HOST_DEVICE T log_factorial_minus_one(int64_t n) {
  if (n <= 32) {
    T s = T(0);
    for (int64_t k = 2; k < n; ++k) s += LibmOps::log(static_cast<T>(k));
    return s;
  }
  return static_cast<T>(::lgamma(static_cast<double>(n)));
}

// Running (max, sum of exp(v - max)): the state of an online log-sum-exp. combine() is
// associative and commutative; -inf values (masked categories) contribute nothing.
template <typename T>
struct MaxSum {
  T max;
  T sum;
  CE_HOST_DEVICE static MaxSum identity() { return MaxSum{-INFINITY_T<T>(), T(0)}; }
  CE_HOST_DEVICE T lse() const { return max + LibmOps::log(sum); }
};

template <typename T>
CE_HOST_DEVICE MaxSum<T> combine(MaxSum<T> a, MaxSum<T> b) {
  if (a.max == -INFINITY_T<T>()) return b;
  if (b.max == -INFINITY_T<T>()) return a;
  if (a.max >= b.max) return MaxSum<T>{a.max, a.sum + b.sum * LibmOps::exp(b.max - a.max)};
  return MaxSum<T>{b.max, b.sum + a.sum * LibmOps::exp(a.max - b.max)};
}

struct MaxSumOp {
  template <typename T>
  CE_HOST_DEVICE MaxSum<T> operator()(const MaxSum<T>& a, const MaxSum<T>& b) const {
    return combine(a, b);
  }
};

}  // namespace concrete_ext
