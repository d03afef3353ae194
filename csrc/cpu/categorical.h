// Block steps shared by the categorical CPU kernels (concrete_sample.cpp, gumbel_softmax.cpp,
// concrete_log_prob.cpp, relaxed_kl.cpp): the perturbed softmax of a block of rows and the row state
// of the log-densities, as whole-block passes (passes.h) that vectorise inside the kernels' per-ISA
// block functions. Formulas: concrete_ext/math/exp_concrete.h.
#pragma once

#include <algorithm>

#include "concrete_ext/math/exp_concrete.h"
#include "cpu/passes.h"
#include "cpu/primitives.h"

namespace concrete_ext {
namespace cpu {

namespace ec = exp_concrete;

// Rows [r0, r0 + R) of the perturbed softmax (ab: their logits): z = (a + g) / tau - max (per
// row), e = exp(z), m[r] = the row's max and sums[r] = sum_k e. A row of all -inf logits gets NaN z,
// e and sum.
template <typename acc_t>
CE_INLINE void perturbed_block(const acc_t* ab, int64_t r0, int64_t R, int64_t n,
                               const acc_t* inv, SeedOffset so, acc_t* z, acc_t* e, acc_t* m,
                               double* sums) {
  fill_noise(Noise::kGumbel, so, r0 * n, R * n, z);
  rows_max(R, n, m, z, [&](int64_t r, int64_t i) CE_LAMBDA {
    const acc_t v = ec::perturb(static_cast<acc_t>(ab[i]), z[i], inv[r]);
    z[i] = v;
    return v;
  });
  rows_sum(R, n, sums, e, [&](int64_t r, int64_t i) CE_LAMBDA {
    const acc_t v = z[i] - m[r];
    z[i] = v;
    const acc_t x = BlockMath<acc_t>::exp_nonpos(v);
    e[i] = x;
    return x;
  });
}

// Software prefetch of the next block's inputs, spread over the passes of the current block:
// the hardware prefetcher runs only a little ahead of the first pass, and one burst of prefetches
// for a whole block stalls on the miss buffers. part(k, parts) prefetches the first k / parts.
struct NextBlock {
  static constexpr int kLocality = 3;  // keep in every cache level
  const char* p[2];
  int64_t bytes;
  int64_t done = 0;
  CE_INLINE void part(int k, int parts) {
    const int64_t upto = bytes * k / parts;
    for (; done < upto; done += 64) {
      __builtin_prefetch(p[0] + done, 0, kLocality);
      __builtin_prefetch(p[1] + done, 0, kLocality);
    }
  }
};

// Whether any of `count` logits is -inf (a masked category).
template <typename acc_t, typename scalar_t>
CE_INLINE bool any_masked(const scalar_t* a, int64_t count) {
  int any = 0;
  for (int64_t i = 0; i < count; ++i) any |= ec::masked(static_cast<acc_t>(a[i])) ? 1 : 0;
  return any != 0;
}

// Row state of the log-densities over a block: w = a - tau y where `mask` (the q logits for the
// relaxed KL, else a) is not -inf, -inf elsewhere. Writes m[r] = max w, cnt[r] = the number of
// unmasked categories, sum_w[r] = their sum of w (when sum_w is given), total[r] =
// sum_k exp(w - m), and leaves exp(w - m) in s. y(i) gives y of element i (acc_t); tmp is
// block-sized scratch. Blocks without masked categories (the usual case) skip the mask tests and
// the count. Returns whether the block has masked categories.
template <bool kMasked, typename scalar_t, typename acc_t, typename Y>
CE_INLINE void density_rows(int64_t R, int64_t n, const scalar_t* a, const scalar_t* mask,
                            const acc_t* tau, const Y& y, acc_t* s, acc_t* tmp, acc_t* m,
                            double* cnt, double* sum_w, double* total, NextBlock* pf) {
  if (pf) pf->part(1, 4);
  // Every load comes before the select: GCC 12 does not vectorise loads under a condition.
  rows_max(R, n, m, s, [&](int64_t r, int64_t i) CE_LAMBDA {
    const acc_t w = ec::w_term(static_cast<acc_t>(a[i]), y(i), tau[r]);
    if constexpr (kMasked) {
      return ec::masked(static_cast<acc_t>(mask[i])) ? -kInfinity<acc_t> : w;
    } else {
      return w;
    }
  });
  if (pf) pf->part(2, 4);
  if constexpr (kMasked) {
    rows_sum(R, n, cnt, tmp, [&](int64_t, int64_t i) CE_LAMBDA {
      return ec::masked(static_cast<acc_t>(mask[i])) ? acc_t(0) : acc_t(1);
    });
    if (sum_w) {
      rows_sum(R, n, sum_w, tmp, [&](int64_t, int64_t i) CE_LAMBDA {
        const acc_t w = s[i];
        return ec::masked(static_cast<acc_t>(mask[i])) ? acc_t(0) : w;
      });
    }
  } else {
    for (int64_t r = 0; r < R; ++r) cnt[r] = static_cast<double>(n);
    if (sum_w) reduce_rows_sum(R, n, s, sum_w);
  }
  if (pf) pf->part(3, 4);
  rows_sum(R, n, total, s, [&](int64_t r, int64_t i) CE_LAMBDA {
    const acc_t x = BlockMath<acc_t>::exp_nonpos(s[i] - m[r]);
    s[i] = x;
    return x;
  });
}
// density_rows over a block, with the mask tests only where needed. kOptimistic (for a density
// whose mask is its own logits, a == mask, and that wants sum_w): a -inf logit makes its w = a - tau y
// -inf or NaN (y = -inf), so the row's sum of w is not finite; only then is the block redone with the
// mask tests (rows with other non-finite inputs land there too, and get exactly that treatment).
// Otherwise the block is scanned for -inf logits first. Both give the same values: on a row without
// masked categories the masked and unmasked passes compute the same numbers.
template <bool kOptimistic, typename scalar_t, typename acc_t, typename Y>
CE_INLINE bool density_block(int64_t R, int64_t n, const scalar_t* a, const scalar_t* mask,
                             const acc_t* tau, const Y& y, acc_t* s, acc_t* tmp, acc_t* m,
                             double* cnt, double* sum_w, double* total,
                             NextBlock* pf = nullptr) {
  bool masked;
  if constexpr (kOptimistic) {
    density_rows<false>(R, n, a, mask, tau, y, s, tmp, m, cnt, sum_w, total, pf);
    int bad = 0;
    for (int64_t r = 0; r < R; ++r) bad |= sum_w[r] - sum_w[r] == 0 ? 0 : 1;
    masked = bad != 0;
    if (masked) density_rows<true>(R, n, a, mask, tau, y, s, tmp, m, cnt, sum_w, total, nullptr);
  } else {
    masked = any_masked<acc_t>(mask, R * n);
    if (masked) {
      density_rows<true>(R, n, a, mask, tau, y, s, tmp, m, cnt, sum_w, total, pf);
    } else {
      density_rows<false>(R, n, a, mask, tau, y, s, tmp, m, cnt, sum_w, total, pf);
    }
  }
  if (pf) pf->part(4, 4);
  return masked;
}

// out[r] = log kappa of each row (minus sum_y[r] when sum_y is given), from the row state of
// density_block; combined in double (sum_w and n LSE(w) are large and cancel). `n` is the row
// length: rows with every category unmasked under one temperature share log((n-1)!) +
// (n-1) log tau and the loop over rows vectorises; others take the general formula.
template <typename scalar_t, typename acc_t>
CE_INLINE void finish_log_prob(int64_t R, int64_t n, const acc_t* tau, bool uniform_tau,
                               const acc_t* m, const double* cnt, const double* sum_w,
                               const double* total, const double* sum_y, scalar_t* out) {
  const double nd = static_cast<double>(n);
  int64_t partial = 0;
  for (int64_t r = 0; r < R; ++r) partial += cnt[r] != nd ? 1 : 0;
  if (uniform_tau && partial == 0) {
    const double c = ec::log_prob_const<double>(n, static_cast<double>(tau[0]));
    for (int64_t r = 0; r < R; ++r) {
      const double lse = static_cast<double>(m[r]) + BlockMath<acc_t>::log_total(total[r]);
      double lp = c + sum_w[r] - nd * lse;
      if (sum_y) lp -= sum_y[r];
      out[r] = static_cast<scalar_t>(lp);
    }
    return;
  }
  for (int64_t r = 0; r < R; ++r) {
    const double lse = static_cast<double>(m[r]) + BlockMath<acc_t>::log_total(total[r]);
    double lp = ec::log_prob<double>(static_cast<int64_t>(cnt[r]), static_cast<double>(tau[r]),
                                     sum_w[r], lse);
    if (sum_y) lp -= sum_y[r];
    out[r] = static_cast<scalar_t>(lp);
  }
}

}  // namespace cpu
}  // namespace concrete_ext
