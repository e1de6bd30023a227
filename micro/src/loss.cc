#include "tinyprop/loss.h"

#include <math.h>

#include "internal.h"

namespace tinyprop {
namespace {

// Log-sum-exp of one row with the max subtracted; *row_max receives the max.
float LogSumExp(const float* z, int32_t n, float* row_max, float* sum_exp) {
  float m = z[0];
  for (int32_t c = 1; c < n; ++c) {
    if (z[c] > m) m = z[c];
  }
  float s = 0.0f;
  for (int32_t c = 0; c < n; ++c) s += expf(z[c] - m);
  *row_max = m;
  *sum_exp = s;
  return m + logf(s);
}

}  // namespace

Status SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int32_t batch, int32_t classes,
                           float* loss, float* grad) {
  if (logits == nullptr || labels == nullptr || loss == nullptr) return Status::kBadArgument;
  int32_t total;
  if (!internal::Product2(batch, classes, &total)) return Status::kBadShape;
  for (int32_t b = 0; b < batch; ++b) {
    if (labels[b] < 0 || labels[b] >= classes) return Status::kBadIndex;
  }
  const float fb = static_cast<float>(batch);
  float sum = 0.0f;
  for (int32_t b = 0; b < batch; ++b) {
    const float* z = logits + static_cast<int64_t>(b) * classes;
    float m, s;
    const float lse = LogSumExp(z, classes, &m, &s);
    sum += lse - z[labels[b]];
    if (grad != nullptr) {
      float* g = grad + static_cast<int64_t>(b) * classes;
      for (int32_t c = 0; c < classes; ++c) {
        const float p = expf(z[c] - m) / s;
        g[c] = (c == labels[b] ? p - 1.0f : p) / fb;
      }
    }
  }
  *loss = sum / fb;
  return Status::kOk;
}

Status SoftmaxCrossEntropyDense(const float* logits, const float* targets, int32_t batch, int32_t classes,
                                float* loss, float* grad) {
  if (logits == nullptr || targets == nullptr || loss == nullptr) return Status::kBadArgument;
  int32_t total;
  if (!internal::Product2(batch, classes, &total)) return Status::kBadShape;
  const float fb = static_cast<float>(batch);
  float sum = 0.0f;
  for (int32_t b = 0; b < batch; ++b) {
    const float* z = logits + static_cast<int64_t>(b) * classes;
    const float* t = targets + static_cast<int64_t>(b) * classes;
    float m, s;
    const float lse = LogSumExp(z, classes, &m, &s);
    float row = 0.0f, t_sum = 0.0f;
    for (int32_t c = 0; c < classes; ++c) {
      row -= t[c] * (z[c] - lse);
      t_sum += t[c];
    }
    sum += row;
    if (grad != nullptr) {
      float* g = grad + static_cast<int64_t>(b) * classes;
      for (int32_t c = 0; c < classes; ++c) g[c] = (expf(z[c] - m) / s * t_sum - t[c]) / fb;
    }
  }
  *loss = sum / fb;
  return Status::kOk;
}

Status MeanSquaredError(const float* pred, const float* target, int32_t batch, int32_t dim, float* loss,
                        float* grad) {
  if (pred == nullptr || target == nullptr || loss == nullptr) return Status::kBadArgument;
  int32_t total;
  if (!internal::Product2(batch, dim, &total)) return Status::kBadShape;
  const float count = static_cast<float>(total);
  float sum = 0.0f;
  for (int32_t i = 0; i < total; ++i) {
    const float e = pred[i] - target[i];
    sum += e * e;
    if (grad != nullptr) grad[i] = 2.0f * e / count;
  }
  *loss = sum / count;
  return Status::kOk;
}

}  // namespace tinyprop
