// Optimizers: Keras 3 semantics (checked against double-precision textbook formulas) and the exactness of the
// column-restricted plain SGD.
#include "harness.h"

using namespace tinyprop;

TP_TEST(SgdPlainMomentumNesterov) {
  tpt::Rng rng(41);
  const int32_t n = 50;
  for (int variant = 0; variant < 3; ++variant) {
    const float lr = 0.05f, mu = variant == 0 ? 0.0f : 0.9f;
    const bool nesterov = variant == 2;
    std::vector<float> w = rng.Vec(n), v(n, 0.0f);
    std::vector<double> wd(w.begin(), w.end()), vd(n, 0.0);
    for (int step = 0; step < 25; ++step) {
      const auto g = rng.Vec(n);
      TP_CHECK_OK(SgdUpdate(SgdParams{lr, mu, nesterov}, w.data(), g.data(), variant ? v.data() : nullptr, n));
      for (int32_t i = 0; i < n; ++i) {
        if (variant == 0) {
          wd[i] -= static_cast<double>(lr) * g[i];
        } else {
          vd[i] = mu * vd[i] - static_cast<double>(lr) * g[i];  // v = momentum * v - lr * g
          wd[i] += nesterov ? mu * vd[i] - static_cast<double>(lr) * g[i] : vd[i];
        }
      }
    }
    for (int32_t i = 0; i < n; ++i) TP_CHECK_NEAR(w[i], wd[i], 1e-5);
    if (variant) {
      for (int32_t i = 0; i < n; ++i) TP_CHECK_NEAR(v[i], vd[i], 1e-5);
    }
  }
  float w[2] = {1, 2}, g[2] = {1, 1}, v[2] = {0, 0};
  TP_CHECK_STATUS(SgdUpdate(SgdParams{0.1f, 0.5f, false}, w, g, nullptr, 2), Status::kBadArgument);
  TP_CHECK_STATUS(SgdUpdate(SgdParams{NAN, 0.0f, false}, w, g, v, 2), Status::kBadArgument);
  TP_CHECK_STATUS(SgdUpdate(SgdParams{0.1f, 1.5f, false}, w, g, v, 2), Status::kBadArgument);
  TP_CHECK_STATUS(SgdUpdate(SgdParams{0.1f, -0.1f, false}, w, g, v, 2), Status::kBadArgument);
  TP_CHECK_STATUS(SgdUpdate(SgdParams{0.1f, NAN, false}, w, g, v, 2), Status::kBadArgument);
  TP_CHECK_STATUS(SgdUpdate(SgdParams{0.1f, 0.0f, false}, w, g, v, 0), Status::kBadShape);
  TP_CHECK(w[0] == 1.0f && w[1] == 2.0f);
}

TP_TEST(SgdColumnsIsExactForPlainSgd) {
  tpt::Rng rng(42);
  const int32_t rows = 6, cols = 9;
  auto w = rng.Vec(rows * cols);
  w[3] = -0.0f;  // signed zero survives too
  const std::vector<int32_t> columns = {1, 3, 4, 8};
  std::vector<float> g(rows * cols, 0.0f);
  for (int32_t r = 0; r < rows; ++r)
    for (int32_t c : columns) g[r * cols + c] = rng.Uniform(-1, 1);
  auto dense = w, sparse = w;
  TP_CHECK_OK(SgdUpdate(SgdParams{0.01f, 0.0f, false}, dense.data(), g.data(), nullptr, rows * cols));
  TP_CHECK_OK(SgdUpdateColumns(0.01f, sparse.data(), g.data(), rows, cols, columns.data(), 4));
  TP_CHECK(std::memcmp(dense.data(), sparse.data(), dense.size() * 4) == 0);  // bit for bit
  for (float v : g) TP_CHECK(v == 0.0f);  // the consumed gradient columns are cleared (others were 0 already)
  // Momentum cannot skip rows: a zero gradient still moves w through the velocity.
  float wm[1] = {1.0f}, gm[1] = {0.0f}, vm[1] = {0.5f};
  TP_CHECK_OK(SgdUpdate(SgdParams{0.01f, 0.9f, false}, wm, gm, vm, 1));
  TP_CHECK(wm[0] != 1.0f && vm[0] == 0.45f);
  const int32_t bad[2] = {3, 3};
  TP_CHECK_STATUS(SgdUpdateColumns(0.01f, sparse.data(), g.data(), rows, cols, bad, 2), Status::kBadIndex);
  const int32_t out[1] = {9};
  TP_CHECK_STATUS(SgdUpdateColumns(0.01f, sparse.data(), g.data(), rows, cols, out, 1), Status::kBadIndex);
  TP_CHECK_STATUS(SgdUpdateColumns(0.01f, sparse.data(), g.data(), rows, cols, columns.data(), 10), Status::kBadIndex);
  TP_CHECK_STATUS(SgdUpdateColumns(0.01f, sparse.data(), g.data(), 0, cols, columns.data(), 4), Status::kBadShape);
  TP_CHECK_STATUS(SgdUpdateColumns(INFINITY, sparse.data(), g.data(), rows, cols, columns.data(), 4),
                  Status::kBadArgument);
}

TP_TEST(AdamMatchesTextbookWithKerasEpsilon) {
  tpt::Rng rng(43);
  AdamParams p{};
  TP_CHECK_OK(MakeAdamParams(1e-3, 0.9, 0.999, 1e-7, &p));
  // Keras computes 1 - beta in Python (double) and casts: not the float32 difference.
  TP_CHECK_EQ(p.one_minus_beta_1, static_cast<float>(1.0 - 0.9));
  TP_CHECK_EQ(p.one_minus_beta_2, static_cast<float>(1.0 - 0.999));
  TP_CHECK(p.one_minus_beta_1 != 1.0f - 0.9f);
  const int32_t n = 40;
  std::vector<float> w = rng.Vec(n), m(n, 0.0f), v(n, 0.0f);
  std::vector<double> wd(w.begin(), w.end()), md(n, 0.0), vd(n, 0.0);
  for (int64_t t = 1; t <= 30; ++t) {
    const auto g = rng.Vec(n);
    float b1p = 0.0f, b2p = 0.0f;
    TP_CHECK_OK(AdamPowers(p, t, &b1p, &b2p));
    TP_CHECK_NEAR(b1p, std::pow(0.9, static_cast<double>(t)), 1e-6);
    TP_CHECK_OK(AdamUpdate(p, b1p, b2p, w.data(), g.data(), m.data(), v.data(), n));
    const double alpha = 1e-3 * std::sqrt(1.0 - std::pow(0.999, t)) / (1.0 - std::pow(0.9, t));
    for (int32_t i = 0; i < n; ++i) {
      md[i] = 0.9 * md[i] + 0.1 * g[i];
      vd[i] = 0.999 * vd[i] + 0.001 * static_cast<double>(g[i]) * g[i];
      wd[i] -= alpha * md[i] / (std::sqrt(vd[i]) + 1e-7);  // epsilon outside the sqrt ("epsilon hat")
    }
  }
  for (int32_t i = 0; i < n; ++i) {
    TP_CHECK_NEAR(w[i], wd[i], 1e-5);
    TP_CHECK_NEAR(m[i], md[i], 1e-5);
    TP_CHECK_NEAR(v[i], vd[i], 1e-5);
  }
  // Keras' exact op order (float32), replicated with volatile temporaries.
  {
    float w1[1] = {0.3f}, g1[1] = {-0.7f}, m1[1] = {0.01f}, v1[1] = {0.02f};
    float b1p, b2p;
    TP_CHECK_OK(AdamPowers(p, 3, &b1p, &b2p));
    TP_CHECK_OK(AdamUpdate(p, b1p, b2p, w1, g1, m1, v1, 1));
    volatile float alpha = p.learning_rate * std::sqrt(1.0f - b2p);
    alpha = alpha / (1.0f - b1p);
    volatile float mm = 0.01f + (-0.7f - 0.01f) * p.one_minus_beta_1;
    volatile float g2 = -0.7f * -0.7f;
    volatile float vv = 0.02f + (g2 - 0.02f) * p.one_minus_beta_2;
    volatile float num = mm * alpha;
    volatile float den = std::sqrt(static_cast<float>(vv)) + p.epsilon;
    volatile float ww = 0.3f - num / den;
    TP_CHECK_EQ(tpt::Bits(m1[0]), tpt::Bits(mm));
    TP_CHECK_EQ(tpt::Bits(v1[0]), tpt::Bits(vv));
    TP_CHECK_EQ(tpt::Bits(w1[0]), tpt::Bits(ww));
  }
  float b1p, b2p;
  TP_CHECK_STATUS(AdamPowers(p, 0, &b1p, &b2p), Status::kBadArgument);
  TP_CHECK_STATUS(MakeAdamParams(1e-3, 1.0, 0.999, 1e-7, &p), Status::kBadArgument);
  TP_CHECK_STATUS(MakeAdamParams(1e-3, 0.9, 0.9999999999, 1e-7, &p), Status::kBadArgument);  // rounds to 1.0f
  TP_CHECK_STATUS(MakeAdamParams(NAN, 0.9, 0.999, 1e-7, &p), Status::kBadArgument);
  TP_CHECK_STATUS(MakeAdamParams(1e300, 0.9, 0.999, 1e-7, &p), Status::kBadArgument);
  TP_CHECK_STATUS(MakeAdamParams(1e-3, 0.9, 0.999, -1.0, &p), Status::kBadArgument);
  TP_CHECK_STATUS(MakeAdamParams(1e-3, -0.1, 0.999, 1e-7, &p), Status::kBadArgument);
  float x[1] = {0}, y[1] = {0}, z[1] = {0}, q[1] = {0};
  TP_CHECK_STATUS(AdamUpdate(p, 1.0f, 0.5f, x, y, z, q, 1), Status::kBadArgument);
  TP_CHECK_STATUS(AdamUpdate(p, 0.5f, 0.5f, x, y, nullptr, q, 1), Status::kBadArgument);
  TP_CHECK_STATUS(AdamUpdate(p, 0.5f, 0.5f, x, y, z, q, 0), Status::kBadShape);
  AdamParams broken = p;
  broken.one_minus_beta_1 = 0.0f;
  TP_CHECK_STATUS(AdamUpdate(broken, 0.5f, 0.5f, x, y, z, q, 1), Status::kBadArgument);
}
