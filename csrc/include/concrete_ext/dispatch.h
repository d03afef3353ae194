// dtype dispatch for every op: fp32, fp64, fp16, bf16 with math in at::opmath_type (fp32 for the
// 16-bit types, else the type itself).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#define CE_DISPATCH_FLOATING(TYPE, NAME, ...)                                  \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, \
                                  TYPE, NAME, [&] {                            \
                                    using acc_t = at::opmath_type<scalar_t>;   \
                                    __VA_ARGS__();                             \
                                  })
