// CPU kernels of the binary ops: Binary Concrete sample (on (0, 1) or in logit form), its backward,
// and both log-densities with their backward; elementwise, as row kernels with n = 1 (blocks.h),
// the logistic noise from the vectorised fill (primitives.h). Formulas:
// concrete_ext/math/binary_concrete.h.
#include "concrete_ext/math/binary_concrete.h"
#include "cpu/blocks.h"
#include "cpu/kernels.h"
#include "cpu/passes.h"

namespace concrete_ext {
namespace cpu {
namespace {

namespace bc = binary_concrete;

struct BinarySample {
  template <typename T>
  struct Params {
    TauView<T> tau;
    SeedOffset so;
    bool logit_space;
  };
  // in: logits; out: sample
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t m = b.R;
    T *l = s.take<T>(), *inv = s.take<T>();
    fill_noise(Noise::kLogistic, p.so, b.r0, m, l);
    tau_values(p.tau, b.r0, m, true, inv);
    const T* ab = b.in[0];
    T* ob = b.out[0];
    if (p.logit_space) {
      for (int64_t j = 0; j < m; ++j) ob[j] = bc::sample_logit(ab[j], l[j], inv[j]);
    } else {
      for (int64_t j = 0; j < m; ++j) ob[j] = bc::sample<T, vm::VecOps>(ab[j], l[j], inv[j]);
    }
  }
};

struct BinarySampleBackward {
  template <typename T>
  struct Params {
    T* gt;  // per element, nullable
    TauView<T> tau;
    bool logit_space;
  };
  // in: sample, grad; out: d logits. d tau only where asked for: on (0, 1) it takes two logs.
  // (The pointers are restrict: GCC versions a loop over this many streams for aliasing only up
  // to 10 run-time checks, and leaves it scalar otherwise.)
  template <bool kTau, typename T>
  static CE_INLINE void elements(bool logit_space, int64_t m, const T* __restrict__ sb,
                                 const T* __restrict__ gb, const T* __restrict__ inv,
                                 T* __restrict__ db, T* __restrict__ tb) {
    if (logit_space) {
      for (int64_t j = 0; j < m; ++j) {
        db[j] = bc::sample_logit_da(gb[j], inv[j]);
        if constexpr (kTau) tb[j] = bc::sample_logit_dtau(gb[j], sb[j], inv[j]);
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {
        db[j] = bc::sample_da(gb[j], sb[j], inv[j]);
        if constexpr (kTau) tb[j] = bc::sample_dtau<T, vm::VecOps>(gb[j], sb[j], inv[j]);
      }
    }
  }
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    T* inv = s.take<T>();
    tau_values(p.tau, b.r0, b.R, true, inv);
    if (p.gt) {
      elements<true>(p.logit_space, b.R, b.in[0], b.in[1], inv, b.out[0], p.gt + b.r0);
    } else {
      elements<false>(p.logit_space, b.R, b.in[0], b.in[1], inv, b.out[0],
                      static_cast<T*>(nullptr));
    }
  }
};

struct BinaryLogProb {
  template <typename T>
  struct Params {
    TauView<T> tau;
    bool logit_space;
  };
  // in: value, logits; out: log-density
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t m = b.R;
    T* tau = s.take<T>();
    tau_values(p.tau, b.r0, m, false, tau);
    const T* vb = b.in[0];
    const T* ab = b.in[1];
    T* ob = b.out[0];
    if (p.logit_space) {
      for (int64_t j = 0; j < m; ++j)
        ob[j] = bc::logit_log_prob<T, vm::VecOps>(vb[j], ab[j], tau[j]);
    } else {
      for (int64_t j = 0; j < m; ++j) ob[j] = bc::log_prob<T, vm::VecOps>(vb[j], ab[j], tau[j]);
    }
  }
};

struct BinaryLogProbBackward {
  template <typename T>
  struct Params {
    const T* g;  // per element
    T* gt;       // per element, nullable
    TauView<T> tau;
    bool logit_space;
  };
  // in: value, logits; out: d value, d logits (each may be absent). c = 1 - 2 sigmoid(a - tau y)
  // gives every partial (math/binary_concrete.h); d tau only where asked for. (Restrict pointers:
  // see BinarySampleBackward.)
  template <bool kTau, typename T>
  static CE_INLINE void elements(bool logit_space, int64_t m, const T* __restrict__ vb,
                                 const T* __restrict__ ab, const T* __restrict__ gb,
                                 const T* __restrict__ tau, T* __restrict__ gvb,
                                 T* __restrict__ gab, T* __restrict__ gtb) {
    if (logit_space) {
      for (int64_t j = 0; j < m; ++j) {
        const T c = bc::logit_log_prob_c<T, vm::VecOps>(vb[j], ab[j], tau[j]);
        gvb[j] = gb[j] * (-tau[j] * c);
        gab[j] = gb[j] * c;
        if constexpr (kTau) gtb[j] = gb[j] * bc::logit_log_prob_dtau(vb[j], tau[j], c);
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {
        const T x = vb[j];
        const T y = bc::logit<T, vm::VecOps>(x);
        const T c = bc::logit_log_prob_c<T, vm::VecOps>(y, ab[j], tau[j]);
        gvb[j] = gb[j] * bc::log_prob_dx(x, tau[j], c);
        gab[j] = gb[j] * c;
        if constexpr (kTau) gtb[j] = gb[j] * bc::logit_log_prob_dtau(y, tau[j], c);
      }
    }
  }
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    T* tau = s.take<T>();
    tau_values(p.tau, b.r0, b.R, false, tau);
    // Gradients nobody asked for go to a block-sized sink (keeps the loops branch-free).
    T* gvb = b.out[0] ? b.out[0] : s.take<T>();
    T* gab = b.out[1] ? b.out[1] : s.take<T>();
    const T* gb = p.g + b.r0;
    if (p.gt) {
      elements<true>(p.logit_space, b.R, b.in[0], b.in[1], gb, tau, gvb, gab, p.gt + b.r0);
    } else {
      elements<false>(p.logit_space, b.R, b.in[0], b.in[1], gb, tau, gvb, gab,
                      static_cast<T*>(nullptr));
    }
  }
};

CE_CPU_KERNEL(BinarySample)
CE_CPU_KERNEL(BinarySampleBackward)
CE_CPU_KERNEL(BinaryLogProb)
CE_CPU_KERNEL(BinaryLogProbBackward)

}  // namespace

void binary_sample(const BinarySampleArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const BinarySample::Params<T> p{tau_view<T>(a.tau), a.so, a.logit_space};
    Io<scalar_t> io;
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.out);
    CE_RUN_ROW_BLOCKS(BinarySample, scalar_t, p, io, a.numel, 1);
  });
}

void binary_sample_backward(const BinarySampleBackwardArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const BinarySampleBackward::Params<T> p{static_cast<T*>(a.grad_tau), tau_view<T>(a.tau),
                                            a.logit_space};
    Io<scalar_t> io;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.sample);
    io.period[io.n_in] = a.grad_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.grad);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_logits);
    CE_RUN_ROW_BLOCKS(BinarySampleBackward, scalar_t, p, io, a.numel, 1);
  });
}

void binary_log_prob(const BinaryLogProbArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const BinaryLogProb::Params<T> p{tau_view<T>(a.tau), a.logit_space};
    Io<scalar_t> io;
    io.period[io.n_in] = a.value_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.value);
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.out);
    CE_RUN_ROW_BLOCKS(BinaryLogProb, scalar_t, p, io, a.numel, 1);
  });
}

void binary_log_prob_backward(const BinaryLogProbBackwardArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const BinaryLogProbBackward::Params<T> p{static_cast<const T*>(a.grad),
                                             static_cast<T*>(a.grad_tau), tau_view<T>(a.tau),
                                             a.logit_space};
    Io<scalar_t> io;
    io.period[io.n_in] = a.value_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.value);
    io.period[io.n_in] = a.logits_period;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_value);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_logits);
    CE_RUN_ROW_BLOCKS(BinaryLogProbBackward, scalar_t, p, io, a.numel, 1);
  });
}

}  // namespace cpu
}  // namespace concrete_ext
