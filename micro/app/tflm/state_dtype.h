// The TFLM tensor type of a state layout dtype, for the StateAccess adapters' type checks.
#ifndef TINYPROP_APP_TFLM_STATE_DTYPE_H_
#define TINYPROP_APP_TFLM_STATE_DTYPE_H_

#include "tensorflow/lite/c/common.h"
#include "tinyprop/app/state.h"

namespace tinyprop {
namespace app {

inline TfLiteType TfLiteTypeOf(StateDtype dtype) {
  switch (dtype) {
    case StateDtype::kFloat32:
      return kTfLiteFloat32;
    case StateDtype::kInt32:
      return kTfLiteInt32;
    case StateDtype::kInt64:
      return kTfLiteInt64;
  }
  return kTfLiteNoType;
}

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_TFLM_STATE_DTYPE_H_
