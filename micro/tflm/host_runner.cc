// tinyprop_tflm_runner: runs a .tflite in the TFLM interpreter of the TFLM tree given to CMake, with the TinyProp
// custom operators registered. The host-side proof that an exported graph using TINYPROP_* ops runs in real TFLM
// (the tflite-micro Python wheel cannot load custom operators built outside its own source tree).
//
//   tinyprop_tflm_runner MODEL.tflite ARENA_BYTES IO_DIR STEPS [RESOURCE_VARIABLES]
//
// For step s = 0..STEPS-1: input i is read from IO_DIR/in_<s>_<i>.bin (the tensor's raw bytes), the model is
// invoked, output o is written to IO_DIR/out_<s>_<o>.bin; before step 0, IO_DIR/state_<o>.bin (where present) is
// copied into output o (the in-place step's training state). Prints "arena_used_bytes N" at the end. Every error is
// one line on stderr and exit code 1. Resource variables persist across the steps (one interpreter). No %zu in
// the formats: newlib's printf (the Cortex-M4F build, tflm/mps2) is built without C99 length modifiers.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "runner_platform.h"
#include "tinyprop_tflm.h"

namespace {

// Default room for resource variables when not given (a DS-CNN with Adam has ~90: weights, two slots each, ymax,
// step); the table is part of the arena, so callers pass the model's count to measure the arena as a device would.
constexpr long kDefaultResourceVariables = 256;

bool ReadFile(const char* path, void* data, size_t size) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot open %s\n", path);
    return false;
  }
  const size_t got = std::fread(data, 1, size, f);
  const bool exact = got == size && std::fgetc(f) == EOF;
  std::fclose(f);
  if (!exact) std::fprintf(stderr, "%s: expected exactly %lu bytes\n", path, static_cast<unsigned long>(size));
  return exact;
}

bool WriteFile(const char* path, const void* data, size_t size) {
  FILE* f = std::fopen(path, "wb");
  if (f == nullptr || std::fwrite(data, 1, size, f) != size) {
    std::fprintf(stderr, "cannot write %s\n", path);
    if (f != nullptr) std::fclose(f);
    return false;
  }
  return std::fclose(f) == 0;
}

// Every builtin the exporter may emit (converters/flatbuffer.py TFLM_BUILTINS that train graphs use) plus the
// TinyProp operators. AddX returns an error if registered twice; the count is checked against the capacity.
template <typename Resolver>
bool RegisterOps(Resolver& r) {
  const TfLiteStatus s[] = {
      r.AddAbs(), r.AddAdd(), r.AddAddN(), r.AddArgMax(), r.AddAssignVariable(), r.AddBatchMatMul(),
      r.AddBroadcastTo(), r.AddCallOnce(), r.AddCast(), r.AddConcatenation(), r.AddConv2D(), r.AddCumSum(),
      r.AddDepthwiseConv2D(), r.AddDiv(), r.AddEqual(), r.AddExp(), r.AddExpandDims(), r.AddFill(), r.AddFloor(),
      r.AddFullyConnected(), r.AddGather(), r.AddGatherNd(), r.AddGreater(), r.AddGreaterEqual(), r.AddIf(),
      r.AddLess(), r.AddLessEqual(), r.AddLog(), r.AddLogicalAnd(), r.AddLogicalNot(), r.AddLogicalOr(),
      r.AddLogistic(), r.AddLogSoftmax(), r.AddMaximum(), r.AddMaxPool2D(), r.AddMean(), r.AddMinimum(), r.AddMul(),
      r.AddNeg(), r.AddNotEqual(), r.AddPack(), r.AddPad(), r.AddReadVariable(), r.AddReduceMax(), r.AddReduceMin(),
      r.AddRelu(), r.AddReshape(), r.AddRound(), r.AddRsqrt(), r.AddSelectV2(), r.AddShape(), r.AddSlice(),
      r.AddSoftmax(), r.AddSplit(), r.AddSplitV(), r.AddSqrt(), r.AddSquare(), r.AddSquaredDifference(),
      r.AddSqueeze(), r.AddStridedSlice(), r.AddSub(), r.AddSum(), r.AddTanh(), r.AddTranspose(),
      r.AddTransposeConv(), r.AddUnpack(), r.AddVarHandle(), r.AddWhile(), r.AddZerosLike(),
      tinyprop::tflm::AddTinyPropOps(r)};
  for (TfLiteStatus v : s) {
    if (v != kTfLiteOk) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: %s MODEL.tflite ARENA_BYTES IO_DIR STEPS [RESOURCE_VARIABLES]\n", argv[0]);
    return 1;
  }
  const long num_variables = argc == 6 ? std::strtol(argv[5], nullptr, 10) : kDefaultResourceVariables;
  long arena_size = std::strtol(argv[2], nullptr, 10);
  const long steps = std::strtol(argv[4], nullptr, 10);
  if (arena_size <= 0 || steps <= 0 || num_variables <= 0 || num_variables > 65536) {
    std::fprintf(stderr, "ARENA_BYTES, STEPS and RESOURCE_VARIABLES must be positive integers\n");
    return 1;
  }
  FILE* f = std::fopen(argv[1], "rb");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot open %s\n", argv[1]);
    return 1;
  }
  std::fseek(f, 0, SEEK_END);
  const long model_size = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  // 16-byte alignment as on the boards; where the memory is: runner_platform.h.
  uint8_t* model_data = tinyprop::runner::ModelBuffer(static_cast<size_t>(model_size));
  uint8_t* arena = tinyprop::runner::ArenaBuffer(&arena_size);
  const bool read_ok = model_data != nullptr && arena != nullptr &&
                       std::fread(model_data, 1, model_size, f) == static_cast<size_t>(model_size);
  std::fclose(f);
  if (!read_ok) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  const tflite::Model* model = tflite::GetModel(model_data);
  static tflite::MicroMutableOpResolver<96> resolver;
  if (!RegisterOps(resolver)) {
    std::fprintf(stderr, "op registration failed (resolver capacity?)\n");
    return 1;
  }
  // Train graphs keep weights and optimizer state in resource variables, which live in the arena.
  tflite::MicroAllocator* allocator = tflite::MicroAllocator::Create(arena, static_cast<size_t>(arena_size));
  tflite::MicroResourceVariables* variables =
      allocator != nullptr ? tflite::MicroResourceVariables::Create(allocator, static_cast<int>(num_variables)) : nullptr;
  if (variables == nullptr) {
    std::fprintf(stderr, "arena of %ld bytes too small for the allocator\n", arena_size);
    return 1;
  }
  tflite::MicroInterpreter interpreter(model, resolver, allocator, variables, tinyprop::runner::Profiler());
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    std::fprintf(stderr, "AllocateTensors failed with an arena of %ld bytes (TFLM's reason above)\n", arena_size);
    return 1;
  }
  char path[4096];
  // The in-place train step keeps its training state in variable tensors that are also outputs (zeroed by
  // AllocateTensors): IO_DIR/state_<o>.bin, where present, is output o's initial value.
  for (size_t o = 0; o < interpreter.outputs_size(); ++o) {
    TfLiteTensor* t = interpreter.output(o);
    std::snprintf(path, sizeof(path), "%s/state_%lu.bin", argv[3], static_cast<unsigned long>(o));
    FILE* probe = std::fopen(path, "rb");
    if (probe == nullptr) continue;
    std::fclose(probe);
    if (!ReadFile(path, t->data.raw, t->bytes)) return 1;
  }
  for (long s = 0; s < steps; ++s) {
    for (size_t i = 0; i < interpreter.inputs_size(); ++i) {
      TfLiteTensor* t = interpreter.input(i);
      std::snprintf(path, sizeof(path), "%s/in_%ld_%lu.bin", argv[3], s, static_cast<unsigned long>(i));
      if (!ReadFile(path, t->data.raw, t->bytes)) return 1;
    }
    tinyprop::runner::InvokeStarts(s);
    const TfLiteStatus invoked = interpreter.Invoke();
    tinyprop::runner::InvokeEnded(s);
    if (invoked != kTfLiteOk) {
      std::fprintf(stderr, "Invoke failed at step %ld\n", s);
      return 1;
    }
    for (size_t o = 0; o < interpreter.outputs_size(); ++o) {
      const TfLiteTensor* t = interpreter.output(o);
      std::snprintf(path, sizeof(path), "%s/out_%ld_%lu.bin", argv[3], s, static_cast<unsigned long>(o));
      if (!WriteFile(path, t->data.raw, t->bytes)) return 1;
    }
  }
  std::printf("arena_used_bytes %lu\n", static_cast<unsigned long>(interpreter.arena_used_bytes()));
  tinyprop::runner::Report();
  // model_data and arena stay allocated: the interpreter (destroyed after this return) still refers to them.
  return 0;
}
