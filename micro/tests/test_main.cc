// Test runner: tinyprop_tests [--golden DIR] [--filter SUBSTRING] [--list]
#include <chrono>

#include "harness.h"

namespace tpt {
std::vector<TestCase>& Registry() {
  static std::vector<TestCase> registry;
  return registry;
}
Context& Ctx() {
  static Context context;
  return context;
}
}  // namespace tpt

int main(int argc, char** argv) {
  std::string filter;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--golden" && i + 1 < argc) {
      tpt::Ctx().golden_dir = argv[++i];
    } else if (a == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (a == "--list") {
      list = true;
    } else {
      std::cerr << "usage: " << argv[0] << " [--golden DIR] [--filter SUBSTRING] [--list]\n";
      return 2;
    }
  }
  int failed = 0, run = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& t : tpt::Registry()) {
    if (!filter.empty() && std::string(t.name).find(filter) == std::string::npos) continue;
    if (list) {
      std::cout << t.name << "\n";
      continue;
    }
    tpt::Ctx().failures = 0;
    t.fn();
    ++run;
    if (tpt::Ctx().failures > 0) {
      ++failed;
      std::cout << "[FAIL] " << t.name << " (" << tpt::Ctx().failures << " failed checks)\n";
    } else {
      std::cout << "[ ok ] " << t.name << "\n";
    }
  }
  if (list) return 0;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << run - failed << "/" << run << " tests passed, " << tpt::Ctx().checks << " checks, " << secs
            << " s\n";
  if (run == 0) {
    std::cout << "no test matched\n";
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
