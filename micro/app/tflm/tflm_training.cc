// TFLM rules kept here: set every input before every Invoke() (RunTraining does), never call Reset() (it zeroes
// the resource variables, i.e. the weights).
#include "tflm_training.h"

#include <stdint.h>

#include "interpreter_step_model.h"
#include "model_data.h"
#include "resource_variable_state.h"
#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tinyprop/app/training_loop.h"
#include "tinyprop_app_config.h"
#if TINYPROP_HAS_CUSTOM_OPS
#include "tinyprop_tflm.h"  // the TinyProp TFLM custom operators (micro/tflm)
#endif

namespace tinyprop {
namespace app {
namespace {

// Every tensor and, as resource variables, the training state (weights, optimizer slots, ymax, step counter).
alignas(16) uint8_t g_tensor_arena[TINYPROP_ARENA_BYTES];
// The state image saved to and loaded from flash; 8-byte aligned for int64 state tensors.
alignas(16) uint8_t g_state_image[TINYPROP_STATE_BYTES];

using OpResolver = tflite::MicroMutableOpResolver<TINYPROP_NUM_OPS>;

// Exactly the model's operators (tinyprop_app_config.h lists them), nothing else.
TfLiteStatus RegisterOps(OpResolver* resolver) {
#define TINYPROP_ADD_BUILTIN(method) \
  if (resolver->method() != kTfLiteOk) return kTfLiteError;
  TINYPROP_BUILTIN_OPS(TINYPROP_ADD_BUILTIN)
#undef TINYPROP_ADD_BUILTIN
#define TINYPROP_ADD_CUSTOM(name, registration)                          \
  {                                                                      \
    TFLMRegistration custom = tinyprop::tflm::registration();            \
    if (resolver->AddCustom(name, &custom) != kTfLiteOk) return kTfLiteError; \
  }
  TINYPROP_CUSTOM_OPS(TINYPROP_ADD_CUSTOM)  // AddCustom copies the registration
#undef TINYPROP_ADD_CUSTOM
  return kTfLiteOk;
}

constexpr TrainingConfig kConfig = {
    TINYPROP_BATCH_SIZE,        TINYPROP_SAMPLE_ELEMENTS, TINYPROP_TARGET_ELEMENTS,
    TINYPROP_TARGET_IS_LABEL != 0, TINYPROP_OUTPUT_ELEMENTS, TINYPROP_NUM_SPARSE_LAYERS,
    TINYPROP_TRAIN_STEPS,       TINYPROP_MODE_TRAIN,      TINYPROP_MODE_INFER,
};
constexpr StepTensorIndices kIndices = {TINYPROP_INPUT_X,    TINYPROP_INPUT_Y,      TINYPROP_INPUT_MODE,
                                        TINYPROP_OUTPUT_LOSS, TINYPROP_OUTPUT_OUTPUT, TINYPROP_OUTPUT_K};

}  // namespace

int RunTflmTraining(FlashDevice& flash, BatchSource& batches, Console& console) {
  const tflite::Model* model = tflite::GetModel(g_tinyprop_train_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    console.Printf("tinyprop: model schema %u, TFLM supports %d\n", static_cast<unsigned>(model->version()),
                   TFLITE_SCHEMA_VERSION);
    return 1;
  }
  OpResolver resolver;
  if (RegisterOps(&resolver) != kTfLiteOk) {
    console.Printf("tinyprop: registering the ops failed\n");
    return 1;
  }
  tflite::MicroAllocator* allocator = tflite::MicroAllocator::Create(g_tensor_arena, sizeof(g_tensor_arena));
  if (allocator == nullptr) return 1;
  tflite::MicroResourceVariables* variables =
      tflite::MicroResourceVariables::Create(allocator, TINYPROP_NUM_RESOURCE_VARIABLES);
  if (variables == nullptr) return 1;
  tflite::MicroInterpreter interpreter(model, resolver, allocator, variables);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    console.Printf("tinyprop: AllocateTensors() failed: arena of %u bytes too small?\n",
                   static_cast<unsigned>(sizeof(g_tensor_arena)));
    return 1;
  }
  console.Printf("tinyprop: arena %u of %u bytes used, %d ops, %d resource variables, batch %d\n",
                 static_cast<unsigned>(interpreter.arena_used_bytes()), static_cast<unsigned>(sizeof(g_tensor_arena)),
                 TINYPROP_NUM_OPS, TINYPROP_NUM_RESOURCE_VARIABLES, TINYPROP_BATCH_SIZE);

  InterpreterStepModel step_model(&interpreter, kIndices, kConfig.target_is_label);
  ResourceVariableState state(variables, g_tinyprop_state_layout, TINYPROP_NUM_RESOURCE_VARIABLES);
  const TrainingApp app = {kConfig, &g_tinyprop_state_layout, &step_model, &state, &batches, &flash, &console,
                           g_state_image};
  return RunTraining(app);
}

}  // namespace app
}  // namespace tinyprop
