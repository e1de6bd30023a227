#ifndef TINYPROP_BENCH_NAIVE_H_
#define TINYPROP_BENCH_NAIVE_H_

#include <stdint.h>

namespace bench {

// dW = x^T delta, dx = delta W^T (skipped when dx is null), db = sum_b delta; textbook loops, overwrite.
void NaiveDenseBackward(int32_t batch, int32_t in, int32_t out, const float* x, const float* w, const float* delta,
                        float* dw, float* dx, float* db);
// DepthwiseConv2D 3x3, stride 1, SAME, depth multiplier 1, batch 1, NHWC.
void NaiveDepthwise3x3SameBackward(int32_t h, int32_t w_, int32_t c, const float* x, const float* w,
                                   const float* delta, float* dw, float* dx, float* db);
// Not the library: a restructured unit-sparse Dense backward (Accumulate::kAdd semantics, no bias) measured
// next to DenseBackwardSparse to size a possible kernel change. gathered: [out] floats of scratch.
void ProposedDenseBackwardSparseAdd(int32_t batch, int32_t in, int32_t out, const float* x, const float* w,
                                    const float* delta, const int32_t* k, const int32_t* kept, int32_t row_stride,
                                    float* dw, float* dx, float* gathered);
// What a caller of the kAdd mode does to get zeroed outputs for the next step: zero the columns of dW (viewed as
// [rows, out]) that some sample kept (KeptUnion + a column loop) and dx[0..dx_size).
// mask_scratch: [out] bytes, union_scratch: [out] ints.
bool ClearKeptColumns(int32_t batch, int32_t rows, int32_t out, const int32_t* k, const int32_t* kept,
                      int32_t row_stride, uint8_t* mask_scratch, int32_t* union_scratch, float* dw, float* dx,
                      int32_t dx_size);
// Calibration loops of exactly 10 instructions per iteration (iterations >= 1).
void CalibNop(uint32_t iterations);
void CalibFp(uint32_t iterations);
void CalibMem(uint32_t iterations);

}  // namespace bench

#endif  // TINYPROP_BENCH_NAIVE_H_
