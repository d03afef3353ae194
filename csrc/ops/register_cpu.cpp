// CPU kernels of every op (kernels in *_cpu.cpp).
#include "register_ops.h"

CE_REGISTER_OPS(CPU, concrete_ext::cpu::Kernels)
