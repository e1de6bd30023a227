// Host-test fake: a MicroInterpreter that is only its outputs (see ../c/common.h).
#pragma once
#include "tensorflow/lite/c/common.h"

namespace tflite {
class MicroInterpreter {
 public:
  TfLiteTensor* output(size_t index) { return index < num_outputs ? &outputs[index] : nullptr; }
  TfLiteTensor outputs[8] = {};
  size_t num_outputs = 0;
};
}  // namespace tflite
