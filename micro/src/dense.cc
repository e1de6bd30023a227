#include "tinyprop/dense.h"

#include "internal.h"
#include "kept_columns.h"

namespace tinyprop {
namespace {

Status CheckDense(const DenseShape& shape, const float* x, const float* w, const float* delta, const float* dw,
                  const float* dx) {
  int32_t size;  // x [batch, in], W [in, out], delta [batch, out]: each must be addressable with int32 sizes
  if (!internal::Product2(shape.batch, shape.in, &size) || !internal::Product2(shape.in, shape.out, &size) ||
      !internal::Product2(shape.batch, shape.out, &size)) {
    return Status::kBadShape;
  }
  if (delta == nullptr) return Status::kBadArgument;
  if (dw != nullptr && x == nullptr) return Status::kBadArgument;
  if (dx != nullptr && w == nullptr) return Status::kBadArgument;
  return Status::kOk;
}

}  // namespace

Status DenseForward(const DenseShape& shape, const float* x, const float* w, const float* bias, float* z) {
  int32_t size;
  if (!internal::Product2(shape.batch, shape.in, &size) || !internal::Product2(shape.in, shape.out, &size) ||
      !internal::Product2(shape.batch, shape.out, &size)) {
    return Status::kBadShape;
  }
  if (x == nullptr || w == nullptr || z == nullptr) return Status::kBadArgument;
  internal::DenseRowsForward(shape.batch, shape.in, shape.out, x, w, bias, z);
  return Status::kOk;
}

Status DenseBackwardReference(const DenseShape& shape, const float* x, const float* w, const float* delta,
                              float* dw, float* dx, float* db) {
  const Status s = CheckDense(shape, x, w, delta, dw, dx);
  if (s != Status::kOk) return s;
  const int32_t B = shape.batch, I = shape.in, O = shape.out;
  // Straightforward loops. dW: clear, then per sample and input row an axpy over the contiguous row; every
  // element receives its samples' products in batch order (0 + p_0 + p_1 + ...), as a per-element dot product.
  if (dw != nullptr) internal::Fill(dw, static_cast<int64_t>(I) * O, 0.0f);
  if (db != nullptr) internal::Fill(db, O, 0.0f);
  for (int32_t b = 0; b < B; ++b) {
    const float* d = delta + static_cast<int64_t>(b) * O;
    if (dw != nullptr) {
      const float* xb = x + static_cast<int64_t>(b) * I;
      for (int32_t i = 0; i < I; ++i) {
        const float xv = xb[i];
        float* dw_row = dw + static_cast<int64_t>(i) * O;
        for (int32_t j = 0; j < O; ++j) dw_row[j] += xv * d[j];
      }
    }
    if (dx != nullptr) {
      float* dxb = dx + static_cast<int64_t>(b) * I;
      for (int32_t i = 0; i < I; ++i) {
        const float* w_row = w + static_cast<int64_t>(i) * O;
        float acc = 0.0f;
        for (int32_t j = 0; j < O; ++j) acc += d[j] * w_row[j];
        dxb[i] = acc;
      }
    }
    if (db != nullptr) {
      for (int32_t j = 0; j < O; ++j) db[j] += d[j];
    }
  }
  return Status::kOk;
}

Status DenseBackwardSparse(const DenseShape& shape, const float* x, const float* w, const float* delta,
                           const KeptSet& kept, BiasGrad bias, Accumulate mode, float* dw, float* dx,
                           float* db) {
  Status s = CheckDense(shape, x, w, delta, dw, dx);
  if (s != Status::kOk) return s;
  if (bias != BiasGrad::kDense && bias != BiasGrad::kKeptOnly) return Status::kBadArgument;
  if (mode != Accumulate::kOverwrite && mode != Accumulate::kAdd) return Status::kBadArgument;
  s = CheckKeptSet(kept, shape.batch, shape.out);
  if (s != Status::kOk) return s;

  const int32_t B = shape.batch, I = shape.in, O = shape.out;
  const bool overwrite = mode == Accumulate::kOverwrite;
  if (overwrite) {
    if (dw != nullptr) internal::Fill(dw, static_cast<int64_t>(I) * O, 0.0f);
    if (db != nullptr) internal::Fill(db, O, 0.0f);
  }
  for (int32_t b = 0; b < B; ++b) {
    const int32_t kb = kept.k[b];
    const int32_t* idx = internal::KeptRow(kept, b);
    const float* d = delta + static_cast<int64_t>(b) * O;
    const float* xb = (x != nullptr) ? x + static_cast<int64_t>(b) * I : nullptr;
    float* dxb = (dx != nullptr) ? dx + static_cast<int64_t>(b) * I : nullptr;
    if (kb == 0) {
      if (dxb != nullptr && overwrite) internal::Fill(dxb, I, 0.0f);
    } else if (dw != nullptr && dxb != nullptr) {
      internal::SparseSample<true, true>(I, O, xb, w, d, idx, kb, dw, dxb, overwrite);
    } else if (dw != nullptr) {
      internal::SparseSample<true, false>(I, O, xb, w, d, idx, kb, dw, dxb, overwrite);
    } else if (dxb != nullptr) {
      internal::SparseSample<false, true>(I, O, xb, w, d, idx, kb, dw, dxb, overwrite);
    }
    if (db != nullptr && bias == BiasGrad::kKeptOnly) {
      for (int32_t t = 0; t < kb; ++t) db[idx[t]] += d[idx[t]];
    }
  }
  // Dense bias: one pass over the batch with the sums in registers, samples in order per unit (the order, and
  // so the bits, of the per-sample loop it replaces).
  if (db != nullptr && bias == BiasGrad::kDense) internal::AddColumnSums<false>(delta, B, O, db);
  return Status::kOk;
}

namespace {

// One block of N samples keeping unit j, over every input row i: a_i = (kFirst ? 0 : acc[i]) + x_0[i] d_0 + ... +
// x_{N-1}[i] d_{N-1} (samples in batch order, the deltas and row pointers in registers); the last block applies
// w[i, j] -= a_i * lr, the others store a_i in acc. So each dW[i, j] is 0 + the kept samples' products in batch
// order, exactly DenseBackwardSparse's sum.
template <int N, bool kFirst, bool kLast>
void SampleBlock(int32_t I, int32_t O, const float* const* xs, const float* dv, float lr, float* acc, float* wj) {
  const float* xp[N];
  float d[N];
  for (int n = 0; n < N; ++n) {
    xp[n] = xs[n];
    d[n] = dv[n];
  }
  // Four input rows per iteration for one or two samples (the loop's own instructions are a third of a row's on a
  // Cortex-M4; with more samples the registers run out); the same operations per element.
  constexpr int kRows = N <= 2 ? 4 : 1;
  int32_t i = 0;
  float* w = wj;
  const int64_t w_step = static_cast<int64_t>(O);
  for (; i + kRows <= I; i += kRows, w += kRows * w_step) {
    float a[kRows];
    for (int r = 0; r < kRows; ++r) a[r] = kFirst ? 0.0f : acc[i + r];
    for (int n = 0; n < N; ++n) {
      for (int r = 0; r < kRows; ++r) a[r] = a[r] + xp[n][i + r] * d[n];
    }
    for (int r = 0; r < kRows; ++r) {
      if (kLast) {
        w[r * w_step] = w[r * w_step] - a[r] * lr;
      } else {
        acc[i + r] = a[r];
      }
    }
  }
  for (; i < I; ++i, w += w_step) {
    float a = kFirst ? 0.0f : acc[i];
    for (int n = 0; n < N; ++n) a = a + xp[n][i] * d[n];
    if (kLast) {
      *w = *w - a * lr;
    } else {
      acc[i] = a;
    }
  }
}

template <bool kFirst, bool kLast>
void Block(int n, int32_t I, int32_t O, const float* const* xs, const float* dv, float lr, float* acc, float* wj) {
  switch (n) {
    case 1: SampleBlock<1, kFirst, kLast>(I, O, xs, dv, lr, acc, wj); break;
    case 2: SampleBlock<2, kFirst, kLast>(I, O, xs, dv, lr, acc, wj); break;
    case 3: SampleBlock<3, kFirst, kLast>(I, O, xs, dv, lr, acc, wj); break;
    default: SampleBlock<4, kFirst, kLast>(I, O, xs, dv, lr, acc, wj); break;
  }
}

}  // namespace

Status DenseBackwardSparseSgd(const DenseShape& shape, const float* x, float* w, float* b, const float* delta,
                              const KeptSet& kept, float lr, float* dx, void* scratch, int64_t scratch_bytes) {
  if (w == nullptr || x == nullptr) return Status::kBadArgument;
  Status s = CheckDense(shape, x, w, delta, w, dx);
  if (s != Status::kOk) return s;
  if (!internal::IsFinite(lr)) return Status::kNonFinite;
  s = CheckKeptSet(kept, shape.batch, shape.out);
  if (s != Status::kOk) return s;
  if (scratch == nullptr || scratch_bytes < DenseSgdScratchBytes(shape.batch, shape.in)) return Status::kBufferTooSmall;
  // dx from the weights before the update.
  if (dx != nullptr) {
    s = DenseBackwardSparse(shape, x, w, delta, kept, BiasGrad::kDense, Accumulate::kOverwrite, nullptr, dx,
                            nullptr);
    if (s != Status::kOk) return s;
  }
  const int32_t B = shape.batch, I = shape.in, O = shape.out;
  // Scratch: the dW column being summed (I floats), then per sample its cursor into its kept row and the samples
  // keeping the current unit (B int32 each). The kept units of all samples are walked in ascending order (a merge
  // of the sorted kept rows); for each unit kept by any sample, dW[:, j] is summed over the samples keeping it, in
  // batch order, four at a time, and applied at once: w - dW * lr is bit for bit the separate backward followed
  // by Keras' assign_sub(gradient * lr). A unit no sample kept has dW = 0 and keeps its weights (w - 0 * lr == w).
  float* acc = static_cast<float*>(scratch);
  int32_t* cursor = reinterpret_cast<int32_t*>(acc + I);
  int32_t* keepers = cursor + B;
  for (int32_t bb = 0; bb < B; ++bb) cursor[bb] = 0;
  const float* xs[4];
  float dv[4];
  for (;;) {
    int32_t j = O;
    for (int32_t bb = 0; bb < B; ++bb) {
      if (cursor[bb] < kept.k[bb]) {
        const int32_t c = internal::KeptRow(kept, bb)[cursor[bb]];
        if (c < j) j = c;
      }
    }
    if (j == O) break;
    int32_t n = 0;
    for (int32_t bb = 0; bb < B; ++bb) {
      if (cursor[bb] < kept.k[bb] && internal::KeptRow(kept, bb)[cursor[bb]] == j) {
        keepers[n++] = bb;
        ++cursor[bb];
      }
    }
    for (int32_t t0 = 0; t0 < n; t0 += 4) {
      const int m = (n - t0) < 4 ? static_cast<int>(n - t0) : 4;
      for (int t = 0; t < m; ++t) {
        const int64_t r = keepers[t0 + t];
        xs[t] = x + r * I;
        dv[t] = delta[r * O + j];
      }
      const bool first = t0 == 0, last = t0 + 4 >= n;
      if (first && last) {
        Block<true, true>(m, I, O, xs, dv, lr, acc, w + j);
      } else if (first) {
        Block<true, false>(m, I, O, xs, dv, lr, acc, w + j);
      } else if (last) {
        Block<false, true>(m, I, O, xs, dv, lr, acc, w + j);
      } else {
        Block<false, false>(m, I, O, xs, dv, lr, acc, w + j);
      }
    }
  }
  if (b != nullptr) {  // dense bias gradient: the full error, samples in order per unit
    for (int32_t jj = 0; jj < O; ++jj) {
      float g = 0.0f;
      for (int32_t bb = 0; bb < B; ++bb) g = g + delta[static_cast<int64_t>(bb) * O + jj];
      b[jj] = b[jj] - g * lr;
    }
  }
  return Status::kOk;
}

Status ReluBackward(const float* d_post, const float* activation_out, int32_t n, float* d_pre) {
  if (d_post == nullptr || activation_out == nullptr || d_pre == nullptr) return Status::kBadArgument;
  if (n < 1) return Status::kBadShape;
  for (int32_t i = 0; i < n; ++i) d_pre[i] = (activation_out[i] > 0.0f) ? d_post[i] : 0.0f;
  return Status::kOk;
}

}  // namespace tinyprop
