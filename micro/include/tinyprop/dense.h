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

// Sparse backward fused with a plain SGD step, for graphs that must not hold dW next to W and W_new (the TFLM
// arena): w_new = w - dW * lr and b_new = b - db * lr with dW, db exactly as DenseBackwardSparse(kOverwrite,
// kDense bias) computes them (dW is formed in w_new, then turned into the update in place, so the numbers are
// those of Keras' `variable.assign_sub(gradient * lr)` on that dW). dx as DenseBackwardSparse; dx, b and
// b_new may be null (b and b_new together). No output may alias an input (w_new: w, x, delta; b_new: b, which is
// cleared for db first; dx: any), nor another output.
Status DenseBackwardSparseSgd(const DenseShape& shape, const float* x, const float* w, const float* b,
                              const float* delta, const KeptSet& kept, float lr, float* w_new, float* dx,
                              float* b_new);

// d_pre[i] = d_post[i] if activation_out[i] > 0 else 0 (ReLU's gradient from its output, as tf.nn.relu's
// ReluGrad). In-place use (d_pre == d_post) is allowed.
Status ReluBackward(const float* d_post, const float* activation_out, int32_t n, float* d_pre);

}  // namespace tinyprop

#endif  // TINYPROP_DENSE_H_
