// The on-device training app without TFLM: restore the state, train N steps printing loss and k, run inference,
// save the state. The interpreter is behind StepModel, the state tensors behind StateAccess (state.h).
#ifndef TINYPROP_APP_TRAINING_LOOP_H_
#define TINYPROP_APP_TRAINING_LOOP_H_

#include <stdint.h>

#include "tinyprop/app/batches.h"
#include "tinyprop/app/console.h"
#include "tinyprop/app/state.h"
#include "tinyprop/persist.h"

namespace tinyprop {
namespace app {

// The exported training graph's entry tensors (manifest "tflm" inputs x, y, mode; outputs loss, output, k).
enum class StepTensor : int32_t { kX, kY, kMode, kLoss, kOutput, kK };

struct TensorBytes {
  void* data;
  uint32_t bytes;
};

// One entry of the training graph: set the inputs, Invoke, read the outputs.
class StepModel {
 public:
  // The tensor's buffer, or {nullptr, 0} when the model has no such tensor or not of the expected type.
  virtual TensorBytes Tensor(StepTensor tensor) = 0;
  virtual bool Invoke() = 0;

 protected:
  StepModel() = default;
  StepModel(const StepModel&) = default;
  StepModel& operator=(const StepModel&) = default;
  ~StepModel() = default;
};

// Shapes and modes of the export plus the steps per boot (the generated tinyprop_app_config.h / model_data.h).
struct TrainingConfig {
  int32_t batch;
  int32_t sample_elements;
  int32_t target_elements;  // 1 for labels
  bool target_is_label;     // y is int32 class labels, else float targets
  int32_t output_elements;  // per sample
  int32_t sparse_layers;    // rows of k ([sparse_layers, batch] int32)
  int32_t train_steps;      // per boot
  int32_t mode_train;
  int32_t mode_infer;
  // Also print each step's exact figures, for a host to check the run against its reference: the loss's float32
  // bits, every sample's k per layer, per weight tensor the sum of its elements (in index order, in double) as the
  // double's bits, the step's Console::Ticks(), and the final inference output's bits. Lines "trace_... "
  // (micro/README.md, "The app on the emulated Cortex-M4F"). Off on the boards (TINYPROP_TRACE_STEPS).
  bool trace_steps;
};

// Everything the loop works on; the caller owns it all (no heap).
struct TrainingApp {
  TrainingConfig config;
  const StateLayout* layout;
  StepModel* model;
  StateAccess* state;
  BatchSource* batches;
  FlashDevice* flash;
  Console* console;
  // The state image the model starts from (layout->image_bytes; in flash: g_tinyprop_initial_state), for a model
  // that holds its state in place and has no initial values (TFLM zeroes the variable tensors): written into the
  // state before the first Invoke. Null for a model that initialises itself on its first Invoke (the resource
  // variables' CALL_ONCE initialiser): then the state is written only after that Invoke.
  const uint8_t* initial_state;
  // [config.batch] int32, when config.target_is_label (else unused, may be null): the labels of the batch fed to
  // the final inference, copied from the batch source's fill before that Invoke, for the prediction printout. The
  // model's y input cannot be read back after an Invoke: TFLM's planner may give its buffer to other tensors.
  int32_t* printed_labels;
};

// The whole boot: the initial state (when given), inference with the exported weights (the first Invoke, which
// runs the initialiser otherwise), restore the newest saved state, train config.train_steps steps, inference,
// save. The state is saved and restored streamed through `state` (no RAM copy of it). 0 on success, 1 after a
// reported failure.
int RunTraining(const TrainingApp& app);

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_TRAINING_LOOP_H_
