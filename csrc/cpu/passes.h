// Whole-block passes of the CPU kernels, written so that GCC vectorises them inside the kernels'
// per-ISA block functions (CE_CPU_KERNEL, blocks.h).
//
// A block is R consecutive rows of n elements, stored row-major in L1/L2-resident arrays. Every
// elementwise or per-row step is a loop over the whole block, so that short rows still fill
// vectors:
//   for_each_row(R, n, f)        f(r, i) for every element i = r n + k of row r
//   rows_max(R, n, out, f)       out[r] = max_k f(r, i)  (NaN never wins, -inf if nothing beats it)
//   rows_sum(R, n, out, f)       out[r] = sum_k f(r, i)  in double
// For n in {2, 4, 8, 16} the row length is a compile-time constant and GCC vectorises the loop
// over rows (the k loop unrolls; strided loads become permutes), so the per-row reductions run
// one row per vector lane in the same order as a scalar loop. Longer rows run lane-wise
// (kLanes partial results per row, combined at the end); other short rows run plain loops.
//
// The per-ISA functions must inline everything they call (always_inline here; lambdas passed to
// these helpers are inlined by GCC as they are called once per site).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "concrete_ext/math/vec_math.h"
#include "concrete_ext/params.h"
#include "cpu/primitives.h"

#define CE_INLINE inline __attribute__((always_inline))
// On the lambdas the block bodies pass to these helpers: GCC does not always inline them on its
// own, and a call left in a loop keeps it scalar.
#define CE_LAMBDA __attribute__((always_inline))

namespace concrete_ext {
namespace cpu {

// Partial results per long row: 16 floats fill one AVX-512 register.
constexpr int kLanes = 16;

template <typename T>
constexpr T kInfinity = std::numeric_limits<T>::infinity();

// Scalar functions of the block loops: the vectorisable polynomials for float, libm for double
// (the fp64 ops keep the C library's accuracy).
template <typename T>
struct BlockMath;
template <>
struct BlockMath<float> {
  static CE_INLINE float exp(float v) { return vm::vexp(v); }
  // exp(v) for v <= 0 (softmax terms exp(v - max), exp of a log-probability).
  static CE_INLINE float exp_nonpos(float v) { return vm::vexp_nonpos(v); }
  static CE_INLINE float log(float v) { return vm::vlog(v); }
  // log of a row total held in double (row log-sum-exps).
  static CE_INLINE double log_total(double v) { return vm::vlogd(v); }
};
template <>
struct BlockMath<double> {
  static CE_INLINE double exp(double v) { return std::exp(v); }
  static CE_INLINE double exp_nonpos(double v) { return std::exp(v); }
  static CE_INLINE double log(double v) { return std::log(v); }
  static CE_INLINE double log_total(double v) { return std::log(v); }
};

// f(r, i) reads and writes element i of the block's arrays and reads values of row r only, so
// the iterations are independent: `ivdep` says so to GCC, which otherwise versions a loop for
// aliasing with at most 10 run-time checks and leaves loops over more arrays scalar.
template <int N, typename F>
CE_INLINE void for_each_row_fixed(int64_t R, F& f) {
#pragma GCC ivdep
  for (int64_t r = 0; r < R; ++r) {
    for (int k = 0; k < N; ++k) f(r, r * N + k);
  }
}

template <typename F>
CE_INLINE void for_each_row(int64_t R, int64_t n, F&& f) {
  switch (n) {
    case 2:
      return for_each_row_fixed<2>(R, f);
    case 4:
      return for_each_row_fixed<4>(R, f);
    case 8:
      return for_each_row_fixed<8>(R, f);
    case 16:
      return for_each_row_fixed<16>(R, f);
    default:
      for (int64_t r = 0; r < R; ++r) {
        const int64_t b = r * n;
#pragma GCC ivdep
        for (int64_t k = 0; k < n; ++k) f(r, b + k);
      }
  }
}

// Reductions of one contiguous row, kept apart from the loops that compute the values (fused,
// GCC 12 leaves the partial results in memory or does not vectorise).
// The maximum in GCC vector types: the vectoriser does not take a select-based max reduction
// (it would need -ffinite-math-only), and these keep the partial maxima in registers. 32-byte
// vectors are native on AVX2 and AVX-512; the baseline build splits them.
typedef float CeV8f __attribute__((vector_size(32)));
typedef double CeV4d __attribute__((vector_size(32)));
template <typename V, int W, typename T>
CE_INLINE T max_contiguous_vec(const T* __restrict x, int64_t n) {
  V a0, a1;
  for (int j = 0; j < W; ++j) {
    a0[j] = -kInfinity<T>;
    a1[j] = -kInfinity<T>;
  }
  int64_t k = 0;
  for (; k + 2 * W <= n; k += 2 * W) {
    V v0, v1;
    __builtin_memcpy(&v0, x + k, sizeof(V));
    __builtin_memcpy(&v1, x + k + W, sizeof(V));
    a0 = v0 > a0 ? v0 : a0;  // NaN never wins, as in the scalar loops
    a1 = v1 > a1 ? v1 : a1;
  }
  T m = -kInfinity<T>;
  for (int j = 0; j < W; ++j) {
    m = a0[j] > m ? a0[j] : m;
    m = a1[j] > m ? a1[j] : m;
  }
  for (; k < n; ++k) m = x[k] > m ? x[k] : m;
  return m;
}
CE_INLINE float max_contiguous(const float* __restrict x, int64_t n) {
  return max_contiguous_vec<CeV8f, 8>(x, n);
}
CE_INLINE double max_contiguous(const double* __restrict x, int64_t n) {
  return max_contiguous_vec<CeV4d, 4>(x, n);
}
template <typename T>
CE_INLINE double sum_contiguous(const T* __restrict x, int64_t n) {
  double s = 0;
  int64_t k = 0;
  if (n >= kLanes) {
    double lane[kLanes];
    for (int j = 0; j < kLanes; ++j) lane[j] = 0;
    for (; k + kLanes <= n; k += kLanes) {
      for (int j = 0; j < kLanes; ++j) lane[j] += static_cast<double>(x[k + j]);
    }
    for (int j = 0; j < kLanes; ++j) s += lane[j];
  }
  for (; k < n; ++k) s += static_cast<double>(x[k]);
  return s;
}

template <int N, typename T>
CE_INLINE void reduce_rows_max_fixed(int64_t R, const T* __restrict x, T* __restrict out) {
  for (int64_t r = 0; r < R; ++r) {
    T m = -kInfinity<T>;
    for (int k = 0; k < N; ++k) {
      const T v = x[r * N + k];
      m = v > m ? v : m;
    }
    out[r] = m;
  }
}
template <typename T>
CE_INLINE void reduce_rows_max(int64_t R, int64_t n, const T* __restrict x, T* __restrict out) {
  switch (n) {
    case 2:
      return reduce_rows_max_fixed<2>(R, x, out);
    case 4:
      return reduce_rows_max_fixed<4>(R, x, out);
    case 8:
      return reduce_rows_max_fixed<8>(R, x, out);
    case 16:
      return reduce_rows_max_fixed<16>(R, x, out);
    default:
      for (int64_t r = 0; r < R; ++r) out[r] = max_contiguous(x + r * n, n);
  }
}
template <int N, typename T>
CE_INLINE void reduce_rows_sum_fixed(int64_t R, const T* __restrict x, double* __restrict out) {
  for (int64_t r = 0; r < R; ++r) {
    double s = 0;
    for (int k = 0; k < N; ++k) s += static_cast<double>(x[r * N + k]);
    out[r] = s;
  }
}
template <typename T>
CE_INLINE void reduce_rows_sum(int64_t R, int64_t n, const T* __restrict x,
                               double* __restrict out) {
  switch (n) {
    case 2:
      return reduce_rows_sum_fixed<2>(R, x, out);
    case 4:
      return reduce_rows_sum_fixed<4>(R, x, out);
    case 8:
      return reduce_rows_sum_fixed<8>(R, x, out);
    case 16:
      return reduce_rows_sum_fixed<16>(R, x, out);
    default:
      for (int64_t r = 0; r < R; ++r) out[r] = sum_contiguous(x + r * n, n);
  }
}

// out[r] = max_k f(r, i) and out[r] = sum_k f(r, i): f's values go to the block-sized array tmp
// (which may be the array f itself writes its value to), then the rows of tmp are reduced. Two
// loops rather than one: GCC 12 does not vectorise many of the fused forms (a reduction next to a
// store of the selected value, next to vexp on short rows, or kept in memory on long rows).
template <typename T, typename F>
CE_INLINE void rows_max(int64_t R, int64_t n, T* out, T* tmp, F&& f) {
  for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { tmp[i] = f(r, i); });
  reduce_rows_max(R, n, tmp, out);
}
// Row sums accumulate in double for every dtype: a float running sum over a long row drifts
// (about 1e-4 relative at n = 2^17, ten times the error of torch's own fp32 reductions).
template <typename T, typename F>
CE_INLINE void rows_sum(int64_t R, int64_t n, double* out, T* tmp, F&& f) {
  for_each_row(R, n, [&](int64_t r, int64_t i) CE_LAMBDA { tmp[i] = f(r, i); });
  reduce_rows_sum(R, n, tmp, out);
}

// tau (or 1 / tau) of rows / elements [i0, i0 + count): one value for all, or from the tensor.
template <typename acc_t>
CE_INLINE bool tau_is_uniform(const TauView<acc_t>& tv) {
  return !tv.ptr || tv.stride == 0;
}
template <typename acc_t>
CE_INLINE acc_t tau_uniform_value(const TauView<acc_t>& tv) {
  return tv.ptr ? tv.ptr[0] : tv.value;
}
template <typename acc_t>
CE_INLINE void tau_values(const TauView<acc_t>& tv, int64_t i0, int64_t count, bool inverse,
                          acc_t* out) {
  if (tau_is_uniform(tv)) {
    const acc_t t = tau_uniform_value(tv);
    const acc_t v = inverse ? acc_t(1) / t : t;
    for (int64_t i = 0; i < count; ++i) out[i] = v;
    return;
  }
  if (tv.period && i0 % tv.period + count > tv.period) {  // a period ends inside: value by value
    for (int64_t i = 0, j = i0 % tv.period; i < count; ++i) {
      const acc_t t = tv.ptr[j * tv.stride];
      out[i] = inverse ? acc_t(1) / t : t;
      if (++j == tv.period) j = 0;
    }
    return;
  }
  const acc_t* p = tv.ptr + (tv.period ? i0 % tv.period : i0) * tv.stride;
  const int64_t st = tv.stride;
  if (inverse) {
    for (int64_t i = 0; i < count; ++i) out[i] = acc_t(1) / p[i * st];
  } else {
    for (int64_t i = 0; i < count; ++i) out[i] = p[i * st];
  }
}

}  // namespace cpu
}  // namespace concrete_ext
