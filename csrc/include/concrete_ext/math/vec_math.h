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

// Forced inline: a call left in a loop keeps it scalar (GCC's size limits leave these as calls in
// the large per-ISA block functions of the CPU kernels otherwise).
#if defined(__GNUC__)
#define CE_VM_INLINE inline __attribute__((always_inline))
#else
#define CE_VM_INLINE inline
#endif

CE_VM_INLINE float as_float(int32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
CE_VM_INLINE int32_t as_int(float f) { int32_t i; std::memcpy(&i, &f, 4); return i; }

// log(x) for x >= 0 (negative x gives NaN like logf).
CE_VM_INLINE float vlog(float x) {
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
CE_VM_INLINE float vexp(float x) {
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


// exp(x) for x <= 0 (or -inf, or NaN), as in softmax terms exp(v - max): vexp without the
// overflow side (one scaling by 2^n, n in [-126, 0], and one select). exp(-inf) = 0 exactly; NaN
// propagates through the arithmetic; results below FLT_MIN flush to 0 as in vexp. Positive x is
// outside the contract (wrong results, not UB).
CE_VM_INLINE float vexp_nonpos(float x) {
  const bool under = x < -87.33654f;
  const float xc = under ? -87.33654f : x;
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
  const float res = p * as_float((static_cast<int32_t>(n) + 127) << 23);
  return under ? 0.0f : res;
}

CE_VM_INLINE double as_double(int64_t i) { double d; std::memcpy(&d, &i, 8); return d; }
CE_VM_INLINE int64_t as_int64(double d) { int64_t i; std::memcpy(&i, &d, 8); return i; }

// log(x) in double for the CPU loops' per-row log-sum-exps (log of a row total in [1, n]), where a
// libm call per row dominates short rows. Cephes' log: log(1 + m) = m - m^2/2 + m^3 P(m) / Q(m) for
// 1 + m in [sqrt(1/2), sqrt(2)), about 1 ulp; branch-free, so GCC vectorises loops over rows.
// Special values as vlog. Not used for noise (fp64 noise keeps libm's log).
CE_VM_INLINE double vlogd(double x) {
  const bool tiny = x < 2.2250738585072014e-308;  // subnormal or zero: rescale by 2^54 first
  const double xs = tiny ? x * 18014398509481984.0 : x;
  const int64_t bits = as_int64(xs);
  int64_t e = ((bits >> 52) & 0x7ff) - 1022;  // xs = m 2^e, m in [0.5, 1)
  double m = as_double((bits & 0x000fffffffffffffLL) | 0x3fe0000000000000LL);
  const bool small = m < 0.70710678118654752440;
  e -= small ? 1 : 0;
  m = small ? (m + m - 1.0) : (m - 1.0);  // m - 1 in [-0.2929, 0.4142]
  const double z = m * m;
  double p = 1.01875663804580931796e-4;
  p = p * m + 4.97494994976747001425e-1;
  p = p * m + 4.70579119878881725854e0;
  p = p * m + 1.44989225341610930846e1;
  p = p * m + 1.79368678507819816313e1;
  p = p * m + 7.70838733755885391666e0;
  double q = m + 1.12873587189167450590e1;
  q = q * m + 4.52279145837532221105e1;
  q = q * m + 8.29875266912776603211e1;
  q = q * m + 7.11544750618563894466e1;
  q = q * m + 2.31251620126765340583e1;
  const double fe = static_cast<double>(e - (tiny ? 54 : 0));
  double y = m * (z * p / q);
  y -= fe * 2.121944400546905827679e-4;
  y -= 0.5 * z;
  double r = m + y;
  r += fe * 0.693359375;
  const double special = (x == 0.0) ? -static_cast<double>(INFINITY) : static_cast<double>(NAN);
  return (x > 0.0 && x < static_cast<double>(INFINITY)) ? r
                                                        : (x == static_cast<double>(INFINITY) ? x : special);
}

// The log policy of philox.h's noise transforms for the CPU loops.
struct VecOps {
  static CE_VM_INLINE float log(float v) { return vlog(v); }
  static CE_VM_INLINE float exp(float v) { return vexp(v); }
  // log1p(v) for v > -1 by Goldberg's trick on vlog.
  static CE_VM_INLINE float log1p(float v) {
    const float w = 1.0f + v;
    const float d = w - 1.0f;
    return d == 0.0f ? v : vlog(w) * (v / d);
  }
  // log(x) - log1p(-x) with log1p by Goldberg's trick; the difference is taken inside log1p's
  // select, where the compiler fuses it with log1p's product (FMA ISAs), as in the scalar loop the
  // binary sample's backward had before it was vectorised: same values as then.
  static CE_VM_INLINE float log_odds(float x) {
    const float lx = vlog(x);
    const float v = -x;
    const float w = 1.0f + v;
    const float d = w - 1.0f;
    return d == 0.0f ? lx - v : lx - vlog(w) * (v / d);
  }
  static CE_VM_INLINE double log_odds(double x) { return std::log(x) - std::log1p(-x); }
  // log1p(-v) for v in (0, 1/2]: the atanh series of philox.h (no log, vectorises).
  static CE_VM_INLINE float log1m(float v) {
    return log1m_series(v, [](float a, float b) __attribute__((always_inline)) { return a / b; });
  }
  static CE_VM_INLINE double log(double v) { return std::log(v); }
  static CE_VM_INLINE double exp(double v) { return std::exp(v); }
  static CE_VM_INLINE double log1p(double v) { return std::log1p(v); }
  static CE_VM_INLINE double log1m(double v) { return std::log1p(-v); }
};

}  // namespace vm
}  // namespace concrete_ext
