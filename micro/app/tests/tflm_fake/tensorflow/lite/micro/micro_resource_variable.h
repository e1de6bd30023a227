// Host-test fake of tflite::MicroResourceVariables with TFLM's semantics: Read and Assign copy whole variables
// (Read as many bytes as the tensor's shape and type give, which must be the variable's size). Counts the calls.
#pragma once
#include <string.h>

#include "tensorflow/lite/c/common.h"

namespace tflite {
class MicroResourceVariables {
 public:
  int CreateIdIfNoneFound(const char* /*container*/, const char* shared_name) {
    for (int i = 0; i < count; ++i) {
      if (strcmp(names[i], shared_name) == 0) return i;
    }
    return -1;  // (TFLM would create one; the adapter rejects ids it did not expect)
  }
  TfLiteStatus Read(int id, const TfLiteEvalTensor* tensor) {
    if (id < 0 || id >= count) return kTfLiteError;
    size_t n = tensor->type == kTfLiteInt64 ? 8 : 4;
    for (int d = 0; d < tensor->dims->size; ++d) n *= static_cast<size_t>(tensor->dims->data[d]);
    if (n != bytes[id]) return kTfLiteError;
    memcpy(tensor->data.data, buffers[id], bytes[id]);
    ++reads;
    return kTfLiteOk;
  }
  TfLiteStatus Assign(int id, size_t count_bytes, const void* input_buffer) {
    if (id < 0 || id >= count || count_bytes != bytes[id]) return kTfLiteError;
    memcpy(buffers[id], input_buffer, count_bytes);
    ++assigns;
    return kTfLiteOk;
  }
  const char* names[8] = {};
  unsigned char* buffers[8] = {};
  size_t bytes[8] = {};
  int count = 0;
  int reads = 0, assigns = 0;
};
}  // namespace tflite
