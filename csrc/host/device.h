// Calling a kernel on the device of the op's tensors: launch(args, like, rng, kernel) runs the CPU
// kernel cpu::NAME or the CUDA kernel cuda::NAME (CE_KERNEL(NAME) names both) with the seed state of
// that device. The host code of the ops (categorical.cpp, binary.cpp) is written once for both.
#pragma once

#include <ATen/ATen.h>

#include "concrete_ext/kernel_args.h"
#include "cpu/kernels.h"
#include "host/tensors.h"

#ifdef CE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/kernels.h"
#endif

namespace concrete_ext {

#ifdef CE_WITH_CUDA
template <class Args>
using CudaKernel = cudaError_t (*)(const Args&, const cuda::Launch&);
#define CE_KERNEL(NAME) &::concrete_ext::cpu::NAME, &::concrete_ext::cuda::NAME
#else
template <class Args>
using CudaKernel = std::nullptr_t;
#define CE_KERNEL(NAME) &::concrete_ext::cpu::NAME, nullptr
#endif

#ifdef CE_WITH_CUDA
// The seed state of a CUDA call: an explicit (seed, offset), or the generator's Philox state
// advanced by 4 (one 4-word block per counter group, as philox.h's layout needs). Under CUDA-graph
// capture the state holds device pointers that each replay advances, so every replay draws fresh
// noise, as torch.rand does.
inline at::PhiloxCudaState philox_state(const RngArgs& rng, const at::Device& device) {
  if (rng.seed.has_value()) {
    return at::PhiloxCudaState(static_cast<uint64_t>(*rng.seed),
                               static_cast<uint64_t>(rng.offset) * 4);
  }
  auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      rng.generator, at::cuda::detail::getDefaultCUDAGenerator(device.index()));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->philox_cuda_state(4);
}
#endif

// Runs the kernel for the device of `like`; `rng` (null for kernels that draw no noise) gives the
// seed: on the CPU in args.so, on CUDA as the launch's Philox state.
template <class Args>
void launch(Args& a, const at::Tensor& like, const RngArgs* rng, void (*cpu_kernel)(const Args&),
            CudaKernel<Args> cuda_kernel) {
  if (like.is_cuda()) {
#ifdef CE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(like.device());
    cuda::Launch l;
    if (rng) l.philox = philox_state(*rng, like.device());
    const auto* prop = at::cuda::getCurrentDeviceProperties();
    l.stream = at::cuda::getCurrentCUDAStream().stream();
    l.sms = prop->multiProcessorCount;
    l.threads_per_sm = prop->maxThreadsPerMultiProcessor;
    C10_CUDA_CHECK(cuda_kernel(a, l));
#else
    (void)cuda_kernel;
    TORCH_CHECK(false, "concrete_ext._C was built without CUDA kernels");
#endif
    return;
  }
  if constexpr (requires { a.so; }) {
    if (rng) a.so = cpu_seed(*rng);
  }
  cpu_kernel(a);
}

}  // namespace concrete_ext
