// CUDA kernels of the index samplers: categorical_sample (the index of the largest score, -1 for a
// row whose scores are all -inf) and gumbel_top_k (the k largest scores in decreasing order). The
// scores are those of gumbel_max_sample's kernel (gumbel_softmax.cu): s_k = x_k + G_k in the math
// type, with x_k = logits_k / tau rounded to the logits' dtype for categorical_sample (IEEE
// division) and G_k the same Gumbel noise (FastNoiseOps, the same chunks of Philox draws); NaN
// counts as -inf; ties go to the lower index. Scaffold: row_kernel.cuh (looped configurations: a
// group of G threads per row, each thread walking its chunks in increasing index order).
//
// categorical_sample: a running (max, index) per thread, then the group's ArgMax reduction (ties to
// the lower index). gumbel_top_k with k <= kIndexMaxFusedK: each thread keeps its k best in a
// sorted array (score descending, index ascending; its elements arrive in increasing index order,
// so an equal score goes after the held one), then k rounds of the group's ArgMax over the threads'
// heads merge them: each round's winner is the next of the row's k best, and its thread moves to
// its next element. The row's k best are among the union of the threads' k best, so this is exact.
// gumbel_top_k with larger k: this kernel writes every score to a temporary (Params::scores) and
// the host sorts it (at::sort, stable, descending: host/index.cpp).
#include "cuda/categorical.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

template <int KMAX>
struct IndexSelect {
  template <typename scalar_t>
  struct Params {
    const scalar_t* logits;
    int64_t* out;
    acc_type<scalar_t>* scores;  // non-null: write the scores, select nothing
    int64_t rows, n, k;
    TauView<acc_type<scalar_t>> tau;
    bool scale, topk;
    at::PhiloxCudaState philox;
    bool vec_ok;
    int64_t logits_period;
  };
  static constexpr Ladder kLadder = Ladder::kLooped;
  static constexpr int kArrays = 1;

  template <typename scalar_t>
  __device__ __forceinline__ static SeedOffset start(const Params<scalar_t>& p) {
    return unpack_seed(p.philox);
  }

  template <int G, int C, bool LOOPED, typename scalar_t, typename acc_t>
  __device__ __forceinline__ static void row(const Params<scalar_t>& p, const SeedOffset& so,
                                             int64_t row, int lane, Reduce<G, acc_t>& red) {
    constexpr int V = vec_size<scalar_t>();
    const int64_t n = p.n, base = row * n, k = p.k, a_base = wrap(row, p.logits_period) * n;
    const bool vec_ok = p.vec_ok;
    const acc_t tau = p.scale ? p.tau.at(row) : acc_t(1);
    // This thread's best scores, sorted (score descending, index ascending).
    acc_t val[KMAX];
    int64_t idx[KMAX];
    int count = 0;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t av[V];
      load_chunk<V>(p.logits + a_base, k0, n, vec_ok, av, neg_inf<acc_t>());
      Draw<acc_t> r[V];
      const int valid = static_cast<int>(n - k0 < V ? n - k0 : V);
      chunk_bits<V>(so, static_cast<uint64_t>(base + k0), valid, r);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (k0 + e >= n) continue;
        const acc_t x = p.scale ? static_cast<acc_t>(static_cast<scalar_t>(av[e] / tau)) : av[e];
        acc_t s = x + gumbel_from_bits<acc_t, FastNoiseOps>(r[e]);
        s = s == s ? s : neg_inf<acc_t>();
        if (p.scores != nullptr) {
          p.scores[base + k0 + e] = s;
          continue;
        }
        if (count == k) {
          if (!(s > val[k - 1])) continue;
        } else {
          ++count;
        }
        int q = count - 1;
        while (q > 0 && val[q - 1] < s) {
          val[q] = val[q - 1];
          idx[q] = idx[q - 1];
          --q;
        }
        val[q] = s;
        idx[q] = k0 + e;
      }
    });
    if (p.scores != nullptr) return;
    // Merge: k rounds of the group's ArgMax over the threads' heads.
    int head = 0;
    for (int64_t j = 0; j < k; ++j) {
      const ArgMax<acc_t> mine =
          head < count ? ArgMax<acc_t>{val[head], idx[head]} : ArgMax<acc_t>::identity();
      const ArgMax<acc_t> best = red.arg_max(mine);
      if (head < count && best.index == idx[head]) ++head;
      if (lane == 0) {
        if (p.topk) {
          p.out[row * k + j] = best.index;
        } else {
          p.out[row] = best.value > neg_inf<acc_t>() ? best.index : -1;
        }
      }
    }
  }
};

template <int KMAX, typename scalar_t>
cudaError_t launch_index(const IndexArgs& a, const Launch& l) {
  using acc_t = acc_type<scalar_t>;
  const auto* logits = static_cast<const scalar_t*>(a.logits);
  const typename IndexSelect<KMAX>::template Params<scalar_t> p{
      logits,
      a.out,
      static_cast<acc_t*>(a.scores),
      a.rows,
      a.n,
      a.k,
      tau_view<acc_t>(a.tau),
      a.scale,
      a.topk,
      l.philox,
      rows_vectorizable<scalar_t>(a.n, {logits}),
      a.logits_period};
  return launch_rows<IndexSelect<KMAX>>(p, l);
}

}  // namespace

cudaError_t index_sample(const IndexArgs& a, const Launch& l) {
  if (a.rows == 0) return cudaSuccess;
  return CE_CUDA_DISPATCH(a.dtype, [&] {
    if (a.scores != nullptr || a.k == 1) return launch_index<1, scalar_t>(a, l);
    if (a.k <= 8) return launch_index<8, scalar_t>(a, l);
    return launch_index<kIndexMaxFusedK, scalar_t>(a, l);
  });
}

}  // namespace cuda
}  // namespace concrete_ext
