// The CPU kernels, one function per kernel, grouped by family as the files in csrc/cpu/ (their CUDA
// counterparts: csrc/cuda/kernels.h). Each reads the argument struct the host fills
// (concrete_ext/kernel_args.h) and runs on the calling thread plus at::parallel_for's pool.
#pragma once

#include "concrete_ext/kernel_args.h"

namespace concrete_ext {
namespace cpu {

// concrete_sample.cpp
void concrete_sample(const SampleArgs& a);
void concrete_sample_backward(const SampleBackwardArgs& a);
// gumbel_softmax.cpp
void gumbel_max(const GumbelMaxArgs& a);
void gumbel_softmax_hard_backward(const HardBackwardArgs& a);
// concrete_log_prob.cpp
void concrete_log_prob(const LogProbArgs& a);
void concrete_log_prob_backward(const LogProbBackwardArgs& a);
// relaxed_kl.cpp
void relaxed_kl(const RelaxedKlArgs& a);
void relaxed_kl_backward(const RelaxedKlBackwardArgs& a);
// binary_concrete.cpp
void binary_sample(const BinarySampleArgs& a);
void binary_sample_backward(const BinarySampleBackwardArgs& a);
void binary_log_prob(const BinaryLogProbArgs& a);
void binary_log_prob_backward(const BinaryLogProbBackwardArgs& a);
// noise.cpp
void noise(const NoiseArgs& a);
// index.cpp
void index_sample(const IndexArgs& a);

}  // namespace cpu
}  // namespace concrete_ext
