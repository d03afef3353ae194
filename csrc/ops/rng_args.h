// The random-number arguments every sampling op takes: an explicit (seed, offset), or a generator
// (the default one when None). Each backend turns them into its own seed state.
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <optional>

namespace concrete_ext {

struct RngArgs {
  std::optional<int64_t> seed;
  int64_t offset;
  std::optional<at::Generator> generator;
};

}  // namespace concrete_ext
