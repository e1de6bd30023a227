#include "resource_variable_state.h"

#include <string.h>

#include "state_dtype.h"

namespace tinyprop {
namespace app {
int ResourceVariableState::Id(int32_t index) {
  if (index < 0 || index >= layout_.count) return -1;
  const int id = variables_->CreateIdIfNoneFound(nullptr, layout_.variables[index].name);
  return id >= 0 && id < num_variables_ ? id : -1;
}

bool ResourceVariableState::ReadWhole(int32_t index, void* out) {
  const int id = Id(index);
  if (id < 0) return false;
  // Read() copies as many bytes as the tensor's shape and type say: a flat [elements] tensor over `out`.
  int dims[2] = {1, static_cast<int>(layout_.variables[index].elements)};  // TfLiteIntArray {size, data[]}
  TfLiteEvalTensor tensor = {};
  tensor.data.data = out;
  tensor.dims = reinterpret_cast<TfLiteIntArray*>(dims);
  tensor.type = TfLiteTypeOf(layout_.variables[index].dtype);
  return variables_->Read(id, &tensor) == kTfLiteOk;
}

bool ResourceVariableState::Flush() {
  if (!dirty_) return true;
  dirty_ = false;
  const int id = Id(cached_);
  return id >= 0 && variables_->Assign(id, layout_.variables[cached_].bytes, scratch_) == kTfLiteOk;
}

bool ResourceVariableState::Cache(int32_t index, bool refresh) {
  if (cached_ == index && !refresh) return true;
  if (!Flush()) return false;
  cached_ = -1;
  if (scratch_ == nullptr || layout_.variables[index].bytes > scratch_bytes_ || !ReadWhole(index, scratch_)) {
    return false;
  }
  cached_ = index;
  return true;
}

bool ResourceVariableState::Read(int32_t index, uint32_t offset, void* out, uint32_t bytes) {
  if (index < 0 || index >= layout_.count) return false;
  const uint32_t size = layout_.variables[index].bytes;
  if (bytes == 0 || static_cast<uint64_t>(offset) + bytes > size) return false;
  if (offset == 0 && bytes == size) {
    if (cached_ == index && !Flush()) return false;
    return ReadWhole(index, out);
  }
  if (!Cache(index, /*refresh=*/offset == 0)) return false;
  memcpy(out, scratch_ + offset, bytes);
  return true;
}

bool ResourceVariableState::Write(int32_t index, uint32_t offset, const void* data, uint32_t bytes) {
  if (index < 0 || index >= layout_.count) return false;
  const uint32_t size = layout_.variables[index].bytes;
  if (bytes == 0 || static_cast<uint64_t>(offset) + bytes > size) return false;
  if (offset == 0 && bytes == size) {
    if (cached_ == index) {  // superseded
      dirty_ = false;
      cached_ = -1;
    }
    const int id = Id(index);
    return id >= 0 && variables_->Assign(id, bytes, data) == kTfLiteOk;
  }
  // A write at offset 0 starts the variable afresh from the model (the scratch may be older than an Invoke).
  if (!Cache(index, /*refresh=*/offset == 0)) return false;
  memcpy(scratch_ + offset, data, bytes);
  dirty_ = true;
  return offset + bytes == size ? Flush() : true;
}

}  // namespace app
}  // namespace tinyprop
