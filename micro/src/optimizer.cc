#include "tinyprop/optimizer.h"

#include <math.h>

#include "internal.h"

namespace tinyprop {

using internal::IsFinite;
using internal::IsNan;

Status SgdUpdate(const SgdParams& params, float* w, const float* g, float* velocity, int32_t n) {
  if (w == nullptr || g == nullptr) return Status::kBadArgument;
  if (n < 1) return Status::kBadShape;
  if (!IsFinite(params.learning_rate)) return Status::kBadArgument;
  if (IsNan(params.momentum) || params.momentum < 0.0f || params.momentum > 1.0f) return Status::kBadArgument;
  const float lr = params.learning_rate;
  if (params.momentum == 0.0f) {
    // Keras: variable.assign_sub(gradient * learning_rate)
    for (int32_t i = 0; i < n; ++i) w[i] = w[i] - g[i] * lr;
    return Status::kOk;
  }
  if (velocity == nullptr) return Status::kBadArgument;
  const float mu = params.momentum;
  for (int32_t i = 0; i < n; ++i) {
    // Keras: m.assign(m * momentum - gradient * learning_rate)
    const float v = velocity[i] * mu - g[i] * lr;
    velocity[i] = v;
    w[i] = params.nesterov ? w[i] + (v * mu - g[i] * lr) : w[i] + v;
  }
  return Status::kOk;
}

Status SgdUpdateColumns(float learning_rate, float* w, float* g, int32_t rows, int32_t cols,
                        const int32_t* columns, int32_t num_columns) {
  if (w == nullptr || g == nullptr || columns == nullptr) return Status::kBadArgument;
  int32_t total;
  if (!internal::Product2(rows, cols, &total)) return Status::kBadShape;
  if (!IsFinite(learning_rate)) return Status::kBadArgument;
  const Status s = CheckKeptSet(KeptSet{&num_columns, columns, 0}, 1, cols);
  if (s != Status::kOk) return s;
  for (int32_t r = 0; r < rows; ++r) {
    float* wr = w + static_cast<int64_t>(r) * cols;
    float* gr = g + static_cast<int64_t>(r) * cols;
    for (int32_t t = 0; t < num_columns; ++t) {
      const int32_t c = columns[t];
      wr[c] = wr[c] - gr[c] * learning_rate;
      gr[c] = 0.0f;  // consumed: the next step's Accumulate::kAdd backward starts from a zero gradient
    }
  }
  return Status::kOk;
}

namespace {
Status CheckAdam(const AdamParams& p) {
  if (!IsFinite(p.learning_rate) || !IsFinite(p.epsilon) || p.epsilon < 0.0f) return Status::kBadArgument;
  if (!(p.beta_1 >= 0.0f && p.beta_1 < 1.0f) || !(p.beta_2 >= 0.0f && p.beta_2 < 1.0f)) return Status::kBadArgument;
  if (!(p.one_minus_beta_1 > 0.0f && p.one_minus_beta_1 <= 1.0f)) return Status::kBadArgument;
  if (!(p.one_minus_beta_2 > 0.0f && p.one_minus_beta_2 <= 1.0f)) return Status::kBadArgument;
  return Status::kOk;
}
}  // namespace

Status MakeAdamParams(double learning_rate, double beta_1, double beta_2, double epsilon, AdamParams* params) {
  if (params == nullptr) return Status::kBadArgument;
  if (!internal::IsFiniteD(learning_rate) || !internal::IsFiniteD(epsilon) || epsilon < 0.0) {
    return Status::kBadArgument;
  }
  if (!(beta_1 >= 0.0 && beta_1 < 1.0) || !(beta_2 >= 0.0 && beta_2 < 1.0)) return Status::kBadArgument;
  AdamParams p;
  p.learning_rate = static_cast<float>(learning_rate);
  p.beta_1 = static_cast<float>(beta_1);
  p.beta_2 = static_cast<float>(beta_2);
  p.epsilon = static_cast<float>(epsilon);
  p.one_minus_beta_1 = static_cast<float>(1.0 - beta_1);  // Python: `1 - self.beta_1` in double
  p.one_minus_beta_2 = static_cast<float>(1.0 - beta_2);
  const Status s = CheckAdam(p);  // e.g. a double lr beyond float range, or beta rounding up to 1.0f
  if (s != Status::kOk) return s;
  *params = p;
  return Status::kOk;
}

Status AdamPowers(const AdamParams& params, int64_t step, float* beta_1_power, float* beta_2_power) {
  if (beta_1_power == nullptr || beta_2_power == nullptr) return Status::kBadArgument;
  const Status s = CheckAdam(params);
  if (s != Status::kOk) return s;
  if (step < 1) return Status::kBadArgument;
  const float t = static_cast<float>(step);  // Keras: ops.cast(iterations + 1, float32)
  *beta_1_power = powf(params.beta_1, t);
  *beta_2_power = powf(params.beta_2, t);
  return Status::kOk;
}

Status AdamUpdate(const AdamParams& params, float beta_1_power, float beta_2_power, float* w, const float* g,
                  float* m, float* v, int32_t n) {
  if (w == nullptr || g == nullptr || m == nullptr || v == nullptr) return Status::kBadArgument;
  if (n < 1) return Status::kBadShape;
  const Status s = CheckAdam(params);
  if (s != Status::kOk) return s;
  if (!(beta_1_power >= 0.0f && beta_1_power < 1.0f) || !(beta_2_power >= 0.0f && beta_2_power < 1.0f)) {
    return Status::kBadArgument;
  }
  // alpha = lr * sqrt(1 - beta_2_power) / (1 - beta_1_power), left to right as in Keras.
  const float alpha = params.learning_rate * sqrtf(1.0f - beta_2_power) / (1.0f - beta_1_power);
  const float c1 = params.one_minus_beta_1, c2 = params.one_minus_beta_2, eps = params.epsilon;
  for (int32_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = m[i] + (gi - m[i]) * c1;
    const float vi = v[i] + (gi * gi - v[i]) * c2;
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] - (mi * alpha) / (sqrtf(vi) + eps);
  }
  return Status::kOk;
}

}  // namespace tinyprop
