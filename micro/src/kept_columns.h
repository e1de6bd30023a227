// The sparse inner loops shared by the Dense and Conv2D kernels (not installed, not part of the API).
#ifndef TINYPROP_SRC_KEPT_COLUMNS_H_
#define TINYPROP_SRC_KEPT_COLUMNS_H_

#include "internal.h"

namespace tinyprop {
namespace internal {

// Rows of dx accumulated at a time in Accumulate::kAdd mode (a fixed 256-byte stack buffer).
constexpr int32_t kDxChunk = 64;

// How a block of kept columns treats the per-row dx accumulator a_i (kDx only):
//   kFirst: a_i starts at 0.0f (the first block of a sample: no zeroing pass), else it is loaded from acc;
//   kLast:  the finished sum is added to dx (dx[i] += a_i, the last block in Accumulate::kAdd mode: no separate
//           pass over acc), else it is stored to acc.
// Either way each a_i is 0 + sum over the kept units in order, and dx receives it in one addition: exactly the
// arithmetic of a zeroed accumulator, a pass of blocks and a final dx += acc.

// N kept units (columns j[0..N) of dW / W) of one sample over input rows [i0, i1): dW[i, j_n] += x[i] * d_n and
// a_i += W[i, j_n] * d_n for n = 0..N-1 in order. One pass over the rows handles N columns, so x[i] and the
// accumulator are loaded once per N kept units and the kept deltas stay in registers (no index loads per MAC).
// acc and dx are indexed from i0 (acc[i - i0], dx[i - i0]).
template <int N, bool kDw, bool kDx, bool kFirst, bool kLast>
inline void KeptColumns(int32_t O, int32_t i0, int32_t i1, const float* xb, const float* w, const float* d,
                        const int32_t* j, float* dw, float* acc, float* dx) {
  float dv[N];
  float* dwp[N];
  const float* wp[N];
  for (int n = 0; n < N; ++n) {
    dv[n] = d[j[n]];
    const int64_t off = static_cast<int64_t>(i0) * O + j[n];
    if (kDw) dwp[n] = dw + off;
    if (kDx) wp[n] = w + off;
  }
  if (kDw && kDx) {
    // dW and W share the [I, O] layout, so dW[i, j] sits at a fixed byte distance from W[i, j]: deriving the dW
    // address from the W pointer keeps N + 1 pointers live instead of 2N. With 2N (8 for N = 4) GCC spilled
    // pointers to the stack on Cortex-M33 (55 instead of 46 instructions per row of 4 columns).
    const uintptr_t dw_minus_w = reinterpret_cast<uintptr_t>(dwp[0]) - reinterpret_cast<uintptr_t>(wp[0]);
    for (int32_t i = 0; i < i1 - i0; ++i) {
      const float xv = xb[i0 + i];
      float a = kFirst ? 0.0f : acc[i];
      for (int n = 0; n < N; ++n) {
        float* dwn = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(wp[n]) + dw_minus_w);
        *dwn = *dwn + xv * dv[n];
        a = a + *wp[n] * dv[n];
        wp[n] += O;
      }
      if (kLast) {
        dx[i] += a;
      } else {
        acc[i] = a;
      }
    }
    return;
  }
  for (int32_t i = 0; i < i1 - i0; ++i) {
    float xv = 0.0f, a = 0.0f;
    if (kDw) xv = xb[i0 + i];
    if (kDx && !kFirst) a = acc[i];
    for (int n = 0; n < N; ++n) {
      if (kDw) {
        *dwp[n] = *dwp[n] + xv * dv[n];
        dwp[n] += O;
      }
      if (kDx) {
        a = a + *wp[n] * dv[n];
        wp[n] += O;
      }
    }
    if (kDx) {
      if (kLast) {
        dx[i] += a;
      } else {
        acc[i] = a;
      }
    }
  }
}

template <int N, bool kDw, bool kDx>
inline void KeptBlock(bool first, bool last, int32_t O, int32_t i0, int32_t i1, const float* xb, const float* w,
                      const float* d, const int32_t* j, float* dw, float* acc, float* dx) {
  if (!kDx) {
    KeptColumns<N, kDw, false, false, false>(O, i0, i1, xb, w, d, j, dw, acc, dx);
  } else if (first && last) {
    KeptColumns<N, kDw, kDx, true, true>(O, i0, i1, xb, w, d, j, dw, acc, dx);
  } else if (first) {
    KeptColumns<N, kDw, kDx, true, false>(O, i0, i1, xb, w, d, j, dw, acc, dx);
  } else if (last) {
    KeptColumns<N, kDw, kDx, false, true>(O, i0, i1, xb, w, d, j, dw, acc, dx);
  } else {
    KeptColumns<N, kDw, kDx, false, false>(O, i0, i1, xb, w, d, j, dw, acc, dx);
  }
}

// The kb kept units of one sample over rows [i0, i1) in blocks of 4 (then 3, 2 or 1). kDx: the first block
// starts the accumulators at zero; with add_to_dx the last block adds them to dx (rows from i0), otherwise
// they end in acc.
template <bool kDw, bool kDx>
inline void KeptRows(int32_t O, int32_t i0, int32_t i1, const float* xb, const float* w, const float* d,
                     const int32_t* idx, int32_t kb, float* dw, float* acc, float* dx, bool add_to_dx) {
  int32_t t = 0;
  for (; t + 4 <= kb; t += 4) {
    KeptBlock<4, kDw, kDx>(t == 0, add_to_dx && t + 4 == kb, O, i0, i1, xb, w, d, idx + t, dw, acc, dx);
  }
  const bool first = t == 0;
  switch (kb - t) {
    case 3: KeptBlock<3, kDw, kDx>(first, add_to_dx, O, i0, i1, xb, w, d, idx + t, dw, acc, dx); break;
    case 2: KeptBlock<2, kDw, kDx>(first, add_to_dx, O, i0, i1, xb, w, d, idx + t, dw, acc, dx); break;
    case 1: KeptBlock<1, kDw, kDx>(first, add_to_dx, O, i0, i1, xb, w, d, idx + t, dw, acc, dx); break;
    default: break;
  }
}

// `count` consecutive rows (samples of a Dense layer, or the positions of one sample of a 1x1 convolution,
// which share its kept set) through kb kept units, rows in order: row q reads x[q * I ..], d[q * O ..] and
// writes dx[q * I ..]; dW (+)= the outer products. dx: with `overwrite` the row of dx is the accumulator (the
// first block writes it: 0 + sum; rows without kept units get zeros); otherwise (kAdd) the row sums are formed
// in a fixed stack buffer, kDxChunk rows at a time, and the last block adds them (dx[i] += acc_i, as a dot
// product would). One call for all rows: the per-row cost is the blocks' own set-up, not a call.
template <bool kDw, bool kDx>
inline void SparseSample(int32_t I, int32_t O, const float* xb, const float* w, const float* d, const int32_t* idx,
                  int32_t kb, float* dw, float* dxb, bool overwrite, int64_t count = 1) {
  float acc[kDxChunk];
  for (int64_t q = 0; q < count; ++q, d += O) {
    if (!kDx) {
      KeptRows<kDw, false>(O, 0, I, xb, w, d, idx, kb, dw, nullptr, nullptr, false);
    } else if (overwrite) {
      if (kb == 0) Fill(dxb, I, 0.0f);
      KeptRows<kDw, true>(O, 0, I, xb, w, d, idx, kb, dw, dxb, nullptr, false);
    } else {
      for (int32_t i0 = 0; i0 < I; i0 += kDxChunk) {
        const int32_t i1 = (I - i0 > kDxChunk) ? i0 + kDxChunk : I;
        KeptRows<kDw, true>(O, i0, i1, xb, w, d, idx, kb, dw, acc, dxb + i0, true);
      }
    }
    if (kDw) xb += I;
    if (kDx) dxb += I;
  }
}

}  // namespace internal
}  // namespace tinyprop

#endif  // TINYPROP_SRC_KEPT_COLUMNS_H_
