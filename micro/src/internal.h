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

// Row b of a KeptSet (valid only after CheckKeptSet succeeded).
// out[c] += sum over r of f(rows[r * cols + c]), r in order, for c in [0, cols): per column the additions
// happen in exactly the order of the plain "for r: for c: out[c] += f(rows[r][c])" loop (so results are
// bit-identical to it), but four columns at a time are held in registers: no load/store of out per element
// (on a Cortex-M4F this halves the instructions per element). f is the identity or |.| (channel scores).
template <bool kAbs>
inline void AddColumnSums(const float* rows, int64_t num_rows, int32_t cols, float* out) {
  int32_t c = 0;
  for (; c + 4 <= cols; c += 4) {
    float a0 = out[c], a1 = out[c + 1], a2 = out[c + 2], a3 = out[c + 3];
    const float* p = rows + c;
    for (int64_t r = 0; r < num_rows; ++r, p += cols) {
      a0 += kAbs ? Abs(p[0]) : p[0];
      a1 += kAbs ? Abs(p[1]) : p[1];
      a2 += kAbs ? Abs(p[2]) : p[2];
      a3 += kAbs ? Abs(p[3]) : p[3];
    }
    out[c] = a0;
    out[c + 1] = a1;
    out[c + 2] = a2;
    out[c + 3] = a3;
  }
  for (; c < cols; ++c) {
    float a = out[c];
    const float* p = rows + c;
    for (int64_t r = 0; r < num_rows; ++r, p += cols) a += kAbs ? Abs(*p) : *p;
    out[c] = a;
  }
}

inline const int32_t* KeptRow(const KeptSet& kept, int32_t b) {
  return kept.index + static_cast<int64_t>(b) * kept.row_stride;
}

}  // namespace internal
}  // namespace tinyprop

#endif  // TINYPROP_SRC_INTERNAL_H_
