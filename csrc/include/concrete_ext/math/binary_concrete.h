// Binary Concrete formulas of one element (paper, Eq. 16, 17 and 26), shared by the CPU loops and
// the CUDA kernels. a = logit (log alpha), L = Logistic(0, 1) noise, tau = temperature.
//
// Sample:   y = (a + L) / tau  (logistic form on R, Eq. 26),  x = sigmoid(y)  (Eq. 16, in (0, 1)).
//   dy: da = dy / tau, dtau = -dy y / tau;   dx: dy = dx x (1 - x), then as above.
// Log-density in logit space, t = a - tau y:
//   log p(y) = log tau - tau y + a - 2 softplus(t)
//   d/da = 1 - 2 sigmoid(t),  d/dy = -tau (1 - 2 sigmoid(t)),  d/dtau = 1/tau - y (1 - 2 sigmoid(t)).
// On (0, 1): y = logit(x) and log p(x) = log p(y) - log x - log(1 - x) (Eq. 17 rewritten), with
//   d/dx = (d/dy log p(y) + 2x - 1) / (x (1 - x)).
#pragma once

#include "concrete_ext/math/softmax.h"

namespace concrete_ext {
namespace binary_concrete {

template <typename T>
CE_HOST_DEVICE T sample_logit(T a, T noise, T inv_tau) { return (a + noise) * inv_tau; }

template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T sample(T a, T noise, T inv_tau) {
  return sigmoid<T, Ops>(sample_logit(a, noise, inv_tau));
}

// Gradients of one logistic-form sample element: d logit, and the element's d tau (y = +-inf only
// where the logit is +-inf: the sample does not move with tau there).
template <typename T>
CE_HOST_DEVICE T sample_logit_da(T dy, T inv_tau) { return dy * inv_tau; }
template <typename T>
CE_HOST_DEVICE T sample_logit_dtau(T dy, T y, T inv_tau) {
  const bool finite = y < INFINITY_T<T>() && y > -INFINITY_T<T>();
  return finite ? -dy * y * inv_tau : T(0);
}
template <typename T>
CE_HOST_DEVICE void sample_logit_backward(T dy, T y, T inv_tau, T* da, T* dtau) {
  *da = sample_logit_da(dy, inv_tau);
  *dtau = sample_logit_dtau(dy, y, inv_tau);
}
// The same for the sample on (0, 1), dy = dx x (1 - x); saturated elements (x (1 - x) = 0 in
// working precision) have zero gradient.
template <typename T>
CE_HOST_DEVICE T sample_da(T dx, T x, T inv_tau) { return dx * (x * (T(1) - x)) * inv_tau; }
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T sample_dtau(T dx, T x, T inv_tau) {
  const T dsig = x * (T(1) - x);
  const bool live = dsig > T(0);
  const T dy = dx * dsig;
  const T y = Ops::log_odds(x);  // used only where live, x in (0, 1)
  return live ? -dy * y * inv_tau : T(0);
}
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE void sample_backward(T dx, T x, T inv_tau, T* da, T* dtau) {
  *da = sample_da(dx, x, inv_tau);
  *dtau = sample_dtau<T, Ops>(dx, x, inv_tau);
}

template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T logit_log_prob(T y, T a, T tau) {
  return Ops::log(tau) - tau * y + a - T(2) * softplus<T, Ops>(a - tau * y);
}
// c = 1 - 2 sigmoid(a - tau y), from which every partial of logit_log_prob follows:
// d/da = c, d/dy = -tau c, d/dtau = 1/tau - y c.
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T logit_log_prob_c(T y, T a, T tau) {
  return T(1) - T(2) * sigmoid<T, Ops>(a - tau * y);
}
template <typename T>
CE_HOST_DEVICE T logit_log_prob_dtau(T y, T tau, T c) { return T(1) / tau - y * c; }
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE void logit_log_prob_grads(T y, T a, T tau, T* dy, T* da, T* dtau) {
  const T c = logit_log_prob_c<T, Ops>(y, a, tau);
  *da = c;
  *dy = -tau * c;
  *dtau = logit_log_prob_dtau(y, tau, c);
}

// y = logit(x) = log x - log(1 - x).
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T logit(T x) { return Ops::log(x) - Ops::log1p(-x); }
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE T log_prob(T x, T a, T tau) {
  const T lx = Ops::log(x), l1x = Ops::log1p(-x);
  return logit_log_prob<T, Ops>(lx - l1x, a, tau) - lx - l1x;
}
// d/dx of log_prob from d/dy of logit_log_prob at y = logit(x) and c.
template <typename T>
CE_HOST_DEVICE T log_prob_dx(T x, T tau, T c) {
  return (-tau * c + T(2) * x - T(1)) / (x * (T(1) - x));
}
template <typename T, typename Ops = LibmOps>
CE_HOST_DEVICE void log_prob_grads(T x, T a, T tau, T* dx, T* da, T* dtau) {
  const T y = logit<T, Ops>(x);
  const T c = logit_log_prob_c<T, Ops>(y, a, tau);
  *da = c;
  *dtau = logit_log_prob_dtau(y, tau, c);
  *dx = log_prob_dx(x, tau, c);
}

}  // namespace binary_concrete
}  // namespace concrete_ext
