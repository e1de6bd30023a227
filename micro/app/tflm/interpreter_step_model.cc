#include "interpreter_step_model.h"

namespace tinyprop {
namespace app {

TensorBytes InterpreterStepModel::Tensor(StepTensor tensor) {
  TfLiteTensor* t = nullptr;
  TfLiteType type = kTfLiteFloat32;
  switch (tensor) {
    case StepTensor::kX:
      t = interpreter_->input(indices_.x);
      break;
    case StepTensor::kY:
      t = interpreter_->input(indices_.y);
      type = target_is_label_ ? kTfLiteInt32 : kTfLiteFloat32;
      break;
    case StepTensor::kMode:
      t = interpreter_->input(indices_.mode);
      type = kTfLiteInt32;
      break;
    case StepTensor::kLoss:
      t = interpreter_->output(indices_.loss);
      break;
    case StepTensor::kOutput:
      t = interpreter_->output(indices_.output);
      break;
    case StepTensor::kK:
      t = interpreter_->output(indices_.k);
      type = kTfLiteInt32;
      break;
  }
  if (t == nullptr || t->type != type) return {nullptr, 0};
  return {t->data.data, static_cast<uint32_t>(t->bytes)};
}

}  // namespace app
}  // namespace tinyprop
