// CPU kernels of the index samplers: categorical_sample (Gumbel-max: the index of the largest
// score, -1 for a row whose scores are all -inf) and gumbel_top_k (the k largest scores in
// decreasing order). The score of category k is s_k = x_k + G_k in the math type T (float for
// 16-bit logits, double for fp64), with x_k = logits_k / tau rounded to the logits' dtype
// (categorical_sample; x_k = logits_k when tau is 1 or for top-k) and G_k the Gumbel noise of
// element k of the moved (rows, n) layout, exactly as gumbel_max_sample draws it (fill_noise); a
// NaN score counts as -inf; ties go to the lower index. So the result is that of
// concrete_ext.reference._perturbed_scores followed by argmax / a stable descending sort.
//
// Speed: a row is read once, in chunks of kChunk elements, keeping a running selection (the best
// score, or a sorted array of the k best for top-k). Computing the noise (a log of a log) of every
// element costs about 3 ns; most elements cannot reach the selection, and that can be decided from
// their Philox draw alone: G is non-decreasing in the draw r and G(r) <= -log(1 - U(r)) <=
// ln 2 (24 - floor(log2 q)) with q the top 24 bits of 2^32 - 1 - r (gumbel_bound). An element whose
// x_k + bound is below the selection's threshold (the best score, or the k-th best once k are held)
// cannot enter it (fp64 ops bound their 64-bit draw by its high word): since rounding is monotone,
// its computed score x_k + G_k is below too (a score equal to the threshold loses the tie to the
// lower index already held). Only the others get their noise computed, by fill_noise itself, so
// every score that can win is exactly the one gumbel_max_sample's kernel computes. A chunk with
// many such candidates (the first chunks of a row, while the threshold is low) is computed whole,
// as gumbel_max does.
//
// gumbel_top_k with k > kMaxFusedK computes every score of the row and selects with
// std::partial_sort under the total order (score descending, index ascending): the same result as
// the stable sort of the reference.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "cpu/blocks.h"
#include "cpu/kernels.h"
#include "cpu/passes.h"
#include "cpu/primitives.h"

namespace concrete_ext {
namespace cpu {
namespace {

constexpr int64_t kChunk = 2048;
constexpr int64_t kMaxFusedK = kIndexMaxFusedK;

// An upper bound of the Gumbel noise of draw r as fill_noise computes it (see the top of the file):
// q < 2^24 is exact in float, whose exponent is floor(log2 q) (q = 0 gives -127, a bound of 104,
// above the largest noise, 22.87). The 0.01 covers the rounding of the computed noise (a few fp32
// ulps) and of ln 2. Checked without the margin on all 2^32 draws
// (csrc/tests/check_gumbel_bound.cpp: the noise stays 1.5e-5 below) and, with the kernels' own
// noise, in tests/ops/test_index_samplers.py.
template <typename T>
CE_INLINE T gumbel_bound(uint32_t r) {
  const int32_t q = static_cast<int32_t>((~r) >> 8);
  const int32_t e = ((vm::as_int(static_cast<float>(q)) >> 23) & 0xff) - 127;
  return static_cast<T>(0.693147182f * static_cast<float>(24 - e) + 0.01f);
}
// A 64-bit draw (fp64 ops) r = 2^32 h + l: 1 - U >= (2^32 - 1 - h) 2^-32, which is what the bound
// of the 32-bit draw h assumes of its own 1 - U, so the bound of h holds (G <= -log(1 - U) up to
// 45.05 here; q = 0 still gives 104). Checked in csrc/tests/check_gumbel_bound.cpp: the noise
// reaches the bound without its margin (to 3.7e-7, where 1 - U is a power of two), never with it.
template <typename T>
CE_INLINE T gumbel_bound(uint64_t r) {
  return gumbel_bound<T>(static_cast<uint32_t>(r >> 32));
}

// The k best (score, index) pairs seen so far, sorted by score descending then index ascending.
// Scores are never NaN (NaN counts as -inf); pairs arrive in increasing index order, so a pair
// equal to a held one goes after it.
template <typename T>
struct Selection {
  T* val;
  int64_t* idx;
  int64_t k;
  int64_t count = 0;
  CE_INLINE T threshold() const { return count == k ? val[k - 1] : -kInfinity<T>; }
  CE_INLINE bool full() const { return count == k; }
  CE_INLINE void push(T s, int64_t i) {
    if (count == k) {
      if (!(s > val[k - 1])) return;
    } else {
      ++count;
    }
    int64_t p = count - 1;
    while (p > 0 && val[p - 1] < s) {
      val[p] = val[p - 1];
      idx[p] = idx[p - 1];
      --p;
    }
    val[p] = s;
    idx[p] = i;
  }
};

template <typename scalar_t, typename T>
struct Job {
  const scalar_t* a;
  int64_t* out;
  int64_t n, k;
  bool topk, scale;
  TauView<T> tau;
  SeedOffset so;
  int64_t period;  // > 0: `a` holds that many rows, row r reads row r % period
  const scalar_t* row_logits(int64_t row) const { return a + (period ? row % period : row) * n; }
};

// Per-task scratch.
template <typename T>
struct Buffers {
  std::vector<T> x, g, val;
  std::vector<Draw<T>> bits;
  std::vector<int32_t> flag;
  std::vector<int64_t> idx;
  explicit Buffers(int64_t k) : x(kChunk), g(kChunk), val(k), bits(kChunk), flag(kChunk), idx(k) {}
};

// x = the chunk's logits in T, divided by tau and rounded to the logits' dtype when scaling.
template <typename scalar_t, typename T>
CE_INLINE void load_scores(const scalar_t* a, int64_t m, bool scale, T tau, T* x) {
  if (scale) {
    for (int64_t j = 0; j < m; ++j) {
      x[j] = static_cast<T>(static_cast<scalar_t>(static_cast<T>(a[j]) / tau));
    }
  } else {
    for (int64_t j = 0; j < m; ++j) x[j] = static_cast<T>(a[j]);
  }
}

// s = x + g with NaN as -inf, in g.
template <typename T>
CE_INLINE void add_noise(const T* x, int64_t m, T* g) {
  for (int64_t j = 0; j < m; ++j) {
    const T s = x[j] + g[j];
    g[j] = s == s ? s : -kInfinity<T>;
  }
}

// One row into `sel`: x_k + G_k for the elements that can enter it.
template <typename scalar_t, typename T>
CE_INLINE void select_row(const Job<scalar_t, T>& jb, int64_t row, Buffers<T>& buf,
                          Selection<T>& sel) {
  const int64_t n = jb.n;
  const scalar_t* a = jb.row_logits(row);
  const int64_t base = row * n;
  const T tau = jb.scale ? jb.tau.at(row) : T(1);
  T *x = buf.x.data(), *g = buf.g.data();
  Draw<T>* bits = buf.bits.data();
  int32_t* flag = buf.flag.data();
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t m = std::min(kChunk, n - c0);
    load_scores(a + c0, m, jb.scale, tau, x);
    const T thr = sel.threshold();
    if (sel.full() && thr > -kInfinity<T>) {
      fill_bits(jb.so, base + c0, m, bits);
      int32_t cnt = 0;
      for (int64_t j = 0; j < m; ++j) {
        const int32_t f = (x[j] + gumbel_bound<T>(bits[j]) < thr) ? 0 : 1;
        flag[j] = f;
        cnt += f;
      }
      if (cnt == 0) continue;
      if (cnt * 8 <= m) {  // few candidates: their noise one by one
        for (int64_t j = 0; j < m; ++j) {
          if (!flag[j]) continue;
          T gj;
          fill_noise(Noise::kGumbel, jb.so, base + c0 + j, 1, &gj);
          const T s = x[j] + gj;
          sel.push(s == s ? s : -kInfinity<T>, c0 + j);
        }
        continue;
      }
    }
    // The whole chunk.
    fill_noise(Noise::kGumbel, jb.so, base + c0, m, g);
    add_noise(x, m, g);
    if (sel.k == 1) {
      const T best = max_contiguous(g, m);
      if (!sel.full() || best > sel.val[0]) {
        int64_t j = 0;
        while (!(g[j] == best)) ++j;
        sel.push(best, c0 + j);
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {
        if (!sel.full() || g[j] > sel.val[sel.k - 1]) sel.push(g[j], c0 + j);
      }
    }
  }
}

// Top-k for large k: every score of the row, then the k first in (score desc, index asc) order.
template <typename scalar_t, typename T>
CE_INLINE void sort_row(const Job<scalar_t, T>& jb, int64_t row, std::vector<T>& s,
                        std::vector<int64_t>& order, int64_t* out) {
  const int64_t n = jb.n;
  const scalar_t* a = jb.row_logits(row);
  T* sc = s.data();
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t m = std::min(kChunk, n - c0);
    T x[kChunk];
    load_scores(a + c0, m, false, T(1), x);
    fill_noise(Noise::kGumbel, jb.so, row * n + c0, m, sc + c0);
    add_noise(x, m, sc + c0);
  }
  std::iota(order.begin(), order.end(), int64_t(0));
  std::partial_sort(order.begin(), order.begin() + jb.k, order.end(), [sc](int64_t i, int64_t j) {
    return sc[i] > sc[j] || (sc[i] == sc[j] && i < j);
  });
  std::copy(order.begin(), order.begin() + jb.k, out);
}

template <typename scalar_t, typename T>
CE_INLINE void run_rows(const Job<scalar_t, T>& jb, int64_t r0, int64_t r1) {
  if (jb.topk && jb.k > kMaxFusedK) {
    std::vector<T> s(jb.n);
    std::vector<int64_t> order(jb.n);
    for (int64_t r = r0; r < r1; ++r) sort_row(jb, r, s, order, jb.out + r * jb.k);
    return;
  }
  Buffers<T> buf(jb.k);
  for (int64_t r = r0; r < r1; ++r) {
    Selection<T> sel{buf.val.data(), buf.idx.data(), jb.k};
    select_row(jb, r, buf, sel);
    if (jb.topk) {
      std::copy(buf.idx.begin(), buf.idx.begin() + jb.k, jb.out + r * jb.k);
    } else {
      jb.out[r] = sel.val[0] > -kInfinity<T> ? sel.idx[0] : -1;
    }
  }
}

// The per-ISA entry points (blocks.h: CE_CPU_CLONES); double keeps the baseline (libm noise).
CE_CPU_CLONES void rows_f32(const Job<float, float>& jb, int64_t r0, int64_t r1) {
  run_rows(jb, r0, r1);
}
CE_CPU_CLONES void rows_f16(const Job<c10::Half, float>& jb, int64_t r0, int64_t r1) {
  run_rows(jb, r0, r1);
}
CE_CPU_CLONES void rows_bf16(const Job<c10::BFloat16, float>& jb, int64_t r0, int64_t r1) {
  run_rows(jb, r0, r1);
}
void rows_f64(const Job<double, double>& jb, int64_t r0, int64_t r1) { run_rows(jb, r0, r1); }

template <typename scalar_t, typename T, typename F>
void run(const IndexArgs& a, F rows_fn) {
  const Job<scalar_t, T> jb{static_cast<const scalar_t*>(a.logits),
                            a.out,
                            a.n,
                            a.k,
                            a.topk,
                            a.scale,
                            tau_view<T>(a.tau),
                            a.so,
                            a.logits_period};
  // Rows are independent, so the result does not depend on the split.
  const int64_t grain = std::max<int64_t>(1, kTaskElems / a.n);
  at::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) { rows_fn(jb, r0, r1); });
}

}  // namespace

void index_sample(const IndexArgs& a) {
  if (a.rows == 0) return;
  switch (a.dtype) {
    case DType::kFloat64:
      return run<double, double>(a, rows_f64);
    case DType::kFloat32:
      return run<float, float>(a, rows_f32);
    case DType::kFloat16:
      return run<c10::Half, float>(a, rows_f16);
    case DType::kBFloat16:
      return run<c10::BFloat16, float>(a, rows_bf16);
  }
}

}  // namespace cpu
}  // namespace concrete_ext
