// Bare-metal link check for the cross builds: one TinyProp training step of a Dense layer (selection, sparse
// backward, loss, Adam), statically allocated. Proves the library links without the C++ runtime (no exceptions,
// RTTI, heap or libstdc++). main() returns 0 on success, so the same file can later run under QEMU.
#include "tinyprop/tinyprop.h"

namespace {

constexpr int32_t kBatch = 2, kIn = 4, kOut = 8;
float g_x[kBatch * kIn] = {1, 2, 3, 4, 5, 6, 7, 8};
float g_w[kIn * kOut];
float g_m[kIn * kOut], g_v[kIn * kOut];
float g_logits[kBatch * kOut] = {1, -2, 3, 0.5f, 0, 0, 7, -1, 0.25f, 0.5f, -3, 2, 1, 1, 1, 1};
float g_delta[kBatch * kOut], g_dw[kIn * kOut], g_dx[kBatch * kIn], g_db[kOut], g_scratch[kBatch];
int32_t g_labels[kBatch] = {2, 5};
int32_t g_k[kBatch], g_kept[kBatch * kOut];

}  // namespace

int main() {
  using namespace tinyprop;
  for (int32_t i = 0; i < kIn * kOut; ++i) g_w[i] = 0.01f * static_cast<float>(i % 7);
  float loss = 0.0f;
  if (SoftmaxCrossEntropy(g_logits, g_labels, kBatch, kOut, &loss, g_delta) != Status::kOk) return 1;
  float ymax = kYmaxInit;
  const RatioParams p{0.1f, 0.9f, 0.5f, Rounding::kFloor};
  if (SelectUnits(g_delta, kBatch, kOut, p, &ymax, g_k, g_kept, g_scratch, SelectUnitsScratchSize(kBatch)) !=
      Status::kOk)
    return 2;
  if (DenseBackwardSparse(DenseShape{kBatch, kIn, kOut}, g_x, g_w, g_delta, KeptSet{g_k, g_kept, kOut},
                          BiasGrad::kDense, Accumulate::kOverwrite, g_dw, g_dx, g_db) != Status::kOk)
    return 3;
  AdamParams adam{};
  float b1p = 0.0f, b2p = 0.0f;
  if (MakeAdamParams(1e-3, 0.9, 0.999, 1e-7, &adam) != Status::kOk) return 4;
  if (AdamPowers(adam, 1, &b1p, &b2p) != Status::kOk) return 5;
  if (AdamUpdate(adam, b1p, b2p, g_w, g_dw, g_m, g_v, kIn * kOut) != Status::kOk) return 6;
  return (g_k[0] >= 1 && g_k[0] <= kOut && loss > 0.0f) ? 0 : 7;
}
