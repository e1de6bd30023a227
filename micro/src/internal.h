// Helpers shared by the kernel sources (not installed, not part of the API).
#ifndef TINYPROP_SRC_INTERNAL_H_
#define TINYPROP_SRC_INTERNAL_H_

#include <stdint.h>

#include "tinyprop/status.h"

namespace tinyprop {
namespace internal {

// Bit-level tests: independent of -ffinite-math-only and of <cmath>.
inline uint32_t FloatBits(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, sizeof(u));
  return u;
}
inline bool IsNan(float x) { return (FloatBits(x) & 0x7fffffffu) > 0x7f800000u; }
inline bool IsFinite(float x) { return (FloatBits(x) & 0x7f800000u) != 0x7f800000u; }
inline bool IsNanD(double x) { return x != x; }
inline bool IsFiniteD(double x) { return x == x && x - x == 0.0; }
inline float Abs(float x) { return __builtin_fabsf(x); }

// Product of dimensions, each required to be >= 1; false if any is < 1 or the product exceeds kMaxElements.
inline bool CheckedProduct(const int32_t* dims, int count, int64_t* product) {
  int64_t p = 1;
  for (int i = 0; i < count; ++i) {
    if (dims[i] < 1) return false;
    p *= dims[i];
    if (p > kMaxElements) return false;
  }
  *product = p;
  return true;
}

inline bool Product2(int32_t a, int32_t b, int32_t* out) {
  const int32_t d[2] = {a, b};
  int64_t p;
  if (!CheckedProduct(d, 2, &p)) return false;
  *out = static_cast<int32_t>(p);
  return true;
}

inline void Fill(float* p, int64_t n, float v) {
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

// z[r, j] = sum over i of x[r, i] * w[i, j] (+ bias[j]) for r < rows (x [rows, I], w [I, O], z [rows, O]): the
// Dense forward, and a 1x1 stride-1 conv's over its positions. Blocks of 2 rows x 8 units (then 4, then 1) are
// summed in registers over every input row i, each sum taking its products in input order from 0 (every bit
// equals the plain "z = 0; for i: z += x[i] * w[i, j]; z + bias" loop); per input row 2 loads of x and 8 of W for
// 16 multiply-adds (the plain loop loads and stores z per multiply-add).
template <int NB, int NO>
inline void DenseBlockForward(int32_t I, int32_t O, const float* x, const float* w, const float* bias, int32_t j0,
                              float* z) {
  float a[NB][NO];
  for (int s = 0; s < NB; ++s) {
    for (int n = 0; n < NO; ++n) a[s][n] = 0.0f;
  }
  const float* wp = w + j0;
  for (int32_t i = 0; i < I; ++i, wp += O) {
    float wv[NO];
    for (int n = 0; n < NO; ++n) wv[n] = wp[n];
    for (int s = 0; s < NB; ++s) {
      const float xv = x[static_cast<int64_t>(s) * I + i];
      for (int n = 0; n < NO; ++n) a[s][n] = a[s][n] + xv * wv[n];
    }
  }
  for (int s = 0; s < NB; ++s) {
    float* zs = z + static_cast<int64_t>(s) * O + j0;
    for (int n = 0; n < NO; ++n) zs[n] = bias != nullptr ? a[s][n] + bias[j0 + n] : a[s][n];
  }
}

template <int NB>
inline void DenseRowBlockForward(int32_t I, int32_t O, const float* x, const float* w, const float* bias, float* z) {
  int32_t j = 0;
  for (; j + 8 <= O; j += 8) DenseBlockForward<NB, 8>(I, O, x, w, bias, j, z);
  for (; j + 4 <= O; j += 4) DenseBlockForward<NB, 4>(I, O, x, w, bias, j, z);
  for (; j < O; ++j) DenseBlockForward<NB, 1>(I, O, x, w, bias, j, z);
}

inline void DenseRowsForward(int64_t rows, int32_t I, int32_t O, const float* x, const float* w, const float* bias,
                             float* z) {
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) DenseRowBlockForward<2>(I, O, x + r * I, w, bias, z + r * O);
  for (; r < rows; ++r) DenseRowBlockForward<1>(I, O, x + r * I, w, bias, z + r * O);
}

// Row b of a KeptSet (valid only after CheckKeptSet succeeded).
// out[c] += sum over r of f(rows[r * cols + c]), r in order, for c in [0, cols): per column the additions
// happen in exactly the order of the plain "for r: for c: out[c] += f(rows[r][c])" loop (so results are
// bit-identical to it), but a block of N columns is held in registers: no load/store of out per element
// (eight columns: one pointer increment and loop test per eight elements). f is the identity or |.|.
template <bool kAbs, int N>
inline void AddColumnBlock(const float* rows, int64_t num_rows, int32_t cols, float* out) {
  float a[N];
  for (int n = 0; n < N; ++n) a[n] = out[n];
  const float* p = rows;
  // num_rows <= kMaxElements (a checked tensor size) fits int32; a 64-bit counter costs 4 instructions per row
  // on a 32-bit core.
  for (int32_t r = static_cast<int32_t>(num_rows); r > 0; --r, p += cols) {
    for (int n = 0; n < N; ++n) a[n] += kAbs ? Abs(p[n]) : p[n];
  }
  for (int n = 0; n < N; ++n) out[n] = a[n];
}

template <bool kAbs>
inline void AddColumnSums(const float* rows, int64_t num_rows, int32_t cols, float* out) {
  int32_t c = 0;
  for (; c + 8 <= cols; c += 8) AddColumnBlock<kAbs, 8>(rows + c, num_rows, cols, out + c);
  for (; c + 4 <= cols; c += 4) AddColumnBlock<kAbs, 4>(rows + c, num_rows, cols, out + c);
  for (; c < cols; ++c) AddColumnBlock<kAbs, 1>(rows + c, num_rows, cols, out + c);
}

inline const int32_t* KeptRow(const KeptSet& kept, int32_t b) {
  return kept.index + static_cast<int64_t>(b) * kept.row_stride;
}

}  // namespace internal
}  // namespace tinyprop

#endif  // TINYPROP_SRC_INTERNAL_H_
