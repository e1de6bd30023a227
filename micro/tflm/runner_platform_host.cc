// tinyprop_tflm_runner on the host: model and arena on the heap (the runner is not device code), no measures.
#include <cstdlib>

#include "runner_platform.h"

namespace tinyprop::runner {

uint8_t* ModelBuffer(size_t bytes) { return static_cast<uint8_t*>(std::aligned_alloc(16, (bytes + 15) / 16 * 16)); }

uint8_t* ArenaBuffer(long* bytes) {
  return static_cast<uint8_t*>(std::aligned_alloc(16, (static_cast<size_t>(*bytes) + 15) / 16 * 16));
}

tflite::MicroProfilerInterface* Profiler() { return nullptr; }
void InvokeStarts(long) {}
void InvokeEnded(long) {}
void Report() {}

}  // namespace tinyprop::runner
