// CUDA kernels of every op (kernels in *_cuda.cu).
#include "register_ops.h"

CE_REGISTER_OPS(CUDA, concrete_ext::cuda::Kernels)
