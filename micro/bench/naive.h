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
// The straightforward unit-sparse Dense backward (Accumulate::kAdd semantics, no bias): per input row, per kept unit,
// with an index load per MAC (the library's loop before it walked dW by kept columns); the library must match it
// bit for bit.
void NaiveDenseBackwardSparseAdd(int32_t batch, int32_t in, int32_t out, const float* x, const float* w,
                                 const float* delta, const int32_t* k, const int32_t* kept, int32_t row_stride,
                                 float* dw, float* dx);
// dx (or any buffer) cleared for the next step, as a kAdd caller does.
void ClearFloats(float* p, int32_t n);
// SgdUpdateColumns over the batch's kept union (KeptUnion) WITHOUT clearing the gradient columns: the library
// call minus its clearing, to measure what folding the clearing into the optimizer costs. w, g: [rows, out].
bool PlainSgdColumns(float lr, int32_t batch, int32_t rows, int32_t out, const int32_t* k, const int32_t* kept,
                     int32_t row_stride, uint8_t* mask_scratch, int32_t* union_scratch, float* w, const float* g);
// Calibration loops of exactly 10 instructions per iteration (iterations >= 1).
void CalibNop(uint32_t iterations);
void CalibFp(uint32_t iterations);
void CalibMem(uint32_t iterations);

}  // namespace bench

#endif  // TINYPROP_BENCH_NAIVE_H_
