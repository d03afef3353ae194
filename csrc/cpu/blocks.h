// The scaffold of every CPU kernel: rows in blocks of about kBlockElems elements, in parallel over
// blocks, each block handed to one kernel body compiled per instruction set.
//
//   CE_CPU_KERNEL(K)                  defines K's per-ISA block functions (float: x86-64-v4, v3 and
//                                     the baseline, picked at load time; double: the baseline)
//   run_row_blocks<K>(dtype, params, io, rows, n)   runs K over every block of rows
//
// A kernel K is a struct with
//   template <typename T> struct Params      per-call arguments in the math type T (float, double)
//   template <typename T> static void block(const Params<T>&, const Block<T>&, Scratch&)
// The body sees the block's rows of each tensor of the op's dtype already in T: fp32 and fp64
// tensors directly, fp16 and bf16 ones through float copies (`Io` lists which tensors those are).
// So the bodies exist only for float and double: the 16-bit types share the float code, and their
// values are exactly those of computing in float and rounding at the store, as before.
//
// Binary and noise kernels are row kernels with n = 1.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "concrete_ext/kernel_args.h"
#include "concrete_ext/params.h"

#if defined(CE_CPU_CLONES)
// set by the includer (a vectorisation check compiles one ISA only)
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CE_CPU_CLONES
#endif

namespace concrete_ext {
namespace cpu {

// Elements per block: the scratch arrays of a block stay in L1/L2.
constexpr int64_t kBlockElems = 1024;
// Elements per parallel task, so that small tensors are not split across threads.
constexpr int64_t kTaskElems = 1 << 15;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-task scratch: take<U>() hands out a fresh array of `elems` U's (U of at most 8 bytes) for the
// current block; reset() starts the next block, reusing the same arrays. Arrays are allocated on
// first use, so a body can take as many as it needs and none can be handed out twice.
class Scratch {
 public:
  explicit Scratch(int64_t elems) : bytes_((elems * 8 + 63) / 64 * 64) {}
  template <typename U>
  U* take() {
    static_assert(sizeof(U) <= 8 && alignof(U) <= 64,
                  "scratch arrays hold values of up to 8 bytes");
    if (next_ == arrays_.size()) {
      arrays_.emplace_back(static_cast<char*>(::operator new(bytes_, std::align_val_t(64))));
    }
    return reinterpret_cast<U*>(arrays_[next_++].get());
  }
  void reset() { next_ = 0; }

 private:
  struct Free {
    void operator()(char* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  size_t bytes_;
  size_t next_ = 0;
  std::vector<std::unique_ptr<char, Free>> arrays_;
};

// Software prefetch of the next block's inputs, spread over the passes of the current block
// (part(k, parts) fetches the first k / parts of them): a row of 1024 floats is one 4 KiB page,
// and the hardware prefetchers do not cross pages, so without it every block starts with cache
// misses on every input; one burst of prefetches for a whole block would stall on the miss buffers.
struct Prefetch {
  static constexpr int kLocality = 3;  // keep in every cache level
  const char* p[4];
  int streams;
  int64_t bytes;
  int64_t done = 0;
  inline __attribute__((always_inline)) void part(int k, int parts) {
    const int64_t upto = bytes * k / parts;
    for (; done < upto; done += 64) {
      for (int s = 0; s < streams; ++s) __builtin_prefetch(p[s] + done, 0, kLocality);
    }
  }
};

// The rows [r0, r0 + R) of a block, n per row. in[k] / out[k] point to row r0 of the op's k-th
// elementwise input / output, row_out[k] to the per-row output of row r0 (null where the op has no
// such input or does not want that output). prefetch() fetches the next block's inputs.
template <typename T>
struct Block {
  int64_t r0, R, n;
  const T* in[4];
  T* out[4];
  T* row_out[2];
  const void* next_in[4];  // where the next block's inputs start in memory (null: none)
  int64_t next_bytes;
  Prefetch prefetch() const {
    Prefetch pf{{}, 0, next_bytes};
    for (int k = 0; k < 4; ++k) {
      if (next_in[k]) pf.p[pf.streams++] = static_cast<const char*>(next_in[k]);
    }
    return pf;
  }
};

// The tensors of the op's dtype a kernel reads and writes (null pointers are absent outputs).
// period[k] > 0: input k holds that many rows and row r reads its row r % period[k]
// (kernel_args.h).
template <typename scalar_t>
struct Io {
  const scalar_t* in[4] = {};
  scalar_t* out[4] = {};
  scalar_t* row_out[2] = {};
  int64_t period[4] = {};
  int n_in = 0, n_out = 0, n_row_out = 0;
};

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Rounds x to the op's dtype and back (the relaxed KL's sample is rounded before its densities).
template <typename scalar_t, typename T>
inline void round_to(T* x, int64_t count) {
  if constexpr (!std::is_same_v<scalar_t, T>) {
    for (int64_t i = 0; i < count; ++i) x[i] = static_cast<T>(static_cast<scalar_t>(x[i]));
  }
}

// Row r of input k (io.in[k] not null): row r % period of a periodic input.
template <typename scalar_t>
inline const scalar_t* in_row(const Io<scalar_t>& io, int k, int64_t n, int64_t r) {
  const int64_t p = io.period[k];
  return io.in[k] + (p ? r % p : r) * n;
}

// Whether the rows [r0, r0 + R) of input k are not consecutive in memory (a periodic input whose
// period ends inside them).
template <typename scalar_t>
inline bool wraps(const Io<scalar_t>& io, int k, int64_t r0, int64_t R) {
  const int64_t p = io.period[k];
  return p && r0 % p + R > p;
}

// Calls the body for every block of rows, in parallel over blocks (blocks of about kBlockElems
// elements, one row per block when rows are longer; tasks of about kTaskElems elements).
template <typename scalar_t, typename T, typename Body>
void for_row_blocks(const Io<scalar_t>& io, int64_t rows, int64_t n, const Body& body) {
  const int64_t rows_per_block = std::max<int64_t>(1, kBlockElems / n);
  const int64_t blocks = ceil_div(rows, rows_per_block);
  const int64_t grain = std::max<int64_t>(1, kTaskElems / (rows_per_block * n));
  const int64_t stride = std::max<int64_t>(kBlockElems, rows_per_block * n);
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    Scratch scratch(stride);
    for (int64_t blk = b0; blk < b1; ++blk) {
      scratch.reset();
      const int64_t r0 = blk * rows_per_block;
      const int64_t R = std::min(rows, r0 + rows_per_block) - r0;
      const int64_t count = R * n, e0 = r0 * n;
      Block<T> b{r0, R, n, {}, {}, {}, {}, 0};
      const int64_t next_rows = std::min(R, rows - (r0 + R));
      b.next_bytes = next_rows * n * static_cast<int64_t>(sizeof(scalar_t));
      for (int k = 0; k < io.n_in; ++k) {
        b.next_in[k] = io.in[k] ? in_row(io, k, n, r0 + R) : nullptr;
      }
      if constexpr (std::is_same_v<scalar_t, T>) {
        for (int k = 0; k < io.n_in; ++k) {
          if (!io.in[k]) {
            b.in[k] = nullptr;
          } else if (!wraps(io, k, r0, R)) {
            b.in[k] = in_row(io, k, n, r0);
          } else {  // a periodic input whose period ends inside the block: its rows gathered
            T* c = scratch.take<T>();
            for (int64_t r = 0; r < R; ++r) std::copy_n(in_row(io, k, n, r0 + r), n, c + r * n);
            b.in[k] = c;
          }
        }
        for (int k = 0; k < io.n_out; ++k) b.out[k] = io.out[k] ? io.out[k] + e0 : nullptr;
        for (int k = 0; k < io.n_row_out; ++k) b.row_out[k] = io.row_out[k] + r0;
        body(b, scratch);
      } else {
        // 16-bit tensors: the body reads float copies of the inputs and writes float outputs that
        // are rounded to the op's dtype here.
        for (int k = 0; k < io.n_in; ++k) {
          if (!io.in[k]) continue;
          T* c = scratch.take<T>();
          if (!wraps(io, k, r0, R)) {
            const scalar_t* src = in_row(io, k, n, r0);
            for (int64_t i = 0; i < count; ++i) c[i] = static_cast<T>(src[i]);
          } else {
            for (int64_t r = 0; r < R; ++r) {
              const scalar_t* src = in_row(io, k, n, r0 + r);
              for (int64_t i = 0; i < n; ++i) c[r * n + i] = static_cast<T>(src[i]);
            }
          }
          b.in[k] = c;
        }
        for (int k = 0; k < io.n_out; ++k) b.out[k] = io.out[k] ? scratch.take<T>() : nullptr;
        for (int k = 0; k < io.n_row_out; ++k) b.row_out[k] = scratch.take<T>();
        body(b, scratch);
        for (int k = 0; k < io.n_out; ++k) {
          if (!io.out[k]) continue;
          scalar_t* dst = io.out[k] + e0;
          for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(b.out[k][i]);
        }
        for (int k = 0; k < io.n_row_out; ++k) {
          for (int64_t r = 0; r < R; ++r)
            io.row_out[k][r0 + r] = static_cast<scalar_t>(b.row_out[k][r]);
        }
      }
    }
  });
}

// Runs kernel K (its per-ISA functions K_block, see CE_CPU_KERNEL) over every block of rows.
// `params` is K::Params<T> for the op's math type T; its per-row pointers are absolute (the body
// offsets them by the block's r0).
#define CE_RUN_ROW_BLOCKS(K, scalar_t, params, io, rows, n)                               \
  ::concrete_ext::cpu::for_row_blocks<scalar_t, ::concrete_ext::cpu::acc_type<scalar_t>>( \
      io, rows, n,                                                                        \
      [&](const ::concrete_ext::cpu::Block<::concrete_ext::cpu::acc_type<scalar_t>>& b__, \
          ::concrete_ext::cpu::Scratch& s__) { K##_block(params, b__, s__); })

// The per-ISA entry points of kernel K: K_block(const K::Params<T>&, const Block<T>&, Scratch&)
// for T = float (cloned for x86-64-v4, x86-64-v3 and the baseline) and T = double (baseline only:
// its exp and log are libm calls, which keep the loops scalar, and cloning would triple its compile
// time for nothing). The bodies inline everything they call, so each clone is vectorised for its
// ISA.
#define CE_CPU_KERNEL(K)                                                                       \
  CE_CPU_CLONES void K##_block(const K::Params<float>& p, const Block<float>& b, Scratch& s) { \
    K::block(p, b, s);                                                                         \
  }                                                                                            \
  void K##_block(const K::Params<double>& p, const Block<double>& b, Scratch& s) {             \
    K::block(p, b, s);                                                                         \
  }

// dtype dispatch: scalar_t is the op's dtype, T its math type.
#define CE_CPU_DISPATCH(DTYPE, ...)            \
  [&] {                                        \
    switch (DTYPE) {                           \
      case ::concrete_ext::DType::kFloat64: {  \
        using scalar_t = double;               \
        using T = double;                      \
        return __VA_ARGS__();                  \
      }                                        \
      case ::concrete_ext::DType::kFloat32: {  \
        using scalar_t = float;                \
        using T = float;                       \
        return __VA_ARGS__();                  \
      }                                        \
      case ::concrete_ext::DType::kFloat16: {  \
        using scalar_t = c10::Half;            \
        using T = float;                       \
        return __VA_ARGS__();                  \
      }                                        \
      case ::concrete_ext::DType::kBFloat16: { \
        using scalar_t = c10::BFloat16;        \
        using T = float;                       \
        return __VA_ARGS__();                  \
      }                                        \
    }                                          \
  }()

}  // namespace cpu
}  // namespace concrete_ext
