#include "tinyprop/conv.h"

#include "internal.h"
#include "kept_columns.h"

namespace tinyprop {
namespace {

Status AxisGeometry(int32_t in, int32_t k, int32_t stride, int32_t dilation, Padding padding, int32_t* out,
                    int32_t* before) {
  if (in < 1) return Status::kBadShape;
  if (k < 1 || stride < 1 || dilation < 1) return Status::kBadArgument;
  const int64_t ek = static_cast<int64_t>(k - 1) * dilation + 1;
  int64_t o, pad;
  if (padding == Padding::kValid) {
    if (in < ek) return Status::kBadShape;
    o = (in - ek) / stride + 1;
    pad = 0;
  } else {
    o = (static_cast<int64_t>(in) + stride - 1) / stride;
    int64_t total = (o - 1) * stride + ek - in;
    if (total < 0) total = 0;
    pad = total / 2;
  }
  if (pad > kMaxElements) return Status::kBadShape;
  *out = static_cast<int32_t>(o);  // o <= in
  *before = static_cast<int32_t>(pad);
  return Status::kOk;
}

// Everything a conv backward kernel needs, validated once.
struct ConvPlan {
  int32_t batch, in_h, in_w, in_c, out_c, dm;
  int32_t out_h, out_w, pad_top, pad_left;
  int32_t kh, kw, sh, sw, dh, dw;
};

Status MakePlan(int32_t batch, int32_t in_h, int32_t in_w, int32_t in_c, int32_t out_c, int32_t dm,
                int32_t kernel_last, const ConvWindow& window, const float* x, const float* w, const float* delta,
                const float* dw, const float* dx, ConvPlan* plan) {
  const int32_t in_dims[4] = {batch, in_h, in_w, in_c};
  int64_t count;
  if (!internal::CheckedProduct(in_dims, 4, &count)) return Status::kBadShape;
  if (out_c < 1 || dm < 1) return Status::kBadShape;
  if (window.padding != Padding::kValid && window.padding != Padding::kSame) return Status::kBadArgument;
  ConvGeometry g;
  const Status s = ComputeConvGeometry(in_h, in_w, window, &g);
  if (s != Status::kOk) return s;
  const int32_t k_dims[4] = {window.kernel_h, window.kernel_w, in_c, kernel_last};
  if (!internal::CheckedProduct(k_dims, 4, &count)) return Status::kBadShape;
  const int32_t d_dims[4] = {batch, g.out_h, g.out_w, out_c};
  if (!internal::CheckedProduct(d_dims, 4, &count)) return Status::kBadShape;
  if (delta == nullptr) return Status::kBadArgument;
  if (dw != nullptr && x == nullptr) return Status::kBadArgument;
  if (dx != nullptr && w == nullptr) return Status::kBadArgument;
  *plan = ConvPlan{batch,    in_h,       in_w,        in_c,           out_c,           dm,
                   g.out_h,  g.out_w,    g.pad_top,   g.pad_left,     window.kernel_h, window.kernel_w,
                   window.stride_h, window.stride_w, window.dilation_h, window.dilation_w};
  return Status::kOk;
}

Status CheckModes(BiasGrad bias, Accumulate mode) {
  if (bias != BiasGrad::kDense && bias != BiasGrad::kKeptOnly) return Status::kBadArgument;
  if (mode != Accumulate::kOverwrite && mode != Accumulate::kAdd) return Status::kBadArgument;
  return Status::kOk;
}

void ZeroOutputs(const ConvPlan& p, int64_t kernel_size, float* dw, float* dx, float* db) {
  if (dw != nullptr) internal::Fill(dw, kernel_size, 0.0f);
  if (dx != nullptr) internal::Fill(dx, static_cast<int64_t>(p.batch) * p.in_h * p.in_w * p.in_c, 0.0f);
  if (db != nullptr) internal::Fill(db, p.out_c, 0.0f);
}

// Input row/column of output position o and kernel tap r; -1 when it falls into the padding.
inline int32_t InputCoord(int32_t o, int32_t stride, int32_t pad, int32_t r, int32_t dilation, int32_t in) {
  const int64_t i = static_cast<int64_t>(o) * stride - pad + static_cast<int64_t>(r) * dilation;
  return (i >= 0 && i < in) ? static_cast<int32_t>(i) : -1;
}

// Bias gradient of sample b (shared by the Conv2D and DepthwiseConv2D kernels): db[o] += sum over the
// sample's positions of d[pos, o], positions in order, for every channel (reference, or BiasGrad::kDense) or
// the kept channels idx[0..kb) only (BiasGrad::kKeptOnly). One pass per sample with the sums held in registers
// instead of a load/add/store per element inside the position loop; the per-channel order of additions (and so
// every bit of the result) is the same.
inline void AccumulateBias(const ConvPlan& p, const float* delta, int32_t b, const int32_t* idx, int32_t kb,
                           BiasGrad bias, float* db) {
  const int32_t O = p.out_c;
  const int64_t positions = static_cast<int64_t>(p.out_h) * p.out_w;
  const float* d = delta + static_cast<int64_t>(b) * positions * O;
  if (idx == nullptr || bias == BiasGrad::kDense) {
    internal::AddColumnSums<false>(d, positions, O, db);
    return;
  }
  for (int32_t t = 0; t < kb; ++t) {
    const float* column = d + idx[t];
    float a = db[idx[t]];
    for (int64_t r = 0; r < positions; ++r, column += O) a += *column;
    db[idx[t]] = a;
  }
}

// Shared loop of the Conv2D kernels: `kept` null = every channel (reference), else the kept row of each sample.
// Per output position and kernel tap the sparse path is a Dense layer [C_in -> O] restricted to the kept
// channels (internal::SparseSample: kept deltas loaded once per block of 4 channels, no index load per MAC);
// dx[x_off + ci] += (sum over kept o in order), the same order as the plain loop.
// Every channel of one position and tap: dW[ci, :] += x[ci] * d, dx[ci] += W[ci, :] . d (a Dense layer C -> O).
void Conv2DDenseTap(int32_t C, int32_t O, const float* xp, const float* wp, const float* d, float* dwp, float* dxp) {
  if (dwp != nullptr) {
    for (int32_t ci = 0; ci < C; ++ci) {
      const float xv = xp[ci];
      float* dw_row = dwp + static_cast<int64_t>(ci) * O;
      for (int32_t o = 0; o < O; ++o) dw_row[o] += xv * d[o];
    }
  }
  if (dxp != nullptr) {
    for (int32_t ci = 0; ci < C; ++ci) {
      const float* w_row = wp + static_cast<int64_t>(ci) * O;
      float acc = 0.0f;
      for (int32_t o = 0; o < O; ++o) acc += w_row[o] * d[o];
      dxp[ci] += acc;
    }
  }
}

template <bool kSparse>
void Conv2DLoops(const ConvPlan& p, const float* x, const float* w, const float* delta, const KeptSet* kept,
                 BiasGrad bias, float* dw, float* dx, float* db) {
  const int32_t C = p.in_c, O = p.out_c;
  for (int32_t b = 0; b < p.batch; ++b) {
    const int32_t kb = kSparse ? kept->k[b] : O;
    const int32_t* idx = kSparse ? internal::KeptRow(*kept, b) : nullptr;
    const bool work = kb > 0 && (dw != nullptr || dx != nullptr);
    if (db != nullptr) AccumulateBias(p, delta, b, idx, kb, bias, db);
    if (kSparse && work && p.kh == 1 && p.kw == 1 && p.sh == 1 && p.sw == 1) {
      // Pointwise (1x1, stride 1: position i reads pixel i): the sample's positions are the rows of a Dense
      // layer sharing one kept set; one call runs them in order (the same terms in the same order).
      const int64_t positions = static_cast<int64_t>(p.out_h) * p.out_w;
      const int64_t first = static_cast<int64_t>(b) * positions;
      const float* d = delta + first * O;
      const float* xp = (dw != nullptr) ? x + first * C : nullptr;
      float* dxp = (dx != nullptr) ? dx + first * C : nullptr;
      if (dw != nullptr && dx != nullptr) {
        internal::SparseSample<true, true>(C, O, xp, w, d, idx, kb, dw, dxp, false, positions);
      } else if (dw != nullptr) {
        internal::SparseSample<true, false>(C, O, xp, w, d, idx, kb, dw, dxp, false, positions);
      } else {
        internal::SparseSample<false, true>(C, O, xp, w, d, idx, kb, dw, dxp, false, positions);
      }
      continue;
    }
    for (int32_t oh = 0; oh < p.out_h; ++oh) {
      for (int32_t ow = 0; ow < p.out_w; ++ow) {
        const float* d = delta + ((static_cast<int64_t>(b) * p.out_h + oh) * p.out_w + ow) * O;
        if (!work) continue;  // per position, as in DepthwiseLoops (see there)
        for (int32_t r = 0; r < p.kh; ++r) {
          const int32_t ih = InputCoord(oh, p.sh, p.pad_top, r, p.dh, p.in_h);
          if (ih < 0) continue;
          for (int32_t c = 0; c < p.kw; ++c) {
            const int32_t iw = InputCoord(ow, p.sw, p.pad_left, c, p.dw, p.in_w);
            if (iw < 0) continue;
            const int64_t x_off = ((static_cast<int64_t>(b) * p.in_h + ih) * p.in_w + iw) * C;
            const int64_t k_off = (static_cast<int64_t>(r) * p.kw + c) * C * O;
            if (kSparse) {
              const float* xp = (x != nullptr) ? x + x_off : nullptr;
              const float* wp = (w != nullptr) ? w + k_off : nullptr;
              float* dwp = (dw != nullptr) ? dw + k_off : nullptr;
              float* dxp = (dx != nullptr) ? dx + x_off : nullptr;
              if (dwp != nullptr && dxp != nullptr) {
                internal::SparseSample<true, true>(C, O, xp, wp, d, idx, kb, dwp, dxp, false);
              } else if (dwp != nullptr) {
                internal::SparseSample<true, false>(C, O, xp, wp, d, idx, kb, dwp, dxp, false);
              } else {
                internal::SparseSample<false, true>(C, O, xp, wp, d, idx, kb, dwp, dxp, false);
              }
              continue;
            }
            Conv2DDenseTap(C, O, (dw != nullptr) ? x + x_off : nullptr, (dx != nullptr) ? w + k_off : nullptr, d,
                           (dw != nullptr) ? dw + k_off : nullptr, (dx != nullptr) ? dx + x_off : nullptr);
          }
        }
      }
    }
  }
}

void Conv2DBackwardImpl(const ConvPlan& p, const float* x, const float* w, const float* delta, const KeptSet* kept,
                        BiasGrad bias, float* dw, float* dx, float* db) {
  if (kept != nullptr) {
    Conv2DLoops<true>(p, x, w, delta, kept, bias, dw, dx, db);
  } else {
    Conv2DLoops<false>(p, x, w, delta, kept, bias, dw, dx, db);
  }
}

// One kernel tap (r, c) of a depthwise position: channel o = ci * dm + m; kSparse: o from the kept row.
template <bool kSparse, bool kDm1, bool kDw, bool kDx>
inline void DepthwiseTap(const float* xp, const float* wp, const float* d, const int32_t* idx, int32_t kb,
                         int32_t dm, float* dwp, float* dxp) {
  for (int32_t t = 0; t < kb; ++t) {
    const int32_t o = kSparse ? idx[t] : t;
    const int32_t ci = kDm1 ? o : o / dm;
    const float dv = d[o];
    if (kDw) dwp[o] += xp[ci] * dv;
    if (kDx) dxp[ci] += wp[o] * dv;
  }
}

// The depthwise loops with the sparse / depth-multiplier / null-output decisions made once (template flags).
template <bool kSparse, bool kDm1, bool kDw, bool kDx>
void DepthwiseLoops(const ConvPlan& p, const float* x, const float* w, const float* delta, const KeptSet* kept,
                    BiasGrad bias, float* dw, float* dx, float* db) {
  const int32_t C = p.in_c, O = p.out_c, dm = p.dm;
  for (int32_t b = 0; b < p.batch; ++b) {
    const int32_t kb = kSparse ? kept->k[b] : O;
    const int32_t* idx = kSparse ? internal::KeptRow(*kept, b) : nullptr;
    const bool work = (kDw || kDx) && kb > 0;
    if (db != nullptr) AccumulateBias(p, delta, b, idx, kb, bias, db);
    for (int32_t oh = 0; oh < p.out_h; ++oh) {
      for (int32_t ow = 0; ow < p.out_w; ++ow) {
        const float* d = delta + ((static_cast<int64_t>(b) * p.out_h + oh) * p.out_w + ow) * O;
        // Checked here rather than once per sample: hoisted, GCC 12 emitted a depthwise loop with ~7 % more
        // instructions on Cortex-M4 (micro_qemu bench); the check costs one branch per position.
        if (!work) continue;
        for (int32_t r = 0; r < p.kh; ++r) {
          const int32_t ih = InputCoord(oh, p.sh, p.pad_top, r, p.dh, p.in_h);
          if (ih < 0) continue;
          for (int32_t c = 0; c < p.kw; ++c) {
            const int32_t iw = InputCoord(ow, p.sw, p.pad_left, c, p.dw, p.in_w);
            if (iw < 0) continue;
            const int64_t x_off = ((static_cast<int64_t>(b) * p.in_h + ih) * p.in_w + iw) * C;
            // Kernel [kh, kw, C, dm] flattened: tap (r, c), channel o = ci * dm + m  ->  (r * kw + c) * O + o.
            const int64_t k_off = (static_cast<int64_t>(r) * p.kw + c) * O;
            DepthwiseTap<kSparse, kDm1, kDw, kDx>(kDw ? x + x_off : nullptr, kDx ? w + k_off : nullptr, d, idx, kb,
                                                   dm, kDw ? dw + k_off : nullptr, kDx ? dx + x_off : nullptr);
          }
        }
      }
    }
  }
}

// Outputs [lo, hi) of one axis whose tap t falls inside the input: 0 <= o * stride - pad + t * dilation < in.
// int32 arithmetic (a division by a 64-bit value is a library call on a Cortex-M): the caller guarantees
// |t * dilation - pad| and stride are below 2^30 (ChannelOuterFits).
inline void TapRange(int32_t out, int32_t stride, int32_t pad, int32_t t, int32_t dilation, int32_t in,
                     int32_t* lo, int32_t* hi) {
  const int32_t shift = t * dilation - pad;  // input coordinate = o * stride + shift
  const int32_t l = shift >= 0 ? 0 : (-shift + stride - 1) / stride;
  const int32_t last = in - 1 - shift;  // o * stride <= last
  int32_t h = last < 0 ? 0 : last / stride + 1;
  if (h > out) h = out;
  *lo = l < h ? l : h;
  *hi = h;
}

// Whether TapRange's int32 arithmetic is exact for this plan.
inline bool ChannelOuterFits(const ConvPlan& p) {
  constexpr int64_t kLimit = int64_t{1} << 30;
  return static_cast<int64_t>(p.kh - 1) * p.dh + p.pad_top < kLimit &&
         static_cast<int64_t>(p.kw - 1) * p.dw + p.pad_left < kLimit && p.sh < kLimit && p.sw < kLimit &&
         static_cast<int64_t>(p.in_h) + p.pad_top < kLimit && static_cast<int64_t>(p.in_w) + p.pad_left < kLimit;
}

// Depthwise backward (depth multiplier 1) of one channel of one sample for kernel tap (r, c): over the output
// positions where the tap falls inside the input (a rectangle), dW[r, c, o] += x[pixel] * d and
// dx[pixel] += W[r, c, o] * d, with the dW sum and the W tap held in registers. xo/dxo/d0 point at the channel's
// element of the sample's x/dx/delta (pixel stride C); one run of pointer increments per row of positions.
// x_step / x_row: element distance between horizontally / vertically adjacent positions' pixels.
template <bool kDw, bool kDx>
void DepthwiseChannelTap(const ConvPlan& p, int32_t r, int32_t c, int32_t x_step, int32_t x_row, const float* xo,
                         float wv, const float* d0, float* dwp, float* dxo) {
  int32_t oh_lo, oh_hi, ow_lo, ow_hi;
  TapRange(p.out_h, p.sh, p.pad_top, r, p.dh, p.in_h, &oh_lo, &oh_hi);
  TapRange(p.out_w, p.sw, p.pad_left, c, p.dw, p.in_w, &ow_lo, &ow_hi);
  if (oh_lo >= oh_hi || ow_lo >= ow_hi) return;
  const int32_t C = p.in_c;
  const int32_t width = ow_hi - ow_lo;
  // Element offsets of the first position and pixel (inside their tensors, so they fit in int32), and the
  // strides between positions / rows.
  const int32_t d_first = (oh_lo * p.out_w + ow_lo) * C;
  const int32_t x_first = ((oh_lo * p.sh - p.pad_top + r * p.dh) * p.in_w + ow_lo * p.sw - p.pad_left + c * p.dw) * C;
  const float* drow = d0 + d_first;
  const float* xrow = kDw ? xo + x_first : nullptr;
  float* dxrow = kDx ? dxo + x_first : nullptr;
  float a = kDw ? *dwp : 0.0f;
  for (int32_t oh = oh_lo; oh < oh_hi; ++oh) {
    const float* d = drow;
    const float* xq = xrow;
    float* dxq = dxrow;
    if (kDw && kDx) {
      // dx has x's layout: its element sits at a fixed byte distance from x's (one pointer advanced, not two).
      const uintptr_t dx_minus_x = reinterpret_cast<uintptr_t>(dxq) - reinterpret_cast<uintptr_t>(xq);
      for (int32_t n = width; n > 0; --n) {
        const float dv = *d;
        d += C;
        float* dxe = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(xq) + dx_minus_x);
        a += *xq * dv;
        *dxe += wv * dv;
        xq += x_step;
      }
    } else {
      for (int32_t n = width; n > 0; --n) {
        const float dv = *d;
        d += C;
        if (kDw) {
          a += *xq * dv;
          xq += x_step;
        }
        if (kDx) {
          *dxq += wv * dv;
          dxq += x_step;
        }
      }
    }
    drow += p.out_w * C;
    if (kDw) xrow += x_row;
    if (kDx) dxrow += x_row;
  }
  if (kDw) *dwp = a;
}

// Channel-outer depthwise loops for depth multiplier 1: per sample, per kept channel, per kernel tap, every
// position (DepthwiseChannelTap) instead of a kept-index loop per position and tap (whose set-up a few kept
// channels cannot amortise). Same results bit for bit as DepthwiseLoops: dW[r, c, o] still sums the positions
// in order; dx[pixel, o] receives one term per tap with the taps visited in DESCENDING order, because the
// position of a (pixel, tap) pair decreases as the tap increases, so this is the position order of
// DepthwiseLoops; with dm = 1 no two channels share a dx element.
template <bool kDw, bool kDx>
void DepthwiseChannelLoops(const ConvPlan& p, const float* x, const float* w, const float* delta,
                           const KeptSet& kept, BiasGrad bias, float* dw, float* dx, float* db) {
  const int32_t C = p.in_c;
  const int64_t in_size = static_cast<int64_t>(p.in_h) * p.in_w * C;
  const int64_t out_size = static_cast<int64_t>(p.out_h) * p.out_w * C;
  // A stride is only dereferenced between two positions that both read inside x, so it is below x's size then;
  // a stride beyond int32 only ever moves a pointer past its last use (a single position / row per tap), so 0
  // stands in for it. (The loops step their pointers once past the last position and row; never read.)
  const int64_t step64 = static_cast<int64_t>(p.sw) * C, row64 = static_cast<int64_t>(p.sh) * p.in_w * C;
  const int32_t x_step = step64 > INT32_MAX ? 0 : static_cast<int32_t>(step64);
  const int32_t x_row = row64 > INT32_MAX ? 0 : static_cast<int32_t>(row64);
  for (int32_t b = 0; b < p.batch; ++b) {
    const int32_t kb = kept.k[b];
    const int32_t* idx = internal::KeptRow(kept, b);
    if (db != nullptr) AccumulateBias(p, delta, b, idx, kb, bias, db);
    if (!kDw && !kDx) continue;
    const float* xb = kDw ? x + b * in_size : nullptr;
    float* dxb = kDx ? dx + b * in_size : nullptr;
    const float* d0 = delta + b * out_size;
    for (int32_t t = 0; t < kb; ++t) {
      const int32_t o = idx[t];
      for (int32_t r = p.kh - 1; r >= 0; --r) {
        for (int32_t c = p.kw - 1; c >= 0; --c) {
          const int32_t tap = (r * p.kw + c) * C + o;
          DepthwiseChannelTap<kDw, kDx>(p, r, c, x_step, x_row, kDw ? xb + o : nullptr, kDx ? w[tap] : 0.0f,
                                        d0 + o, kDw ? dw + tap : nullptr, kDx ? dxb + o : nullptr);
        }
      }
    }
  }
}

template <bool kSparse, bool kDm1>
void DepthwiseDispatchOutputs(const ConvPlan& p, const float* x, const float* w, const float* delta,
                              const KeptSet* kept, BiasGrad bias, float* dw, float* dx, float* db) {
  if (kDm1 && kSparse && ChannelOuterFits(p)) {  // the sparse kernel: a few kept channels
    if (dw != nullptr && dx != nullptr) {
      DepthwiseChannelLoops<true, true>(p, x, w, delta, *kept, bias, dw, dx, db);
    } else if (dw != nullptr) {
      DepthwiseChannelLoops<true, false>(p, x, w, delta, *kept, bias, dw, dx, db);
    } else if (dx != nullptr) {
      DepthwiseChannelLoops<false, true>(p, x, w, delta, *kept, bias, dw, dx, db);
    } else {
      DepthwiseChannelLoops<false, false>(p, x, w, delta, *kept, bias, dw, dx, db);
    }
    return;
  }
  if (dw != nullptr && dx != nullptr) {
    DepthwiseLoops<kSparse, kDm1, true, true>(p, x, w, delta, kept, bias, dw, dx, db);
  } else if (dw != nullptr) {
    DepthwiseLoops<kSparse, kDm1, true, false>(p, x, w, delta, kept, bias, dw, dx, db);
  } else if (dx != nullptr) {
    DepthwiseLoops<kSparse, kDm1, false, true>(p, x, w, delta, kept, bias, dw, dx, db);
  } else {
    DepthwiseLoops<kSparse, kDm1, false, false>(p, x, w, delta, kept, bias, dw, dx, db);
  }
}

void DepthwiseBackwardImpl(const ConvPlan& p, const float* x, const float* w, const float* delta,
                           const KeptSet* kept, BiasGrad bias, float* dw, float* dx, float* db) {
  if (kept != nullptr) {
    if (p.dm == 1) {
      DepthwiseDispatchOutputs<true, true>(p, x, w, delta, kept, bias, dw, dx, db);
    } else {
      DepthwiseDispatchOutputs<true, false>(p, x, w, delta, kept, bias, dw, dx, db);
    }
  } else if (p.dm == 1) {
    DepthwiseDispatchOutputs<false, true>(p, x, w, delta, kept, bias, dw, dx, db);
  } else {
    DepthwiseDispatchOutputs<false, false>(p, x, w, delta, kept, bias, dw, dx, db);
  }
}

// ---- forward ----
// Per output position, N output channels at a time are summed in registers over the taps (in order) and the
// input channels (in order): the kernel's [.., C, O] layout puts the N channels of one input channel side by side.
// Taps that fall into the padding add nothing. Then the bias (after the sum, as TensorFlow's BiasAdd) and the
// activation.
inline float Activate(float v, Activation activation) {
  return (activation == Activation::kRelu && v < 0.0f) ? 0.0f : v;  // max(v, 0), a NaN stays NaN
}

// The taps [lo, hi) of one output coordinate along an axis that read inside the input (the rest is padding).
struct InsideTaps {
  int32_t lo, hi;
  int64_t base;  // the input coordinate of tap 0: o * stride - pad (tap t reads base + t * dilation)
};

inline InsideTaps TapsInside(int32_t o, int32_t stride, int32_t pad, int32_t dilation, int32_t k, int32_t in) {
  InsideTaps t{0, k, static_cast<int64_t>(o) * stride - pad};
  while (t.lo < k && t.base + static_cast<int64_t>(t.lo) * dilation < 0) ++t.lo;
  while (t.hi > t.lo && t.base + static_cast<int64_t>(t.hi - 1) * dilation >= in) --t.hi;
  return t;
}

// N output channels from o0 of one output position: their sums held in registers over the taps inside the input
// (rows, then columns, in order) and the input channels (in order).
template <bool kDepthwise, bool kDm1, int N>
inline void ForwardChannels(const ConvPlan& p, const float* xb, const float* w, const InsideTaps& rows,
                            const InsideTaps& cols, int32_t o0, const float* bias, Activation activation, float* z) {
  const int32_t C = p.in_c, O = p.out_c;
  const int64_t tap_stride = kDepthwise ? O : static_cast<int64_t>(C) * O;  // W's elements per tap
  float a[N];
  for (int n = 0; n < N; ++n) a[n] = 0.0f;
  // Pointers stepped from tap to tap (no address arithmetic per tap beyond an addition).
  const int64_t row_step = static_cast<int64_t>(p.dh) * p.in_w * C, col_step = static_cast<int64_t>(p.dw) * C;
  const float* x_row = xb + (rows.base + static_cast<int64_t>(rows.lo) * p.dh) * p.in_w * C +
                       (cols.base + static_cast<int64_t>(cols.lo) * p.dw) * C;
  const float* w_row = w + (static_cast<int64_t>(rows.lo) * p.kw + cols.lo) * tap_stride + o0;
  for (int32_t r = rows.lo; r < rows.hi; ++r, x_row += row_step, w_row += p.kw * tap_stride) {
    const float* xp = x_row;
    const float* w_tap = w_row;
    for (int32_t c = cols.lo; c < cols.hi; ++c, xp += col_step, w_tap += tap_stride) {
      if constexpr (kDepthwise) {  // output channel o reads input channel o / dm
        for (int n = 0; n < N; ++n) a[n] += xp[kDm1 ? o0 + n : (o0 + n) / p.dm] * w_tap[n];
      } else {
        const float* wp = w_tap;
        for (int32_t ci = 0; ci < C; ++ci, wp += O) {
          const float xv = xp[ci];
          for (int n = 0; n < N; ++n) a[n] += xv * wp[n];
        }
      }
    }
  }
  for (int n = 0; n < N; ++n) {
    z[o0 + n] = Activate(bias != nullptr ? a[n] + bias[o0 + n] : a[n], activation);
  }
}

template <bool kDepthwise, bool kDm1>
void ForwardImpl(const ConvPlan& p, const float* x, const float* w, const float* bias, Activation activation,
                 float* out) {
  if (!kDepthwise && p.kh == 1 && p.kw == 1 && p.sh == 1 && p.sw == 1) {
    // Pointwise: position i reads pixel i, a Dense layer over the positions (the same sums in the same order).
    const int64_t rows = static_cast<int64_t>(p.batch) * p.out_h * p.out_w;
    internal::DenseRowsForward(rows, p.in_c, p.out_c, x, w, bias, out);
    if (activation != Activation::kLinear) {
      for (int64_t i = 0; i < rows * p.out_c; ++i) out[i] = Activate(out[i], activation);
    }
    return;
  }
  const int32_t O = p.out_c;
  const int64_t in_size = static_cast<int64_t>(p.in_h) * p.in_w * p.in_c;
  float* z = out;
  for (int32_t b = 0; b < p.batch; ++b) {
    const float* xb = x + b * in_size;
    for (int32_t oy = 0; oy < p.out_h; ++oy) {
      const InsideTaps rows = TapsInside(oy, p.sh, p.pad_top, p.dh, p.kh, p.in_h);
      for (int32_t ox = 0; ox < p.out_w; ++ox, z += O) {
        const InsideTaps cols = TapsInside(ox, p.sw, p.pad_left, p.dw, p.kw, p.in_w);
        int32_t o = 0;
        for (; o + 8 <= O; o += 8) ForwardChannels<kDepthwise, kDm1, 8>(p, xb, w, rows, cols, o, bias, activation, z);
        for (; o + 4 <= O; o += 4) ForwardChannels<kDepthwise, kDm1, 4>(p, xb, w, rows, cols, o, bias, activation, z);
        for (; o < O; ++o) ForwardChannels<kDepthwise, kDm1, 1>(p, xb, w, rows, cols, o, bias, activation, z);
      }
    }
  }
}

Status CheckActivation(Activation activation) {
  return (activation == Activation::kLinear || activation == Activation::kRelu) ? Status::kOk
                                                                                 : Status::kBadArgument;
}

}  // namespace

Status ComputeConvGeometry(int32_t in_h, int32_t in_w, const ConvWindow& window, ConvGeometry* geometry) {
  if (geometry == nullptr) return Status::kBadArgument;
  if (window.padding != Padding::kValid && window.padding != Padding::kSame) return Status::kBadArgument;
  ConvGeometry g;
  Status s = AxisGeometry(in_h, window.kernel_h, window.stride_h, window.dilation_h, window.padding, &g.out_h,
                          &g.pad_top);
  if (s != Status::kOk) return s;
  s = AxisGeometry(in_w, window.kernel_w, window.stride_w, window.dilation_w, window.padding, &g.out_w,
                   &g.pad_left);
  if (s != Status::kOk) return s;
  *geometry = g;
  return Status::kOk;
}

Status GlobalAveragePool(const float* x, int32_t batch, int32_t positions, int32_t channels, float* out) {
  if (x == nullptr || out == nullptr) return Status::kBadArgument;
  const int32_t dims[3] = {batch, positions, channels};
  int64_t count;
  if (!internal::CheckedProduct(dims, 3, &count)) return Status::kBadShape;
  const float n = static_cast<float>(positions);
  for (int32_t b = 0; b < batch; ++b) {
    float* o = out + static_cast<int64_t>(b) * channels;
    internal::Fill(o, channels, 0.0f);
    internal::AddColumnSums<false>(x + static_cast<int64_t>(b) * positions * channels, positions, channels, o);
    for (int32_t c = 0; c < channels; ++c) o[c] = o[c] / n;
  }
  return Status::kOk;
}

Status PositiveMask(const float* out, int64_t n, uint32_t* mask) {
  if (out == nullptr || mask == nullptr) return Status::kBadArgument;
  if (n < 1 || n > kMaxElements) return Status::kBadShape;
  for (int64_t w = 0; w < MaskWords(n); ++w) {
    const int64_t first = w * 32;
    const int32_t count = (n - first) < 32 ? static_cast<int32_t>(n - first) : 32;
    uint32_t bits = 0;
    for (int32_t i = 0; i < count; ++i) bits |= static_cast<uint32_t>(out[first + i] > 0.0f) << i;
    mask[w] = bits;
  }
  return Status::kOk;
}

Status MaskedDelta(const float* g, const uint32_t* mask, int32_t positions, int32_t channels, float* delta) {
  if (g == nullptr || mask == nullptr || delta == nullptr) return Status::kBadArgument;
  int32_t total;
  if (!internal::Product2(positions, channels, &total)) return Status::kBadShape;
  int32_t i = 0;  // element index p * channels + c
  for (int32_t p = 0; p < positions; ++p) {
    for (int32_t c = 0; c < channels; ++c, ++i) delta[i] = ((mask[i >> 5] >> (i & 31)) & 1u) ? g[c] : 0.0f;
  }
  return Status::kOk;
}

// The forward's output has delta's shape: it takes delta's place in MakePlan's checks.
Status Conv2DForward(const Conv2DShape& shape, const ConvWindow& window, const float* x, const float* w,
                     const float* bias, Activation activation, float* out) {
  if (x == nullptr || w == nullptr) return Status::kBadArgument;
  ConvPlan p;
  Status s = MakePlan(shape.batch, shape.in_h, shape.in_w, shape.in_c, shape.out_c, 1, shape.out_c, window, x, w,
                      out, nullptr, nullptr, &p);
  if (s != Status::kOk) return s;
  s = CheckActivation(activation);
  if (s != Status::kOk) return s;
  ForwardImpl<false, false>(p, x, w, bias, activation, out);
  return Status::kOk;
}

Status DepthwiseConv2DForward(const DepthwiseShape& shape, const ConvWindow& window, const float* x,
                              const float* w, const float* bias, Activation activation, float* out) {
  if (x == nullptr || w == nullptr) return Status::kBadArgument;
  int32_t out_c;
  if (!internal::Product2(shape.in_c, shape.depth_multiplier, &out_c)) return Status::kBadShape;
  ConvPlan p;
  Status s = MakePlan(shape.batch, shape.in_h, shape.in_w, shape.in_c, out_c, shape.depth_multiplier,
                      shape.depth_multiplier, window, x, w, out, nullptr, nullptr, &p);
  if (s != Status::kOk) return s;
  s = CheckActivation(activation);
  if (s != Status::kOk) return s;
  if (p.dm == 1) {  // no division per MAC
    ForwardImpl<true, true>(p, x, w, bias, activation, out);
  } else {
    ForwardImpl<true, false>(p, x, w, bias, activation, out);
  }
  return Status::kOk;
}

Status Conv2DBackwardReference(const Conv2DShape& shape, const ConvWindow& window, const float* x,
                               const float* w, const float* delta, float* dw, float* dx, float* db) {
  ConvPlan p;
  const Status s = MakePlan(shape.batch, shape.in_h, shape.in_w, shape.in_c, shape.out_c, 1, shape.out_c, window,
                            x, w, delta, dw, dx, &p);
  if (s != Status::kOk) return s;
  ZeroOutputs(p, static_cast<int64_t>(p.kh) * p.kw * p.in_c * p.out_c, dw, dx, db);
  Conv2DBackwardImpl(p, x, w, delta, nullptr, BiasGrad::kDense, dw, dx, db);
  return Status::kOk;
}

Status Conv2DBackwardSparse(const Conv2DShape& shape, const ConvWindow& window, const float* x, const float* w,
                            const float* delta, const KeptSet& kept, BiasGrad bias, Accumulate mode, float* dw,
                            float* dx, float* db) {
  ConvPlan p;
  Status s = MakePlan(shape.batch, shape.in_h, shape.in_w, shape.in_c, shape.out_c, 1, shape.out_c, window, x, w,
                      delta, dw, dx, &p);
  if (s != Status::kOk) return s;
  s = CheckModes(bias, mode);
  if (s != Status::kOk) return s;
  s = CheckKeptSet(kept, p.batch, p.out_c);
  if (s != Status::kOk) return s;
  if (mode == Accumulate::kOverwrite) {
    ZeroOutputs(p, static_cast<int64_t>(p.kh) * p.kw * p.in_c * p.out_c, dw, dx, db);
  }
  Conv2DBackwardImpl(p, x, w, delta, &kept, bias, dw, dx, db);
  return Status::kOk;
}

Status DepthwiseConv2DBackwardReference(const DepthwiseShape& shape, const ConvWindow& window, const float* x,
                                        const float* w, const float* delta, float* dw, float* dx, float* db) {
  int32_t out_c;
  if (!internal::Product2(shape.in_c, shape.depth_multiplier, &out_c)) return Status::kBadShape;
  ConvPlan p;
  const Status s = MakePlan(shape.batch, shape.in_h, shape.in_w, shape.in_c, out_c, shape.depth_multiplier,
                            shape.depth_multiplier, window, x, w, delta, dw, dx, &p);
  if (s != Status::kOk) return s;
  ZeroOutputs(p, static_cast<int64_t>(p.kh) * p.kw * p.out_c, dw, dx, db);
  DepthwiseBackwardImpl(p, x, w, delta, nullptr, BiasGrad::kDense, dw, dx, db);
  return Status::kOk;
}

Status DepthwiseConv2DBackwardSparse(const DepthwiseShape& shape, const ConvWindow& window, const float* x,
                                     const float* w, const float* delta, const KeptSet& kept, BiasGrad bias,
                                     Accumulate mode, float* dw, float* dx, float* db) {
  int32_t out_c;
  if (!internal::Product2(shape.in_c, shape.depth_multiplier, &out_c)) return Status::kBadShape;
  ConvPlan p;
  Status s = MakePlan(shape.batch, shape.in_h, shape.in_w, shape.in_c, out_c, shape.depth_multiplier,
                      shape.depth_multiplier, window, x, w, delta, dw, dx, &p);
  if (s != Status::kOk) return s;
  s = CheckModes(bias, mode);
  if (s != Status::kOk) return s;
  s = CheckKeptSet(kept, p.batch, p.out_c);
  if (s != Status::kOk) return s;
  if (mode == Accumulate::kOverwrite) ZeroOutputs(p, static_cast<int64_t>(p.kh) * p.kw * p.out_c, dw, dx, db);
  DepthwiseBackwardImpl(p, x, w, delta, &kept, bias, dw, dx, db);
  return Status::kOk;
}

}  // namespace tinyprop
