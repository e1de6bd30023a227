#include "tinyprop/app/batches.h"

#include <string.h>

namespace tinyprop {
namespace app {

bool SampleBatches::Fill(int32_t first, int32_t batch, float* x, void* y) {
  const SampleSet& s = samples_;
  if (first < 0 || batch < 1 || s.count < 1 || x == nullptr || y == nullptr || s.samples == nullptr ||
      (s.labels == nullptr) == (s.targets == nullptr)) {
    return false;
  }
  for (int32_t b = 0; b < batch; ++b) {
    const int32_t i = static_cast<int32_t>((static_cast<int64_t>(first) + b) % s.count);
    memcpy(x + static_cast<size_t>(b) * s.sample_elements, s.samples + static_cast<size_t>(i) * s.sample_elements,
           sizeof(float) * static_cast<size_t>(s.sample_elements));
    if (s.labels != nullptr) {
      static_cast<int32_t*>(y)[b] = s.labels[i];
    } else {
      memcpy(static_cast<float*>(y) + static_cast<size_t>(b) * s.target_elements,
             s.targets + static_cast<size_t>(i) * s.target_elements,
             sizeof(float) * static_cast<size_t>(s.target_elements));
    }
  }
  return true;
}

}  // namespace app
}  // namespace tinyprop
