// Losses against double-precision formulas and central finite differences.
#include "harness.h"

using namespace tinyprop;

namespace {

double RefCe(const std::vector<float>& z, const std::vector<double>& t, int32_t B, int32_t C) {
  double total = 0.0;
  for (int32_t b = 0; b < B; ++b) {
    double m = z[b * C];
    for (int32_t c = 1; c < C; ++c) m = std::max(m, static_cast<double>(z[b * C + c]));
    double s = 0.0;
    for (int32_t c = 0; c < C; ++c) s += std::exp(z[b * C + c] - m);
    const double lse = m + std::log(s);
    for (int32_t c = 0; c < C; ++c) total -= t[b * C + c] * (z[b * C + c] - lse);
  }
  return total / B;
}

}  // namespace

TP_TEST(SoftmaxCrossEntropyValueAndGradient) {
  tpt::Rng rng(31);
  for (int it = 0; it < 40; ++it) {
    const int32_t B = rng.Int(1, 6), C = rng.Int(1, 12);
    auto z = rng.Vec(B * C, -4.0f, 4.0f);
    if (it == 0) z.assign(B * C, 1e4f);  // large logits: must not overflow
    std::vector<int32_t> labels(B);
    std::vector<double> onehot(B * C, 0.0);
    std::vector<float> onehot_f(B * C, 0.0f);
    for (int32_t b = 0; b < B; ++b) {
      labels[b] = rng.Int(0, C - 1);
      onehot[b * C + labels[b]] = 1.0;
      onehot_f[b * C + labels[b]] = 1.0f;
    }
    float loss = -1.0f, loss_dense = -1.0f;
    std::vector<float> g(B * C), gd(B * C);
    TP_CHECK_OK(SoftmaxCrossEntropy(z.data(), labels.data(), B, C, &loss, g.data()));
    TP_CHECK_OK(SoftmaxCrossEntropyDense(z.data(), onehot_f.data(), B, C, &loss_dense, gd.data()));
    TP_CHECK_NEAR(loss, RefCe(z, onehot, B, C), 1e-5);
    TP_CHECK_NEAR(loss_dense, RefCe(z, onehot, B, C), 1e-5);
    for (int32_t i = 0; i < B * C; ++i) {
      // d/dz of the mean loss, by central differences in double
      std::vector<float> zp = z, zm = z;
      const double h = 1e-3;
      zp[i] = static_cast<float>(z[i] + h);
      zm[i] = static_cast<float>(z[i] - h);
      const double fd = (RefCe(zp, onehot, B, C) - RefCe(zm, onehot, B, C)) / (static_cast<double>(zp[i]) - zm[i]);
      if (it != 0) {
        TP_CHECK_NEAR(g[i], fd, 1e-4);
      }
      TP_CHECK_NEAR(gd[i], g[i], 1e-6);
    }
  }
  // Soft targets.
  const float z[4] = {0.5f, -1.0f, 2.0f, 0.0f};
  const float t[4] = {0.2f, 0.8f, 0.5f, 0.5f};
  float loss = 0.0f, g[4];
  TP_CHECK_OK(SoftmaxCrossEntropyDense(z, t, 2, 2, &loss, g));
  const std::vector<double> td(t, t + 4);
  TP_CHECK_NEAR(loss, RefCe(std::vector<float>(z, z + 4), td, 2, 2), 1e-6);
  TP_CHECK_OK(SoftmaxCrossEntropyDense(z, t, 2, 2, &loss, nullptr));
  // Errors.
  const int32_t bad[2] = {0, 2};
  TP_CHECK_STATUS(SoftmaxCrossEntropy(z, bad, 2, 2, &loss, g), Status::kBadIndex);
  const int32_t neg[2] = {-1, 0};
  TP_CHECK_STATUS(SoftmaxCrossEntropy(z, neg, 2, 2, &loss, g), Status::kBadIndex);
  TP_CHECK_STATUS(SoftmaxCrossEntropy(z, bad, 0, 2, &loss, g), Status::kBadShape);
  TP_CHECK_STATUS(SoftmaxCrossEntropy(z, bad, 2, 2, nullptr, g), Status::kBadArgument);
  TP_CHECK_STATUS(SoftmaxCrossEntropyDense(nullptr, t, 2, 2, &loss, g), Status::kBadArgument);
  TP_CHECK_STATUS(SoftmaxCrossEntropyDense(z, t, 2, -2, &loss, g), Status::kBadShape);
}

TP_TEST(MeanSquaredErrorValueAndGradient) {
  tpt::Rng rng(32);
  for (int it = 0; it < 30; ++it) {
    const int32_t B = rng.Int(1, 7), D = rng.Int(1, 9);
    const auto p = rng.Vec(B * D), t = rng.Vec(B * D);
    float loss = 0.0f;
    std::vector<float> g(B * D);
    TP_CHECK_OK(MeanSquaredError(p.data(), t.data(), B, D, &loss, g.data()));
    double ref = 0.0;
    for (int32_t i = 0; i < B * D; ++i) ref += (static_cast<double>(p[i]) - t[i]) * (static_cast<double>(p[i]) - t[i]);
    TP_CHECK_NEAR(loss, ref / (B * D), 1e-6);
    // Keras: mean over the last axis, then mean over the batch.
    double keras = 0.0;
    for (int32_t b = 0; b < B; ++b) {
      double row = 0.0;
      for (int32_t j = 0; j < D; ++j) row += std::pow(static_cast<double>(p[b * D + j]) - t[b * D + j], 2.0);
      keras += row / D;
    }
    TP_CHECK_NEAR(loss, keras / B, 1e-6);
    for (int32_t i = 0; i < B * D; ++i) TP_CHECK_NEAR(g[i], 2.0 * (static_cast<double>(p[i]) - t[i]) / (B * D), 1e-6);
  }
  float loss;
  const float a[2] = {1, 2};
  TP_CHECK_STATUS(MeanSquaredError(a, nullptr, 1, 2, &loss, nullptr), Status::kBadArgument);
  TP_CHECK_STATUS(MeanSquaredError(a, a, 1, 0, &loss, nullptr), Status::kBadShape);
  TP_CHECK_OK(MeanSquaredError(a, a, 1, 2, &loss, nullptr));
  TP_CHECK_EQ(loss, 0.0f);
}
