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
};

// Everything the loop works on; the caller owns it all (no heap).
struct TrainingApp {
  TrainingConfig config;
  const StateLayout* layout;
  StepModel* model;
  StateAccess* state;     // valid only after the first Invoke (the initialiser would overwrite a restored state)
  BatchSource* batches;
  FlashDevice* flash;
  Console* console;
  uint8_t* state_image;   // layout->image_bytes, 8-byte aligned
};

// The whole boot: inference with the exported weights (runs the initialiser), restore the newest saved state,
// train config.train_steps steps, inference, save. 0 on success, 1 after a reported failure.
int RunTraining(const TrainingApp& app);

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_TRAINING_LOOP_H_
