// CPU kernels of the binary ops: Binary Concrete sample (on (0, 1) or in logit form), its backward,
// and both log-densities with their backward; elementwise, as row kernels with n = 1 (blocks.h), the
// logistic noise from the vectorised fill (primitives.h). Formulas: concrete_ext/math/binary_concrete.h.
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
  // in: sample, grad; out: d logits
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t m = b.R;
    T *inv = s.take<T>(), *sink = s.take<T>();
    tau_values(p.tau, b.r0, m, true, inv);
    const T* sb = b.in[0];
    const T* gb = b.in[1];
    T* db = b.out[0];
    T* tb = p.gt ? p.gt + b.r0 : sink;
    if (p.logit_space) {
      for (int64_t j = 0; j < m; ++j) {
        T d, t;
        bc::sample_logit_backward(gb[j], sb[j], inv[j], &d, &t);
        db[j] = d;
        tb[j] = t;
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {
        T d, t;
        bc::sample_backward<T, vm::VecOps>(gb[j], sb[j], inv[j], &d, &t);
        db[j] = d;
        tb[j] = t;
      }
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
      for (int64_t j = 0; j < m; ++j) ob[j] = bc::logit_log_prob<T, vm::VecOps>(vb[j], ab[j], tau[j]);
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
  // in: value, logits; out: d value, d logits (each may be absent)
  template <typename T>
  static CE_INLINE void block(const Params<T>& p, const Block<T>& b, Scratch& s) {
    const int64_t m = b.R;
    T* tau = s.take<T>();
    tau_values(p.tau, b.r0, m, false, tau);
    const T* vb = b.in[0];
    const T* ab = b.in[1];
    const T* gb = p.g + b.r0;
    // Gradients nobody asked for go to a block-sized sink (keeps the loops branch-free).
    T* gvb = b.out[0] ? b.out[0] : s.take<T>();
    T* gab = b.out[1] ? b.out[1] : s.take<T>();
    T* gtb = p.gt ? p.gt + b.r0 : s.take<T>();
    auto store = [&](int64_t j, T dv, T da, T dt) CE_LAMBDA {
      gvb[j] = gb[j] * dv;
      gab[j] = gb[j] * da;
      gtb[j] = gb[j] * dt;
    };
    if (p.logit_space) {
      for (int64_t j = 0; j < m; ++j) {
        T dv, da, dt;
        bc::logit_log_prob_grads<T, vm::VecOps>(vb[j], ab[j], tau[j], &dv, &da, &dt);
        store(j, dv, da, dt);
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {
        T dv, da, dt;
        bc::log_prob_grads<T, vm::VecOps>(vb[j], ab[j], tau[j], &dv, &da, &dt);
        store(j, dv, da, dt);
      }
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
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.grad);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_logits);
    CE_RUN_ROW_BLOCKS(BinarySampleBackward, scalar_t, p, io, a.numel, 1);
  });
}

void binary_log_prob(const BinaryLogProbArgs& a) {
  CE_CPU_DISPATCH(a.dtype, [&] {
    const BinaryLogProb::Params<T> p{tau_view<T>(a.tau), a.logit_space};
    Io<scalar_t> io;
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.value);
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
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.value);
    io.in[io.n_in++] = static_cast<const scalar_t*>(a.logits);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_value);
    io.out[io.n_out++] = static_cast<scalar_t*>(a.grad_logits);
    CE_RUN_ROW_BLOCKS(BinaryLogProbBackward, scalar_t, p, io, a.numel, 1);
  });
}

}  // namespace cpu
}  // namespace concrete_ext
