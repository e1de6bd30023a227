// Where tinyprop_tflm_runner (host_runner.cc) keeps the model and the arena, and what it reports besides its
// outputs: runner_platform_host.cc (the heap, nothing more) or a device build's own file
// (mps2/runner_platform_mps2.cc: the model in code memory, the arena in the RAM left, instruction counts).
#ifndef TINYPROP_TFLM_RUNNER_PLATFORM_H_
#define TINYPROP_TFLM_RUNNER_PLATFORM_H_

#include <cstddef>
#include <cstdint>

#include "tensorflow/lite/micro/micro_profiler_interface.h"

namespace tinyprop::runner {

// 16-byte aligned memory for a model of `bytes` bytes, nullptr (after a line on stderr) when there is none.
uint8_t* ModelBuffer(size_t bytes);
// 16-byte aligned memory for the arena: at most *bytes; *bytes becomes what it gives (a device gives no more
// than the RAM it has left). nullptr when there is none.
uint8_t* ArenaBuffer(long* bytes);
// What the interpreter reports each operator's Eval to (TFLM's MicroProfilerInterface), or nullptr.
tflite::MicroProfilerInterface* Profiler();
// Around each Invoke() of step `step`.
void InvokeStarts(long step);
void InvokeEnded(long step);
// After the last step: the platform's measures, as "name value" lines on stdout.
void Report();

}  // namespace tinyprop::runner

#endif  // TINYPROP_TFLM_RUNNER_PLATFORM_H_
