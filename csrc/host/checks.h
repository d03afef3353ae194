// Argument checks shared by every op's host code. Each message names the argument and what is
// wrong; TORCH_CHECK_* raise the matching Python exception (ValueError, TypeError, IndexError).
#pragma once

#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>

namespace concrete_ext {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   " must have a floating dtype (float32, float64, float16 or bfloat16), got ",
                   t.scalar_type());
}

inline void check_same(const at::Tensor& t, const at::Tensor& ref, const char* name,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name,
                    " is on ", ref.device());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " has dtype ", t.scalar_type(),
                   " but ", ref_name, " has dtype ", ref.scalar_type());
}

inline void check_same_shape(const at::Tensor& t, const at::Tensor& ref, const char* name,
                             const char* ref_name) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), name, " has shape ", t.sizes(), " but ", ref_name,
                    " has shape ", ref.sizes());
}

// The category dimension: wrapped, and the tensor must have at least one dimension.
inline int64_t category_dim(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK_VALUE(t.dim() >= 1, name, " must have at least one dimension (the categories)");
  TORCH_CHECK_INDEX(dim >= -t.dim() && dim < t.dim(), "dim ", dim, " is out of range for ", name,
                    " with ", t.dim(), " dimensions");
  const int64_t d = at::maybe_wrap_dim(dim, t.dim());
  TORCH_CHECK_VALUE(t.size(d) >= 1, name, " has no categories: size 0 along dim ", dim);
  return d;
}

}  // namespace concrete_ext
