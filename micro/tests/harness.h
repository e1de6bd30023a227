// A tiny self-contained test harness (no downloads): TP_TEST registers a test, TP_CHECK* record failures.
#ifndef TINYPROP_TESTS_HARNESS_H_
#define TINYPROP_TESTS_HARNESS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tinyprop/tinyprop.h"

namespace tinyprop {
// Test-only printer (found by ADL from the check macros).
inline std::ostream& operator<<(std::ostream& os, Status s) { return os << StatusName(s); }
}  // namespace tinyprop

namespace tpt {

using TestFn = void (*)();
struct TestCase {
  const char* name;
  TestFn fn;
};
std::vector<TestCase>& Registry();
struct Registrar {
  Registrar(const char* name, TestFn fn) { Registry().push_back({name, fn}); }
};

// Per-run state (test binary only; the library has no global state).
struct Context {
  int failures = 0;        // failures of the current test
  int checks = 0;
  std::string golden_dir;  // --golden DIR
};
Context& Ctx();

inline void Fail(const char* file, int line, const std::string& what) {
  if (++Ctx().failures <= 20) std::cerr << "  FAIL " << file << ":" << line << ": " << what << "\n";
}

template <typename A, typename B>
std::string Describe(const char* ea, const char* eb, const A& a, const B& b) {
  std::ostringstream os;
  os.precision(9);
  os << ea << " == " << eb << " (" << a << " vs " << b << ")";
  return os.str();
}


// |a - b| <= tol * max(1, |b|)
inline bool Near(double a, double b, double tol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= tol * std::fmax(1.0, std::fabs(b));
}

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Deterministic random numbers for tests.
struct Rng {
  std::mt19937 gen;
  explicit Rng(uint32_t seed) : gen(seed) {}
  float Uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  int32_t Int(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(gen); }  // inclusive
  std::vector<float> Vec(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = Uniform(lo, hi);
    return v;
  }
  // A random subset of size k of [0, n), ascending.
  std::vector<int32_t> Subset(int32_t n, int32_t k) {
    std::vector<int32_t> all(n);
    for (int32_t i = 0; i < n; ++i) all[i] = i;
    std::shuffle(all.begin(), all.end(), gen);
    std::vector<int32_t> s(all.begin(), all.begin() + k);
    std::sort(s.begin(), s.end());
    return s;
  }
};

}  // namespace tpt

#define TP_TEST(name)                                         \
  static void name();                                         \
  static const ::tpt::Registrar name##_registrar(#name, name); \
  static void name()

#define TP_CHECK(cond)                                                   \
  do {                                                                   \
    ++::tpt::Ctx().checks;                                               \
    if (!(cond)) ::tpt::Fail(__FILE__, __LINE__, "check failed: " #cond); \
  } while (0)

#define TP_CHECK_EQ(a, b)                                                            \
  do {                                                                               \
    ++::tpt::Ctx().checks;                                                           \
    const auto tp_a_ = (a);                                                          \
    const auto tp_b_ = (b);                                                          \
    if (!(tp_a_ == tp_b_)) ::tpt::Fail(__FILE__, __LINE__, ::tpt::Describe(#a, #b, tp_a_, tp_b_)); \
  } while (0)

#define TP_CHECK_NEAR(a, b, tol)                                                                       \
  do {                                                                                                 \
    ++::tpt::Ctx().checks;                                                                             \
    const double tp_a_ = (a);                                                                          \
    const double tp_b_ = (b);                                                                          \
    if (!::tpt::Near(tp_a_, tp_b_, (tol))) ::tpt::Fail(__FILE__, __LINE__, ::tpt::Describe(#a, #b, tp_a_, tp_b_)); \
  } while (0)

#define TP_CHECK_OK(expr) TP_CHECK_EQ((expr), ::tinyprop::Status::kOk)
#define TP_CHECK_STATUS(expr, expected) TP_CHECK_EQ((expr), (expected))

#endif  // TINYPROP_TESTS_HARNESS_H_
