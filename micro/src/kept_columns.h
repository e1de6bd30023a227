// The sparse inner loops shared by the Dense and Conv2D kernels (not installed, not part of the API).
#ifndef TINYPROP_SRC_KEPT_COLUMNS_H_
#define TINYPROP_SRC_KEPT_COLUMNS_H_

#include "internal.h"

namespace tinyprop {
namespace internal {

// Rows of dx accumulated at a time in Accumulate::kAdd mode (a fixed 256-byte stack buffer).
constexpr int32_t kDxChunk = 64;

// N kept units (columns j[0..N) of dW / W) of one sample over input rows [i0, i1): dW[i, j_n] += x[i] * d_n and
// acc[i - i0] += W[i, j_n] * d_n for n = 0..N-1 in order. One pass over the rows handles N columns, so x[i] and
// the accumulator are loaded once per N kept units and the kept deltas stay in registers (no index loads per MAC).
template <int N, bool kDw, bool kDx>
inline void KeptColumns(int32_t O, int32_t i0, int32_t i1, const float* xb, const float* w, const float* d,
                 const int32_t* j, float* dw, float* acc) {
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
    for (int32_t i = i0; i < i1; ++i) {
      const float xv = xb[i];
      float a = acc[i - i0];
      for (int n = 0; n < N; ++n) {
        float* dwn = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(wp[n]) + dw_minus_w);
        *dwn = *dwn + xv * dv[n];
        a = a + *wp[n] * dv[n];
        wp[n] += O;
      }
      acc[i - i0] = a;
    }
    return;
  }
  for (int32_t i = i0; i < i1; ++i) {
    float xv = 0.0f, a = 0.0f;
    if (kDw) xv = xb[i];
    if (kDx) a = acc[i - i0];
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
    if (kDx) acc[i - i0] = a;
  }
}

template <bool kDw, bool kDx>
inline void KeptRows(int32_t O, int32_t i0, int32_t i1, const float* xb, const float* w, const float* d,
              const int32_t* idx, int32_t kb, float* dw, float* acc) {
  int32_t t = 0;
  for (; t + 4 <= kb; t += 4) KeptColumns<4, kDw, kDx>(O, i0, i1, xb, w, d, idx + t, dw, acc);
  switch (kb - t) {
    case 3: KeptColumns<3, kDw, kDx>(O, i0, i1, xb, w, d, idx + t, dw, acc); break;
    case 2: KeptColumns<2, kDw, kDx>(O, i0, i1, xb, w, d, idx + t, dw, acc); break;
    case 1: KeptColumns<1, kDw, kDx>(O, i0, i1, xb, w, d, idx + t, dw, acc); break;
    default: break;
  }
}

// One sample's dW (+)= and dx contribution through its kb kept units. dx: with `overwrite` the sample's dx row
// is the accumulator (zeroed first: 0 + acc == acc bit for bit); otherwise (kAdd) the row sums are formed in a
// fixed stack buffer, kDxChunk rows at a time, and then added (dx[i] += acc_i, as a dot product would).
template <bool kDw, bool kDx>
inline void SparseSample(int32_t I, int32_t O, const float* xb, const float* w, const float* d, const int32_t* idx,
                  int32_t kb, float* dw, float* dxb, bool overwrite) {
  if (!kDx) {
    KeptRows<kDw, false>(O, 0, I, xb, w, d, idx, kb, dw, nullptr);
    return;
  }
  if (overwrite) {
    Fill(dxb, I, 0.0f);
    KeptRows<kDw, true>(O, 0, I, xb, w, d, idx, kb, dw, dxb);
    return;
  }
  float acc[kDxChunk];
  for (int32_t i0 = 0; i0 < I; i0 += kDxChunk) {
    const int32_t i1 = (I - i0 > kDxChunk) ? i0 + kDxChunk : I;
    for (int32_t i = 0; i < i1 - i0; ++i) acc[i] = 0.0f;
    KeptRows<kDw, true>(O, i0, i1, xb, w, d, idx, kb, dw, acc);
    for (int32_t i = i0; i < i1; ++i) dxb[i] += acc[i - i0];
  }
}

}  // namespace internal
}  // namespace tinyprop

#endif  // TINYPROP_SRC_KEPT_COLUMNS_H_
