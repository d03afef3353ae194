// Branch-free float log / exp for the CPU loops, written so that GCC vectorises loops calling them
// (glibc's scalar logf/expf are opaque calls and keep a loop scalar). Cephes-style polynomials,
// about 1 ulp on the ranges the ops use; IEEE special values (0, inf, -inf, NaN) are honoured,
// except that results below FLT_MIN flush to 0 in vexp (a difference of < 1.2e-38 absolute).
// CUDA code uses the device libm (logf, log1pf, expf) instead; double uses the C library.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "concrete_ext/philox.h"

namespace concrete_ext {
namespace vm {

inline float as_float(int32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int32_t as_int(float f) { int32_t i; std::memcpy(&i, &f, 4); return i; }

// log(x) for x >= 0 (negative x gives NaN like logf).
inline float vlog(float x) {
  const bool tiny = x < 1.17549435e-38f;  // subnormal or zero: rescale by 2^23 first
  const float xs = tiny ? x * 8388608.0f : x;
  const int32_t bits = as_int(xs);
  int32_t e = ((bits >> 23) & 0xff) - 126;            // xs = m 2^e, m in [0.5, 1)
  float m = as_float((bits & 0x007fffff) | 0x3f000000);
  const bool small = m < 0.70710678118654752f;
  e -= small ? 1 : 0;
  m = small ? (m + m - 1.0f) : (m - 1.0f);           // m - 1 in [-0.2929, 0.4142]
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const float fe = static_cast<float>(e - (tiny ? 23 : 0));
  float y = m * z * p;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  float r = m + y;
  r += 0.693359375f * fe;
  // Special values: log(0) = -inf, log(inf) = inf, log(NaN or negative) = NaN. Written as one
  // nested select: other spellings of the same selects stop GCC 12 from vectorising callers.
  const float special = (x == 0.0f) ? -INFINITY : NAN;
  return (x > 0.0f && x < INFINITY) ? r : (x == INFINITY ? x : special);
}


// exp(x); exp(-inf) = 0 exactly, which keeps masked categories at exactly 0.
inline float vexp(float x) {
  // Clamp and round with selects and floor: std::fmin/fmax/nearbyint keep GCC 12 from vectorising.
  const float xc = x < -87.33654f ? -87.33654f : (x > 88.72283f ? 88.72283f : x);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  // 2^n in two halves so that n = 128 (x just below 88.72) does not overflow the exponent field.
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t n1 = ni >> 1;
  const float res = p * as_float((n1 + 127) << 23) * as_float((ni - n1 + 127) << 23);
  float out = x < -87.33654f ? 0.0f : res;
  out = x > 88.72283f ? INFINITY : out;
  return x != x ? x : out;
}


// The log policy of philox.h's noise transforms for the CPU loops.
struct VecOps {
  static inline float log(float v) { return vlog(v); }
  static inline float exp(float v) { return vexp(v); }
  // log1p(v) for v > -1 by Goldberg's trick on vlog.
  static inline float log1p(float v) {
    const float w = 1.0f + v;
    const float d = w - 1.0f;
    return d == 0.0f ? v : vlog(w) * (v / d);
  }
  // log1p(-v) for v in (0, 1/2]: the atanh series of philox.h (no log, vectorises).
  static inline float log1m(float v) {
    return log1m_series(v, [](float a, float b) { return a / b; });
  }
  static inline double log(double v) { return std::log(v); }
  static inline double exp(double v) { return std::exp(v); }
  static inline double log1p(double v) { return std::log1p(v); }
  static inline double log1m(double v) { return std::log1p(-v); }
};

}  // namespace vm
}  // namespace concrete_ext
