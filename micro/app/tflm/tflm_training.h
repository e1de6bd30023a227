// The TFLM part of the on-device training app: the interpreter on a static arena, the model's ops, and the
// training loop (micro/app/src) run on it. Built inside a board project, next to its generated headers.
#ifndef TINYPROP_APP_TFLM_TRAINING_H_
#define TINYPROP_APP_TFLM_TRAINING_H_

#include "tinyprop/app/batches.h"
#include "tinyprop/app/console.h"
#include "tinyprop/persist.h"

namespace tinyprop {
namespace app {

// One boot: create the interpreter, then RunTraining (restore, train TINYPROP_TRAIN_STEPS steps, save to
// `flash`). 0 on success, 1 after a reported failure.
int RunTflmTraining(FlashDevice& flash, BatchSource& batches, Console& console);

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_TFLM_TRAINING_H_
