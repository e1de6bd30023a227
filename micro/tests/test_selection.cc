// Selection: ratio, k, running max, top-k (against an independent stable sort), scores, whole-layer selection.
#include <algorithm>
#include <numeric>

#include "harness.h"

using namespace tinyprop;

namespace {

// Independent reference: stable order "score descending, then index ascending", first k, sorted ascending.
std::vector<int32_t> RefTopK(const std::vector<float>& scores, int32_t k) {
  std::vector<int32_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
  std::vector<int32_t> kept(order.begin(), order.begin() + k);
  std::sort(kept.begin(), kept.end());
  return kept;
}

// The spec's float32 order, written out with volatile so nothing is reassociated or contracted.
float RefRatio(float y, float ymax, float s_min, float s_max, float zeta_pow) {
  volatile float d = s_max - s_min;
  volatile float q = y / ymax;
  volatile float t = q * d;
  t = s_min + t;
  volatile float r = t * zeta_pow;
  return r;
}

int32_t RefK(float bpr, int32_t n, bool round_half_even) {
  volatile float t = static_cast<float>(n) * bpr;
  float r = round_half_even ? std::nearbyint(static_cast<float>(t)) : std::floor(static_cast<float>(t));
  r = std::min(std::max(r, 1.0f), static_cast<float>(n));
  return static_cast<int32_t>(r);
}

std::vector<float> RandomScores(tpt::Rng& rng, int32_t n, int mode) {
  std::vector<float> s(n);
  for (auto& v : s) {
    if (mode == 0) v = rng.Uniform(-2.0f, 2.0f);
    else if (mode == 1) v = static_cast<float>(rng.Int(0, 3));  // heavy ties
    else v = rng.Int(0, 1) ? 0.0f : -0.0f;                      // all tied (+0 == -0)
  }
  return s;
}

}  // namespace

TP_TEST(RatioMatchesSpecOrder) {
  tpt::Rng rng(1);
  for (int it = 0; it < 20000; ++it) {
    float s_min = rng.Uniform(0.0f, 1.0f), s_max = rng.Uniform(0.0f, 1.0f);
    if (s_min > s_max) std::swap(s_min, s_max);
    const float zp = rng.Int(0, 1) ? 1.0f : rng.Uniform(0.0f, 1.0f);
    const float ymax = rng.Uniform(1e-3f, 100.0f);
    const float y = rng.Uniform(0.0f, ymax);
    const RatioParams p{s_min, s_max, zp, Rounding::kFloor};
    float bpr = -1.0f;
    TP_CHECK_OK(AdaptiveRatio(y, ymax, p, &bpr));
    TP_CHECK_EQ(tpt::Bits(bpr), tpt::Bits(RefRatio(y, ymax, s_min, s_max, zp)));
    const int32_t n = rng.Int(1, 1000);
    int32_t k = -1;
    TP_CHECK_OK(RatioToK(bpr, n, Rounding::kFloor, &k));
    TP_CHECK_EQ(k, RefK(bpr, n, false));
    TP_CHECK_OK(RatioToK(bpr, n, Rounding::kHalfEven, &k));
    TP_CHECK_EQ(k, RefK(bpr, n, true));
  }
}

TP_TEST(RatioToKEdgeCases) {
  int32_t k = 0;
  TP_CHECK_OK(RatioToK(0.25f, 10, Rounding::kFloor, &k));
  TP_CHECK_EQ(k, 2);
  TP_CHECK_OK(RatioToK(0.25f, 10, Rounding::kHalfEven, &k));  // 2.5 -> 2 (ties to even)
  TP_CHECK_EQ(k, 2);
  TP_CHECK_OK(RatioToK(0.25f, 14, Rounding::kHalfEven, &k));  // 3.5 -> 4
  TP_CHECK_EQ(k, 4);
  TP_CHECK_OK(RatioToK(0.3f, 10, Rounding::kHalfEven, &k));  // 3.0000001 -> 3
  TP_CHECK_EQ(k, 3);
  TP_CHECK_OK(RatioToK(0.0f, 10, Rounding::kFloor, &k));  // clamp to 1
  TP_CHECK_EQ(k, 1);
  TP_CHECK_OK(RatioToK(0.04f, 10, Rounding::kHalfEven, &k));  // 0.4 -> 0 -> 1
  TP_CHECK_EQ(k, 1);
  TP_CHECK_OK(RatioToK(-3.0f, 10, Rounding::kFloor, &k));
  TP_CHECK_EQ(k, 1);
  TP_CHECK_OK(RatioToK(1.0f, 10, Rounding::kFloor, &k));  // k = N
  TP_CHECK_EQ(k, 10);
  TP_CHECK_OK(RatioToK(7.5f, 10, Rounding::kFloor, &k));  // clamp to N
  TP_CHECK_EQ(k, 10);
  TP_CHECK_OK(RatioToK(INFINITY, 10, Rounding::kFloor, &k));
  TP_CHECK_EQ(k, 10);
  TP_CHECK_OK(RatioToK(-INFINITY, 10, Rounding::kFloor, &k));
  TP_CHECK_EQ(k, 1);
  TP_CHECK_OK(RatioToK(1.0f, INT32_MAX, Rounding::kFloor, &k));
  TP_CHECK_EQ(k, INT32_MAX);
  TP_CHECK_OK(RatioToK(0.5f, 1, Rounding::kHalfEven, &k));
  TP_CHECK_EQ(k, 1);
  k = 77;
  TP_CHECK_STATUS(RatioToK(NAN, 10, Rounding::kFloor, &k), Status::kNonFinite);
  TP_CHECK_STATUS(RatioToK(0.5f, 0, Rounding::kFloor, &k), Status::kBadShape);
  TP_CHECK_STATUS(RatioToK(0.5f, -5, Rounding::kFloor, &k), Status::kBadShape);
  TP_CHECK_STATUS(RatioToK(0.5f, 10, static_cast<Rounding>(7), &k), Status::kBadArgument);
  TP_CHECK_STATUS(RatioToK(0.5f, 10, Rounding::kFloor, nullptr), Status::kBadArgument);
  TP_CHECK_EQ(k, 77);  // untouched on error
}

TP_TEST(RatioParamValidation) {
  float bpr = 0.0f;
  const RatioParams good{0.1f, 0.9f, 0.5f, Rounding::kFloor};
  TP_CHECK_OK(CheckRatioParams(good));
  const RatioParams bad[] = {
      {NAN, 0.9f, 0.5f, Rounding::kFloor},  {0.1f, NAN, 0.5f, Rounding::kFloor},
      {0.1f, 0.9f, NAN, Rounding::kFloor},  {-0.1f, 0.9f, 0.5f, Rounding::kFloor},
      {0.1f, 1.5f, 0.5f, Rounding::kFloor}, {0.9f, 0.1f, 0.5f, Rounding::kFloor},
      {0.1f, 0.9f, 1.5f, Rounding::kFloor}, {0.1f, 0.9f, -0.5f, Rounding::kFloor},
      {0.1f, 0.9f, 0.5f, static_cast<Rounding>(-1)},
  };
  for (const auto& p : bad) {
    TP_CHECK_STATUS(CheckRatioParams(p), Status::kBadArgument);
    TP_CHECK_STATUS(AdaptiveRatio(1.0f, 2.0f, p, &bpr), Status::kBadArgument);
  }
  TP_CHECK_STATUS(AdaptiveRatio(1.0f, 0.0f, good, &bpr), Status::kBadArgument);
  TP_CHECK_STATUS(AdaptiveRatio(-1.0f, 2.0f, good, &bpr), Status::kBadArgument);
  TP_CHECK_STATUS(AdaptiveRatio(3.0f, 2.0f, good, &bpr), Status::kBadArgument);  // y > ymax: max not updated
  TP_CHECK_STATUS(AdaptiveRatio(NAN, 2.0f, good, &bpr), Status::kNonFinite);
  TP_CHECK_STATUS(AdaptiveRatio(1.0f, INFINITY, good, &bpr), Status::kNonFinite);
  TP_CHECK_STATUS(AdaptiveRatio(1.0f, 2.0f, good, nullptr), Status::kBadArgument);
  float zp = 0.0f;
  TP_CHECK_OK(ZetaPow(0.5, 3, &zp));
  TP_CHECK_EQ(zp, 0.125f);
  TP_CHECK_OK(ZetaPow(0.7, 0, &zp));
  TP_CHECK_EQ(zp, 1.0f);
  TP_CHECK_OK(ZetaPow(0.9, 2, &zp));
  TP_CHECK_EQ(zp, static_cast<float>(0.9 * 0.9));
  TP_CHECK_STATUS(ZetaPow(0.0, 1, &zp), Status::kBadArgument);
  TP_CHECK_STATUS(ZetaPow(1.5, 1, &zp), Status::kBadArgument);
  TP_CHECK_STATUS(ZetaPow(NAN, 1, &zp), Status::kBadArgument);
  TP_CHECK_STATUS(ZetaPow(0.5, -1, &zp), Status::kBadArgument);
}

// The sample that sets the running max gets q = y / ymax = 1 exactly, so its k cannot depend on the last bits
// of its y (which an exported step may round differently): with s_max = 1 it keeps all n units, always.
TP_TEST(RunningMaxSampleKeepsTheSameKWhateverItsLastBits) {
  tpt::Rng rng(31);
  const RatioParams p{0.1f, 1.0f, 1.0f, Rounding::kFloor};
  int old_order_flips = 0;
  for (int it = 0; it < 2000; ++it) {
    const float y[2] = {rng.Uniform(1e-3f, 1e3f), 0.0f};
    float ymax = kYmaxInit;
    int32_t k[2];
    TP_CHECK_OK(AdaptiveK(y, 2, 16, p, &ymax, nullptr, k));
    TP_CHECK_EQ(k[0], 16);
    volatile float d = p.s_max - p.s_min, t = y[0] * d;  // the former order, (y * d) / ymax
    t = t / y[0];
    t = p.s_min + t;
    volatile float n_bpr = 16.0f * t;
    old_order_flips += static_cast<int32_t>(n_bpr) != 16;
  }
  TP_CHECK(old_order_flips > 0);  // the test tells the orders apart
}

TP_TEST(AdaptiveKUpdatesRunningMaxFirst) {
  const RatioParams p{0.1f, 0.9f, 0.5f, Rounding::kFloor};
  const float y[3] = {1.0f, 4.0f, 0.0f};
  float ymax = 2.0f;
  float bpr[3];
  int32_t k[3];
  TP_CHECK_OK(AdaptiveK(y, 3, 100, p, &ymax, bpr, k));
  TP_CHECK_EQ(ymax, 4.0f);  // max(2, 4) before use
  for (int b = 0; b < 3; ++b) {
    TP_CHECK_EQ(tpt::Bits(bpr[b]), tpt::Bits(RefRatio(y[b], 4.0f, 0.1f, 0.9f, 0.5f)));
    TP_CHECK_EQ(k[b], RefK(bpr[b], 100, false));
  }
  // ymax only grows.
  float y2[1] = {1.0f};
  TP_CHECK_OK(AdaptiveK(y2, 1, 100, p, &ymax, nullptr, k));
  TP_CHECK_EQ(ymax, 4.0f);
  TP_CHECK_OK(UpdateRunningMax(y2, 1, &ymax));
  TP_CHECK_EQ(ymax, 4.0f);
  float y3[2] = {3.0f, 9.0f};
  TP_CHECK_OK(UpdateRunningMax(y3, 2, &ymax));
  TP_CHECK_EQ(ymax, 9.0f);
  // Initial value: an all-zero first error gives bpr = s_min * zeta_pow.
  float y0[2] = {0.0f, 0.0f};
  float m0 = kYmaxInit;
  TP_CHECK_OK(AdaptiveK(y0, 2, 10, p, &m0, bpr, k));
  TP_CHECK_EQ(m0, kYmaxInit);
  TP_CHECK_EQ(bpr[0], 0.1f * 0.5f);
  TP_CHECK_EQ(k[0], 1);
  // Errors leave ymax untouched.
  float bad_y[2] = {1.0f, NAN};
  float m = 3.0f;
  TP_CHECK_STATUS(AdaptiveK(bad_y, 2, 10, p, &m, bpr, k), Status::kNonFinite);
  TP_CHECK_STATUS(UpdateRunningMax(bad_y, 2, &m), Status::kNonFinite);
  TP_CHECK_EQ(m, 3.0f);
  float neg_y[1] = {-1.0f};
  TP_CHECK_STATUS(AdaptiveK(neg_y, 1, 10, p, &m, bpr, k), Status::kBadArgument);
  TP_CHECK_STATUS(AdaptiveK(y, 0, 10, p, &m, bpr, k), Status::kBadShape);
  TP_CHECK_STATUS(AdaptiveK(y, 3, 0, p, &m, bpr, k), Status::kBadShape);
  TP_CHECK_STATUS(AdaptiveK(nullptr, 3, 10, p, &m, bpr, k), Status::kBadArgument);
  TP_CHECK_STATUS(AdaptiveK(y, 3, 10, p, nullptr, bpr, k), Status::kBadArgument);
  TP_CHECK_STATUS(AdaptiveK(y, 3, 10, p, &m, bpr, nullptr), Status::kBadArgument);
  float zero_max = 0.0f;
  TP_CHECK_STATUS(AdaptiveK(y, 3, 10, p, &zero_max, bpr, k), Status::kBadArgument);
  TP_CHECK_EQ(m, 3.0f);
}

// BudgetProp's reference (a running mean), the AIfES per-sample max, a decaying max and the floor on k, from the
// rule's text in selection.h (the golden vectors compare the same with Python bit for bit).
TP_TEST(ReferenceRulesAndKFloor) {
  const float y[4] = {1.0f, 4.0f, 3.0f, 8.0f};
  int32_t k[4];
  float bpr[4];
  // mean, first step: R = mean(y) = 4; bpr = 0.25 * y / 4 (s_min 0, s_max = the share 0.25); n = 8
  RatioParams mean{0.0f, 0.25f, 1.0f, Rounding::kFloor, Reference::kMean, 0.5f};
  float r = kYmaxInit;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, mean, &r, bpr, k));
  TP_CHECK_EQ(r, 4.0f);
  TP_CHECK_EQ(bpr[3], 0.5f);
  TP_CHECK_EQ(k[0], 1);  // floor(8 * 0.0625) = 0, clamped up to 1
  TP_CHECK_EQ(k[3], 4);
  // then decayed: R = 0.5 * 4 + 0.5 * mean(y) = 4
  TP_CHECK_OK(AdaptiveK(y, 4, 8, mean, &r, bpr, k));
  TP_CHECK_EQ(r, 4.0f);
  mean.min_kept = 3;  // the floor on k
  TP_CHECK_OK(AdaptiveK(y, 4, 8, mean, &r, bpr, k));
  TP_CHECK_EQ(k[0], 3);
  TP_CHECK_EQ(k[3], 4);
  mean.min_kept = 20;  // never above n
  TP_CHECK_OK(AdaptiveK(y, 4, 8, mean, &r, bpr, k));
  TP_CHECK_EQ(k[0], 8);
  // AIfES order: sample b divides by max(R, y[0..b]); R = 2 before the step
  const RatioParams per_sample{0.0f, 1.0f, 1.0f, Rounding::kFloor, Reference::kMax, 1.0f, true};
  r = 2.0f;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, per_sample, &r, bpr, k));
  TP_CHECK_EQ(r, 8.0f);
  TP_CHECK_EQ(bpr[0], 0.5f);   // 1 / 2
  TP_CHECK_EQ(bpr[1], 1.0f);   // 4 / 4
  TP_CHECK_EQ(bpr[2], 0.75f);  // 3 / 4
  TP_CHECK_EQ(bpr[3], 1.0f);
  // a decaying max: R = max(0.5 * 20, max(y)) = 10, and never below kYmaxInit
  const RatioParams decaying{0.0f, 1.0f, 1.0f, Rounding::kFloor, Reference::kMax, 0.5f};
  r = 20.0f;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, decaying, &r, bpr, k));
  TP_CHECK_EQ(r, 10.0f);
  const float zeros[2] = {0.0f, 0.0f};
  r = kYmaxInit;
  TP_CHECK_OK(AdaptiveK(zeros, 2, 8, decaying, &r, bpr, k));
  TP_CHECK_EQ(r, kYmaxInit);
  // bad parameters
  RatioParams bad = mean;
  bad.decay = 0.0f;
  TP_CHECK_STATUS(AdaptiveK(y, 4, 8, bad, &r, bpr, k), Status::kBadArgument);
  bad = mean;
  bad.min_kept = 0;
  TP_CHECK_STATUS(AdaptiveK(y, 4, 8, bad, &r, bpr, k), Status::kBadArgument);
  bad = mean;
  bad.per_sample_max = true;  // only with the running max
  TP_CHECK_STATUS(AdaptiveK(y, 4, 8, bad, &r, bpr, k), Status::kBadArgument);
  for (float skip : {-1.0f, NAN, INFINITY}) {
    bad = mean;
    bad.skip_below = skip;
    TP_CHECK_STATUS(AdaptiveK(y, 4, 8, bad, &r, bpr, k), Status::kBadArgument);
  }
}

// skip_below: a sample with y / R below it gets k = 0 (the others their k as without it); R as before.
TP_TEST(SkipBelowSkipsSamplesUnderTheReference) {
  const float y[4] = {1.0f, 4.0f, 3.0f, 8.0f};
  int32_t k[4], k_plain[4];
  float bpr[4];
  RatioParams mean{0.0f, 0.25f, 1.0f, Rounding::kFloor, Reference::kMean, 0.5f};
  float r = kYmaxInit, r_plain = kYmaxInit;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, mean, &r_plain, bpr, k_plain));
  mean.skip_below = 0.8f;  // R = 4: y / R = 0.25, 1, 0.75, 2 -> samples 0 and 2 skipped
  TP_CHECK_OK(AdaptiveK(y, 4, 8, mean, &r, bpr, k));
  TP_CHECK_EQ(r, r_plain);
  TP_CHECK_EQ(k[0], 0);
  TP_CHECK_EQ(k[1], k_plain[1]);
  TP_CHECK_EQ(k[2], 0);
  TP_CHECK_EQ(k[3], k_plain[3]);
  TP_CHECK_EQ(k[3], 4);
  mean.skip_below = 1.0f;  // y / R == 1 is not below: kept
  r = kYmaxInit;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, mean, &r, bpr, k));
  TP_CHECK_EQ(k[1], k_plain[1]);
  TP_CHECK_EQ(k[2], 0);
  // the running max with the AIfES order: sample b's own reference, max(R, y[0..b]) with R = 2
  RatioParams per_sample{0.0f, 1.0f, 1.0f, Rounding::kFloor, Reference::kMax, 1.0f, true};
  per_sample.skip_below = 0.8f;  // y / m = 0.5, 1, 0.75, 1
  r = 2.0f;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, per_sample, &r, bpr, k));
  TP_CHECK_EQ(k[0], 0);
  TP_CHECK_EQ(k[1], 8);
  TP_CHECK_EQ(k[2], 0);
  TP_CHECK_EQ(k[3], 8);
}

// The running quantile (BudgetProp's whole-sample mode): the batch mean first, then R * (1 + rate * (above -
// share)) with `above` the share of samples reaching the previous R; with skip_below 1 the samples below the new R
// get k = 0, the others all n (s_min = s_max = 1).
TP_TEST(QuantileReferenceSteersTheSkippedShare) {
  const float y[4] = {1.0f, 4.0f, 3.0f, 8.0f};
  int32_t k[4];
  RatioParams q{1.0f, 1.0f, 1.0f, Rounding::kFloor, Reference::kQuantile, 1.0f};
  q.skip_below = 1.0f;
  q.quantile_share = 0.25f;
  q.quantile_rate = 0.5f;
  float r = kYmaxInit;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, q, &r, nullptr, k));
  TP_CHECK_EQ(r, 4.0f);  // mean(y)
  TP_CHECK_EQ(k[0], 0);
  TP_CHECK_EQ(k[1], 8);  // y == R is not below it
  TP_CHECK_EQ(k[2], 0);
  TP_CHECK_EQ(k[3], 8);
  // 2 of 4 reach R = 4: R = 4 * (1 + 0.5 * (0.5 - 0.25)) = 4.5; only y = 8 passes
  TP_CHECK_OK(AdaptiveK(y, 4, 8, q, &r, nullptr, k));
  TP_CHECK_EQ(r, 4.5f);
  TP_CHECK_EQ(k[1], 0);
  TP_CHECK_EQ(k[3], 8);
  // 1 of 4 reaches 4.5: the share met, R stays
  TP_CHECK_OK(AdaptiveK(y, 4, 8, q, &r, nullptr, k));
  TP_CHECK_EQ(r, 4.5f);
  // none reaches 9: R = 9 * (1 - 0.5 * 0.25) = 7.875
  r = 9.0f;
  TP_CHECK_OK(AdaptiveK(y, 4, 8, q, &r, nullptr, k));
  TP_CHECK_EQ(r, 7.875f);
  // its parameters belong to the quantile alone, in range
  for (float share : {0.0f, 1.0f, -0.5f, NAN}) {
    RatioParams bad = q;
    bad.quantile_share = share;
    TP_CHECK_STATUS(AdaptiveK(y, 4, 8, bad, &r, nullptr, k), Status::kBadArgument);
  }
  for (float rate : {0.0f, 1.5f, NAN}) {
    RatioParams bad = q;
    bad.quantile_rate = rate;
    TP_CHECK_STATUS(AdaptiveK(y, 4, 8, bad, &r, nullptr, k), Status::kBadArgument);
  }
  RatioParams mean{1.0f, 1.0f, 1.0f, Rounding::kFloor, Reference::kMean, 0.5f};
  mean.quantile_share = 0.25f;
  TP_CHECK_STATUS(AdaptiveK(y, 4, 8, mean, &r, nullptr, k), Status::kBadArgument);
}

TP_TEST(StaticKEqualsAdaptiveWithEqualBounds) {
  tpt::Rng rng(2);
  for (int it = 0; it < 5000; ++it) {
    const float ratio = rng.Uniform(1e-4f, 1.0f), zp = rng.Uniform(0.0f, 1.0f);
    const int32_t n = rng.Int(1, 5000);
    int32_t ks = 0, ka = 0;
    TP_CHECK_OK(StaticK(ratio, zp, n, Rounding::kFloor, &ks));
    float y[1] = {rng.Uniform(0.0f, 5.0f)};
    float ymax = 5.0f;
    TP_CHECK_OK(AdaptiveK(y, 1, n, RatioParams{ratio, ratio, zp, Rounding::kFloor}, &ymax, nullptr, &ka));
    TP_CHECK_EQ(ks, ka);
    volatile float t = ratio * zp;
    TP_CHECK_EQ(ks, RefK(t, n, false));
  }
  int32_t k = 0;
  TP_CHECK_STATUS(StaticK(0.0f, 1.0f, 10, Rounding::kFloor, &k), Status::kBadArgument);
  TP_CHECK_STATUS(StaticK(1.5f, 1.0f, 10, Rounding::kFloor, &k), Status::kBadArgument);
  TP_CHECK_STATUS(StaticK(NAN, 1.0f, 10, Rounding::kFloor, &k), Status::kBadArgument);
  TP_CHECK_STATUS(StaticK(0.5f, NAN, 10, Rounding::kFloor, &k), Status::kBadArgument);
  TP_CHECK_STATUS(StaticK(0.5f, 1.0f, 0, Rounding::kFloor, &k), Status::kBadShape);
}

TP_TEST(TopKMatchesStableSort) {
  tpt::Rng rng(3);
  const int32_t sizes[] = {1, 2, 3, 5, 8, 16, 33, 100, 257};
  for (int32_t n : sizes) {
    for (int mode = 0; mode < 3; ++mode) {
      for (int rep = 0; rep < 3; ++rep) {
        const auto scores = RandomScores(rng, n, mode);
        std::vector<int32_t> ks;
        for (int32_t k = 1; k <= n; k += (n > 40 ? 7 : 1)) ks.push_back(k);
        ks.push_back(n);
        for (int32_t k : ks) {
          std::vector<int32_t> kept(k, -5);
          TP_CHECK_OK(TopKIndices(scores.data(), n, k, kept.data()));
          TP_CHECK(kept == RefTopK(scores, k));
          // |.| variant == top-k of the absolute values
          std::vector<float> abs_scores(n);
          for (int32_t i = 0; i < n; ++i) abs_scores[i] = std::fabs(scores[i]);
          TP_CHECK_OK(TopKAbsIndices(scores.data(), n, k, kept.data()));
          TP_CHECK(kept == RefTopK(abs_scores, k));
          // A row with room for n entries (TopKBatch): the heap caches integer keys in row[k, 2k) when 2k <= n.
          std::vector<int32_t> row(n, -5);
          const int32_t k1[1] = {k};
          TP_CHECK_OK(TopKBatch(scores.data(), 1, n, k1, row.data()));
          TP_CHECK(std::vector<int32_t>(row.begin(), row.begin() + k) == RefTopK(scores, k));
        }
      }
    }
  }
}

TP_TEST(TopKTiesKeepLowerIndex) {
  const float s[6] = {1.0f, 3.0f, 2.0f, 3.0f, 3.0f, 0.0f};
  int32_t kept[6];
  TP_CHECK_OK(TopKIndices(s, 6, 1, kept));
  TP_CHECK_EQ(kept[0], 1);
  TP_CHECK_OK(TopKIndices(s, 6, 2, kept));
  TP_CHECK_EQ(kept[0], 1);
  TP_CHECK_EQ(kept[1], 3);
  TP_CHECK_OK(TopKIndices(s, 6, 4, kept));
  TP_CHECK(kept[0] == 1 && kept[1] == 2 && kept[2] == 3 && kept[3] == 4);
  const float all_equal[5] = {7, 7, 7, 7, 7};
  TP_CHECK_OK(TopKIndices(all_equal, 5, 3, kept));
  TP_CHECK(kept[0] == 0 && kept[1] == 1 && kept[2] == 2);
  const float signs[4] = {-2.0f, 2.0f, -2.0f, 1.0f};  // |.|: three ties at 2
  TP_CHECK_OK(TopKAbsIndices(signs, 4, 2, kept));
  TP_CHECK(kept[0] == 0 && kept[1] == 1);
  const float infs[4] = {1.0f, INFINITY, -INFINITY, INFINITY};
  TP_CHECK_OK(TopKIndices(infs, 4, 2, kept));
  TP_CHECK(kept[0] == 1 && kept[1] == 3);
  TP_CHECK_OK(TopKAbsIndices(infs, 4, 3, kept));
  TP_CHECK(kept[0] == 1 && kept[1] == 2 && kept[2] == 3);
}

TP_TEST(TopKErrors) {
  const float s[4] = {1, 2, NAN, 4};
  const float ok[4] = {1, 2, 3, 4};
  int32_t kept[4] = {9, 9, 9, 9};
  TP_CHECK_STATUS(TopKIndices(s, 4, 2, kept), Status::kNonFinite);
  TP_CHECK_STATUS(TopKAbsIndices(s, 4, 2, kept), Status::kNonFinite);
  TP_CHECK_STATUS(TopKIndices(ok, 4, 0, kept), Status::kBadIndex);
  TP_CHECK_STATUS(TopKIndices(ok, 4, 5, kept), Status::kBadIndex);
  TP_CHECK_STATUS(TopKIndices(ok, 4, -1, kept), Status::kBadIndex);
  TP_CHECK_STATUS(TopKIndices(ok, 0, 1, kept), Status::kBadShape);
  TP_CHECK_STATUS(TopKIndices(ok, -4, 1, kept), Status::kBadShape);
  TP_CHECK_STATUS(TopKIndices(nullptr, 4, 1, kept), Status::kBadArgument);
  TP_CHECK_STATUS(TopKIndices(ok, 4, 1, nullptr), Status::kBadArgument);
  TP_CHECK(kept[0] == 9 && kept[3] == 9);
  const int32_t kk[2] = {1, 5};
  int32_t rows[8];
  TP_CHECK_STATUS(TopKBatch(ok, 2, 2, kk, rows), Status::kBadIndex);
  TP_CHECK_STATUS(TopKBatch(ok, 0, 2, kk, rows), Status::kBadShape);
  TP_CHECK_STATUS(TopKBatch(ok, INT32_MAX, 2, kk, rows), Status::kBadShape);
}

TP_TEST(TopKBatchPerSampleK) {
  tpt::Rng rng(4);
  for (int rep = 0; rep < 50; ++rep) {
    const int32_t batch = rng.Int(1, 6), n = rng.Int(1, 40);
    auto scores = RandomScores(rng, batch * n, rep % 3);
    if (rep % 5 == 0) {  // infinities and signed zeros among ordinary scores
      scores[rng.Int(0, batch * n - 1)] = INFINITY;
      scores[rng.Int(0, batch * n - 1)] = -INFINITY;
      scores[rng.Int(0, batch * n - 1)] = -0.0f;
      scores[rng.Int(0, batch * n - 1)] = 0.0f;
    }
    std::vector<int32_t> k(batch);
    for (auto& v : k) v = rng.Int(0, n);
    k[0] = n;  // k = N edge case
    if (batch > 1) k[1] = 0;
    std::vector<int32_t> kept(batch * n, 123);
    TP_CHECK_OK(TopKBatch(scores.data(), batch, n, k.data(), kept.data()));
    for (int32_t b = 0; b < batch; ++b) {
      std::vector<float> row(scores.begin() + b * n, scores.begin() + (b + 1) * n);
      const auto ref = k[b] > 0 ? RefTopK(row, k[b]) : std::vector<int32_t>{};
      TP_CHECK(std::equal(ref.begin(), ref.end(), kept.begin() + b * n));
      for (int32_t t = k[b]; t < n; ++t) TP_CHECK_EQ(kept[b * n + t], -1);
    }
    TP_CHECK_OK(CheckKeptSet(KeptSet{k.data(), kept.data(), n}, batch, n));
  }
}

TP_TEST(KeptSetValidation) {
  const int32_t idx[6] = {0, 2, 3, 1, 2, 5};
  const int32_t k_ok[2] = {3, 3};
  TP_CHECK_OK(CheckKeptSet(KeptSet{k_ok, idx, 3}, 2, 6));
  TP_CHECK_OK(CheckKeptSet(KeptSet{k_ok, idx, 0}, 2, 6));  // shared row
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k_ok, idx, 3}, 2, 5), Status::kBadIndex);  // 5 out of range
  const int32_t k_big[2] = {4, 1};
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k_big, idx, 3}, 2, 6), Status::kBadIndex);  // k > row_stride
  const int32_t k_neg[2] = {-1, 1};
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k_neg, idx, 3}, 2, 6), Status::kBadIndex);
  const int32_t k_over[1] = {7};
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k_over, idx, 0}, 1, 6), Status::kBadIndex);
  const int32_t unsorted[3] = {2, 1, 3};
  const int32_t dup[3] = {1, 1, 3};
  const int32_t negative[3] = {-1, 1, 3};
  const int32_t k3[1] = {3};
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k3, unsorted, 3}, 1, 6), Status::kBadIndex);
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k3, dup, 3}, 1, 6), Status::kBadIndex);
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k3, negative, 3}, 1, 6), Status::kBadIndex);
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k3, idx, -1}, 1, 6), Status::kBadArgument);
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{nullptr, idx, 3}, 1, 6), Status::kBadArgument);
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k3, nullptr, 3}, 1, 6), Status::kBadArgument);
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k3, idx, 3}, 0, 6), Status::kBadShape);
  TP_CHECK_STATUS(CheckKeptSet(KeptSet{k3, idx, 3}, 1, 0), Status::kBadShape);
}

TP_TEST(MaskUnionAndZeroing) {
  const int32_t kept[3] = {1, 4, 5};
  uint8_t mask[7];
  TP_CHECK_OK(KeptToMask(kept, 3, 7, mask));
  const uint8_t want[7] = {0, 1, 0, 0, 1, 1, 0};
  TP_CHECK(std::memcmp(mask, want, 7) == 0);
  TP_CHECK_STATUS(KeptToMask(kept, 3, 5, mask), Status::kBadIndex);
  float v[7] = {1, 2, 3, 4, 5, 6, 7};
  TP_CHECK_OK(ZeroUnkept(v, 7, kept, 3));
  const float vw[7] = {0, 2, 0, 0, 5, 6, 0};
  TP_CHECK(std::memcmp(v, vw, sizeof(v)) == 0);
  TP_CHECK_OK(ZeroUnkept(v, 7, kept, 0));
  for (float x : v) TP_CHECK_EQ(x, 0.0f);
  const int32_t rows[6] = {0, 3, -1, 3, 6, -1};
  const int32_t k[2] = {2, 2};
  int32_t uni[7], count = -1;
  TP_CHECK_OK(KeptUnion(KeptSet{k, rows, 3}, 2, 7, mask, uni, &count));
  TP_CHECK_EQ(count, 3);
  TP_CHECK(uni[0] == 0 && uni[1] == 3 && uni[2] == 6);
  TP_CHECK_STATUS(KeptUnion(KeptSet{k, rows, 3}, 2, 6, mask, uni, &count), Status::kBadIndex);
}

TP_TEST(ChannelScoresAndY) {
  tpt::Rng rng(5);
  const int32_t B = 3, P = 5, C = 4;
  const auto d = rng.Vec(B * P * C);
  std::vector<float> scores(B * C), y(B), shared(C);
  TP_CHECK_OK(ChannelScores(d.data(), B, P, C, scores.data(), y.data()));
  TP_CHECK_OK(SharedChannelScores(d.data(), B, P, C, shared.data()));
  for (int32_t c = 0; c < C; ++c) {
    double all = 0.0;
    for (int32_t b = 0; b < B; ++b) {
      double s = 0.0;
      for (int32_t p = 0; p < P; ++p) s += std::fabs(d[(b * P + p) * C + c]);
      TP_CHECK_NEAR(scores[b * C + c], s, 1e-5);
      all += s;
    }
    TP_CHECK_NEAR(shared[c], all / (B * P), 1e-5);
  }
  for (int32_t b = 0; b < B; ++b) {
    float s = 0.0f;
    for (int32_t c = 0; c < C; ++c) s += scores[b * C + c];
    TP_CHECK_EQ(y[b], s);  // y = sum of the channel scores in channel order
  }
  std::vector<float> y2(B);
  TP_CHECK_OK(LocalError(d.data(), B, P * C, y2.data()));
  for (int32_t b = 0; b < B; ++b) {
    float s = 0.0f;
    for (int32_t j = 0; j < P * C; ++j) s += std::fabs(d[b * P * C + j]);
    TP_CHECK_EQ(y2[b], s);  // index order
  }
  TP_CHECK_STATUS(ChannelScores(d.data(), B, 0, C, scores.data(), nullptr), Status::kBadShape);
  TP_CHECK_STATUS(ChannelScores(d.data(), 65536, 65536, 2, scores.data(), nullptr), Status::kBadShape);
  TP_CHECK_STATUS(LocalError(nullptr, B, 4, y2.data()), Status::kBadArgument);
  TP_CHECK_STATUS(SharedChannelScores(d.data(), -1, P, C, shared.data()), Status::kBadShape);
}

TP_TEST(SelectUnitsEndToEnd) {
  tpt::Rng rng(6);
  const RatioParams p{0.1f, 0.9f, 0.5f, Rounding::kFloor};
  float ymax = kYmaxInit;
  for (int step = 0; step < 30; ++step) {
    const int32_t B = rng.Int(1, 5), N = rng.Int(1, 60);
    auto d = rng.Vec(B * N, -1.0f, 1.0f);
    if (step % 4 == 0) {
      for (int32_t j = 0; j < N; ++j) d[j] = (j % 3 == 0) ? 0.5f : -0.5f;  // ties in |delta|
    }
    if (B > 1 && step % 5 == 0) std::fill(d.begin() + N, d.begin() + 2 * N, 0.0f);  // zero-error sample
    // Reference pipeline.
    std::vector<float> y(B);
    float ref_max = ymax;
    for (int32_t b = 0; b < B; ++b) {
      float s = 0.0f;
      for (int32_t j = 0; j < N; ++j) s += std::fabs(d[b * N + j]);
      y[b] = s;
      ref_max = std::max(ref_max, s);
    }
    std::vector<int32_t> k(B), kept(B * N);
    std::vector<float> scratch(SelectUnitsScratchSize(B));
    TP_CHECK_OK(SelectUnits(d.data(), B, N, p, &ymax, k.data(), kept.data(), scratch.data(),
                            static_cast<int64_t>(scratch.size())));
    TP_CHECK_EQ(ymax, ref_max);
    for (int32_t b = 0; b < B; ++b) {
      TP_CHECK_EQ(scratch[b], y[b]);
      if (y[b] == 0.0f) {
        TP_CHECK_EQ(k[b], 0);
        continue;
      }
      const int32_t kb = RefK(RefRatio(y[b], ref_max, 0.1f, 0.9f, 0.5f), N, false);
      TP_CHECK_EQ(k[b], kb);
      std::vector<float> a(N);
      for (int32_t j = 0; j < N; ++j) a[j] = std::fabs(d[b * N + j]);
      const auto ref = RefTopK(a, kb);
      TP_CHECK(std::equal(ref.begin(), ref.end(), kept.begin() + b * N));
    }
  }
  // Errors leave the state alone.
  std::vector<float> d(8, 1.0f);
  d[3] = NAN;
  int32_t k[2], kept[8];
  float scratch[2];
  const float before = ymax;
  TP_CHECK_STATUS(SelectUnits(d.data(), 2, 4, p, &ymax, k, kept, scratch, 2), Status::kNonFinite);
  d[3] = INFINITY;
  TP_CHECK_STATUS(SelectUnits(d.data(), 2, 4, p, &ymax, k, kept, scratch, 2), Status::kNonFinite);
  d[3] = 1.0f;
  TP_CHECK_STATUS(SelectUnits(d.data(), 2, 4, p, &ymax, k, kept, scratch, 1), Status::kBufferTooSmall);
  TP_CHECK_STATUS(SelectUnits(d.data(), 2, 4, p, &ymax, k, kept, nullptr, 2), Status::kBadArgument);
  TP_CHECK_STATUS(SelectUnits(d.data(), 2, 0, p, &ymax, k, kept, scratch, 2), Status::kBadShape);
  TP_CHECK_STATUS(SelectUnits(d.data(), 2, 4, RatioParams{0.5f, 0.4f, 1.0f, Rounding::kFloor}, &ymax, k, kept,
                              scratch, 2),
                  Status::kBadArgument);
  TP_CHECK_EQ(ymax, before);
}

TP_TEST(SelectChannelsEndToEnd) {
  tpt::Rng rng(7);
  const RatioParams p{0.0f, 1.0f, 1.0f, Rounding::kHalfEven};
  float ymax = kYmaxInit;
  for (int step = 0; step < 20; ++step) {
    const int32_t B = rng.Int(1, 4), P = rng.Int(1, 9), C = rng.Int(1, 12);
    const auto d = rng.Vec(B * P * C);
    std::vector<float> scores(B * C), y(B);
    for (int32_t b = 0; b < B; ++b) {
      for (int32_t c = 0; c < C; ++c) {
        float s = 0.0f;
        for (int32_t q = 0; q < P; ++q) s += std::fabs(d[(b * P + q) * C + c]);
        scores[b * C + c] = s;
      }
      float t = 0.0f;
      for (int32_t c = 0; c < C; ++c) t += scores[b * C + c];
      y[b] = t;
    }
    float ref_max = ymax;
    for (float v : y) ref_max = std::max(ref_max, v);
    std::vector<int32_t> k(B), kept(B * C);
    std::vector<float> scratch(SelectChannelsScratchSize(B, C));
    TP_CHECK_STATUS(SelectChannels(d.data(), B, P, C, p, &ymax, k.data(), kept.data(), scratch.data(),
                                   static_cast<int64_t>(scratch.size()) - 1),
                    Status::kBufferTooSmall);
    TP_CHECK_OK(SelectChannels(d.data(), B, P, C, p, &ymax, k.data(), kept.data(), scratch.data(),
                               static_cast<int64_t>(scratch.size())));
    TP_CHECK_EQ(ymax, ref_max);
    for (int32_t b = 0; b < B; ++b) {
      const int32_t kb = RefK(RefRatio(y[b], ref_max, 0.0f, 1.0f, 1.0f), C, true);
      TP_CHECK_EQ(k[b], kb);
      std::vector<float> row(scores.begin() + b * C, scores.begin() + (b + 1) * C);
      const auto ref = RefTopK(row, kb);
      TP_CHECK(std::equal(ref.begin(), ref.end(), kept.begin() + b * C));
    }
  }
}
