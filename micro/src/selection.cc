#include "tinyprop/selection.h"

#include <math.h>

#include "internal.h"
#include "tinyprop/conv.h"

namespace tinyprop {
namespace {

using internal::Abs;
using internal::IsFinite;
using internal::IsNan;

// floor for float32 without libm; integral, infinite and NaN inputs are returned unchanged.
float FloorF(float t) {
  if (!(Abs(t) < 8388608.0f)) return t;  // |t| >= 2^23: already an integer (or Inf/NaN)
  float f = static_cast<float>(static_cast<int32_t>(t));  // truncation toward zero
  if (f > t) f -= 1.0f;
  return f;
}

// Round to nearest, ties to even (tf.round / nearbyintf in the default rounding mode).
float RoundHalfEvenF(float t) {
  if (!(Abs(t) < 8388608.0f)) return t;
  const float f = FloorF(t);
  const float diff = t - f;  // exact for t >= 0 (Sterbenz); negative t is clamped to 1 by the caller anyway
  if (diff > 0.5f) return f + 1.0f;
  if (diff < 0.5f) return f;
  return (static_cast<int32_t>(f) % 2 == 0) ? f : f + 1.0f;
}

bool ValidRounding(Rounding r) { return r == Rounding::kFloor || r == Rounding::kHalfEven; }

bool InUnit(float v) { return !IsNan(v) && v >= 0.0f && v <= 1.0f; }

// ---- size-k min-heap of indices, ordered by (score, -index): the root is the worst kept entry -----------
template <typename ScoreFn>
inline bool Worse(const ScoreFn& score, int32_t a, int32_t b) {
  const float sa = score(a);
  const float sb = score(b);
  return sa < sb || (sa == sb && a > b);
}

template <typename ScoreFn>
void SiftDown(const ScoreFn& score, int32_t* heap, int64_t size, int64_t pos) {
  const int32_t item = heap[pos];
  for (;;) {
    int64_t child = 2 * pos + 1;
    if (child >= size) break;
    if (child + 1 < size && Worse(score, heap[child + 1], heap[child])) ++child;
    if (!Worse(score, heap[child], item)) break;
    heap[pos] = heap[child];
    pos = child;
  }
  heap[pos] = item;
}

// Sorts k indices ascending in place, no scratch: insertion sort for the small k that sparse selection keeps
// (about k^2/4 moves, cheaper than a heap below a few dozen), heapsort (O(k log k)) beyond.
void SortIndicesAscending(int32_t* a, int32_t k) {
  if (k <= 32) {
    for (int32_t i = 1; i < k; ++i) {
      const int32_t v = a[i];
      int32_t j = i;
      for (; j > 0 && a[j - 1] > v; --j) a[j] = a[j - 1];
      a[j] = v;
    }
    return;
  }
  auto sift = [a](int32_t pos, int32_t size) {
    const int32_t item = a[pos];
    for (;;) {
      if (pos >= size / 2) break;  // no child; tested first so that 2 * pos + 1 cannot overflow int32
      int32_t child = 2 * pos + 1;
      if (child + 1 < size && a[child + 1] > a[child]) ++child;
      if (a[child] <= item) break;
      a[pos] = a[child];
      pos = child;
    }
    a[pos] = item;
  };
  for (int32_t q = k / 2 - 1; q >= 0; --q) sift(q, k);
  for (int32_t end = k - 1; end > 0; --end) {
    const int32_t top = a[0];
    a[0] = a[end];
    a[end] = top;
    sift(0, end);
  }
}

// ---- the same heap with each entry's score cached as an order-preserving integer key ---------------------
// Used where the output row has room for it (2k <= capacity: keys in row[k, 2k)): a comparison is then two
// integer loads instead of an index load, a score load (and |.|) and a float compare per side.
// Key(s) orders like s for every non-NaN float, and equal floats (+0 and -0 included) get equal keys.
inline uint32_t OrderKey(float s) {
  uint32_t u = internal::FloatBits(s);
  if (u == 0x80000000u) u = 0;                           // -0 == +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);   // negatives reversed below the positives
}

struct PlainKey {
  const float* s;
  uint32_t operator()(int32_t i) const { return OrderKey(s[i]); }
};
struct AbsKey {
  const float* v;
  // |v| >= 0: its bit pattern already orders like the value (and |-0| = +0).
  uint32_t operator()(int32_t i) const { return (internal::FloatBits(v[i]) & 0x7fffffffu) | 0x80000000u; }
};

// Entry a (key ka, index ia) is worse than b: lower key, or the same key and a higher index.
inline bool KeyedWorse(uint32_t ka, int32_t ia, uint32_t kb, int32_t ib) {
  return ka < kb || (ka == kb && ia > ib);
}

void KeyedSiftDown(int32_t* idx, uint32_t* key, int32_t size, int32_t pos) {
  const int32_t item = idx[pos];
  const uint32_t item_key = key[pos];
  for (;;) {
    int32_t child = 2 * pos + 1;
    if (child >= size) break;
    if (child + 1 < size && KeyedWorse(key[child + 1], idx[child + 1], key[child], idx[child])) ++child;
    if (!KeyedWorse(key[child], idx[child], item_key, item)) break;
    idx[pos] = idx[child];
    key[pos] = key[child];
    pos = child;
  }
  idx[pos] = item;
  key[pos] = item_key;
}

// Largest k for which the keyed selection keeps a sorted list rather than a heap (micro_qemu on Cortex-M4:
// the list is cheaper at k = 16, the heap at k = 25).
constexpr int32_t kSortedListMaxK = 20;

// Core selection (arguments already validated: 1 <= k <= n, no NaN scores). kept[0..k) receives the indices in
// ascending order; the row has `capacity` >= k entries, and entries [k, 2k) serve as key cache when they exist
// (the caller pads or ignores them afterwards).
template <typename ScoreFn, typename KeyFn>
void SelectTopK(const ScoreFn& score, const KeyFn& key_of, int32_t n, int32_t k, int32_t* kept, int32_t capacity) {
  if (k == n) {
    for (int32_t i = 0; i < n; ++i) kept[i] = i;
    return;
  }
  if (capacity / 2 >= k && k <= kSortedListMaxK) {
    // Small k: the kept entries as a list sorted best first (key descending, then index ascending). A newcomer
    // has the highest index so far, so among equal keys it goes last, and it must beat the last entry strictly.
    // Inserting shifts k/2 entries on average, cheaper than a heap's sift for k up to a few dozen.
    int32_t* idx = kept;
    uint32_t* key = reinterpret_cast<uint32_t*>(kept + k);
    for (int32_t i = 0; i < k; ++i) {
      const uint32_t ki = key_of(i);
      int32_t j = i;
      for (; j > 0 && key[j - 1] < ki; --j) {
        key[j] = key[j - 1];
        idx[j] = idx[j - 1];
      }
      key[j] = ki;
      idx[j] = i;
    }
    auto insert = [idx, key, k](uint32_t ki, int32_t i) {
      int32_t j = k - 1;
      for (; j > 0 && key[j - 1] < ki; --j) {
        key[j] = key[j - 1];
        idx[j] = idx[j - 1];
      }
      key[j] = ki;
      idx[j] = i;
      return key[k - 1];
    };
    uint32_t last = key[k - 1];
    int32_t i = k;
    for (; i < n - 1; i += 2) {  // two candidates per loop test; each still meets the list as it is then
      const uint32_t k0 = key_of(i), k1 = key_of(i + 1);
      if (k0 > last) last = insert(k0, i);
      if (k1 > last) last = insert(k1, i + 1);
    }
    if (i < n) {
      const uint32_t ki = key_of(i);
      if (ki > last) insert(ki, i);
    }
    SortIndicesAscending(kept, k);
    return;
  }
  if (capacity / 2 >= k) {
    int32_t* idx = kept;
    // int32_t and uint32_t may alias each other: the key cache is the row's own storage.
    uint32_t* key = reinterpret_cast<uint32_t*>(kept + k);
    for (int32_t i = 0; i < k; ++i) {
      idx[i] = i;
      key[i] = key_of(i);
    }
    for (int32_t q = k / 2 - 1; q >= 0; --q) KeyedSiftDown(idx, key, k, q);
    uint32_t root = key[0];
    for (int32_t i = k; i < n; ++i) {
      // i has a higher index than every kept entry: it must beat the root's key strictly.
      const uint32_t ki = key_of(i);
      if (ki > root) {
        idx[0] = i;
        key[0] = ki;
        KeyedSiftDown(idx, key, k, 0);
        root = key[0];
      }
    }
    SortIndicesAscending(kept, k);
    return;
  }
  for (int32_t i = 0; i < k; ++i) kept[i] = i;
  for (int64_t q = static_cast<int64_t>(k) / 2 - 1; q >= 0; --q) SiftDown(score, kept, k, q);
  float root = score(kept[0]);
  for (int32_t i = k; i < n; ++i) {
    const float s = score(i);
    if (s > root) {
      kept[0] = i;
      SiftDown(score, kept, k, 0);
      root = score(kept[0]);
    }
  }
  SortIndicesAscending(kept, k);
}

struct PlainScore {
  const float* s;
  float operator()(int32_t i) const { return s[i]; }
};
struct AbsScore {
  const float* v;
  float operator()(int32_t i) const { return Abs(v[i]); }
};

bool AnyNan(const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (IsNan(v[i])) return true;
  }
  return false;
}

float RatioUnchecked(float y, float ymax, const RatioParams& p) {
  float d = p.s_max - p.s_min;
  const float q = y / ymax;  // exactly 1 for the sample that set the running max (see selection.h)
  float t = q * d;
  t = p.s_min + t;
  return t * p.zeta_pow;
}

int32_t RatioToKUnchecked(float bpr, int32_t n, Rounding rounding, int32_t min_kept) {
  float t = static_cast<float>(n) * bpr;
  t = (rounding == Rounding::kFloor) ? FloorF(t) : RoundHalfEvenF(t);
  const float hi = static_cast<float>(n);
  const float lo = static_cast<float>(min_kept < n ? min_kept : n);
  if (!(t >= lo)) t = lo;
  if (t > hi) t = hi;
  int32_t k = (t >= 2147483648.0f) ? n : static_cast<int32_t>(t);
  if (k > n) k = n;
  return k;
}

float FloorAtInit(float m) { return m < kYmaxInit ? kYmaxInit : m; }

// The running reference (selection.h) on checked inputs: the new state after this step's y.
float UpdateReference(const float* y, int32_t batch, const RatioParams& p, float state) {
  if (p.reference == Reference::kMean || p.reference == Reference::kQuantile) {
    float s = 0.0f;
    for (int32_t b = 0; b < batch; ++b) s += y[b];
    s = s / static_cast<float>(batch);
    if (state <= kYmaxInit) return FloorAtInit(s);  // the first step: the batch mean
    if (p.reference == Reference::kMean) return FloorAtInit(state * p.decay + s * (1.0f - p.decay));
    float above = 0.0f;  // how many samples reach the previous R (exact in float32)
    for (int32_t b = 0; b < batch; ++b) above += (y[b] >= state) ? 1.0f : 0.0f;
    float t = above / static_cast<float>(batch);
    t = t - p.quantile_share;
    t = p.quantile_rate * t;
    t = 1.0f + t;
    return FloorAtInit(state * t);
  }
  float m = (p.decay != 1.0f) ? state * p.decay : state;
  for (int32_t b = 0; b < batch; ++b) {
    if (y[b] > m) m = y[b];
  }
  return (p.decay != 1.0f) ? FloorAtInit(m) : m;
}

Status CheckYAndYmax(const float* y, int32_t batch, const float* ymax) {
  if (!IsFinite(*ymax)) return Status::kNonFinite;
  if (!(*ymax > 0.0f)) return Status::kBadArgument;
  for (int32_t b = 0; b < batch; ++b) {
    if (!IsFinite(y[b])) return Status::kNonFinite;
    if (y[b] < 0.0f) return Status::kBadArgument;
  }
  return Status::kOk;
}

void WriteRowPadding(int32_t* row, int32_t from, int32_t n) {
  for (int32_t i = from; i < n; ++i) row[i] = -1;
}

}  // namespace

Status CheckRatioParams(const RatioParams& params) {
  if (!InUnit(params.s_min) || !InUnit(params.s_max) || !InUnit(params.zeta_pow)) return Status::kBadArgument;
  if (params.s_min > params.s_max) return Status::kBadArgument;
  if (!ValidRounding(params.rounding)) return Status::kBadArgument;
  if (IsNan(params.decay) || !(params.decay > 0.0f) || params.decay > 1.0f) return Status::kBadArgument;
  if (params.reference != Reference::kMax && params.reference != Reference::kMean &&
      params.reference != Reference::kQuantile) {
    return Status::kBadArgument;
  }
  const bool quantile = params.reference == Reference::kQuantile;
  const bool quantile_ok = params.quantile_share > 0.0f && params.quantile_share < 1.0f &&
                           params.quantile_rate > 0.0f && params.quantile_rate <= 1.0f;
  // the quantile's parameters belong to it alone (0 elsewhere), as in the Python SelectionRule
  if (quantile ? !quantile_ok : (params.quantile_share != 0.0f || params.quantile_rate != 0.0f)) {
    return Status::kBadArgument;
  }
  if (params.per_sample_max && params.reference != Reference::kMax) return Status::kBadArgument;
  if (params.min_kept < 1) return Status::kBadArgument;
  if (!(params.skip_below >= 0.0f) || !internal::IsFinite(params.skip_below)) return Status::kBadArgument;
  return Status::kOk;
}

Status ZetaPow(double zeta, int32_t depth, float* zeta_pow) {
  if (zeta_pow == nullptr) return Status::kBadArgument;
  if (internal::IsNanD(zeta) || !(zeta > 0.0) || zeta > 1.0 || depth < 0) return Status::kBadArgument;
  *zeta_pow = static_cast<float>(pow(zeta, static_cast<double>(depth)));
  return Status::kOk;
}

Status LocalError(const float* delta, int32_t batch, int32_t n, float* y) {
  if (delta == nullptr || y == nullptr) return Status::kBadArgument;
  int32_t total;
  if (!internal::Product2(batch, n, &total)) return Status::kBadShape;
  for (int32_t b = 0; b < batch; ++b) {
    const float* row = delta + static_cast<int64_t>(b) * n;
    float s = 0.0f;
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {  // still one running sum in index order; one loop test per four elements
      s += Abs(row[j]);
      s += Abs(row[j + 1]);
      s += Abs(row[j + 2]);
      s += Abs(row[j + 3]);
    }
    for (; j < n; ++j) s += Abs(row[j]);
    y[b] = s;
  }
  return Status::kOk;
}

Status ChannelScores(const float* delta, int32_t batch, int32_t positions, int32_t channels, float* scores,
                     float* y) {
  if (delta == nullptr || scores == nullptr) return Status::kBadArgument;
  const int32_t dims[3] = {batch, positions, channels};
  int64_t total;
  if (!internal::CheckedProduct(dims, 3, &total)) return Status::kBadShape;
  for (int32_t b = 0; b < batch; ++b) {
    float* s = scores + static_cast<int64_t>(b) * channels;
    for (int32_t c = 0; c < channels; ++c) s[c] = 0.0f;
    internal::AddColumnSums<true>(delta + static_cast<int64_t>(b) * positions * channels, positions, channels, s);
    if (y != nullptr) {
      float sum = 0.0f;
      for (int32_t c = 0; c < channels; ++c) sum += s[c];
      y[b] = sum;
    }
  }
  return Status::kOk;
}

Status MaskedChannelScores(const float* g, const uint32_t* mask, int32_t batch, int32_t positions,
                           int32_t channels, float* scores, float* y) {
  if (g == nullptr || mask == nullptr || scores == nullptr) return Status::kBadArgument;
  const int32_t dims[3] = {batch, positions, channels};
  int64_t total;
  if (!internal::CheckedProduct(dims, 3, &total)) return Status::kBadShape;
  const int64_t per_sample = static_cast<int64_t>(positions) * channels;
  for (int32_t b = 0; b < batch; ++b) {
    float* s = scores + static_cast<int64_t>(b) * channels;
    const float* gb = g + static_cast<int64_t>(b) * channels;
    const uint32_t* mb = mask + b * MaskWords(per_sample);
    for (int32_t c = 0; c < channels; ++c) s[c] = 0.0f;
    int64_t i = 0;  // element index p * channels + c
    for (int32_t p = 0; p < positions; ++p) {
      for (int32_t c = 0; c < channels; ++c, ++i) {
        if ((mb[i >> 5] >> (i & 31)) & 1u) s[c] += Abs(gb[c]);
      }
    }
    if (y != nullptr) {
      float sum = 0.0f;
      for (int32_t c = 0; c < channels; ++c) sum += s[c];
      y[b] = sum;
    }
  }
  return Status::kOk;
}

Status SharedChannelScores(const float* delta, int32_t batch, int32_t positions, int32_t channels,
                           float* scores) {
  if (delta == nullptr || scores == nullptr) return Status::kBadArgument;
  const int32_t dims[3] = {batch, positions, channels};
  int64_t total;
  if (!internal::CheckedProduct(dims, 3, &total)) return Status::kBadShape;
  for (int32_t c = 0; c < channels; ++c) scores[c] = 0.0f;
  const int64_t rows = static_cast<int64_t>(batch) * positions;
  internal::AddColumnSums<true>(delta, rows, channels, scores);
  const float count = static_cast<float>(rows);
  for (int32_t c = 0; c < channels; ++c) scores[c] = scores[c] / count;
  return Status::kOk;
}

Status UpdateRunningMax(const float* y, int32_t batch, float* ymax) {
  if (y == nullptr || ymax == nullptr) return Status::kBadArgument;
  if (batch < 1) return Status::kBadShape;
  const Status s = CheckYAndYmax(y, batch, ymax);
  if (s != Status::kOk) return s;
  *ymax = UpdateReference(y, batch, RatioParams{1.0f, 1.0f, 1.0f, Rounding::kFloor}, *ymax);
  return Status::kOk;
}

Status AdaptiveRatio(float y, float ymax, const RatioParams& params, float* bpr) {
  if (bpr == nullptr) return Status::kBadArgument;
  const Status ps = CheckRatioParams(params);
  if (ps != Status::kOk) return ps;
  const Status s = CheckYAndYmax(&y, 1, &ymax);
  if (s != Status::kOk) return s;
  if (y > ymax) return Status::kBadArgument;  // the running max is updated before use, so y <= ymax always
  *bpr = RatioUnchecked(y, ymax, params);
  return Status::kOk;
}

Status RatioToK(float bpr, int32_t n, Rounding rounding, int32_t* k, int32_t min_kept) {
  if (k == nullptr || !ValidRounding(rounding) || min_kept < 1) return Status::kBadArgument;
  if (n < 1) return Status::kBadShape;
  if (IsNan(bpr)) return Status::kNonFinite;
  *k = RatioToKUnchecked(bpr, n, rounding, min_kept);
  return Status::kOk;
}

Status StaticK(float ratio, float zeta_pow, int32_t n, Rounding rounding, int32_t* k) {
  if (k == nullptr) return Status::kBadArgument;
  if (n < 1) return Status::kBadShape;
  if (IsNan(ratio) || !(ratio > 0.0f)) return Status::kBadArgument;
  const RatioParams p{ratio, ratio, zeta_pow, rounding};
  const Status ps = CheckRatioParams(p);
  if (ps != Status::kOk) return ps;
  // d = 0 and y = 0: the adaptive expression reduces to ratio * zeta_pow, exactly as the Python StaticTopK.
  *k = RatioToKUnchecked(RatioUnchecked(0.0f, 1.0f, p), n, rounding, 1);
  return Status::kOk;
}

Status AdaptiveK(const float* y, int32_t batch, int32_t n, const RatioParams& params, float* ymax, float* bpr,
                 int32_t* k) {
  if (y == nullptr || ymax == nullptr || k == nullptr) return Status::kBadArgument;
  if (batch < 1 || n < 1) return Status::kBadShape;
  Status s = CheckRatioParams(params);
  if (s != Status::kOk) return s;
  s = CheckYAndYmax(y, batch, ymax);
  if (s != Status::kOk) return s;
  const float before = *ymax;
  *ymax = UpdateReference(y, batch, params, before);  // the reference first
  // per_sample_max: sample b's reference is the maximum reached after y[b] (the AIfES order)
  float running = (params.decay != 1.0f) ? before * params.decay : before;
  for (int32_t b = 0; b < batch; ++b) {
    float m = *ymax;
    if (params.per_sample_max) {
      if (y[b] > running) running = y[b];
      m = (params.decay != 1.0f) ? FloorAtInit(running) : running;
    }
    const float r = RatioUnchecked(y[b], m, params);
    if (bpr != nullptr) bpr[b] = r;
    k[b] = RatioToKUnchecked(r, n, params.rounding, params.min_kept);
    if (params.skip_below > 0.0f && y[b] / m < params.skip_below) k[b] = 0;  // skipped: no backward at all
  }
  return Status::kOk;
}

Status TopKIndices(const float* scores, int32_t n, int32_t k, int32_t* kept) {
  if (scores == nullptr || kept == nullptr) return Status::kBadArgument;
  if (n < 1) return Status::kBadShape;
  if (k < 1 || k > n) return Status::kBadIndex;
  if (AnyNan(scores, n)) return Status::kNonFinite;
  SelectTopK(PlainScore{scores}, PlainKey{scores}, n, k, kept, k);
  return Status::kOk;
}

Status TopKAbsIndices(const float* values, int32_t n, int32_t k, int32_t* kept) {
  if (values == nullptr || kept == nullptr) return Status::kBadArgument;
  if (n < 1) return Status::kBadShape;
  if (k < 1 || k > n) return Status::kBadIndex;
  if (AnyNan(values, n)) return Status::kNonFinite;
  SelectTopK(AbsScore{values}, AbsKey{values}, n, k, kept, k);
  return Status::kOk;
}

Status TopKBatch(const float* scores, int32_t batch, int32_t n, const int32_t* k, int32_t* kept) {
  if (scores == nullptr || k == nullptr || kept == nullptr) return Status::kBadArgument;
  int32_t total;
  if (!internal::Product2(batch, n, &total)) return Status::kBadShape;
  for (int32_t b = 0; b < batch; ++b) {
    if (k[b] < 0 || k[b] > n) return Status::kBadIndex;
  }
  if (AnyNan(scores, total)) return Status::kNonFinite;
  for (int32_t b = 0; b < batch; ++b) {
    int32_t* row = kept + static_cast<int64_t>(b) * n;
    if (k[b] > 0) {
      const float* sb = scores + static_cast<int64_t>(b) * n;
      SelectTopK(PlainScore{sb}, PlainKey{sb}, n, k[b], row, n);
    }
    WriteRowPadding(row, k[b], n);
  }
  return Status::kOk;
}

Status KeptToMask(const int32_t* kept, int32_t k, int32_t n, uint8_t* mask) {
  if (kept == nullptr || mask == nullptr) return Status::kBadArgument;
  const Status s = CheckKeptSet(KeptSet{&k, kept, 0}, 1, n);
  if (s != Status::kOk) return s;
  for (int32_t i = 0; i < n; ++i) mask[i] = 0;
  for (int32_t t = 0; t < k; ++t) mask[kept[t]] = 1;
  return Status::kOk;
}

Status ZeroUnkept(float* values, int32_t n, const int32_t* kept, int32_t k) {
  if (values == nullptr || kept == nullptr) return Status::kBadArgument;
  const Status s = CheckKeptSet(KeptSet{&k, kept, 0}, 1, n);
  if (s != Status::kOk) return s;
  int32_t t = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (t < k && kept[t] == i) {
      ++t;
    } else {
      values[i] = 0.0f;
    }
  }
  return Status::kOk;
}

Status KeptUnion(const KeptSet& kept, int32_t batch, int32_t n, uint8_t* mask_scratch, int32_t* out,
                 int32_t* count) {
  if (mask_scratch == nullptr || out == nullptr || count == nullptr) return Status::kBadArgument;
  const Status s = CheckKeptSet(kept, batch, n);
  if (s != Status::kOk) return s;
  for (int32_t i = 0; i < n; ++i) mask_scratch[i] = 0;
  for (int32_t b = 0; b < batch; ++b) {
    const int32_t* row = internal::KeptRow(kept, b);
    for (int32_t t = 0; t < kept.k[b]; ++t) mask_scratch[row[t]] = 1;
  }
  int32_t c = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (mask_scratch[i]) out[c++] = i;
  }
  *count = c;
  return Status::kOk;
}

Status SelectUnits(const float* delta, int32_t batch, int32_t n, const RatioParams& params, float* ymax,
                   int32_t* k, int32_t* kept, float* scratch, int64_t scratch_len) {
  if (delta == nullptr || ymax == nullptr || k == nullptr || kept == nullptr || scratch == nullptr) {
    return Status::kBadArgument;
  }
  int32_t total;
  if (!internal::Product2(batch, n, &total)) return Status::kBadShape;
  Status s = CheckRatioParams(params);
  if (s != Status::kOk) return s;
  if (scratch_len < SelectUnitsScratchSize(batch)) return Status::kBufferTooSmall;
  if (!IsFinite(*ymax)) return Status::kNonFinite;
  if (!(*ymax > 0.0f)) return Status::kBadArgument;
  float* y = scratch;
  s = LocalError(delta, batch, n, y);
  if (s != Status::kOk) return s;
  for (int32_t b = 0; b < batch; ++b) {
    if (!IsFinite(y[b])) return Status::kNonFinite;  // NaN/Inf in delta (or an overflowing sum)
  }
  s = AdaptiveK(y, batch, n, params, ymax, nullptr, k);
  if (s != Status::kOk) return s;
  for (int32_t b = 0; b < batch; ++b) {
    int32_t* row = kept + static_cast<int64_t>(b) * n;
    if (y[b] == 0.0f) {
      k[b] = 0;
    } else {
      const float* db = delta + static_cast<int64_t>(b) * n;
      SelectTopK(AbsScore{db}, AbsKey{db}, n, k[b], row, n);
    }
    WriteRowPadding(row, k[b], n);
  }
  return Status::kOk;
}

Status SelectChannelsFromScores(const float* scores, const float* y, int32_t batch, int32_t channels,
                                const RatioParams& params, float* ymax, int32_t* k, int32_t* kept) {
  if (scores == nullptr || y == nullptr || ymax == nullptr || k == nullptr || kept == nullptr) {
    return Status::kBadArgument;
  }
  int32_t total;
  if (!internal::Product2(batch, channels, &total)) return Status::kBadShape;
  Status s = CheckRatioParams(params);
  if (s != Status::kOk) return s;
  if (!IsFinite(*ymax)) return Status::kNonFinite;
  if (!(*ymax > 0.0f)) return Status::kBadArgument;
  for (int32_t b = 0; b < batch; ++b) {
    if (!IsFinite(y[b])) return Status::kNonFinite;
  }
  s = AdaptiveK(y, batch, channels, params, ymax, nullptr, k);
  if (s != Status::kOk) return s;
  for (int32_t b = 0; b < batch; ++b) {
    int32_t* row = kept + static_cast<int64_t>(b) * channels;
    if (y[b] == 0.0f) {
      k[b] = 0;
    } else {
      const float* sb = scores + static_cast<int64_t>(b) * channels;
      SelectTopK(PlainScore{sb}, PlainKey{sb}, channels, k[b], row, channels);
    }
    WriteRowPadding(row, k[b], channels);
  }
  return Status::kOk;
}

Status SelectChannels(const float* delta, int32_t batch, int32_t positions, int32_t channels,
                      const RatioParams& params, float* ymax, int32_t* k, int32_t* kept, float* scratch,
                      int64_t scratch_len) {
  if (delta == nullptr || ymax == nullptr || k == nullptr || kept == nullptr || scratch == nullptr) {
    return Status::kBadArgument;
  }
  const int32_t dims[3] = {batch, positions, channels};
  int64_t total;
  if (!internal::CheckedProduct(dims, 3, &total)) return Status::kBadShape;
  const Status s = CheckRatioParams(params);
  if (s != Status::kOk) return s;
  if (scratch_len < SelectChannelsScratchSize(batch, channels)) return Status::kBufferTooSmall;
  float* scores = scratch;
  float* y = scratch + static_cast<int64_t>(batch) * channels;
  const Status scored = ChannelScores(delta, batch, positions, channels, scores, y);
  if (scored != Status::kOk) return scored;
  return SelectChannelsFromScores(scores, y, batch, channels, params, ymax, k, kept);
}

}  // namespace tinyprop
