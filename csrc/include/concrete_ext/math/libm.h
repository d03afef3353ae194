// The scalar functions every formula takes from a policy `Ops`, so one formula text serves the CUDA
// kernels and CPU loops (LibmOps: the C / CUDA libm) and the vectorised CPU loops (vm::VecOps in
// vec_math.h: branch-free polynomials GCC vectorises).
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CE_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Forced on the host too (as __forceinline__ on the device): the CPU kernels' per-ISA block
// functions are large, and GCC's size limits would otherwise leave some of these as calls, which
// keep the loops around them scalar.
#define CE_HOST_DEVICE inline __attribute__((always_inline))
#else
#define CE_HOST_DEVICE inline
#endif

namespace concrete_ext {

struct LibmOps {
#if defined(__CUDACC__)
  static __host__ __device__ __forceinline__ float log(float v) { return logf(v); }
  static __host__ __device__ __forceinline__ float exp(float v) { return expf(v); }
  static __host__ __device__ __forceinline__ float log1p(float v) { return log1pf(v); }
#else
  static inline float log(float v) { return std::log(v); }
  static inline float exp(float v) { return std::exp(v); }
  static inline float log1p(float v) { return std::log1p(v); }
#endif
  static CE_HOST_DEVICE double log(double v) { return ::log(v); }
  static CE_HOST_DEVICE double exp(double v) { return ::exp(v); }
  static CE_HOST_DEVICE double log1p(double v) { return ::log1p(v); }
  // log1p(-v) for v in (0, 1/2] (the upper half of the noise transforms).
  template <typename T>
  static CE_HOST_DEVICE T log1m(T v) { return log1p(-v); }
  // log(x) - log1p(-x), the logit of x in (0, 1).
  template <typename T>
  static CE_HOST_DEVICE T log_odds(T x) { return log(x) - log1p(-x); }
};

}  // namespace concrete_ext
