// Umbrella header of the TinyProp micro kernels (namespace tinyprop). See micro/README.md.
#ifndef TINYPROP_TINYPROP_H_
#define TINYPROP_TINYPROP_H_

#include "tinyprop/status.h"
#include "tinyprop/selection.h"
#include "tinyprop/dense.h"
#include "tinyprop/conv.h"
#include "tinyprop/loss.h"
#include "tinyprop/optimizer.h"

#endif  // TINYPROP_TINYPROP_H_
