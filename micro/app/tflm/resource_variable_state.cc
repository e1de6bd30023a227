#include "resource_variable_state.h"

namespace tinyprop {
namespace app {
namespace {

TfLiteType TfLiteTypeOf(StateDtype dtype) {
  switch (dtype) {
    case StateDtype::kFloat32:
      return kTfLiteFloat32;
    case StateDtype::kInt32:
      return kTfLiteInt32;
    case StateDtype::kInt64:
      return kTfLiteInt64;
  }
  return kTfLiteNoType;
}

}  // namespace

int ResourceVariableState::Id(int32_t index) {
  if (index < 0 || index >= layout_.count) return -1;
  const int id = variables_->CreateIdIfNoneFound(nullptr, layout_.variables[index].name);
  return id >= 0 && id < num_variables_ ? id : -1;
}

bool ResourceVariableState::Read(int32_t index, void* out, uint32_t bytes) {
  const int id = Id(index);
  if (id < 0 || bytes != layout_.variables[index].bytes) return false;
  // Read() copies as many bytes as the tensor's shape and type say: a flat [elements] tensor over `out`.
  int dims[2] = {1, static_cast<int>(layout_.variables[index].elements)};  // TfLiteIntArray {size, data[]}
  TfLiteEvalTensor tensor = {};
  tensor.data.data = out;
  tensor.dims = reinterpret_cast<TfLiteIntArray*>(dims);
  tensor.type = TfLiteTypeOf(layout_.variables[index].dtype);
  return variables_->Read(id, &tensor) == kTfLiteOk;
}

bool ResourceVariableState::Write(int32_t index, const void* data, uint32_t bytes) {
  const int id = Id(index);
  if (id < 0 || bytes != layout_.variables[index].bytes) return false;
  return variables_->Assign(id, bytes, data) == kTfLiteOk;
}

}  // namespace app
}  // namespace tinyprop
