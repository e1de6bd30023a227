// StateAccess over TFLM resource variables: the application owns the tflite::MicroResourceVariables it hands to
// the interpreter, finds each state tensor by its shared name and copies it out (Read) and in (Assign).
//
// This is the only file that knows how the model holds its training state. A model whose state is variable
// tensors exposed as extra outputs gets another StateAccess (memcpy through interpreter.output(i)) in its place.
#ifndef TINYPROP_APP_RESOURCE_VARIABLE_STATE_H_
#define TINYPROP_APP_RESOURCE_VARIABLE_STATE_H_

#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tinyprop/app/state.h"

namespace tinyprop {
namespace app {

class ResourceVariableState final : public StateAccess {
 public:
  // `num_variables`: what `variables` was created for (the model's resource variables).
  ResourceVariableState(tflite::MicroResourceVariables* variables, const StateLayout& layout, int num_variables)
      : variables_(variables), layout_(layout), num_variables_(num_variables) {}
  bool Read(int32_t index, void* out, uint32_t bytes) override;
  bool Write(int32_t index, const void* data, uint32_t bytes) override;

 private:
  // The variable's resource id, -1 when the model has none of that name. Only after AllocateTensors(): by then
  // every variable exists, so CreateIdIfNoneFound does not create one.
  int Id(int32_t index);

  tflite::MicroResourceVariables* variables_;
  const StateLayout& layout_;
  int num_variables_;
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_RESOURCE_VARIABLE_STATE_H_
