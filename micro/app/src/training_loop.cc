#include "tinyprop/app/training_loop.h"

#include <string.h>

namespace tinyprop {
namespace app {
namespace {

constexpr uint32_t kInt32Bytes = sizeof(int32_t);
constexpr uint32_t kFloatBytes = sizeof(float);

// The tensor, checked against the size the config gives it; reported and null when it differs.
void* Checked(StepModel& model, StepTensor which, uint32_t bytes, const char* name, Console& console) {
  const TensorBytes t = model.Tensor(which);
  if (t.data == nullptr || t.bytes != bytes) {
    console.Printf("tinyprop: tensor '%s' has an unexpected type or size (expected %u bytes)\n", name,
                   static_cast<unsigned>(bytes));
    return nullptr;
  }
  return t.data;
}

uint32_t TargetBytes(const TrainingConfig& c) {
  return static_cast<uint32_t>(c.batch) * (c.target_is_label ? kInt32Bytes
                                                             : kFloatBytes * static_cast<uint32_t>(c.target_elements));
}

// Fills the batch from `first` and the mode (EVERY input before EVERY Invoke: TFLM's planner reuses input
// buffers), invokes, reads the loss. `fed_labels` ([batch], or null): receives the batch's labels before the
// Invoke, the only time they are known to be in y.
bool RunStep(const TrainingApp& app, int32_t first, int32_t mode, float* loss, int32_t* fed_labels = nullptr) {
  const TrainingConfig& c = app.config;
  StepModel& model = *app.model;
  Console& console = *app.console;
  float* x = static_cast<float*>(Checked(
      model, StepTensor::kX, kFloatBytes * static_cast<uint32_t>(c.batch * c.sample_elements), "x", console));
  void* y = Checked(model, StepTensor::kY, TargetBytes(c), "y", console);
  int32_t* m = static_cast<int32_t*>(Checked(model, StepTensor::kMode, kInt32Bytes, "mode", console));
  if (x == nullptr || y == nullptr || m == nullptr) return false;
  if (!app.batches->Fill(first, c.batch, x, y)) {
    console.Printf("tinyprop: no batch from sample %ld\n", static_cast<long>(first));
    return false;
  }
  if (fed_labels != nullptr && c.target_is_label) memcpy(fed_labels, y, TargetBytes(c));
  *m = mode;
  if (!model.Invoke()) {
    console.Printf("tinyprop: Invoke() failed (mode %d)\n", static_cast<int>(mode));
    return false;
  }
  const float* l = static_cast<const float*>(Checked(model, StepTensor::kLoss, kFloatBytes, "loss", console));
  if (l == nullptr) return false;
  *loss = *l;
  return true;
}

// k is [sparse_layers, batch] int32: the entries each sample kept per sparse layer; printed summed per layer.
void PrintKeptPerLayer(const TrainingApp& app) {
  const TrainingConfig& c = app.config;
  Console& console = *app.console;
  if (c.sparse_layers == 0) {  // dense back-propagation: k is empty
    console.Write("\n");
    return;
  }
  const int32_t* k = static_cast<const int32_t*>(Checked(
      *app.model, StepTensor::kK, kInt32Bytes * static_cast<uint32_t>(c.sparse_layers * c.batch), "k", console));
  if (k == nullptr) {
    console.Write("\n");
    return;
  }
  console.Write(", kept per layer:");
  for (int32_t layer = 0; layer < c.sparse_layers; ++layer) {
    long kept = 0;
    for (int32_t b = 0; b < c.batch; ++b) kept += k[layer * c.batch + b];
    console.Printf(" %ld", kept);
  }
  console.Write("\n");
}

// After an inference invoke on the batch from sample 0: the predicted class and label per sample
// (classification; the labels RunStep kept in app.printed_labels when it fed that batch), or the first outputs
// (regression).
void PrintPredictions(const TrainingApp& app) {
  const TrainingConfig& c = app.config;
  Console& console = *app.console;
  const int32_t n = c.output_elements;
  const float* out = static_cast<const float*>(Checked(
      *app.model, StepTensor::kOutput, kFloatBytes * static_cast<uint32_t>(c.batch * n), "output", console));
  if (out == nullptr) return;
  char text[32];
  for (int32_t b = 0; b < c.batch; ++b) {
    if (c.target_is_label) {
      int32_t best = 0;
      for (int32_t j = 1; j < n; ++j) {
        if (out[b * n + j] > out[b * n + best]) best = j;
      }
      console.Printf("  sample %d: predicted class %d, label %d\n", static_cast<int>(b), static_cast<int>(best),
                     static_cast<int>(app.printed_labels[b]));
      continue;
    }
    console.Printf("  sample %d:", static_cast<int>(b));
    for (int32_t j = 0; j < n && j < 4; ++j) {
      FormatFloat(out[b * n + j], text, sizeof(text));
      console.Printf(" %s", text);
    }
    console.Write(n > 4 ? " ...\n" : "\n");
  }
}

// ---- the step trace (TrainingConfig::trace_steps): exact figures as hex bits, one "trace_..." line each ----------
uint32_t FloatBits(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// 16 hex digits (newlib's printf has no %llx).
void PrintHex64(Console& console, uint64_t value) {
  console.Printf("%08lx%08lx", static_cast<unsigned long>(value >> 32),
                 static_cast<unsigned long>(value & 0xffffffffu));
}

void PrintDoubleBits(Console& console, double value) {
  uint64_t bits;
  memcpy(&bits, &value, sizeof(bits));
  PrintHex64(console, bits);
}

// Sum of a float32 state tensor's elements in index order, in double, read through the state access in pieces
// (no copy of the tensor). False when the tensor cannot be read.
bool SumOfTensor(StateAccess& state, int32_t index, const StateVariable& v, double* sum) {
  float piece[32];
  *sum = 0.0;
  for (uint32_t done = 0; done < v.elements;) {
    const uint32_t n = v.elements - done < 32u ? v.elements - done : 32u;
    if (!state.Read(index, done * kFloatBytes, piece, n * kFloatBytes)) return false;
    for (uint32_t i = 0; i < n; ++i) *sum += static_cast<double>(piece[i]);
    done += n;
  }
  return true;
}

// After train step `step` (1-based, counting restored steps): loss bits, ticks, k per sample and layer, the sum of
// every weight tensor.
bool TraceStep(const TrainingApp& app, uint32_t step, float loss, uint64_t ticks) {
  const TrainingConfig& c = app.config;
  Console& console = *app.console;
  console.Printf("trace_step %u loss %08lx ticks ", static_cast<unsigned>(step),
                 static_cast<unsigned long>(FloatBits(loss)));
  PrintHex64(console, ticks);
  console.Write("\n");
  const int32_t* k = c.sparse_layers == 0 ? nullptr : static_cast<const int32_t*>(Checked(
      *app.model, StepTensor::kK, kInt32Bytes * static_cast<uint32_t>(c.sparse_layers * c.batch), "k", console));
  if (c.sparse_layers != 0 && k == nullptr) return false;
  for (int32_t layer = 0; layer < c.sparse_layers; ++layer) {
    console.Printf("trace_k %u %d", static_cast<unsigned>(step), static_cast<int>(layer));
    for (int32_t b = 0; b < c.batch; ++b) console.Printf(" %ld", static_cast<long>(k[layer * c.batch + b]));
    console.Write("\n");
  }
  const StateLayout& layout = *app.layout;
  for (int32_t i = 0; i < layout.count; ++i) {
    const StateVariable& v = layout.variables[i];
    if (!v.is_weight || v.dtype != StateDtype::kFloat32) continue;
    double sum = 0.0;
    if (!SumOfTensor(*app.state, i, v, &sum)) {
      console.Printf("tinyprop: cannot read state tensor '%s'\n", v.name);
      return false;
    }
    console.Printf("trace_weight_sum %u %d ", static_cast<unsigned>(step), static_cast<int>(i));
    PrintDoubleBits(console, sum);
    console.Write("\n");
  }
  return true;
}

// The output of the inference invoke just run, per sample, as float32 bits.
bool TraceOutput(const TrainingApp& app) {
  const TrainingConfig& c = app.config;
  const int32_t n = c.output_elements;
  const float* out = static_cast<const float*>(Checked(
      *app.model, StepTensor::kOutput, kFloatBytes * static_cast<uint32_t>(c.batch * n), "output", *app.console));
  if (out == nullptr) return false;
  for (int32_t b = 0; b < c.batch; ++b) {
    app.console->Printf("trace_output %d", static_cast<int>(b));
    for (int32_t j = 0; j < n; ++j) {
      app.console->Printf(" %08lx", static_cast<unsigned long>(FloatBits(out[b * n + j])));
    }
    app.console->Write("\n");
  }
  return true;
}

}  // namespace

int RunTraining(const TrainingApp& app) {
  const TrainingConfig& c = app.config;
  Console& console = *app.console;
  char text[32];
  if (!StateLayoutOk(*app.layout)) {
    console.Printf("tinyprop: inconsistent state layout table\n");
    return 1;
  }
  if (c.target_is_label && app.printed_labels == nullptr) {
    console.Printf("tinyprop: no buffer for the printed labels (TrainingApp::printed_labels)\n");
    return 1;
  }
  // A model holding its state in place starts from zeros: the exported state goes in before the first invoke.
  // Otherwise the first invoke runs the initialiser (CALL_ONCE), which assigns the exported weights: only after it
  // may a saved state be written into the model.
  if (app.initial_state != nullptr) {
    if (!CopyImageToState(*app.layout, app.initial_state, *app.state, console)) return 1;
    console.Printf("tinyprop: wrote the initial state (%u bytes) into the model\n",
                   static_cast<unsigned>(app.layout->image_bytes));
  }
  float loss = 0.0f;
  if (!RunStep(app, 0, c.mode_infer, &loss)) return 1;
  FormatFloat(loss, text, sizeof(text));
  console.Printf("tinyprop: loss on the first batch with the exported weights: %s\n", text);

  uint32_t steps_done = 0;
  switch (LoadState(*app.flash, *app.layout, *app.state, &steps_done, console)) {
    case LoadOutcome::kRestored:
      if (!RunStep(app, 0, c.mode_infer, &loss)) return 1;
      FormatFloat(loss, text, sizeof(text));
      console.Printf("tinyprop: loss on the first batch with the restored state: %s\n", text);
      break;
    case LoadOutcome::kStartFresh:
      break;
    case LoadOutcome::kFailed:
      return 1;
  }

  for (int32_t step = 0; step < c.train_steps; ++step) {
    const int64_t t0 = console.Millis();
    const uint64_t ticks0 = console.Ticks();
    if (!RunStep(app, step * c.batch, c.mode_train, &loss)) return 1;
    const uint64_t ticks = console.Ticks() - ticks0;
    const int64_t t1 = console.Millis();
    FormatFloat(loss, text, sizeof(text));
    console.Printf("step %u: loss %s (%ld ms)", static_cast<unsigned>(steps_done + static_cast<uint32_t>(step) + 1),
                   text, static_cast<long>(t1 - t0));
    PrintKeptPerLayer(app);
    if (c.trace_steps && !TraceStep(app, steps_done + static_cast<uint32_t>(step) + 1, loss, ticks)) return 1;
    console.Yield();
  }

  if (!RunStep(app, 0, c.mode_infer, &loss, app.printed_labels)) return 1;
  FormatFloat(loss, text, sizeof(text));
  console.Printf("tinyprop: inference on the first batch after training: loss %s\n", text);
  PrintPredictions(app);
  if (c.trace_steps && !TraceOutput(app)) return 1;

  const uint32_t total = steps_done + static_cast<uint32_t>(c.train_steps);
  return SaveState(*app.flash, *app.layout, *app.state, total, console) ? 0 : 1;
}

}  // namespace app
}  // namespace tinyprop
