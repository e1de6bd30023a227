// Where the training app's batches come from: the sample buffers compiled into the project (samples.cc), or
// anything else that fills a batch, e.g. a sensor (implement BatchSource in main).
#ifndef TINYPROP_APP_BATCHES_H_
#define TINYPROP_APP_BATCHES_H_

#include <stdint.h>

namespace tinyprop {
namespace app {

// Samples and their labels (cross-entropy) or targets (MSE), row-major float32 / int32.
struct SampleSet {
  const float* samples;   // [count, sample_elements]
  const int32_t* labels;  // [count] when the target is a class label, else null
  const float* targets;   // [count, target_elements] otherwise, else null
  int32_t count;
  int32_t sample_elements;
  int32_t target_elements;  // 1 for labels
};

class BatchSource {
 public:
  // Fills `batch` samples starting at sample `first` (any count >= 0: a source wraps around) into x ([batch, sample elements]) and y (int32 labels
  // [batch] or float targets [batch, target elements], as the model's y input has them); false when it cannot.
  virtual bool Fill(int32_t first, int32_t batch, float* x, void* y) = 0;

 protected:
  BatchSource() = default;
  BatchSource(const BatchSource&) = default;
  BatchSource& operator=(const BatchSource&) = default;
  ~BatchSource() = default;
};

// Consecutive samples of a SampleSet, wrapping around after the last.
class SampleBatches final : public BatchSource {
 public:
  explicit SampleBatches(const SampleSet& samples) : samples_(samples) {}
  bool Fill(int32_t first, int32_t batch, float* x, void* y) override;

 private:
  const SampleSet& samples_;
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_BATCHES_H_
