#include "tinyprop/status.h"

#include "internal.h"

namespace tinyprop {

const char* StatusName(Status status) {
  switch (status) {
    case Status::kOk: return "kOk";
    case Status::kBadArgument: return "kBadArgument";
    case Status::kBadShape: return "kBadShape";
    case Status::kBadIndex: return "kBadIndex";
    case Status::kBufferTooSmall: return "kBufferTooSmall";
    case Status::kNonFinite: return "kNonFinite";
  }
  return "unknown";
}

Status CheckKeptSet(const KeptSet& kept, int32_t batch, int32_t n) {
  int32_t total;  // a [batch, n] kept set must be addressable with int32 sizes like every other tensor
  if (!internal::Product2(batch, n, &total)) return Status::kBadShape;
  if (kept.k == nullptr || kept.index == nullptr) return Status::kBadArgument;
  if (kept.row_stride < 0) return Status::kBadArgument;
  for (int32_t b = 0; b < batch; ++b) {
    const int32_t kb = kept.k[b];
    if (kb < 0 || kb > n) return Status::kBadIndex;
    if (kept.row_stride > 0 && kb > kept.row_stride) return Status::kBadIndex;
  }
  for (int32_t b = 0; b < batch; ++b) {
    const int32_t* row = internal::KeptRow(kept, b);
    int32_t previous = -1;
    for (int32_t t = 0; t < kept.k[b]; ++t) {
      const int32_t j = row[t];
      if (j <= previous || j >= n) return Status::kBadIndex;  // also rejects j < 0 (previous starts at -1)
      previous = j;
    }
  }
  return Status::kOk;
}

}  // namespace tinyprop
