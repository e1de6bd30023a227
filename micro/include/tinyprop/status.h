// TinyProp micro kernels: status codes and the types shared by every kernel.
//
// Rules every entry point follows (see micro/README.md):
// - no dynamic allocation, no exceptions, no RTTI, no global mutable state;
// - every argument is checked before any output is written: on an error return the outputs are untouched;
// - array sizes are implied by the shape arguments (documented per function); index data (kept lists,
//   labels) is validated against them, so a bad index is an error, never an out-of-bounds access;
// - only C headers are used (<stdint.h>, <math.h>): the RISC-V toolchain ships no C++ standard library.
#ifndef TINYPROP_STATUS_H_
#define TINYPROP_STATUS_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyprop {

enum class Status : int32_t {
  kOk = 0,
  kBadArgument = 1,     // null pointer, or a parameter NaN / out of its documented range
  kBadShape = 2,        // zero or negative dimension, inconsistent shapes, or a size above INT32_MAX
  kBadIndex = 3,        // k out of range, kept indices out of range or not strictly ascending, bad label
  kBufferTooSmall = 4,  // a scratch buffer's capacity is below the documented size
  kNonFinite = 5,       // NaN (or Inf where the rule needs finite values) in the data
};

// Short constant name of a status ("kOk", "kBadShape", ...); "unknown" for other values.
const char* StatusName(Status status);

// Largest element count of any tensor a kernel accepts (sizes are int32 everywhere).
constexpr int64_t kMaxElements = INT32_MAX;

// Which output units (Dense) or output channels (Conv) each sample of a batch keeps.
//
// Sample b keeps k[b] entries, listed at index[b * row_stride + t] for t < k[b], strictly ascending and in
// [0, n). Kernels accept k[b] in [0, n]: k[b] == 0 means the sample needs no backward work (zero error, or
// a skipped sample). row_stride > 0 requires k[b] <= row_stride; row_stride == 0 shares one row between
// all samples (ssProp's batch-shared selection). `index` must hold (batch - 1) * row_stride + max_b k[b]
// entries; TopKBatch and the Select* functions write rows with row_stride == n.
struct KeptSet {
  const int32_t* k;
  const int32_t* index;
  int32_t row_stride;
};

// Bias gradient rule of the sparse backward kernels.
enum class BiasGrad : int32_t {
  kDense = 0,     // sum of the full error signal (TinyProp / static top-k: the authors' choice)
  kKeptOnly = 1,  // only the kept units/channels of each sample contribute (ssProp)
};

// Whether a backward kernel overwrites or adds into its outputs.
enum class Accumulate : int32_t {
  kOverwrite = 0,  // every element of every output is written (unkept dW columns become 0)
  kAdd = 1,        // adds into the outputs; dW columns of units no sample kept are not touched at all (nor
                   // their db entries with BiasGrad::kKeptOnly)
};

// Validates a KeptSet against a batch of `batch` samples with `n` selectable entries each.
Status CheckKeptSet(const KeptSet& kept, int32_t batch, int32_t n);

}  // namespace tinyprop

#endif  // TINYPROP_STATUS_H_
