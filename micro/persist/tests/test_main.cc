// Test runner: persist_tests [--group NAME] [--filter SUBSTRING] [--list] [--write-image PATH] [--load-image PATH]
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
  std::string filter, prefix;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (a == "--group" && i + 1 < argc) {
      prefix = std::string(argv[++i]) + "_";
    } else if (a == "--list") {
      list = true;
    } else if ((a == "--write-image" || a == "--load-image") && i + 1 < argc) {
      tpt::Ctx().args.push_back(a);
      tpt::Ctx().args.push_back(argv[++i]);
    } else {
      std::cerr << "usage: " << argv[0]
                << " [--group NAME] [--filter SUBSTRING] [--list] [--write-image PATH] [--load-image PATH]\n";
      return 2;
    }
  }
  int failed = 0, run = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& t : tpt::Registry()) {
    const std::string name = t.name;
    if (!filter.empty() && name.find(filter) == std::string::npos) continue;
    if (!prefix.empty() && name.compare(0, prefix.size(), prefix) != 0) continue;
    if (list) {
      std::cout << name << "\n";
      continue;
    }
    tpt::Ctx().failures = 0;
    t.fn();
    ++run;
    if (tpt::Ctx().failures > 0) {
      ++failed;
      std::cout << "[FAIL] " << name << " (" << tpt::Ctx().failures << " failed checks)\n";
    } else {
      std::cout << "[ ok ] " << name << "\n";
    }
  }
  if (list) return 0;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << run - failed << "/" << run << " tests passed, " << tpt::Ctx().checks << " checks, " << secs << " s\n";
  if (run == 0) {
    std::cout << "no test matched\n";
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
