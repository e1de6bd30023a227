// Straightforward loops the library's kernels are compared against (built with the library's flags, in
// their own translation unit, shapes passed at run time so nothing is specialised), and the calibration loops.
#include "naive.h"

#include "tinyprop/selection.h"

namespace bench {

void NaiveDenseBackward(int32_t batch, int32_t in, int32_t out, const float* x, const float* w, const float* delta,
                        float* dw, float* dx, float* db) {
  for (int32_t i = 0; i < in * out; ++i) dw[i] = 0.0f;
  for (int32_t j = 0; j < out; ++j) db[j] = 0.0f;
  for (int32_t b = 0; b < batch; ++b) {
    const float* xb = x + b * in;
    const float* d = delta + b * out;
    for (int32_t i = 0; i < in; ++i) {
      for (int32_t j = 0; j < out; ++j) dw[i * out + j] += xb[i] * d[j];
    }
    if (dx != nullptr) {
      for (int32_t i = 0; i < in; ++i) {
        float acc = 0.0f;
        for (int32_t j = 0; j < out; ++j) acc += d[j] * w[i * out + j];
        dx[b * in + i] = acc;
      }
    }
    for (int32_t j = 0; j < out; ++j) db[j] += d[j];
  }
}

void NaiveDepthwise3x3SameBackward(int32_t h, int32_t w_, int32_t c, const float* x, const float* w,
                                   const float* delta, float* dw, float* dx, float* db) {
  for (int32_t i = 0; i < 9 * c; ++i) dw[i] = 0.0f;
  for (int32_t i = 0; i < h * w_ * c; ++i) dx[i] = 0.0f;
  for (int32_t i = 0; i < c; ++i) db[i] = 0.0f;
  for (int32_t oh = 0; oh < h; ++oh) {
    for (int32_t ow = 0; ow < w_; ++ow) {
      const float* d = delta + (oh * w_ + ow) * c;
      for (int32_t ch = 0; ch < c; ++ch) db[ch] += d[ch];
      for (int32_t r = 0; r < 3; ++r) {
        const int32_t ih = oh + r - 1;
        if (ih < 0 || ih >= h) continue;
        for (int32_t s = 0; s < 3; ++s) {
          const int32_t iw = ow + s - 1;
          if (iw < 0 || iw >= w_) continue;
          const float* xp = x + (ih * w_ + iw) * c;
          float* dxp = dx + (ih * w_ + iw) * c;
          const float* wp = w + (r * 3 + s) * c;
          float* dwp = dw + (r * 3 + s) * c;
          for (int32_t ch = 0; ch < c; ++ch) {
            dwp[ch] += xp[ch] * d[ch];
            dxp[ch] += wp[ch] * d[ch];
          }
        }
      }
    }
  }
}

void NaiveDenseBackwardSparseAdd(int32_t batch, int32_t in, int32_t out, const float* x, const float* w,
                                 const float* delta, const int32_t* k, const int32_t* kept, int32_t row_stride,
                                 float* dw, float* dx) {
  for (int32_t b = 0; b < batch; ++b) {
    const int32_t kb = k[b];
    const int32_t* idx = kept + b * row_stride;
    const float* d = delta + b * out;
    const float* xb = x + b * in;
    for (int32_t i = 0; i < in; ++i) {
      float* dw_row = dw + i * out;
      for (int32_t t = 0; t < kb; ++t) dw_row[idx[t]] += xb[i] * d[idx[t]];
      if (dx != nullptr) {
        const float* w_row = w + i * out;
        float acc = 0.0f;
        for (int32_t t = 0; t < kb; ++t) acc += w_row[idx[t]] * d[idx[t]];
        dx[b * in + i] += acc;
      }
    }
  }
}

void ClearFloats(float* p, int32_t n) {
  for (int32_t i = 0; i < n; ++i) p[i] = 0.0f;
}

bool PlainSgdColumns(float lr, int32_t batch, int32_t rows, int32_t out, const int32_t* k, const int32_t* kept,
                     int32_t row_stride, uint8_t* mask_scratch, int32_t* union_scratch, float* w, const float* g) {
  int32_t count = 0;
  if (tinyprop::KeptUnion(tinyprop::KeptSet{k, kept, row_stride}, batch, out, mask_scratch, union_scratch, &count) !=
      tinyprop::Status::kOk) {
    return false;
  }
  for (int32_t r = 0; r < rows; ++r) {
    float* wr = w + r * out;
    const float* gr = g + r * out;
    for (int32_t t = 0; t < count; ++t) {
      const int32_t c = union_scratch[t];
      wr[c] = wr[c] - gr[c] * lr;
    }
  }
  return true;
}

// 10 instructions per iteration: 8 x NOP, SUBS, BNE.
void CalibNop(uint32_t iterations) {
  __asm volatile(
      "1:\n"
      "nop\n nop\n nop\n nop\n nop\n nop\n nop\n nop\n"
      "subs %0, %0, #1\n"
      "bne 1b\n"
      : "+r"(iterations)
      :
      : "cc");
}

// 10 instructions per iteration: 4 x VMUL.F32, 4 x VADD.F32, SUBS, BNE.
void CalibFp(uint32_t iterations) {
  __asm volatile(
      "vmov.f32 s0, #1.0\n"
      "vmov.f32 s1, #1.0\n"
      "1:\n"
      "vmul.f32 s2, s0, s1\n vadd.f32 s3, s2, s1\n vmul.f32 s4, s3, s0\n vadd.f32 s5, s4, s2\n"
      "vmul.f32 s2, s5, s1\n vadd.f32 s3, s2, s1\n vmul.f32 s4, s3, s0\n vadd.f32 s5, s4, s2\n"
      "subs %0, %0, #1\n"
      "bne 1b\n"
      : "+r"(iterations)
      :
      : "cc", "s0", "s1", "s2", "s3", "s4", "s5");
}

// 10 instructions per iteration: 4 x LDR, 4 x STR on a stack buffer, SUBS, BNE.
void CalibMem(uint32_t iterations) {
  volatile uint32_t buffer[4] = {1, 2, 3, 4};
  __asm volatile(
      "1:\n"
      "ldr r2, [%1]\n ldr r3, [%1, #4]\n str r2, [%1, #8]\n str r3, [%1, #12]\n"
      "ldr r2, [%1, #8]\n ldr r3, [%1, #12]\n str r3, [%1]\n str r2, [%1, #4]\n"
      "subs %0, %0, #1\n"
      "bne 1b\n"
      : "+r"(iterations)
      : "r"(buffer)
      : "cc", "r2", "r3", "memory");
}

}  // namespace bench
