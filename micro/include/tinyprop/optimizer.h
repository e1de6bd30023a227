// Optimizer updates with Keras 3.15 semantics (keras/src/optimizers/sgd.py and adam.py, float32 variables),
// operation for operation in Keras' order.
#ifndef TINYPROP_OPTIMIZER_H_
#define TINYPROP_OPTIMIZER_H_

#include "tinyprop/status.h"

namespace tinyprop {

struct SgdParams {
  float learning_rate;  // finite
  float momentum;       // [0, 1]; 0 = plain SGD (no velocity buffer)
  bool nesterov;
};

// Keras SGD on n elements:
//   momentum == 0: w = w - g * lr                                      (velocity may be null)
//   else:          v = v * momentum - g * lr; w = w + v                 (nesterov: w = w + (v * momentum - g * lr))
Status SgdUpdate(const SgdParams& params, float* w, const float* g, float* velocity, int32_t n);

// Plain SGD (momentum 0) touching only the given columns of a [rows, cols] variable viewed row-major
// (columns = the last axis = output units/channels of Keras Dense/Conv kernels; rows = 1 for a bias):
// w[r, c] -= g[r, c] * lr for c in columns[0..num_columns), strictly ascending, in [0, cols), and then
// g[r, c] = 0: the gradient columns it consumed are cleared, so a training loop that accumulates the next step's
// gradient with Accumulate::kAdd (the fast sparse path) needs no separate clearing pass over dW.
// Exact: for an untouched column g == 0 and w - 0 * lr == w bit for bit (lr finite). Momentum SGD and Adam
// cannot skip: a zero gradient still decays their state (v = v * momentum, m = m * beta_1, ...) and moves w
// by the remaining velocity / moment, so every element must be updated every step to match Keras.
Status SgdUpdateColumns(float learning_rate, float* w, float* g, int32_t rows, int32_t cols,
                        const int32_t* columns, int32_t num_columns);

struct AdamParams {
  float learning_rate;
  float beta_1;
  float beta_2;
  float epsilon;
  float one_minus_beta_1;  // float32(1 - beta_1) with 1 - beta_1 taken in double, as Keras does in Python
  float one_minus_beta_2;
};

// Builds AdamParams from the Python-level (double) hyperparameters exactly as Keras casts them.
// lr finite; beta_1, beta_2 in [0, 1); epsilon finite >= 0.
Status MakeAdamParams(double learning_rate, double beta_1, double beta_2, double epsilon, AdamParams* params);

// beta_1^step and beta_2^step in float32 (powf), step = optimizer.iterations + 1 >= 1. TensorFlow's pow may
// differ from the C library's powf in the last bit; pass TF's values to AdamUpdate for bit-exact replay.
Status AdamPowers(const AdamParams& params, int64_t step, float* beta_1_power, float* beta_2_power);

// Keras Adam (amsgrad = False) on n elements, with alpha = lr * sqrt(1 - b2p) / (1 - b1p):
//   m = m + (g - m) * (1 - beta_1); v = v + (g * g - v) * (1 - beta_2); w = w - (m * alpha) / (sqrt(v) + eps)
// beta powers in [0, 1).
Status AdamUpdate(const AdamParams& params, float beta_1_power, float beta_2_power, float* w, const float* g,
                  float* m, float* v, int32_t n);

}  // namespace tinyprop

#endif  // TINYPROP_OPTIMIZER_H_
