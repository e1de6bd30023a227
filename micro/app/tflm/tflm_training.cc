// TFLM rules kept here: set every input before every Invoke() (RunTraining does), never call Reset() (it zeroes
// the resource variables, i.e. the weights).
//
// How the model holds its training state (tinyprop_app_config.h):
//   #define TINYPROP_STATE_IN_OUTPUTS 1 and #define TINYPROP_FIRST_STATE_OUTPUT <n> (train_fast.tflite): the state
//     tensors are variable tensors that are also outputs n .. n + count - 1 (OutputTensorState); AllocateTensors
//     zeroes them and the model has no initial values, so RunTraining first writes g_tinyprop_initial_state
//     (tinyprop_state.cc: alignas(16), g_tinyprop_state_layout.image_bytes long, weights first = weights.bin;
//     declared extern in tinyprop_app_config.h). No buffer besides the arena.
//   otherwise (train.tflite): TFLM resource variables with their initialiser (ResourceVariableState), plus one
//     scratch buffer of the largest state variable (TINYPROP_STATE_MAX_VARIABLE_BYTES) for the streamed save and
//     restore, since MicroResourceVariables copies only whole variables.
// Saving and restoring stream the state between the tensors and the flash (micro/persist): no RAM state image.
#include "tflm_training.h"

#include <stdint.h>

#include "interpreter_step_model.h"
#include "model_data.h"
#include "tinyprop_app_config.h"
#if defined(TINYPROP_STATE_IN_OUTPUTS) && TINYPROP_STATE_IN_OUTPUTS
#define TINYPROP_APP_STATE_IN_OUTPUTS 1
#include "output_tensor_state.h"
#else
#define TINYPROP_APP_STATE_IN_OUTPUTS 0
#include "resource_variable_state.h"
#endif
#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tinyprop/app/training_loop.h"
#if TINYPROP_HAS_CUSTOM_OPS
#include "tinyprop_tflm.h"  // the TinyProp TFLM custom operators (micro/tflm)
#endif

#if TINYPROP_APP_STATE_IN_OUTPUTS
// The exported state (tinyprop_state.cc); tinyprop_app_config.h declares it too, which gives the definition its
// external linkage.
extern const uint8_t g_tinyprop_initial_state[];
#endif

namespace tinyprop {
namespace app {
namespace {

// Every tensor, the training state (weights, optimizer slots, ymax, step counter) included.
alignas(16) uint8_t g_tensor_arena[TINYPROP_ARENA_BYTES];
// The final inference batch's labels, kept for the printout: y's buffer may hold other tensors after the Invoke.
int32_t g_printed_labels[TINYPROP_BATCH_SIZE];
#if !TINYPROP_APP_STATE_IN_OUTPUTS
// One resource variable at a time for the streamed save / restore (8-byte aligned for int64 state tensors).
#ifndef TINYPROP_STATE_MAX_VARIABLE_BYTES
#define TINYPROP_STATE_MAX_VARIABLE_BYTES TINYPROP_STATE_BYTES  // a generator without the macro: the whole state
#endif
alignas(16) uint8_t g_variable_scratch[TINYPROP_STATE_MAX_VARIABLE_BYTES];
#endif

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

// The emulated board's build (micro/app/mps2) defines it to 1: each step's exact figures for the host's check.
#ifndef TINYPROP_TRACE_STEPS
#define TINYPROP_TRACE_STEPS 0
#endif

constexpr TrainingConfig kConfig = {
    TINYPROP_BATCH_SIZE,        TINYPROP_SAMPLE_ELEMENTS, TINYPROP_TARGET_ELEMENTS,
    TINYPROP_TARGET_IS_LABEL != 0, TINYPROP_OUTPUT_ELEMENTS, TINYPROP_NUM_SPARSE_LAYERS,
    TINYPROP_TRAIN_STEPS,       TINYPROP_MODE_TRAIN,      TINYPROP_MODE_INFER,
    TINYPROP_TRACE_STEPS != 0,
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
#if TINYPROP_APP_STATE_IN_OUTPUTS
  tflite::MicroInterpreter interpreter(model, resolver, allocator);
#else
  tflite::MicroResourceVariables* variables =
      tflite::MicroResourceVariables::Create(allocator, TINYPROP_NUM_RESOURCE_VARIABLES);
  if (variables == nullptr) return 1;
  tflite::MicroInterpreter interpreter(model, resolver, allocator, variables);
#endif
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    console.Printf("tinyprop: AllocateTensors() failed: arena of %u bytes too small?\n",
                   static_cast<unsigned>(sizeof(g_tensor_arena)));
    return 1;
  }
  InterpreterStepModel step_model(&interpreter, kIndices, kConfig.target_is_label);
#if TINYPROP_APP_STATE_IN_OUTPUTS
  console.Printf("tinyprop: arena %u of %u bytes used, %d ops, %d state tensors in place (outputs %d..), batch %d\n",
                 static_cast<unsigned>(interpreter.arena_used_bytes()), static_cast<unsigned>(sizeof(g_tensor_arena)),
                 TINYPROP_NUM_OPS, static_cast<int>(g_tinyprop_state_layout.count), TINYPROP_FIRST_STATE_OUTPUT,
                 TINYPROP_BATCH_SIZE);
  OutputTensorState state(&interpreter, g_tinyprop_state_layout, TINYPROP_FIRST_STATE_OUTPUT);
  if (state.FirstMismatch(console) >= 0) return 1;
  const uint8_t* initial_state = g_tinyprop_initial_state;  // written before the first invoke
#else
  console.Printf("tinyprop: arena %u of %u bytes used, %d ops, %d resource variables, batch %d\n",
                 static_cast<unsigned>(interpreter.arena_used_bytes()), static_cast<unsigned>(sizeof(g_tensor_arena)),
                 TINYPROP_NUM_OPS, TINYPROP_NUM_RESOURCE_VARIABLES, TINYPROP_BATCH_SIZE);
  ResourceVariableState state(variables, g_tinyprop_state_layout, TINYPROP_NUM_RESOURCE_VARIABLES,
                              g_variable_scratch, static_cast<uint32_t>(sizeof(g_variable_scratch)));
  const uint8_t* initial_state = nullptr;  // the model's initialiser runs on the first invoke
#endif
  const TrainingApp app = {kConfig, &g_tinyprop_state_layout, &step_model, &state, &batches, &flash, &console,
                           initial_state, g_printed_labels};
  return RunTraining(app);
}

}  // namespace app
}  // namespace tinyprop
