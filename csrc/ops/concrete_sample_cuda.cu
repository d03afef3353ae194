// CUDA kernels of concrete_sample / exp_concrete_sample and their backward: Philox noise in
// registers and the tempered (log-)softmax of each row in one launch; backward from the saved
// sample alone. Row configurations: cuda_common.cuh.
#include "exp_concrete_cuda.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

// ---- sample -----------------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
sample_kernel(const scalar_t* __restrict__ logits, scalar_t* __restrict__ out, int64_t rows,
              int64_t n, TauView<acc_t> tau, at::PhiloxCudaState philox, bool log_space,
              bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  constexpr int CC = LOOPED ? 1 : C;
  using R = Reducer<G, acc_t>;
  using RM = Reducer<G, MaxSum<acc_t>>;
  __shared__ union {
    typename R::Storage s;
    typename RM::Storage m;
  } red;
  const SeedOffset so = unpack_seed(philox);
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    const acc_t inv = acc_t(1) / tau.at(row);
    acc_t z[CC][V];
    acc_t m, s;
    if constexpr (LOOPED) {
      MaxSum<acc_t> st = MaxSum<acc_t>::identity();
      for_chunks<G, C, V, LOOPED>(n, lane, [&](int, int64_t k0) {
        acc_t zc[V];
        perturbed_chunk<V>(logits, base, k0, n, vec_ok, so, inv, zc);
#pragma unroll
        for (int e = 0; e < V; ++e) online_add<FastNoiseOps>(st, zc[e]);
      });
      st = RM::all_reduce(st, MaxSumOp(), red.m);
      m = st.max;
      s = st.sum;
    } else {
      acc_t mx = neg_inf<acc_t>();
#pragma unroll
      for (int c = 0; c < CC; ++c) {
#pragma unroll
        for (int e = 0; e < V; ++e) z[c][e] = neg_inf<acc_t>();
      }
      for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
        perturbed_chunk<V>(logits, base, k0, n, vec_ok, so, inv, z[c]);
#pragma unroll
        for (int e = 0; e < V; ++e) mx = z[c][e] > mx ? z[c][e] : mx;
      });
      m = R::all_reduce(mx, MaxOp(), red.s);
      acc_t sum = 0;
#pragma unroll
      for (int c = 0; c < CC; ++c) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          // exp(-inf - m) = 0 for padding and masked categories; NaN when the whole row is masked.
          const acc_t ex = FastNoiseOps::exp(z[c][e] - m);
          sum += ex;
          if (!log_space) z[c][e] = ex;
        }
      }
      s = R::all_reduce(sum, SumOp(), red.s);
    }
    const acc_t lse = m + LibmOps::log(s), inv_s = acc_t(1) / s;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t o[V];
      if constexpr (LOOPED) {
        perturbed_chunk<V>(logits, base, k0, n, vec_ok, so, inv, o);
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = log_space ? o[e] - lse : FastNoiseOps::exp(o[e] - m) * inv_s;
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = log_space ? z[c][e] - lse : z[c][e] * inv_s;
      }
      store_chunk<V>(out + base, k0, n, vec_ok, o);
    });
  }
}

// ---- sample backward --------------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
sample_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ sample,
                       scalar_t* __restrict__ grad_logits, acc_t* __restrict__ grad_tau,
                       int64_t rows, int64_t n, TauView<acc_t> tau, bool log_space, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  constexpr int CC = LOOPED ? 1 : C;
  using R = Reducer<G, double>;  // row sums in double, as the CPU kernel (n up to 2^17)
  __shared__ typename R::Storage red;
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    const acc_t inv = acc_t(1) / tau.at(row);
    acc_t sv[CC][V], gv[CC][V];
    // Pass 1: sum of dy over unmasked entries (log form) or sum of x dx (simplex form).
    double part = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t s[V], g[V];
      load_chunk<V>(sample + base, k0, n, vec_ok, s, log_space ? neg_inf<acc_t>() : acc_t(0));
      load_chunk<V>(grad + base, k0, n, vec_ok, g, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) {
        part += log_space ? ec::unmasked_dy(g[e], s[e]) : s[e] * g[e];
        if constexpr (!LOOPED) {
          sv[c][e] = s[e];
          gv[c][e] = g[e];
        }
      }
    });
    const acc_t total = static_cast<acc_t>(R::all_reduce(part, SumOp(), red));
    // Pass 2: d logits, and the temperature term.
    double acc = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t s[V], g[V], d[V];
      if constexpr (LOOPED) {
        load_chunk<V>(sample + base, k0, n, vec_ok, s, log_space ? neg_inf<acc_t>() : acc_t(0));
        load_chunk<V>(grad + base, k0, n, vec_ok, g, acc_t(0));
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          s[e] = sv[c][e];
          g[e] = gv[c][e];
        }
      }
#pragma unroll
      for (int e = 0; e < V; ++e) {
        if (log_space) {
          const acc_t dz = ec::dz_from_log(g[e], s[e], FastNoiseOps::exp(s[e]), total);
          d[e] = dz * inv;
          if (grad_tau) acc += ec::dtau_term_log(dz, s[e]);
        } else {
          const acc_t dz = ec::dz_from_simplex(g[e], s[e], total);
          d[e] = dz * inv;
          if (grad_tau) acc += ec::dtau_term_simplex(dz, s[e], s[e] > acc_t(0) ? LibmOps::log(s[e]) : acc_t(0));
        }
      }
      store_chunk<V>(grad_logits + base, k0, n, vec_ok, d);
    });
    if (grad_tau) {  // uniform across the group: every thread takes the branch or none does
      const double t = R::all_reduce(acc, SumOp(), red);
      if (lane == 0) grad_tau[row] = -inv * static_cast<acc_t>(t);
    }
  }
}

template <typename scalar_t, typename acc_t>
struct SampleRun {
    const scalar_t* a; scalar_t* o; int64_t rows, n; TauView<acc_t> tv;
    at::PhiloxCudaState philox; bool log_space, vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      sample_kernel<scalar_t, acc_t, G, C, L><<<row_grid<G>(rows), Group<G>::kBlock, 0, stream>>>(
          a, o, rows, n, tv, philox, log_space, vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

template <typename scalar_t, typename acc_t>
struct SampleBackwardRun {
    const scalar_t *g, *s; scalar_t* d; acc_t* gt; int64_t rows, n; TauView<acc_t> tv;
    bool log_space, vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      sample_backward_kernel<scalar_t, acc_t, G, C, L>
          <<<row_grid<G>(rows), Group<G>::kBlock, 0, stream>>>(g, s, d, gt, rows, n, tv,
                                                               log_space, vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

}  // namespace

void Kernels::sample(const at::Tensor& logits, at::Tensor& out, const Temperature& tau,
                     const RngArgs& rng, bool log_space) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), n = logits.size(1);
  const at::PhiloxCudaState philox = philox_state(rng, logits.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "concrete_sample_cuda", [&] {
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {a, o});
    const TauView<acc_t> tv = tau.view<acc_t>();
    using Run = SampleRun<scalar_t, acc_t>;
    dispatch_full<scalar_t, 1>(n, Run{a, o, rows, n, tv, philox, log_space, vec_ok, stream.stream()});
  });
}

void Kernels::sample_backward(const at::Tensor& grad, const at::Tensor& sample,
                              at::Tensor& grad_logits, const Temperature& tau,
                              at::Tensor* grad_tau, bool log_space) {
  const c10::cuda::CUDAGuard guard(sample.device());
  const int64_t rows = sample.size(0), n = sample.size(1);
  auto stream = at::cuda::getCurrentCUDAStream();
  CE_DISPATCH_FLOATING(sample.scalar_type(), "concrete_sample_backward_cuda", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* s = sample.data_ptr<scalar_t>();
    scalar_t* d = grad_logits.data_ptr<scalar_t>();
    acc_t* gt = opt_ptr<acc_t>(grad_tau);
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {g, s, d});
    const TauView<acc_t> tv = tau.view<acc_t>();
    using Run = SampleBackwardRun<scalar_t, acc_t>;
    dispatch_full<scalar_t, 2>(n, Run{g, s, d, gt, rows, n, tv, log_space, vec_ok, stream.stream()});
  });
}


}  // namespace cuda
}  // namespace concrete_ext
