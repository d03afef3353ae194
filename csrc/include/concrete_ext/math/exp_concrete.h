// Concrete / ExpConcrete formulas of one row (paper, Appendix C), shared by the CPU loops and the
// CUDA kernels, and the relaxed-KL pass built from them (Eq. 28).
//
// Notation: a = logits (log alpha), g = Gumbel noise, tau = temperature. A category with a = -inf
// is masked: its sample is exactly 0 (y = -inf), it gets no gradient, and it is left out of the
// density, which lives on the face of the n remaining categories.
//
// Sample:   z_k = (a_k + g_k) / tau,  y_k = z_k - LSE(z),  x_k = exp(y_k) = softmax(z)_k.
//   A row whose logits are all -inf has no distribution: its sample is NaN.
// Backward of y (ExpConcrete):  dz_k = dy_k - x_k sum_j dy_j
// Backward of x (Concrete):     dz_k = x_k (dx_k - sum_j x_j dx_j)
//   then d a_k = dz_k / tau and d tau = -(1/tau) sum_k dz_k y_k  (sum_k dz_k = 0, so z may be
//   replaced by y = z - LSE(z): backward needs the saved sample only, never the noise).
// Log-density of y on the log-simplex (Appendix C.3), w_k = a_k - tau y_k over unmasked k:
//   log kappa(y) = log((n-1)!) + (n-1) log tau + sum_k w_k - n LSE(w)
//   d/da_k = 1 - n s_k,  d/dy_k = -tau (1 - n s_k),  d/dtau = (n-1)/tau - sum_k y_k (1 - n s_k),
//   with s = softmax(w). For x on the simplex: log p(x) = log kappa(log x) - sum_k log x_k and
//   d/dx_k = (d/dy_k - 1) / x_k.
// Relaxed KL sample: y ~ ExpConcrete(a_q, tau_q) and both log kappa_q(y), log kappa_p(y). With
//   upstream (gy, g_q, g_p), the total gradient on y is
//   dY_k = gy_k - g_q tau_q (1 - n s^q_k) - g_p tau_p (1 - n s^p_k); it flows through the sampler
//   as above (dz, da_q, dtau_q), and the densities add their direct terms on (a_q, tau_q, a_p,
//   tau_p).
#pragma once

#include "concrete_ext/math/softmax.h"

namespace concrete_ext {
namespace exp_concrete {

template <typename T>
CE_HOST_DEVICE bool masked(T a) {
  return a == -INFINITY_T<T>();
}

// z_k; -inf stays -inf whatever the noise.
template <typename T>
CE_HOST_DEVICE T perturb(T a, T g, T inv_tau) {
  return (a + g) * inv_tau;
}

// dz_k of the ExpConcrete sample from (dy_k, y_k, x_k = exp(y_k)) and the sum of dy_j over the
// row's unmasked entries (masked outputs are constants: their upstream gradient is ignored).
template <typename T>
CE_HOST_DEVICE T dz_from_log(T dy, T y, T x, T sum_dy) {
  return y == -INFINITY_T<T>() ? T(0) : dy - x * sum_dy;
}
template <typename T>
CE_HOST_DEVICE T unmasked_dy(T dy, T y) {
  return y == -INFINITY_T<T>() ? T(0) : dy;
}
// dz_k of the Concrete sample from (dx_k, x_k) and sum_j x_j dx_j.
template <typename T>
CE_HOST_DEVICE T dz_from_simplex(T dx, T x, T sum_xdx) {
  return x * (dx - sum_xdx);
}

// The term dz_k y_k of the temperature gradient (0 where the sample is exactly 0).
template <typename T>
CE_HOST_DEVICE T dtau_term_log(T dz, T y) {
  return y == -INFINITY_T<T>() ? T(0) : dz * y;
}
// For the Concrete sample the term is dz_k log x_k; log_x may be any row-constant shift of it.
template <typename T>
CE_HOST_DEVICE T dtau_term_simplex(T dz, T x, T log_x) {
  return x > T(0) ? dz * log_x : T(0);
}

// log((n-1)!) + (n-1) log tau: the part of log kappa that depends on n and tau only.
template <typename T>
CE_HOST_DEVICE T log_prob_const(int64_t n, T tau) {
  return log_factorial_minus_one<T>(n) + static_cast<T>(n - 1) * LibmOps::log(tau);
}
template <typename T>
CE_HOST_DEVICE T w_term(T a, T y, T tau) {
  return a - tau * y;
}

// The log-density from the row sums: sum_w = sum_k w_k, lse_w = LSE(w), n unmasked categories.
template <typename T>
CE_HOST_DEVICE T log_prob(int64_t n, T tau, T sum_w, T lse_w) {
  return log_prob_const<T>(n, tau) + sum_w - static_cast<T>(n) * lse_w;
}
// 1 - n s_k, the shared factor of every log-density partial, from s_k = exp(w_k - LSE(w)).
template <typename T>
CE_HOST_DEVICE T one_minus_ns(int64_t n, T s) {
  return T(1) - static_cast<T>(n) * s;
}
// d/dtau from sum_k y_k (1 - n s_k).
template <typename T>
CE_HOST_DEVICE T log_prob_dtau(int64_t n, T tau, T sum_y_c) {
  return static_cast<T>(n - 1) / tau - sum_y_c;
}

}  // namespace exp_concrete
}  // namespace concrete_ext
