// TinyProp selection: local error, running maximum, adaptive ratio, k, and deterministic top-k.
//
// Float32 evaluation order (identical to tinyprop_tf/selection.py, so results are bit-identical):
//   d = s_max - s_min; q = y / ymax; t = q * d; t = s_min + t; bpr = t * zeta_pow
// (dividing first gives the sample that set the running max q = 1 exactly, whatever rounding its y carries,
// so an exported step whose y differs in the last bit still finds the same k for it)
//   k = clamp(floor(float(n) * bpr), min(min_kept, n), n)   (Rounding::kHalfEven: nearest, ties to even)
// The running reference R (tinyprop_tf.selection.update_reference), updated before use:
//   kMax:  m = R * decay (skipped when the decay is 1); m = max(m, y[b]) over the batch; every sample divides by
//          m. With per_sample_max, sample b divides by the m reached after y[b] (the AIfES order).
//   kMean: s = y[0] + y[1] + ... (in order), s = s / float(batch); m = (R <= kYmaxInit) ? s
//          : R * decay + s * (1.0f - decay).
//   With a decay below 1 (and always for kMean) m = max(m, kYmaxInit): it never decays to 0.
// The library is compiled with -ffp-contract=off so no FMA contraction changes these results; never build
// it with -ffast-math.
#ifndef TINYPROP_SELECTION_H_
#define TINYPROP_SELECTION_H_

#include "tinyprop/status.h"

namespace tinyprop {

// Initial value of a layer's running maximum Ymax (a normal float32: an all-zero first error gives 0/tiny).
constexpr float kYmaxInit = 1e-30f;

enum class Rounding : int32_t {
  kFloor = 0,     // default: truncate (the TinyProp authors' C code)
  kHalfEven = 1,  // "round": to nearest, halfway cases to the even integer, exactly as tf.round and the
                  // Python package's rounding="round" (NOT half away from zero)
};

enum class Reference : int32_t {
  kMax = 0,   // running maximum of y (TinyProp)
  kMean = 1,  // running mean of y (BudgetProp)
  kQuantile = 2,  // a level that a share quantile_share of the samples reach (BudgetProp's whole-sample mode)
};

// One layer's rule, the fields of tinyprop_tf.selection.SelectionRule.
struct RatioParams {
  float s_min;     // [0, 1]
  float s_max;     // [s_min, 1]
  float zeta_pow;  // zeta^p as float32, in [0, 1]; see ZetaPow
  Rounding rounding;
  Reference reference = Reference::kMax;
  float decay = 1.0f;           // (0, 1]: 1 is TinyProp's all-time maximum
  bool per_sample_max = false;  // kMax only: the AIfES order
  int32_t min_kept = 1;         // >= 1: the floor on k (TinyProp's is 1)
  float skip_below = 0.0f;      // >= 0: a sample with y / (its reference) < skip_below gets k = 0 (0: none)
  float quantile_share = 0.0f;  // kQuantile only, in (0, 1): the share of samples with y >= R that R steers to
  float quantile_rate = 0.0f;   // kQuantile only, in (0, 1]: how far one step moves R
};

Status CheckRatioParams(const RatioParams& params);

// zeta^depth computed as Python computes `zeta ** depth` (double), rounded once to float32.
// zeta in (0, 1], depth >= 0.
Status ZetaPow(double zeta, int32_t depth, float* zeta_pow);

// y[b] = sum_j |delta[b * n + j]|, summed in index order. delta: [batch, n].
Status LocalError(const float* delta, int32_t batch, int32_t n, float* y);

// Channel scores of an NHWC error signal viewed as [batch, positions, channels] (positions = H * W):
// scores[b * channels + c] = sum_p |delta[(b * positions + p) * channels + c]| (summed in position order).
// y (optional, may be null): y[b] = sum_c scores[b * channels + c] (channel order), the layer's local error.
Status ChannelScores(const float* delta, int32_t batch, int32_t positions, int32_t channels, float* scores,
                     float* y);

// ChannelScores of MaskedDelta's error (conv.h) for a batch, without materialising it: g [batch, channels], mask
// MaskWords(positions * channels) words per sample. The same sums bit for bit (an unmasked entry adds +0).
Status MaskedChannelScores(const float* g, const uint32_t* mask, int32_t batch, int32_t positions,
                           int32_t channels, float* scores, float* y);

// ssProp's batch-shared channel score: scores[c] = (sum over batch and positions of |delta|) / (batch*positions).
Status SharedChannelScores(const float* delta, int32_t batch, int32_t positions, int32_t channels,
                           float* scores);

// *ymax = max(*ymax, max_b y[b]). y must be finite and >= 0; *ymax finite and > 0.
Status UpdateRunningMax(const float* y, int32_t batch, float* ymax);

// bpr in the fixed order above. y finite >= 0, ymax finite > 0 and already updated with y (y <= ymax), so
// bpr is in [s_min * zeta_pow, s_max * zeta_pow] up to rounding.
Status AdaptiveRatio(float y, float ymax, const RatioParams& params, float* bpr);

// k = clamp(round_mode(float(n) * bpr), min(min_kept, n), n) in float32 (bit-identical to Python for n <= 2^24).
Status RatioToK(float bpr, int32_t n, Rounding rounding, int32_t* k, int32_t min_kept = 1);

// Static top-k (meProp): k = clamp(floor(n * ratio * zeta_pow), 1, n), ratio in (0, 1], evaluated through
// the adaptive expression with s_min = s_max = ratio (so it equals the Python StaticTopK bit for bit).
Status StaticK(float ratio, float zeta_pow, int32_t n, Rounding rounding, int32_t* k);

// One selection step for a layer: updates the running reference *ymax with this step's y FIRST (the rule
// above), then per sample bpr[b] = the ratio of y[b] against its reference m and k[b] = RatioToK(bpr[b], n, ...,
// params.min_kept), or k[b] = 0 where y[b] / m < params.skip_below (the sample is skipped). bpr may be null.
Status AdaptiveK(const float* y, int32_t batch, int32_t n, const RatioParams& params, float* ymax, float* bpr,
                 int32_t* k);

// Top-k of one row: kept[0..k) = indices of the k largest scores, ties to the lower index, written in
// ascending index order. kept itself is the size-k min-heap (ordering (score, -index)): no scratch,
// O(n log k). 1 <= k <= n; NaN scores are rejected (kNonFinite), +-Inf are ordered normally.
Status TopKIndices(const float* scores, int32_t n, int32_t k, int32_t* kept);

// Same with score = |values[i]| (no score buffer needed for Dense layers).
Status TopKAbsIndices(const float* values, int32_t n, int32_t k, int32_t* kept);

// Per-sample top-k over scores [batch, n] with k[b] in [0, n] (0: empty row). Row b is written to
// kept[b * n ..) and padded with -1 after its k[b] entries. kept: [batch, n] int32.
Status TopKBatch(const float* scores, int32_t batch, int32_t n, const int32_t* k, int32_t* kept);

// mask[i] = 1 if i is in kept[0..k), else 0. mask: [n].
Status KeptToMask(const int32_t* kept, int32_t k, int32_t n, uint8_t* mask);

// Zeroes every entry of values[0..n) not listed in kept[0..k) (element-wise selection for fidelity).
Status ZeroUnkept(float* values, int32_t n, const int32_t* kept, int32_t k);

// Sorted union of the kept rows of a batch (the dW columns a step changes). out: [n], *count set.
// mask_scratch: [n] bytes.
Status KeptUnion(const KeptSet& kept, int32_t batch, int32_t n, uint8_t* mask_scratch, int32_t* out,
                 int32_t* count);

// ---- Whole selection for one layer and one step ------------------------------------------------------
// Dense layer, delta [batch, n]: y = LocalError, AdaptiveK (updates *ymax), then per sample the k[b] units of
// largest |delta| into kept [batch, n] (row stride n, -1 padded). A sample with y[b] == 0 gets k[b] = 0
// (its error is all zero: no backward work; the Python layers gate it the same way). scratch: floats,
// at least SelectUnitsScratchSize(batch). On return scratch[0..batch) holds y.
constexpr int64_t SelectUnitsScratchSize(int32_t batch) { return batch > 0 ? batch : 0; }
Status SelectUnits(const float* delta, int32_t batch, int32_t n, const RatioParams& params, float* ymax,
                   int32_t* k, int32_t* kept, float* scratch, int64_t scratch_len);

// Conv layer, NHWC delta viewed as [batch, positions, channels]: channel scores and y (ChannelScores),
// AdaptiveK over n = channels, top-k channels per sample. Zero-error samples get k[b] = 0.
// scratch: floats, at least SelectChannelsScratchSize(batch, channels) = batch * (channels + 1);
// on return scratch holds scores [batch, channels] followed by y [batch].
constexpr int64_t SelectChannelsScratchSize(int32_t batch, int32_t channels) {
  return (batch > 0 && channels > 0) ? static_cast<int64_t>(batch) * (static_cast<int64_t>(channels) + 1) : 0;
}
Status SelectChannels(const float* delta, int32_t batch, int32_t positions, int32_t channels,
                      const RatioParams& params, float* ymax, int32_t* k, int32_t* kept, float* scratch,
                      int64_t scratch_len);

// SelectChannels' step after the scores: AdaptiveK over n = channels (updates *ymax) from y, then the top-k
// channels of each sample's scores row; zero-error samples get k[b] = 0. scores [batch, channels], y [batch].
Status SelectChannelsFromScores(const float* scores, const float* y, int32_t batch, int32_t channels,
                                const RatioParams& params, float* ymax, int32_t* k, int32_t* kept);

}  // namespace tinyprop

#endif  // TINYPROP_SELECTION_H_
