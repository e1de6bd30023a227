// StateAccess over TFLM resource variables (train.tflite): the application owns the tflite::MicroResourceVariables
// it hands to the interpreter, finds each state tensor by its shared name and copies it out (Read) and in (Assign).
//
// MicroResourceVariables only copies whole variables, so a byte range of a variable (the state is saved and
// restored in pieces, see state.h) goes through `scratch`, which holds one variable at a time: a range read at
// offset 0 refreshes it from the model, the following ranges of that variable come from it; ranges written collect
// in it and are assigned when the variable's last byte is written or at Flush(). Whole-variable reads and writes go
// directly. `scratch` must hold the largest state variable (TINYPROP_STATE_MAX_VARIABLE_BYTES); a model whose state
// is in place needs none of this (OutputTensorState).
#ifndef TINYPROP_APP_RESOURCE_VARIABLE_STATE_H_
#define TINYPROP_APP_RESOURCE_VARIABLE_STATE_H_

#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tinyprop/app/state.h"

namespace tinyprop {
namespace app {

class ResourceVariableState final : public StateAccess {
 public:
  // `num_variables`: what `variables` was created for (the model's resource variables).
  ResourceVariableState(tflite::MicroResourceVariables* variables, const StateLayout& layout, int num_variables,
                        uint8_t* scratch, uint32_t scratch_bytes)
      : variables_(variables),
        layout_(layout),
        num_variables_(num_variables),
        scratch_(scratch),
        scratch_bytes_(scratch_bytes) {}
  bool Read(int32_t index, uint32_t offset, void* out, uint32_t bytes) override;
  bool Write(int32_t index, uint32_t offset, const void* data, uint32_t bytes) override;
  bool Flush() override;

 private:
  // The variable's resource id, -1 when the model has none of that name. Only after AllocateTensors(): by then
  // every variable exists, so CreateIdIfNoneFound does not create one.
  int Id(int32_t index);
  bool ReadWhole(int32_t index, void* out);
  // Variable `index` in the scratch (read from the model when `refresh` or another variable is there).
  bool Cache(int32_t index, bool refresh);

  tflite::MicroResourceVariables* variables_;
  const StateLayout& layout_;
  int num_variables_;
  uint8_t* scratch_;
  uint32_t scratch_bytes_;
  int32_t cached_ = -1;  // the variable in scratch_, -1 none
  bool dirty_ = false;   // scratch_ has writes not yet assigned
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_RESOURCE_VARIABLE_STATE_H_
