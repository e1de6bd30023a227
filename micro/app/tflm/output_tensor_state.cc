#include "output_tensor_state.h"

#include <string.h>

#include "state_dtype.h"

namespace tinyprop {
namespace app {
uint8_t* OutputTensorState::Span(int32_t index, uint32_t offset, uint32_t bytes) {
  if (index < 0 || index >= layout_.count || first_output_ < 0) return nullptr;
  const StateVariable& v = layout_.variables[index];
  if (bytes == 0 || static_cast<uint64_t>(offset) + bytes > v.bytes) return nullptr;
  TfLiteTensor* t = interpreter_->output(static_cast<size_t>(first_output_ + index));
  if (t == nullptr || t->data.data == nullptr || t->type != TfLiteTypeOf(v.dtype) || t->bytes != v.bytes) {
    return nullptr;
  }
  return static_cast<uint8_t*>(t->data.data) + offset;
}

bool OutputTensorState::Read(int32_t index, uint32_t offset, void* out, uint32_t bytes) {
  const uint8_t* p = Span(index, offset, bytes);
  if (p == nullptr) return false;
  memcpy(out, p, bytes);
  return true;
}

bool OutputTensorState::Write(int32_t index, uint32_t offset, const void* data, uint32_t bytes) {
  uint8_t* p = Span(index, offset, bytes);
  if (p == nullptr) return false;
  memcpy(p, data, bytes);
  return true;
}

int32_t OutputTensorState::FirstMismatch(Console& console) {
  for (int32_t i = 0; i < layout_.count; ++i) {
    const StateVariable& v = layout_.variables[i];
    if (Span(i, 0, v.bytes) != nullptr) continue;
    const TfLiteTensor* t =
        first_output_ < 0 ? nullptr : interpreter_->output(static_cast<size_t>(first_output_ + i));
    console.Printf("tinyprop: model output %d is not state tensor '%s' (%u bytes, type %d expected; has %u bytes, "
                   "type %d)\n",
                   first_output_ + static_cast<int>(i), v.name, static_cast<unsigned>(v.bytes),
                   static_cast<int>(TfLiteTypeOf(v.dtype)), t == nullptr ? 0u : static_cast<unsigned>(t->bytes),
                   t == nullptr ? -1 : static_cast<int>(t->type));
    return i;
  }
  return -1;
}

}  // namespace app
}  // namespace tinyprop
