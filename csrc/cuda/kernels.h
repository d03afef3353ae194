// The CUDA kernels, one function per kernel, grouped by family as the files in csrc/cuda/ (their
// CPU counterparts: csrc/cpu/kernels.h). Each reads the argument struct the host fills
// (concrete_ext/kernel_args.h), launches on `Launch::stream` and returns cudaGetLastError().
// No ATen here: the .cu files compile against this, the shared headers, CUB and c10's 16-bit types.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <tuple>

#include <ATen/cuda/PhiloxCudaState.h>

#include "concrete_ext/kernel_args.h"

namespace concrete_ext {
namespace cuda {

// What a launch needs from the host: the stream, the device's size (for grid-stride grids) and,
// for kernels that draw noise, the Philox state of the call (host/device.h: philox_state).
struct Launch {
  cudaStream_t stream = nullptr;
  int sms = 1;
  int threads_per_sm = 2048;
  at::PhiloxCudaState philox;
};

// concrete_sample.cu
cudaError_t concrete_sample(const SampleArgs& a, const Launch& l);
cudaError_t concrete_sample_backward(const SampleBackwardArgs& a, const Launch& l);
// gumbel_softmax.cu
cudaError_t gumbel_max(const GumbelMaxArgs& a, const Launch& l);
cudaError_t gumbel_softmax_hard_backward(const HardBackwardArgs& a, const Launch& l);
// concrete_log_prob.cu
cudaError_t concrete_log_prob(const LogProbArgs& a, const Launch& l);
cudaError_t concrete_log_prob_backward(const LogProbBackwardArgs& a, const Launch& l);
// relaxed_kl.cu
cudaError_t relaxed_kl(const RelaxedKlArgs& a, const Launch& l);
cudaError_t relaxed_kl_backward(const RelaxedKlBackwardArgs& a, const Launch& l);
// binary_concrete.cu
cudaError_t binary_sample(const BinarySampleArgs& a, const Launch& l);
cudaError_t binary_sample_backward(const BinarySampleBackwardArgs& a, const Launch& l);
cudaError_t binary_log_prob(const BinaryLogProbArgs& a, const Launch& l);
cudaError_t binary_log_prob_backward(const BinaryLogProbBackwardArgs& a, const Launch& l);
// noise.cu
cudaError_t noise(const NoiseArgs& a, const Launch& l);
// index.cu
cudaError_t index_sample(const IndexArgs& a, const Launch& l);

}  // namespace cuda
}  // namespace concrete_ext
