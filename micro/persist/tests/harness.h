// Minimal self-contained test harness for the persistence component (same style as micro/tests/harness.h, but
// without the kernel library): TP_TEST registers a test, TP_CHECK* count checks and record failures.
#ifndef TINYPROP_PERSIST_TESTS_HARNESS_H_
#define TINYPROP_PERSIST_TESTS_HARNESS_H_

#include <cstdint>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tinyprop/persist.h"
#include "tinyprop/persist_sim_flash.h"

namespace tinyprop {
// Test-only printers (found by ADL from the check macros).
inline std::ostream& operator<<(std::ostream& os, PersistStatus s) { return os << PersistStatusName(s); }
inline std::ostream& operator<<(std::ostream& os, SlotState s) {
  static const char* const kNames[] = {"kNotRead", "kEmpty", "kBadHeader", "kBadPayload", "kValid"};
  const int i = static_cast<int>(s);
  return os << (i >= 0 && i < 5 ? kNames[i] : "unknown");
}
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

struct Context {
  int failures = 0;  // of the current test
  long checks = 0;
  std::vector<std::string> args;  // extra command-line arguments (--write-image PATH, --load-image PATH)
};
Context& Ctx();

inline void Fail(const char* file, int line, const std::string& what) {
  if (++Ctx().failures <= 20) std::cerr << "  FAIL " << file << ":" << line << ": " << what << "\n";
}

template <typename A, typename B>
std::string Describe(const char* ea, const char* eb, const A& a, const B& b) {
  std::ostringstream os;
  os << ea << " == " << eb << " (" << a << " vs " << b << ")";
  return os.str();
}

// Deterministic xorshift generator (identical on every platform).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint32_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<uint32_t>(s >> 16);
  }
  uint32_t Below(uint32_t n) { return n == 0 ? 0 : Next() % n; }
};

}  // namespace tpt

#define TP_TEST(name)                                          \
  static void name();                                          \
  static const ::tpt::Registrar name##_registrar(#name, name); \
  static void name()

#define TP_CHECK(cond)                                                    \
  do {                                                                    \
    ++::tpt::Ctx().checks;                                                \
    if (!(cond)) ::tpt::Fail(__FILE__, __LINE__, "check failed: " #cond); \
  } while (0)

#define TP_CHECK_EQ(a, b)                                                                          \
  do {                                                                                             \
    ++::tpt::Ctx().checks;                                                                         \
    const auto tp_a_ = (a);                                                                        \
    const auto tp_b_ = (b);                                                                        \
    if (!(tp_a_ == tp_b_)) ::tpt::Fail(__FILE__, __LINE__, ::tpt::Describe(#a, #b, tp_a_, tp_b_)); \
  } while (0)

// Like TP_CHECK_EQ but with a context string (e.g. the cut offset) in the failure message.
#define TP_CHECK_EQ_AT(a, b, where)                                                                              \
  do {                                                                                                           \
    ++::tpt::Ctx().checks;                                                                                       \
    const auto tp_a_ = (a);                                                                                      \
    const auto tp_b_ = (b);                                                                                      \
    if (!(tp_a_ == tp_b_)) ::tpt::Fail(__FILE__, __LINE__, ::tpt::Describe(#a, #b, tp_a_, tp_b_) + " at " + (where)); \
  } while (0)

#endif  // TINYPROP_PERSIST_TESTS_HARNESS_H_
