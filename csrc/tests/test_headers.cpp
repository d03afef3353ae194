// Unit tests of the torch-free shared headers (philox.h, math/vec_math.h, math/softmax.h),
// registered with ctest. Reads the known-answer vectors from tests/kat_vectors (path passed as
// argv[1]) so C++ and Python check the same file.
#include <cinttypes>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "concrete_ext/math/softmax.h"
#include "concrete_ext/math/vec_math.h"
#include "concrete_ext/philox.h"

using namespace concrete_ext;

static int failures = 0;
#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      ++failures;                                                          \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
    }                                                                      \
  } while (0)

static void test_kat(const char* path) {
  std::ifstream in(path);
  CHECK(in.good(), "cannot open %s", path);
  std::string line;
  int vectors = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    for (char& c : line)
      if (c == '|' || c == '-' || c == '>') c = ' ';
    std::istringstream ss(line);
    uint32_t v[10];
    for (auto& x : v) ss >> std::hex >> x;
    const uint4x32 out = philox4x32_10(uint4x32{v[0], v[1], v[2], v[3]}, v[4], v[5]);
    for (int i = 0; i < 4; ++i) {
      CHECK(out[i] == v[6 + i], "vector %d word %d: got %08x want %08x", vectors, i, out[i],
            v[6 + i]);
    }
    ++vectors;
  }
  CHECK(vectors == 3, "expected 3 known-answer vectors, read %d", vectors);
}

// The element draw follows the counter layout: element i is word i % 4 of group i / 4.
static void test_counter_layout() {
  const uint64_t seed = 0x0123456789abcdefULL, offset = 0xfedcba9876543210ULL;
  for (uint64_t i = 0; i < 64; ++i) {
    const uint4x32 g =
        philox4x32_10(uint4x32{static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                               static_cast<uint32_t>(i >> 2), 0u},
                      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    CHECK(philox_draw(seed, offset, i) == g[static_cast<int>(i & 3)], "element %" PRIu64, i);
  }
}

template <typename T, typename Ops>
static void test_transforms(const char* name) {
  const uint32_t extremes[] = {0u, 1u, 0x7fffffffu, 0x80000000u, 0xffffffffu};
  double prev_u = -1, prev_e = std::numeric_limits<double>::infinity(), prev_g = -1e9,
         prev_l = -1e9;
  for (uint32_t r : extremes) {
    const double u = uniform_from_bits<T>(r);
    const double e = exponential_from_bits<T, Ops>(r);
    const double g = gumbel_from_bits<T, Ops>(r);
    const double l = logistic_from_bits<T, Ops>(r);
    CHECK(std::isfinite(u) && u > 0 && u < 1, "%s uniform(%u) = %g not in (0, 1)", name, r, u);
    CHECK(std::isfinite(e) && e > 0 && e < 22.9, "%s exponential(%u) = %g", name, r, e);
    CHECK(std::isfinite(g) && g > -3.2 && g < 22.9, "%s gumbel(%u) = %g", name, r, g);
    CHECK(std::isfinite(l) && std::fabs(l) < 22.9, "%s logistic(%u) = %g", name, r, l);
    // Monotone in the draw: U, G, L non-decreasing; E = -log U non-increasing.
    CHECK(u >= prev_u && e <= prev_e && g >= prev_g && l >= prev_l, "%s not monotone at %u", name,
          r);
    prev_u = u, prev_e = e, prev_g = g, prev_l = l;
  }
  // Symmetry of the logistic transform: L(r) = -L(2^32 - 1 - r).
  for (uint32_t r : extremes) {
    const T lo = logistic_from_bits<T, Ops>(r), hi = logistic_from_bits<T, Ops>(0xffffffffu - r);
    CHECK(lo == -hi, "%s logistic not odd at %u", name, r);
  }
  // Against the textbook formulas in long double on random draws (independent of philox.h's
  // rewriting): a few ulps (absolute near 0, where relative error is meaningless).
  std::mt19937 rng(7);
  double worst_g = 0, worst_l = 0;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t r = i < 64 ? (i < 32 ? i : 0xffffffffu - i) : rng();
    const long double u = (static_cast<long double>(r) + 0.5L) / 4294967296.0L;
    const double gr = static_cast<double>(-std::log(-std::log(u)));
    const double lr = static_cast<double>(std::log(u) - std::log1p(-u));
    const double tol_g = std::max(std::fabs(gr), 1.0) * std::numeric_limits<T>::epsilon();
    const double tol_l = std::max(std::fabs(lr), 1.0) * std::numeric_limits<T>::epsilon();
    worst_g = std::max(worst_g, std::fabs(gumbel_from_bits<T, Ops>(r) - gr) / tol_g);
    worst_l = std::max(worst_l, std::fabs(logistic_from_bits<T, Ops>(r) - lr) / tol_l);
  }
  CHECK(worst_g < 4 && worst_l < 4, "%s: worst error %.2f / %.2f eps", name, worst_g, worst_l);
}

// The 64-bit draws of fp64 ops: element i is words 2 (i % 2) (low) and 2 (i % 2) + 1 (high) of
// group i / 2, i.e. the 32-bit draws 2i and 2i + 1.
static void test_counter_layout64() {
  const uint64_t seed = 0x0123456789abcdefULL, offset = 0xfedcba9876543210ULL;
  for (uint64_t i = 0; i < 64; ++i) {
    const uint64_t want = static_cast<uint64_t>(philox_draw(seed, offset, 2 * i + 1)) << 32 |
                          philox_draw(seed, offset, 2 * i);
    CHECK(philox_draw64(seed, offset, i) == want, "64-bit element %" PRIu64, i);
  }
}

// The transforms of 64-bit draws (fp64 ops): range, monotonicity and symmetry at the extremes, and
// the textbook formulas in long double (its 64-bit significand holds (r + 1/2) 2^-64 exactly for
// r < 2^63, and 1 - U the same way above) on random draws and the ends of both halves.
template <typename Ops>
static void test_transforms64(const char* name) {
  const uint64_t extremes[] = {0ull,
                               1ull,
                               0x7fffffffffffffffull,
                               0x8000000000000000ull,
                               0xfffffffffffffbffull,
                               0xfffffffffffffffeull,
                               ~0ull};
  double prev_u = -1, prev_e = std::numeric_limits<double>::infinity(), prev_g = -1e9,
         prev_l = -1e9;
  for (uint64_t r : extremes) {
    const double u = uniform_from_bits<double>(r);
    const double e = exponential_from_bits<double, Ops>(r);
    const double g = gumbel_from_bits<double, Ops>(r);
    const double l = logistic_from_bits<double, Ops>(r);
    CHECK(std::isfinite(u) && u > 0 && u < 1, "%s uniform(%" PRIu64 ") = %g", name, r, u);
    CHECK(std::isfinite(e) && e > 0 && e < 45.1, "%s exponential(%" PRIu64 ") = %g", name, r, e);
    CHECK(std::isfinite(g) && g > -3.9 && g < 45.1, "%s gumbel(%" PRIu64 ") = %g", name, r, g);
    CHECK(std::isfinite(l) && std::fabs(l) < 45.1, "%s logistic(%" PRIu64 ") = %g", name, r, l);
    CHECK(u >= prev_u && e <= prev_e && g >= prev_g && l >= prev_l, "%s not monotone at %" PRIu64,
          name, r);
    prev_u = u, prev_e = e, prev_g = g, prev_l = l;
    const double mirror = logistic_from_bits<double, Ops>(~r);
    CHECK(l == -mirror, "%s logistic not odd at %" PRIu64, name, r);
  }
  CHECK(uniform_from_bits<double>(0ull) == std::ldexp(1.0, -65), "%s: U(0) != 2^-65", name);
  const double e_top = exponential_from_bits<double, Ops>(~0ull);
  CHECK(e_top == std::ldexp(1.0, -65), "%s: E(2^64 - 1) = %g", name, e_top);
  std::mt19937_64 rng(11);
  double worst_g = 0, worst_l = 0;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t r = i < 64 ? (i < 32 ? static_cast<uint64_t>(i) : ~static_cast<uint64_t>(i))
                              : (i < 128 ? 0x8000000000000000ull + (i - 96) : rng());
    const bool lower = r < 0x8000000000000000ull;
    const long double w = (static_cast<long double>(lower ? r : ~r) + 0.5L) * 0x1p-64L;
    const long double e = lower ? -std::log(w) : -std::log1p(-w);
    const double gr = static_cast<double>(-std::log(e));
    const double lr =
        static_cast<double>(lower ? std::log(w) - std::log1p(-w) : std::log1p(-w) - std::log(w));
    const double tol_g = std::max(std::fabs(gr), 1.0) * std::numeric_limits<double>::epsilon();
    const double tol_l = std::max(std::fabs(lr), 1.0) * std::numeric_limits<double>::epsilon();
    worst_g = std::max(worst_g, std::fabs(gumbel_from_bits<double, Ops>(r) - gr) / tol_g);
    worst_l = std::max(worst_l, std::fabs(logistic_from_bits<double, Ops>(r) - lr) / tol_l);
  }
  CHECK(worst_g < 4 && worst_l < 4, "%s: worst error %.2f / %.2f eps", name, worst_g, worst_l);
}

static void test_vec_math() {
  std::mt19937 rng(3);
  double worst_log = 0, worst_exp = 0;
  for (int i = 0; i < 1000000; ++i) {
    uint32_t b = rng();
    float x;
    std::memcpy(&x, &b, 4);
    if (std::isfinite(x) && x > 0) {
      const double ref = std::log(static_cast<double>(x));
      const double ulp = std::max(std::fabs(ref), 1e-30) * std::numeric_limits<float>::epsilon();
      worst_log = std::max(worst_log, std::fabs(vm::vlog(x) - ref) / ulp);
    }
    const float y = std::uniform_real_distribution<float>(-87.0f, 88.0f)(rng);
    const double ref = std::exp(static_cast<double>(y));
    worst_exp = std::max(
        worst_exp, std::fabs(vm::vexp(y) - ref) / (ref * std::numeric_limits<float>::epsilon()));
  }
  CHECK(worst_log < 2 && worst_exp < 2, "vlog %.2f, vexp %.2f eps", worst_log, worst_exp);
  CHECK(
      vm::vlog(0.0f) == -INFINITY && vm::vlog(INFINITY) == INFINITY && std::isnan(vm::vlog(-1.0f)),
      "vlog special values");
  CHECK(vm::vexp(-INFINITY) == 0.0f && vm::vexp(INFINITY) == INFINITY && std::isnan(vm::vexp(NAN)),
        "vexp special values");
}

static void test_maxsum() {
  // combine() of online log-sum-exp states equals the direct log-sum-exp, with -inf entries.
  const double v[] = {-INFINITY, 1.5, -2.0, 30.0, -INFINITY, 0.25};
  double direct = 0, m = 30.0;
  for (double x : v) direct += std::exp(x - m);
  direct = m + std::log(direct);
  MaxSum<double> left = MaxSum<double>::identity(), right = MaxSum<double>::identity();
  for (int i = 0; i < 6; ++i) {
    MaxSum<double>& st = i < 3 ? left : right;
    st = combine(st, MaxSum<double>{v[i], v[i] == -INFINITY ? 0.0 : 1.0});
  }
  CHECK(std::fabs(combine(left, right).lse() - direct) < 1e-12, "lse %.17g vs %.17g",
        combine(left, right).lse(), direct);
  CHECK(combine(MaxSum<double>::identity(), MaxSum<double>::identity()).lse() == -INFINITY,
        "empty lse");
}

int main(int argc, char** argv) {
  test_kat(argc > 1 ? argv[1] : "tests/kat_vectors/philox4x32_10.txt");
  test_counter_layout();
  test_transforms<float, LibmOps>("float/libm");
  test_transforms<float, vm::VecOps>("float/vec");
  test_transforms<double, LibmOps>("double/libm");
  test_counter_layout64();
  test_transforms64<LibmOps>("double64/libm");
  test_transforms64<vm::VecOps>("double64/vec");
  test_vec_math();
  test_maxsum();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all header tests passed\n");
  return 0;
}
