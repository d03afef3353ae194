// The arguments of every kernel: plain structs the host code (csrc/host) fills from tensors and the
// CPU (csrc/cpu) and CUDA (csrc/cuda) kernels read. No torch headers, so the kernel files compile
// without ATen.
//
// Every tensor is contiguous. Row kernels see (rows, n) with the category dim last; binary and
// noise kernels see `numel` elements. Pointers to the op's data have the op's dtype (`dtype`);
// pointers marked "acc" hold the math type (double for fp64 ops, float otherwise). A null output
// pointer means that output was not asked for; a null gradient pointer means a zero gradient.
//
// An input with a period P > 0 (its `*_period` field; 0: none) holds only P rows (elements) and
// row r reads its row r % P: an input broadcast (stride 0) over leading sample dims, read without
// copying it out to the op's size. Outputs always have every row.
#pragma once

#include <cstdint>

#include "concrete_ext/params.h"

namespace concrete_ext {

enum class DType : int8_t { kFloat64, kFloat32, kFloat16, kBFloat16 };

// The temperature of each row (or element): a host value, or acc values at ptr[i * stride]
// (stride 0: one value for all); with a period P > 0, at ptr[(i % P) * stride].
struct TauArg {
  const void* ptr = nullptr;
  int64_t stride = 0;
  double value = 1.0;
  int64_t period = 0;
};

template <typename acc_t>
TauView<acc_t> tau_view(const TauArg& t) {
  if (t.ptr == nullptr) return TauView<acc_t>{nullptr, 0, static_cast<acc_t>(t.value), 0};
  return TauView<acc_t>{static_cast<const acc_t*>(t.ptr), t.stride, acc_t(0), t.period};
}

// ---- categorical: concrete_sample, exp_concrete_sample
// --------------------------------------------
struct SampleArgs {
  const void* logits;
  void* out;
  int64_t rows, n;
  TauArg tau;
  SeedOffset so;   // CPU; the CUDA kernels take the launch's Philox state
  bool log_space;  // ExpConcrete (log of the sample) or Concrete
  DType dtype;
  int64_t logits_period = 0;
};

struct SampleBackwardArgs {
  const void* grad;
  const void* sample;
  void* grad_logits;
  void* grad_tau;  // acc, one per row; null when the temperature needs no gradient
  int64_t rows, n;
  TauArg tau;
  bool log_space;
  DType dtype;
  int64_t grad_period = 0;
};

// ---- hard Gumbel-softmax: gumbel_max_sample and the straight-through backward
// -----------------------
struct GumbelMaxArgs {
  const void* logits;
  void* out;
  int64_t rows, n;
  SeedOffset so;       // CPU
  int64_t* rng_state;  // CUDA: the kernel writes [seed, offset] here when not null
  DType dtype;
  int64_t logits_period = 0;
};

struct HardBackwardArgs {
  const void* grad;
  const void* logits;
  void* grad_logits;
  void* grad_tau;  // acc, per row, nullable
  int64_t rows, n;
  TauArg tau;
  SeedOffset so;             // CPU: the forward's [seed, offset]
  const int64_t* rng_state;  // CUDA: the same, in device memory
  DType dtype;
  int64_t grad_period = 0, logits_period = 0;
};

// ---- categorical densities: exp_concrete_log_prob, concrete_log_prob
// -----------------------------
struct LogProbArgs {
  const void* value;
  const void* logits;
  void* out;  // one per row
  int64_t rows, n;
  TauArg tau;
  bool log_space;
  DType dtype;
  int64_t value_period = 0, logits_period = 0;
};

struct LogProbBackwardArgs {
  const void* grad;  // acc, one per row
  const void* value;
  const void* logits;
  void* grad_value;   // nullable
  void* grad_logits;  // nullable
  void* grad_tau;     // acc, per row, nullable
  int64_t rows, n;
  TauArg tau;
  bool log_space;
  DType dtype;
  int64_t value_period = 0, logits_period = 0;
};

// ---- relaxed KL: y ~ ExpConcrete(q), log kappa_q(y), log kappa_p(y) -----------------------------
struct RelaxedKlArgs {
  const void* q_logits;
  const void* p_logits;
  void* y;
  void* log_q;  // one per row
  void* log_p;  // one per row
  int64_t rows, n;
  TauArg tq, tp;
  SeedOffset so;  // CPU
  DType dtype;
  int64_t q_period = 0, p_period = 0;  // q_logits, p_logits
};

struct RelaxedKlBackwardArgs {
  const void* grad_y;      // nullable
  const void* grad_log_q;  // acc, per row, nullable
  const void* grad_log_p;  // acc, per row, nullable
  const void* y;
  const void* q_logits;
  const void* p_logits;
  void* grad_q_logits;  // nullable
  void* grad_q_tau;     // acc, per row, nullable
  void* grad_p_logits;  // nullable
  void* grad_p_tau;     // acc, per row, nullable
  int64_t rows, n;
  TauArg tq, tp;
  DType dtype;
  int64_t grad_y_period = 0, q_period = 0, p_period = 0;
};

// ---- binary, elementwise
// ----------------------------------------------------------------------------
struct BinarySampleArgs {
  const void* logits;
  void* out;
  int64_t numel;
  TauArg tau;        // per element
  SeedOffset so;     // CPU
  bool logit_space;  // the logistic form on R (Eq. 26) or the sample on (0, 1)
  DType dtype;
  int64_t logits_period = 0;
};

struct BinarySampleBackwardArgs {
  const void* grad;
  const void* sample;
  void* grad_logits;
  void* grad_tau;  // acc, per element, nullable
  int64_t numel;
  TauArg tau;
  bool logit_space;
  DType dtype;
  int64_t grad_period = 0;
};

struct BinaryLogProbArgs {
  const void* value;
  const void* logits;
  void* out;
  int64_t numel;
  TauArg tau;
  bool logit_space;
  DType dtype;
  int64_t value_period = 0, logits_period = 0;
};

struct BinaryLogProbBackwardArgs {
  const void* grad;  // acc, per element
  const void* value;
  const void* logits;
  void* grad_value;   // nullable
  void* grad_logits;  // nullable
  void* grad_tau;     // acc, per element, nullable
  int64_t numel;
  TauArg tau;
  bool logit_space;
  DType dtype;
  int64_t value_period = 0, logits_period = 0;
};

// ---- index samplers: categorical_sample, gumbel_top_k (csrc/cpu/index.cpp, csrc/cuda/index.cu)
// ----
struct IndexArgs {
  const void* logits;
  int64_t* out;  // rows x k int64 (k = 1 for categorical_sample)
  int64_t rows, n, k;
  TauArg tau;  // categorical_sample: scores logits / tau rounded to the dtype, when `scale`
  bool scale;
  bool topk;  // gumbel_top_k: k indices in decreasing order; else one, -1 for a row of no category
  SeedOffset so;  // CPU
  DType dtype;
  void* scores =
      nullptr;  // CUDA top-k with k > kIndexMaxFusedK: acc scores (rows x n), no selection
  int64_t logits_period = 0;
};
// The largest k the fused top-k kernels select in one pass (larger k: every score, then a sort).
constexpr int64_t kIndexMaxFusedK = 64;

// ---- noise
// ---------------------------------------------------------------------------------------
enum class NoiseKind : int8_t { kBits, kUniform, kExponential, kGumbel, kLogistic };

struct NoiseArgs {
  void* out;  // int64 for kBits, else `dtype`
  int64_t numel;
  NoiseKind kind;
  SeedOffset so;  // CPU
  DType dtype;
};

}  // namespace concrete_ext
