// StepModel over a tflite::MicroInterpreter: the entry tensors by their indices in the exported model.
#ifndef TINYPROP_APP_INTERPRETER_STEP_MODEL_H_
#define TINYPROP_APP_INTERPRETER_STEP_MODEL_H_

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tinyprop/app/training_loop.h"

namespace tinyprop {
namespace app {

// Input and output indices of x, y, mode, loss, output, k (model_data.h's TINYPROP_INPUT_* / TINYPROP_OUTPUT_*).
struct StepTensorIndices {
  int x, y, mode;
  int loss, output, k;
};

class InterpreterStepModel final : public StepModel {
 public:
  InterpreterStepModel(tflite::MicroInterpreter* interpreter, const StepTensorIndices& indices,
                       bool target_is_label)
      : interpreter_(interpreter), indices_(indices), target_is_label_(target_is_label) {}
  TensorBytes Tensor(StepTensor tensor) override;
  bool Invoke() override { return interpreter_->Invoke() == kTfLiteOk; }

 private:
  tflite::MicroInterpreter* interpreter_;
  StepTensorIndices indices_;
  bool target_is_label_;
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_INTERPRETER_STEP_MODEL_H_
