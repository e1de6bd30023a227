// Backward pass of a fully-connected layer z = x . W + b (Keras Dense), dense and unit-sparse.
//
// Shapes (row-major, as Keras stores them): x [batch, in], W [in, out], delta = dL/dz [batch, out],
// dW [in, out], dx [batch, in], db [out]. Any of dw, dx, db may be null: that gradient is not computed
// (e.g. dx of the first layer). x may be null when dw is null, w may be null when dx is null.
#ifndef TINYPROP_DENSE_H_
#define TINYPROP_DENSE_H_

#include "tinyprop/status.h"

namespace tinyprop {

struct DenseShape {
  int32_t batch;
  int32_t in;
  int32_t out;
};

// Forward z = x . W (+ bias): z [batch, out], bias [out] or null. Per element 0 + x[b, 0] W[0, j] + ... in input
// order, then + bias[j] (the order of TFLM's reference FULLY_CONNECTED). Reads W in its Keras layout [in, out],
// so an exported graph needs no transposed copy of it (TFLM's BATCH_MATMUL keeps one, persistently, per op).
// z must not alias x or W.
Status DenseForward(const DenseShape& shape, const float* x, const float* w, const float* bias, float* z);

// Reference: dW = x^T . delta, dx = delta . W^T, db = sum_b delta (straightforward loops, overwrites).
Status DenseBackwardReference(const DenseShape& shape, const float* x, const float* w, const float* delta,
                              float* dw, float* dx, float* db);

// Sparse: sample b contributes to dW[:, j] and to dx[b, :] only through its kept units j (kept.k[b] of them,
// k in [0, out]); cost 2 * in * sum_b k[b] MACs. db follows `bias` (kDense: sum of the full delta, the
// TinyProp rule; kKeptOnly: kept units only). With Accumulate::kOverwrite every output element is written
// (never-kept dW columns are 0, dx of a k = 0 sample is 0); with kAdd results are added and untouched
// columns are not written.
Status DenseBackwardSparse(const DenseShape& shape, const float* x, const float* w, const float* delta,
                           const KeptSet& kept, BiasGrad bias, Accumulate mode, float* dw, float* dx, float* db);

// Sparse backward fused with a plain SGD step, in place, for graphs that must not hold dW or a second copy of W
// (the TFLM arena): w <- w - dW * lr and b <- b - db * lr, with dW and db exactly as DenseBackwardSparse
// (kOverwrite, kDense bias) computes them, so the numbers are those of the separate backward followed by Keras'
// `variable.assign_sub(gradient * lr)`, bit for bit. dx (may be null) is computed from the weights before the
// update. Only the columns of units some sample kept are written; b may be null. scratch: at least
// DenseSgdScratchBytes(batch, in) bytes, 4-byte aligned. dx must not alias any input. On an argument error nothing
// is written.
constexpr int64_t DenseSgdScratchBytes(int32_t batch, int32_t in) {
  return 4 * (static_cast<int64_t>(in) + 2 * static_cast<int64_t>(batch));
}
Status DenseBackwardSparseSgd(const DenseShape& shape, const float* x, float* w, float* b, const float* delta,
                              const KeptSet& kept, float lr, float* dx, void* scratch, int64_t scratch_bytes);
// d_pre[i] = d_post[i] if activation_out[i] > 0 else 0 (ReLU's gradient from its output, as tf.nn.relu's
// ReluGrad). In-place use (d_pre == d_post) is allowed.
Status ReluBackward(const float* d_post, const float* activation_out, int32_t n, float* d_pre);

}  // namespace tinyprop

#endif  // TINYPROP_DENSE_H_
