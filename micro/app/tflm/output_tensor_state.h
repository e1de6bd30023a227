// StateAccess over a model that keeps its training state in place (train_fast.tflite): every state tensor is a
// TFLM variable tensor that is also a model output, state tensor i of the layout being
// interpreter.output(first_output + i). Read and Write copy bytes straight from and into those tensors, so saving
// and restoring need no other copy of the state; valid from AllocateTensors() on (which zeroes them: the app writes
// the initial state before the first Invoke, TrainingApp::initial_state).
#ifndef TINYPROP_APP_OUTPUT_TENSOR_STATE_H_
#define TINYPROP_APP_OUTPUT_TENSOR_STATE_H_

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tinyprop/app/state.h"

namespace tinyprop {
namespace app {

class OutputTensorState final : public StateAccess {
 public:
  OutputTensorState(tflite::MicroInterpreter* interpreter, const StateLayout& layout, int first_output)
      : interpreter_(interpreter), layout_(layout), first_output_(first_output) {}
  bool Read(int32_t index, uint32_t offset, void* out, uint32_t bytes) override;
  bool Write(int32_t index, uint32_t offset, const void* data, uint32_t bytes) override;

  // After AllocateTensors(): the first state tensor whose output is missing or differs from the layout in type or
  // byte size (reported on `console` with both sizes), -1 when all match.
  int32_t FirstMismatch(Console& console);

 private:
  // Bytes [offset, offset + bytes) of state tensor `index`, or null when the output does not match the layout or
  // the range lies outside it.
  uint8_t* Span(int32_t index, uint32_t offset, uint32_t bytes);

  tflite::MicroInterpreter* interpreter_;
  const StateLayout& layout_;
  int first_output_;
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_OUTPUT_TENSOR_STATE_H_
