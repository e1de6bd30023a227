// Deterministic random-input driver for the fuzz target when libFuzzer is not available (e.g. GCC):
//   tinyprop_fuzz_driver [--iterations N] [--seconds S] [--seed X] [--max-len L] [FILE...]
// FILE arguments replay saved inputs (e.g. libFuzzer crash files) instead of generating random ones.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  uint64_t iterations = 100000, seed = 1;
  double seconds = 0.0;
  size_t max_len = 256;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) iterations = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--seconds" && i + 1 < argc) seconds = std::strtod(argv[++i], nullptr);
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--max-len" && i + 1 < argc) max_len = std::strtoull(argv[++i], nullptr, 10);
    else if (!a.empty() && a[0] != '-') files.push_back(a);
    else {
      std::fprintf(stderr, "usage: %s [--iterations N] [--seconds S] [--seed X] [--max-len L] [FILE...]\n", argv[0]);
      return 2;
    }
  }
  if (!files.empty()) {
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      LLVMFuzzerTestOneInput(data.data(), data.size());
    }
    std::printf("replayed %zu input(s)\n", files.size());
    return 0;
  }
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&s]() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> buf;
  uint64_t done = 0;
  for (; done < iterations; ++done) {
    if (seconds > 0 && (done & 255) == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > seconds)
      break;
    buf.resize(next() % (max_len + 1));
    for (auto& b : buf) b = static_cast<uint8_t>(next() >> 56);
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
  }
  std::printf("fuzz driver: %llu inputs, seed %llu, no crash\n", static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(seed));
  return 0;
}
