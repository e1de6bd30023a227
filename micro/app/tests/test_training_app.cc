// The TFLM-independent training app on the host: a fake step model whose "train step" adds 1 to every state
// element, a fake state, the simulated NOR flash of micro/persist. Two boots on one flash: the second must
// restore what the first saved and continue from there.
#include <string.h>

#include <string>
#include <vector>

#include "harness.h"
#include "tinyprop/app/batches.h"
#include "tinyprop/app/console.h"
#include "tinyprop/app/state.h"
#include "tinyprop/app/training_loop.h"
#include "tinyprop/persist_sim_flash.h"

namespace {

using tinyprop::SimFlash;
using tinyprop::app::BatchSource;
using tinyprop::app::Console;
using tinyprop::app::LoadOutcome;
using tinyprop::app::SampleBatches;
using tinyprop::app::SampleSet;
using tinyprop::app::StateAccess;
using tinyprop::app::StateDtype;
using tinyprop::app::StateLayout;
using tinyprop::app::StateVariable;
using tinyprop::app::StepModel;
using tinyprop::app::StepTensor;
using tinyprop::app::TensorBytes;
using tinyprop::app::TrainingApp;
using tinyprop::app::TrainingConfig;

class CapturedConsole final : public Console {
 public:
  void Write(const char* text) override { out += text; }
  int64_t Millis() override { return now += 3; }
  void Yield() override { ++yields; }
  uint64_t Ticks() override { return ticks += 7; }
  uint64_t ticks = 0;
  std::string out;
  int64_t now = 0;
  int yields = 0;
};

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A weight [2, 3] float, a slot [3] float, a step counter int64 (alignment padding before it).
const StateVariable kVariables[] = {
    {"w", 0, 24, 6, StateDtype::kFloat32, true},
    {"slot", 24, 12, 3, StateDtype::kFloat32, false},
    {"iterations", 40, 8, 1, StateDtype::kInt64, false},
};
const StateLayout kLayout = {kVariables, 3, 48, 0x1234abcdu};

// The state tensors, reached by index, as the app sees them.
class FakeState final : public StateAccess {
 public:
  explicit FakeState(const StateLayout& layout) : layout_(layout) {
    for (int32_t i = 0; i < layout.count; ++i) tensors.emplace_back(layout.variables[i].bytes, 0);
  }
  bool Read(int32_t index, uint32_t offset, void* out, uint32_t bytes) override {
    if (!InRange(index, offset, bytes) || fail_index == index) return false;
    memcpy(out, tensors[index].data() + offset, bytes);
    ++reads;
    return true;
  }
  bool Write(int32_t index, uint32_t offset, const void* data, uint32_t bytes) override {
    if (!InRange(index, offset, bytes) || fail_index == index) return false;
    memcpy(tensors[index].data() + offset, data, bytes);
    ++writes;
    return true;
  }
  bool Flush() override {
    ++flushes;
    return true;
  }
  bool InRange(int32_t index, uint32_t offset, uint32_t bytes) const {
    return index >= 0 && index < layout_.count && bytes >= 1 && offset + bytes <= tensors[index].size();
  }
  // Every tensor set to bytes seeded by `seed` (a state "in the model").
  void Fill(uint32_t seed) {
    for (auto& t : tensors) {
      for (auto& b : t) b = static_cast<uint8_t>((seed = seed * 1103515245u + 12345u) >> 16);
    }
  }
  float F(int32_t index, int e) const {
    float v;
    memcpy(&v, tensors[index].data() + 4 * e, 4);
    return v;
  }
  int64_t I64(int32_t index) const {
    int64_t v;
    memcpy(&v, tensors[index].data(), 8);
    return v;
  }
  // The initialiser: the exported values (0.5 everywhere, counter 0).
  void Initialise() {
    for (int32_t i = 0; i < layout_.count; ++i) {
      if (layout_.variables[i].dtype == StateDtype::kInt64) {
        const int64_t zero = 0;
        memcpy(tensors[i].data(), &zero, 8);
        continue;
      }
      for (uint32_t e = 0; e < layout_.variables[i].elements; ++e) {
        const float half = 0.5f;
        memcpy(tensors[i].data() + 4 * e, &half, 4);
      }
    }
  }
  void Train() {
    for (int32_t i = 0; i < layout_.count; ++i) {
      if (layout_.variables[i].dtype == StateDtype::kInt64) {
        const int64_t next = I64(i) + 1;
        memcpy(tensors[i].data(), &next, 8);
        continue;
      }
      for (uint32_t e = 0; e < layout_.variables[i].elements; ++e) {
        const float next = F(i, static_cast<int>(e)) + 1.0f;
        memcpy(tensors[i].data() + 4 * e, &next, 4);
      }
    }
  }
  std::vector<std::vector<uint8_t>> tensors;
  int32_t fail_index = -1;
  int reads = 0, writes = 0, flushes = 0;

 private:
  const StateLayout& layout_;
};

constexpr int32_t kBatch = 2, kSampleElements = 3, kClasses = 4, kSparseLayers = 2;

// The training graph's contract: x [2, 3] float, y [2] int32, mode int32; loss, output [2, 4], k [2, 2].
// The first Invoke runs the initialiser; a train invoke updates the state; k[layer, b] = layer + b + first x.
// Each Invoke ends by overwriting its inputs (all bits set: y = -1, x = NaN, mode = -1, an invalid mode), as on
// TFLM, whose planner may place other tensors in an input's buffer once the input has been read: whatever reads an
// input after an Invoke, or invokes without setting every input again, sees that.
class FakeModel final : public StepModel {
 public:
  explicit FakeModel(FakeState* state) : state_(state) {}
  TensorBytes Tensor(StepTensor tensor) override {
    switch (tensor) {
      case StepTensor::kX: return {x, sizeof(x)};
      case StepTensor::kY: return {y, sizeof(y)};
      case StepTensor::kMode: return {&mode, sizeof(mode)};
      case StepTensor::kLoss: return {&loss, sizeof(loss)};
      case StepTensor::kOutput: return {output, output_bytes};
      case StepTensor::kK: return {k, sizeof(k)};
    }
    return {nullptr, 0};
  }
  bool Invoke() override {
    if (!initialised) {
      state_at_first_invoke = state_->tensors;
      if (self_initialises) state_->Initialise();  // else it holds its state in place: zeros unless written
      initialised = true;
    }
    if (mode != 0 && mode != 1) return false;
    loss = 1.0f / (1.0f + static_cast<float>(state_->I64(2)));  // the forward pass, before the update
    if (mode == 1) {
      state_->Train();
      ++train_invokes;
      first_samples.push_back(x[0]);
    }
    for (int32_t b = 0; b < kBatch; ++b) {
      for (int32_t c = 0; c < kClasses; ++c) output[b * kClasses + c] = c == y[b] ? 1.0f : 0.0f;
      for (int32_t layer = 0; layer < kSparseLayers; ++layer) k[layer * kBatch + b] = layer + b + static_cast<int32_t>(x[0]);
    }
    if (clobbers_inputs) {
      memset(x, 0xff, sizeof(x));
      memset(y, 0xff, sizeof(y));
      memset(&mode, 0xff, sizeof(mode));
    }
    return true;
  }
  float x[kBatch * kSampleElements] = {};
  int32_t y[kBatch] = {};
  int32_t mode = -1;
  float loss = 0.0f;
  float output[kBatch * kClasses] = {};
  uint32_t output_bytes = sizeof(output);
  int32_t k[kSparseLayers * kBatch] = {};
  bool initialised = false;
  bool self_initialises = true;
  bool clobbers_inputs = true;
  std::vector<std::vector<uint8_t>> state_at_first_invoke;
  int train_invokes = 0;
  std::vector<float> first_samples;

 private:
  FakeState* state_;
};

// Sample i is {i, i + 0.25, i + 0.5} with label i % 4.
const float kSamples[] = {0, 0.25f, 0.5f, 1, 1.25f, 1.5f, 2, 2.25f, 2.5f};
const int32_t kLabels[] = {0, 1, 2};
const SampleSet kSampleSet = {kSamples, kLabels, nullptr, 3, kSampleElements, 1};
constexpr TrainingConfig kConfig = {kBatch, kSampleElements, 1, true, kClasses, kSparseLayers, 4, 1, 0, false};

struct Board {
  // 4 sectors of 4 KiB, 4-byte write blocks (nRF-like): two 8 KiB slots.
  std::vector<uint8_t> storage = std::vector<uint8_t>(4 * 4096);
  SimFlash flash{SimFlash::Config{4 * 4096, 4096, 4, false, false}, storage.data(), nullptr};
};

struct Boot {
  FakeState state{kLayout};
  FakeModel model{&state};
  SampleBatches batches{kSampleSet};
  CapturedConsole console;
  const uint8_t* initial_state = nullptr;  // set (and model.self_initialises = false) for an in-place model
  int32_t printed_labels[kBatch] = {};
  int32_t* printed_labels_buffer = printed_labels;
  int Run(Board& board, const StateLayout& layout = kLayout, const TrainingConfig& config = kConfig) {
    const TrainingApp app = {config,       &layout,       &model,          &state, &batches, &board.flash,
                             &console,     initial_state, printed_labels_buffer};
    return tinyprop::app::RunTraining(app);
  }
};

TP_TEST(AppStateLayoutOkRejectsOverlapMisalignmentAndOverrun) {
  TP_CHECK(tinyprop::app::StateLayoutOk(kLayout));
  const StateVariable overlap[] = {{"a", 0, 8, 2, StateDtype::kFloat32, true}, {"b", 4, 4, 1, StateDtype::kFloat32, false}};
  TP_CHECK(!tinyprop::app::StateLayoutOk({overlap, 2, 16, 0}));
  const StateVariable misaligned[] = {{"a", 4, 8, 1, StateDtype::kInt64, false}};
  TP_CHECK(!tinyprop::app::StateLayoutOk({misaligned, 1, 16, 0}));
  const StateVariable wrong_size[] = {{"a", 0, 8, 3, StateDtype::kFloat32, false}};
  TP_CHECK(!tinyprop::app::StateLayoutOk({wrong_size, 1, 16, 0}));
  const StateVariable overrun[] = {{"a", 8, 12, 3, StateDtype::kFloat32, false}};
  TP_CHECK(!tinyprop::app::StateLayoutOk({overrun, 1, 16, 0}));
  TP_CHECK(tinyprop::app::StateLayoutOk({overrun, 1, 20, 0}));
  const StateVariable bad_dtype[] = {{"a", 0, 4, 1, static_cast<StateDtype>(9), false}};
  TP_CHECK(!tinyprop::app::StateLayoutOk({bad_dtype, 1, 16, 0}));
}

TP_TEST(AppSampleBatchesWrapAroundForLabelsAndTargets) {
  SampleBatches batches(kSampleSet);
  float x[6];
  int32_t labels[2];
  TP_CHECK(batches.Fill(2, 2, x, labels));  // samples 2, 0
  TP_CHECK_EQ(x[0], 2.0f);
  TP_CHECK_EQ(x[2], 2.5f);
  TP_CHECK_EQ(x[3], 0.0f);
  TP_CHECK_EQ(labels[0], 2);
  TP_CHECK_EQ(labels[1], 0);
  TP_CHECK(batches.Fill(7, 1, x, labels));  // 7 % 3
  TP_CHECK_EQ(x[0], 1.0f);
  TP_CHECK(!batches.Fill(-1, 2, x, labels));

  const float targets[] = {10, 11, 20, 21};
  const SampleSet regression = {kSamples, nullptr, targets, 2, kSampleElements, 2};
  SampleBatches regression_batches(regression);
  float y[4];
  TP_CHECK(regression_batches.Fill(1, 2, x, y));  // samples 1, 0
  TP_CHECK_EQ(y[0], 20.0f);
  TP_CHECK_EQ(y[1], 21.0f);
  TP_CHECK_EQ(y[2], 10.0f);
}

TP_TEST(AppFormatFloatWithoutPercentF) {
  char text[32];
  tinyprop::app::FormatFloat(1.5f, text, sizeof(text));
  TP_CHECK_EQ(std::string(text), std::string("1.500000"));
  tinyprop::app::FormatFloat(-2.25e-5f, text, sizeof(text));
  TP_CHECK_EQ(std::string(text), std::string("-2.250000e-5"));
  tinyprop::app::FormatFloat(3.0e9f, text, sizeof(text));
  TP_CHECK_EQ(std::string(text), std::string("3.000000e9"));
  tinyprop::app::FormatFloat(0.9999999f, text, sizeof(text));
  TP_CHECK_EQ(std::string(text), std::string("1.000000"));
  tinyprop::app::FormatFloat(0.0f / 0.0f, text, sizeof(text));
  TP_CHECK_EQ(std::string(text), std::string("nan"));
  tinyprop::app::FormatFloat(-1.0f / 0.0f, text, sizeof(text));
  TP_CHECK_EQ(std::string(text), std::string("-inf"));
}

TP_TEST(AppTwoBootsSaveRestoreAndContinue) {
  Board board;
  Boot first;
  TP_CHECK_EQ(first.Run(board), 0);
  const std::string& out1 = first.console.out;
  TP_CHECK(Count(out1, "no saved state in flash") == 1);
  TP_CHECK(Count(out1, "saved the training state (48 bytes) to slot 0, generation 1") == 1);
  // 4 steps over 3 samples, batch 2: batches from 0, 2, 4 % 3 = 1, 6 % 3 = 0; k summed per layer.
  TP_CHECK_EQ(first.model.train_invokes, 4);
  TP_CHECK(first.model.first_samples == std::vector<float>({0.0f, 2.0f, 1.0f, 0.0f}));
  TP_CHECK(Count(out1, "step 1: loss 1.000000 (3 ms), kept per layer: 1 3\n") == 1);
  TP_CHECK(Count(out1, "step 2: loss 0.500000 (3 ms), kept per layer: 5 7\n") == 1);
  TP_CHECK(Count(out1, "step 4: loss") == 1 && Count(out1, "step 5:") == 0);
  TP_CHECK_EQ(first.console.yields, 4);
  // inference on the batch from sample 0: the fake predicts the label it saw, then overwrites y with -1, so these
  // are the labels the app fed, not read back from y after the invoke
  TP_CHECK(Count(out1, "  sample 0: predicted class 0, label 0\n  sample 1: predicted class 1, label 1\n") == 1);
  TP_CHECK_EQ(first.model.y[1], -1);
  TP_CHECK_EQ(first.state.F(0, 5), 4.5f);

  Boot second;  // a new interpreter: the initialiser sets the exported values again, then the restore
  TP_CHECK_EQ(second.Run(board), 0);
  const std::string& out2 = second.console.out;
  TP_CHECK(Count(out2, "restored the training state from slot 0 (generation 1, 4 steps trained before)") == 1);
  TP_CHECK(Count(out2, "loss on the first batch with the restored state: 0.200000") == 1);
  TP_CHECK(Count(out2, "step 5: loss") == 1 && Count(out2, "step 8: loss") == 1);
  TP_CHECK(Count(out2, "to slot 1, generation 2") == 1);
  for (int e = 0; e < 6; ++e) TP_CHECK_EQ(second.state.F(0, e), 8.5f);
  TP_CHECK_EQ(second.state.F(1, 2), 8.5f);
  TP_CHECK_EQ(second.state.I64(2), 8);
}

TP_TEST(AppTraceGivesEachStepsExactFiguresOnlyWhenAsked) {
  Board board;
  Boot plain;
  TP_CHECK_EQ(plain.Run(board), 0);
  TP_CHECK(Count(plain.console.out, "trace_") == 0);

  Board fresh;
  Boot traced;
  TrainingConfig config = kConfig;
  config.trace_steps = true;
  TP_CHECK_EQ(traced.Run(fresh, kLayout, config), 0);
  const std::string& out = traced.console.out;
  // Step 1: loss 1.0f; the step took 7 ticks (the fake clock's step); k per sample: layer + b + first x (0);
  // only the weight "w" (tensor 0) is summed: six elements 0.5 + 1 = 9.0 (double bits 4022000000000000).
  TP_CHECK(Count(out, "trace_step 1 loss 3f800000 ticks 0000000000000007\n") == 1);
  TP_CHECK(Count(out, "trace_k 1 0 0 1\ntrace_k 1 1 1 2\n") == 1);
  TP_CHECK(Count(out, "trace_weight_sum 1 0 4022000000000000\n") == 1);
  TP_CHECK(Count(out, "trace_weight_sum") == 4 && Count(out, "trace_weight_sum 1 1") == 0);
  // Step 2 starts at sample 2 (k = layer + b + 2); after it w is 2.5 everywhere: 15.0.
  TP_CHECK(Count(out, "trace_step 2 loss 3f000000 ticks 0000000000000007\n") == 1);
  TP_CHECK(Count(out, "trace_k 2 0 2 3\n") == 1 && Count(out, "trace_weight_sum 2 0 402e000000000000\n") == 1);
  // The inference output after training, per sample (the fake's one-hot of the label).
  TP_CHECK(Count(out, "trace_output 0 3f800000 00000000 00000000 00000000\n"
                      "trace_output 1 00000000 3f800000 00000000 00000000\n") == 1);
}

TP_TEST(AppWithLabelsAndNoBufferToKeepThemFailsBeforeAnyInvoke) {
  Board board;
  Boot boot;
  boot.printed_labels_buffer = nullptr;
  TP_CHECK_EQ(boot.Run(board), 1);
  TP_CHECK(Count(boot.console.out, "no buffer for the printed labels") == 1);
  TP_CHECK(!boot.model.initialised);
}

TP_TEST(AppIgnoresAnotherModelsState) {
  Board board;
  Boot first;
  TP_CHECK_EQ(first.Run(board), 0);
  StateLayout other = kLayout;
  other.model_id = 0x99;
  Boot second;
  TP_CHECK_EQ(second.Run(board, other), 0);
  TP_CHECK(Count(second.console.out, "saved state belongs to another model (id 0x1234abcd, 48 bytes): ignored") == 1);
  TP_CHECK_EQ(second.state.F(0, 0), 4.5f);  // trained from the exported values only
  TP_CHECK(Count(second.console.out, "step 1: loss") == 1);
}

TP_TEST(AppReportsATensorOfTheWrongSizeAndAStateTensorItCannotRead) {
  Board board;
  Boot wrong_output;
  wrong_output.model.output_bytes = 4;
  TrainingConfig config = kConfig;
  TP_CHECK_EQ(wrong_output.Run(board, kLayout, config), 0);  // predictions are only printed: the save still runs
  TP_CHECK(Count(wrong_output.console.out, "tensor 'output' has an unexpected type or size (expected 32 bytes)") == 1);

  Board fresh;
  Boot wrong_batch;
  config.batch = 3;  // x would be [3, 3]: the model has [2, 3]
  TP_CHECK_EQ(wrong_batch.Run(fresh, kLayout, config), 1);
  TP_CHECK(Count(wrong_batch.console.out, "tensor 'x' has an unexpected type or size (expected 36 bytes)") == 1);
  TP_CHECK_EQ(wrong_batch.model.train_invokes, 0);

  Boot unreadable;
  unreadable.state.fail_index = 2;
  TP_CHECK_EQ(unreadable.Run(fresh), 1);
  TP_CHECK(Count(unreadable.console.out, "state tensor 'iterations' could not be read from the model") == 1);
  tinyprop::LoadReport report = {};
  tinyprop::PersistLayout slots = {{0, 8192}, 8192};
  TP_CHECK(tinyprop::InspectWeights(fresh.flash, slots, &report) == tinyprop::PersistStatus::kNoValidWeights);
}

TP_TEST(AppStateTooLargeForThePartitionIsReportedBeforeTraining) {
  std::vector<uint8_t> storage(2 * 4096);
  SimFlash small{SimFlash::Config{2 * 4096, 4096, 4, false, false}, storage.data(), nullptr};
  static const StateVariable big[] = {{"w", 0, 8192, 2048, StateDtype::kFloat32, true}};
  const StateLayout layout = {big, 1, 8192, 1};
  tinyprop::PersistLayout slots;
  CapturedConsole console;
  TP_CHECK(!tinyprop::app::TwoSlotLayout(small, layout.image_bytes, &slots, console));
  TP_CHECK(Count(console.out, "state partition unusable (kOk, 4064 payload bytes per slot, 8192 needed)") == 1);
  FakeState state(layout);
  uint32_t steps = 7;
  TP_CHECK(tinyprop::app::LoadState(small, layout, state, &steps, console) == LoadOutcome::kStartFresh);
  TP_CHECK_EQ(steps, 7u);
  TP_CHECK(!tinyprop::app::SaveState(small, layout, state, 1, console));
}


// ---- the state in place (initial state written before the first invoke) -----------------------------------------

// g_tinyprop_initial_state of the small layout: w = 0.25 * (i + 1), slot = -1, -2, -3, iterations 3; the gap
// bytes 36..39 hold garbage that must not matter (no tensor covers them).
struct InitialImage {
  alignas(16) uint8_t bytes[48];
  InitialImage() {
    memset(bytes, 0xEE, sizeof(bytes));
    for (int e = 0; e < 6; ++e) {
      const float w = 0.25f * static_cast<float>(e + 1);
      memcpy(bytes + 4 * e, &w, 4);
    }
    for (int e = 0; e < 3; ++e) {
      const float v = -static_cast<float>(e + 1);
      memcpy(bytes + 24 + 4 * e, &v, 4);
    }
    const int64_t three = 3;
    memcpy(bytes + 40, &three, 8);
  }
};

TP_TEST(AppInPlaceModelStartsFromTheInitialStateThenRestores) {
  const InitialImage initial;
  Board board;
  Boot first;
  first.model.self_initialises = false;  // like TFLM's AllocateTensors: the state tensors are zeros
  first.initial_state = initial.bytes;
  TP_CHECK_EQ(first.Run(board), 0);
  const std::string& out1 = first.console.out;
  TP_CHECK(Count(out1, "wrote the initial state (48 bytes) into the model") == 1);
  // Before the first invoke every state tensor held exactly its bytes of the initial image.
  TP_CHECK_EQ(first.model.state_at_first_invoke.size(), 3u);
  for (int32_t i = 0; i < 3; ++i) {
    const StateVariable& v = kVariables[i];
    TP_CHECK(memcmp(first.model.state_at_first_invoke[i].data(), initial.bytes + v.offset, v.bytes) == 0);
  }
  TP_CHECK(Count(out1, "loss on the first batch with the exported weights: 0.250000") == 1);  // 1 / (1 + 3)
  TP_CHECK(Count(out1, "no saved state in flash") == 1);
  TP_CHECK_EQ(first.state.F(0, 5), 1.5f + 4.0f);
  TP_CHECK_EQ(first.state.F(1, 0), -1.0f + 4.0f);
  TP_CHECK_EQ(first.state.I64(2), 7);

  Boot second;  // the initial state again, then the saved one over it
  second.model.self_initialises = false;
  second.initial_state = initial.bytes;
  TP_CHECK_EQ(second.Run(board), 0);
  const std::string& out2 = second.console.out;
  TP_CHECK(Count(out2, "loss on the first batch with the exported weights: 0.250000") == 1);
  TP_CHECK(Count(out2, "restored the training state from slot 0 (generation 1, 4 steps trained before)") == 1);
  TP_CHECK(Count(out2, "loss on the first batch with the restored state: 0.125000") == 1);  // 1 / (1 + 7)
  TP_CHECK_EQ(second.state.F(0, 0), 0.25f + 8.0f);
  TP_CHECK_EQ(second.state.F(1, 2), -3.0f + 8.0f);
  TP_CHECK_EQ(second.state.I64(2), 11);
  TP_CHECK(Count(out2, "to slot 1, generation 2") == 1);

  // A state tensor that cannot be written: reported before any invoke.
  Board fresh;
  Boot broken;
  broken.model.self_initialises = false;
  broken.initial_state = initial.bytes;
  broken.state.fail_index = 1;
  TP_CHECK_EQ(broken.Run(fresh), 1);
  TP_CHECK(Count(broken.console.out, "state tensor 'slot' could not be written into the model") == 1);
  TP_CHECK(!broken.model.initialised);
}

// A state of several 128-byte pieces, with variables straddling them, an alignment gap and a trailing gap.
const StateVariable kBigVariables[] = {
    {"w0", 0, 280, 70, StateDtype::kFloat32, true},
    {"w1", 280, 36, 9, StateDtype::kFloat32, true},
    {"m", 316, 500, 125, StateDtype::kFloat32, false},
    {"ymax", 816, 4, 1, StateDtype::kFloat32, false},
    {"iterations", 824, 8, 1, StateDtype::kInt64, false},  // gap 820..823
    {"count", 832, 4, 1, StateDtype::kInt32, false},
};
const StateLayout kBigLayout = {kBigVariables, 6, 840, 0x77u};  // tail gap 836..839

// The image as the app used to build it in RAM: every tensor at its offset, zeros elsewhere.
std::vector<uint8_t> ImageOf(const FakeState& state, const StateLayout& layout) {
  std::vector<uint8_t> image(layout.image_bytes, 0);
  for (int32_t i = 0; i < layout.count; ++i) {
    memcpy(image.data() + layout.variables[i].offset, state.tensors[i].data(), layout.variables[i].bytes);
  }
  return image;
}

const tinyprop::PersistLayout kBoardSlots = {{0, 8192}, 8192};

TP_TEST(AppStreamedSaveAndLoadReproduceTheStateBitForBit) {
  TP_CHECK(tinyprop::app::StateLayoutOk(kBigLayout));
  Board board;
  CapturedConsole console;
  FakeState saved(kBigLayout);
  saved.Fill(42);
  TP_CHECK(tinyprop::app::SaveState(board.flash, kBigLayout, saved, 12, console));
  TP_CHECK(Count(console.out, "saved the training state (840 bytes) to slot 0, generation 1") == 1);
  // Pieces of at most 128 bytes: many tensor reads (two passes), never the whole state at once.
  TP_CHECK(saved.reads >= 2 * 7);

  // On flash: exactly the record SaveWeights makes of the contiguous image (gaps zero).
  const std::vector<uint8_t> image = ImageOf(saved, kBigLayout);
  Board reference;
  const tinyprop::RecordMeta meta = {0x77u, 12};
  TP_CHECK(tinyprop::SaveWeights(reference.flash, kBoardSlots, image.data(), 840, &meta, nullptr) ==
           tinyprop::PersistStatus::kOk);
  TP_CHECK(board.storage == reference.storage);
  TP_CHECK(memcmp(board.storage.data() + 32, image.data(), 840) == 0);

  // Loaded into a state that holds something else: every tensor bit for bit, steps from the record.
  FakeState loaded(kBigLayout);
  loaded.Fill(7);
  uint32_t steps = 0;
  TP_CHECK(tinyprop::app::LoadState(board.flash, kBigLayout, loaded, &steps, console) == LoadOutcome::kRestored);
  TP_CHECK_EQ(steps, 12u);
  TP_CHECK(loaded.tensors == saved.tensors);
  TP_CHECK(loaded.flushes == 1);
  TP_CHECK(loaded.writes >= 7);

  // A record written by the contiguous API loads the same way.
  FakeState from_reference(kBigLayout);
  TP_CHECK(tinyprop::app::LoadState(reference.flash, kBigLayout, from_reference, &steps, console) ==
           LoadOutcome::kRestored);
  TP_CHECK(from_reference.tensors == saved.tensors);
}

TP_TEST(AppCorruptedRecordIsNotApplied) {
  Board board;
  CapturedConsole console;
  FakeState first(kBigLayout), second(kBigLayout);
  first.Fill(1);
  second.Fill(2);
  TP_CHECK(tinyprop::app::SaveState(board.flash, kBigLayout, first, 10, console));   // slot 0
  TP_CHECK(tinyprop::app::SaveState(board.flash, kBigLayout, second, 20, console));  // slot 1
  // The newest record rots (a payload bit in the last piece): the older one is restored, never a mix.
  board.flash.FlipBit(8192 + 32 + 800, 3);
  FakeState state(kBigLayout);
  state.Fill(3);
  uint32_t steps = 0;
  TP_CHECK(tinyprop::app::LoadState(board.flash, kBigLayout, state, &steps, console) == LoadOutcome::kRestored);
  TP_CHECK(state.tensors == first.tensors);
  TP_CHECK_EQ(steps, 10u);
  TP_CHECK(Count(console.out, "restored the training state from slot 0 (generation 1, 10 steps trained before); "
                              "no older backup") == 1);
  // Both rot: start fresh, the state untouched (not one tensor write).
  board.flash.FlipBit(32 + 5, 0);
  FakeState untouched(kBigLayout);
  untouched.Fill(4);
  const auto before = untouched.tensors;
  steps = 99;
  TP_CHECK(tinyprop::app::LoadState(board.flash, kBigLayout, untouched, &steps, console) ==
           LoadOutcome::kStartFresh);
  TP_CHECK(untouched.tensors == before);
  TP_CHECK_EQ(untouched.writes, 0);
  TP_CHECK_EQ(steps, 99u);
}

TP_TEST(AppStateTensorThatCannotBeWrittenDuringARestoreFails) {
  Board board;
  CapturedConsole console;
  FakeState saved(kBigLayout);
  saved.Fill(5);
  TP_CHECK(tinyprop::app::SaveState(board.flash, kBigLayout, saved, 3, console));
  FakeState state(kBigLayout);
  state.fail_index = 2;  // 'm': w0 and w1 were already written
  uint32_t steps = 0;
  TP_CHECK(tinyprop::app::LoadState(board.flash, kBigLayout, state, &steps, console) == LoadOutcome::kFailed);
  TP_CHECK(Count(console.out, "state tensor 'm' could not be written into the model") == 1);
  TP_CHECK(Count(console.out, "partly overwritten") == 1);
  // The record itself is fine.
  FakeState again(kBigLayout);
  TP_CHECK(tinyprop::app::LoadState(board.flash, kBigLayout, again, &steps, console) == LoadOutcome::kRestored);
  TP_CHECK(again.tensors == saved.tensors);
}

// A power cut at every byte operation of a streamed save (the simulated flash's fault injection): after the
// reboot the previous state is restored bit for bit, unless the cut came after the commit.
TP_TEST(AppPowerCutDuringASaveKeepsThePreviousState) {
  Board board;
  CapturedConsole console;
  FakeState older(kBigLayout), newer(kBigLayout);
  older.Fill(11);
  newer.Fill(12);
  TP_CHECK(tinyprop::app::SaveState(board.flash, kBigLayout, older, 100, console));
  const std::vector<uint8_t> snapshot = board.storage;
  // How many byte operations an uncut save takes: erase one 4 KiB sector, 840 payload bytes, 32 header bytes.
  const uint64_t ops0 = board.flash.byte_ops();
  TP_CHECK(tinyprop::app::SaveState(board.flash, kBigLayout, newer, 200, console));
  const uint64_t total = board.flash.byte_ops() - ops0;
  TP_CHECK_EQ(total, 4096u + 840u + 32u);
  int old_restored = 0, new_restored = 0;
  for (uint64_t n = 0; n < total; n += (n < 4096 ? 97 : 1)) {
    board.storage = snapshot;
    board.flash.Reboot();
    board.flash.ArmPowerCut(n);
    CapturedConsole c;
    TP_CHECK(!tinyprop::app::SaveState(board.flash, kBigLayout, newer, 200, c));
    TP_CHECK(Count(c.out, "saving the state failed: kFlashError") == 1);
    board.flash.Reboot();
    TP_CHECK(memcmp(board.storage.data(), snapshot.data(), 8192) == 0);  // slot 0 never touched
    FakeState state(kBigLayout);
    uint32_t steps = 0;
    TP_CHECK(tinyprop::app::LoadState(board.flash, kBigLayout, state, &steps, c) == LoadOutcome::kRestored);
    if (steps == 100) {
      TP_CHECK(state.tensors == older.tensors);
      ++old_restored;
    } else {
      TP_CHECK_EQ(steps, 200u);  // only when just the header's trailing erased bytes were left
      TP_CHECK(state.tensors == newer.tensors);
      ++new_restored;
    }
  }
  TP_CHECK(old_restored > 800);
  TP_CHECK(new_restored <= 4);
}

}  // namespace
