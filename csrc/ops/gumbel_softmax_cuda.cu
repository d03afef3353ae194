// CUDA kernels of gumbel_max_sample (also the forward of the straight-through gumbel_softmax) and
// of the straight-through backward, which recomputes the soft sample from the saved (seed, offset).
#include "exp_concrete_cuda.cuh"

namespace concrete_ext {
namespace cuda {
namespace {

// ---- Gumbel-max (and the straight-through forward) ---------------------------------------------
template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
gumbel_max_kernel(const scalar_t* __restrict__ logits, scalar_t* __restrict__ out, int64_t rows,
                  int64_t n, at::PhiloxCudaState philox, int64_t* __restrict__ rng_state,
                  bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  using R = Reducer<G, ArgMax<acc_t>>;
  __shared__ typename R::Storage red;
  const SeedOffset so = unpack_seed(philox);
  if (rng_state != nullptr && blockIdx.x == 0 && threadIdx.x == 0) {
    rng_state[0] = static_cast<int64_t>(so.seed);
    rng_state[1] = static_cast<int64_t>(so.offset);
  }
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    ArgMax<acc_t> best = ArgMax<acc_t>::identity();
    // The same chunks as the register configurations, but nothing needs keeping.
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t z[V];
      perturbed_chunk<V>(logits, base, k0, n, vec_ok, so, acc_t(1), z);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        // NaN never wins (a NaN score counts as -inf), as on the CPU.
        const acc_t v = z[e] == z[e] ? z[e] : neg_inf<acc_t>();
        if (k0 + e < n) best = ArgMaxOp()(best, ArgMax<acc_t>{v, k0 + e});
      }
    });
    best = R::all_reduce(best, ArgMaxOp(), red);
    // No category beat -inf (all logits -inf, or NaN): the row has no distribution and samples
    // NaN, as the Concrete samples do (and the CPU kernel).
    const bool none = !(best.value > neg_inf<acc_t>());
    const int64_t idx = best.index;
    for_chunks<G, C, V, true>(n, lane, [&](int, int64_t k0) {
      acc_t o[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        o[e] = none ? NAN_T<acc_t>() : (k0 + e == idx ? acc_t(1) : acc_t(0));
      }
      store_chunk<V>(out + base, k0, n, vec_ok, o);
    });
  }
}

// ---- straight-through backward: recompute the soft sample --------------------------------------
template <typename scalar_t, typename acc_t, int G, int C, bool LOOPED>
__global__ void __launch_bounds__(Group<G>::kBlock)
hard_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ logits,
                     scalar_t* __restrict__ grad_logits, acc_t* __restrict__ grad_tau,
                     int64_t rows, int64_t n, TauView<acc_t> tau,
                     const int64_t* __restrict__ rng_state, bool vec_ok) {
  constexpr int V = vec_size<scalar_t>();
  constexpr int CC = LOOPED ? 1 : C;
  using R = Reducer<G, acc_t>;
  using RM = Reducer<G, MaxSum<acc_t>>;
  __shared__ union {
    typename R::Storage s;
    typename RM::Storage m;
  } red;
  const SeedOffset so{static_cast<uint64_t>(rng_state[0]), static_cast<uint64_t>(rng_state[1])};
  const int lane = Group<G>::lane();
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * Group<G>::kRowsPerBlock + Group<G>::slot();
       row < rows; row += static_cast<int64_t>(gridDim.x) * Group<G>::kRowsPerBlock) {
    const int64_t base = row * n;
    const acc_t inv = acc_t(1) / tau.at(row);
    acc_t z[CC][V];
    // Pass 1: log-sum-exp of z.
    MaxSum<acc_t> st = MaxSum<acc_t>::identity();
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V];
      perturbed_chunk<V>(logits, base, k0, n, vec_ok, so, inv, zc);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        online_add<FastNoiseOps>(st, zc[e]);
        if constexpr (!LOOPED) z[c][e] = zc[e];
      }
    });
    st = RM::all_reduce(st, MaxSumOp(), red.m);
    const acc_t lse = st.lse();
    auto soft = [&](int c, int64_t k0, acc_t (&zc)[V]) {
      if constexpr (LOOPED) {
        perturbed_chunk<V>(logits, base, k0, n, vec_ok, so, inv, zc);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) zc[e] = z[c][e];
      }
    };
    // Pass 2: sum_k x_k g_k.
    acc_t part = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V], g[V];
      soft(c, k0, zc);
      load_chunk<V>(grad + base, k0, n, vec_ok, g, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) part += FastNoiseOps::exp(zc[e] - lse) * g[e];
    });
    const acc_t sxg = R::all_reduce(part, SumOp(), red.s);
    // Pass 3: gradients.
    acc_t acc = 0;
    for_chunks<G, C, V, LOOPED>(n, lane, [&](int c, int64_t k0) {
      acc_t zc[V], g[V], d[V];
      soft(c, k0, zc);
      load_chunk<V>(grad + base, k0, n, vec_ok, g, acc_t(0));
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const acc_t x = FastNoiseOps::exp(zc[e] - lse);
        const acc_t dz = ec::dz_from_simplex(g[e], x, sxg);
        d[e] = dz * inv;
        acc += ec::dtau_term_simplex(dz, x, zc[e] - lse);
      }
      store_chunk<V>(grad_logits + base, k0, n, vec_ok, d);
    });
    if (grad_tau) {
      const acc_t t = R::all_reduce(acc, SumOp(), red.s);
      if (lane == 0) grad_tau[row] = -inv * t;
    }
  }
}

template <typename scalar_t, typename acc_t>
struct GumbelMaxRun {
    const scalar_t* a; scalar_t* o; int64_t rows, n; at::PhiloxCudaState philox;
    int64_t* state; bool vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      // One block even for an empty batch, so the rng_state is written.
      const dim3 grid = rows > 0 ? row_grid<G>(rows) : dim3(1);
      gumbel_max_kernel<scalar_t, acc_t, G, C, L><<<grid, Group<G>::kBlock, 0, stream>>>(
          a, o, rows, n, philox, state, vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

template <typename scalar_t, typename acc_t>
struct HardBackwardRun {
    const scalar_t *g, *a; scalar_t* d; acc_t* gt; int64_t rows, n; TauView<acc_t> tv;
    const int64_t* st; bool vec_ok; cudaStream_t stream;
    template <int G, int C, bool L>
    void run() const {
      hard_backward_kernel<scalar_t, acc_t, G, C, L>
          <<<row_grid<G>(rows), Group<G>::kBlock, 0, stream>>>(g, a, d, gt, rows, n, tv, st,
                                                               vec_ok);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
};

}  // namespace

void Kernels::gumbel_max(const at::Tensor& logits, at::Tensor& out, const RngArgs& rng,
                         const at::Tensor& rng_state) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), n = logits.size(1);
  const at::PhiloxCudaState philox = philox_state(rng, logits.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  int64_t* state = rng_state.defined() ? rng_state.data_ptr<int64_t>() : nullptr;
  if (rows == 0 && state == nullptr) return;
  CE_DISPATCH_FLOATING(logits.scalar_type(), "gumbel_max_cuda", [&] {
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {a, o});
    using Run = GumbelMaxRun<scalar_t, acc_t>;
    dispatch_looped<scalar_t>(n, Run{a, o, rows, n, philox, state, vec_ok, stream.stream()});
  });
}

void Kernels::gumbel_softmax_hard_backward(const at::Tensor& grad, const at::Tensor& logits,
                                           at::Tensor& grad_logits, const Temperature& tau,
                                           const at::Tensor& rng_state, at::Tensor* grad_tau) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t rows = logits.size(0), n = logits.size(1);
  auto stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor state = rng_state.contiguous();
  CE_DISPATCH_FLOATING(logits.scalar_type(), "gumbel_softmax_hard_backward_cuda", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* a = logits.data_ptr<scalar_t>();
    scalar_t* d = grad_logits.data_ptr<scalar_t>();
    acc_t* gt = opt_ptr<acc_t>(grad_tau);
    const bool vec_ok = rows_vectorizable<scalar_t>(n, {g, a, d});
    const TauView<acc_t> tv = tau.view<acc_t>();
    const int64_t* st = state.data_ptr<int64_t>();
    using Run = HardBackwardRun<scalar_t, acc_t>;
    dispatch_short<scalar_t>(n, Run{g, a, d, gt, rows, n, tv, st, vec_ok, stream.stream()});
  });
}


}  // namespace cuda
}  // namespace concrete_ext
