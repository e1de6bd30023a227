// The app's two TFLM state adapters (tflm/output_tensor_state.cc, tflm/resource_variable_state.cc) on the host,
// compiled unchanged against fakes of the TFLM types they use (tests/tflm_fake): the state saved streamed through
// each and restored over other contents bit for bit, with the flash record byte-identical to SaveWeights of the
// contiguous image; outputs that do not match the layout refused; resource variables copied whole, once each.
#include <string>
#include <vector>

#include "harness.h"
#include "output_tensor_state.h"
#include "resource_variable_state.h"
#include "tinyprop/app/console.h"
#include "tinyprop/app/state.h"
#include "tinyprop/persist_sim_flash.h"

namespace {

using tinyprop::SimFlash;
using tinyprop::app::Console;
using tinyprop::app::LoadOutcome;
using tinyprop::app::OutputTensorState;
using tinyprop::app::ResourceVariableState;
using tinyprop::app::StateDtype;
using tinyprop::app::StateLayout;
using tinyprop::app::StateVariable;

class Captured final : public Console {
 public:
  void Write(const char* text) override { out += text; }
  int64_t Millis() override { return 0; }
  void Yield() override {}
  std::string out;
};

bool Has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// Pieces straddle the variables; an alignment gap before the int64 and a tail gap.
const StateVariable kVars[] = {
    {"dense/kernel", 0, 400, 100, StateDtype::kFloat32, true},
    {"dense/bias", 400, 20, 5, StateDtype::kFloat32, true},
    {"ymax", 420, 4, 1, StateDtype::kFloat32, false},
    {"iterations", 432, 8, 1, StateDtype::kInt64, false},
    {"count", 440, 4, 1, StateDtype::kInt32, false},
};
const StateLayout kLayout = {kVars, 5, 448, 0xfeedu};
const tinyprop::PersistLayout kSlots = {{0, 4096}, 4096};

TfLiteType TypeOf(StateDtype d) {
  return d == StateDtype::kFloat32 ? kTfLiteFloat32 : d == StateDtype::kInt32 ? kTfLiteInt32 : kTfLiteInt64;
}

void Fill(std::vector<std::vector<uint8_t>>& tensors, uint32_t seed) {
  for (auto& t : tensors) {
    for (auto& b : t) b = static_cast<uint8_t>((seed = seed * 1103515245u + 12345u) >> 16);
  }
}

std::vector<uint8_t> ImageOf(const std::vector<std::vector<uint8_t>>& tensors) {
  std::vector<uint8_t> image(kLayout.image_bytes, 0);
  for (int i = 0; i < kLayout.count; ++i) memcpy(image.data() + kVars[i].offset, tensors[i].data(), kVars[i].bytes);
  return image;
}

struct Flash {
  std::vector<uint8_t> storage = std::vector<uint8_t>(2 * 4096);
  SimFlash flash{SimFlash::Config{2 * 4096, 4096, 4, false, false}, storage.data(), nullptr};
};

// The in-place model: outputs loss, output, k, then the state tensors (first state output 3).
struct InPlaceModel {
  tflite::MicroInterpreter interpreter;
  std::vector<std::vector<uint8_t>> state;
  InPlaceModel() {
    interpreter.num_outputs = 3 + 5;
    for (int i = 0; i < 5; ++i) {
      state.emplace_back(kVars[i].bytes, 0);
      TfLiteTensor& t = interpreter.outputs[3 + i];
      t.type = TypeOf(kVars[i].dtype);
      t.bytes = kVars[i].bytes;
      t.data.data = state.back().data();
    }
    for (int i = 0; i < 5; ++i) interpreter.outputs[3 + i].data.data = state[i].data();  // after the vector grew
  }
};

TP_TEST(TflmOutputTensorStateSavesAndRestoresTheOutputsInPlace) {
  InPlaceModel model;
  Captured console;
  OutputTensorState access(&model.interpreter, kLayout, 3);
  TP_CHECK_EQ(access.FirstMismatch(console), -1);
  Fill(model.state, 21);
  const auto trained = model.state;
  Flash board;
  TP_CHECK(tinyprop::app::SaveState(board.flash, kLayout, access, 5, console));
  Flash reference;
  const std::vector<uint8_t> image = ImageOf(trained);
  const tinyprop::RecordMeta meta = {0xfeedu, 5};
  TP_CHECK(tinyprop::SaveWeights(reference.flash, kSlots, image.data(), kLayout.image_bytes, &meta, nullptr) ==
           tinyprop::PersistStatus::kOk);
  TP_CHECK(board.storage == reference.storage);

  Fill(model.state, 99);  // another boot: the initial state, or zeros
  uint32_t steps = 0;
  TP_CHECK(tinyprop::app::LoadState(board.flash, kLayout, access, &steps, console) == LoadOutcome::kRestored);
  TP_CHECK(model.state == trained);  // written straight into the output tensors
  TP_CHECK_EQ(steps, 5u);

  // The initial state goes into the same tensors.
  TP_CHECK(tinyprop::app::CopyImageToState(kLayout, image.data(), access, console));
  TP_CHECK(model.state == trained);

  // Ranges: inside works, past the end or empty does not.
  uint8_t four[4];
  TP_CHECK(access.Read(0, 396, four, 4));
  TP_CHECK(memcmp(four, trained[0].data() + 396, 4) == 0);
  TP_CHECK(!access.Read(0, 397, four, 4));
  TP_CHECK(!access.Write(1, 0, four, 0));
  TP_CHECK(!access.Read(5, 0, four, 4));
  TP_CHECK(!access.Read(-1, 0, four, 4));
}

TP_TEST(TflmOutputTensorStateRefusesOutputsThatAreNotTheLayout) {
  {
    InPlaceModel model;
    model.interpreter.outputs[3 + 1].bytes = 16;  // bias with 4 elements
    Captured console;
    OutputTensorState access(&model.interpreter, kLayout, 3);
    TP_CHECK_EQ(access.FirstMismatch(console), 1);
    TP_CHECK(Has(console.out, "model output 4 is not state tensor 'dense/bias' (20 bytes, type 1 expected; has 16 "
                              "bytes, type 1)"));
    uint8_t b[20];
    TP_CHECK(!access.Read(1, 0, b, 4));
  }
  {
    InPlaceModel model;
    model.interpreter.outputs[3 + 3].type = kTfLiteInt32;  // iterations as int32
    Captured console;
    OutputTensorState access(&model.interpreter, kLayout, 3);
    TP_CHECK_EQ(access.FirstMismatch(console), 3);
  }
  {
    InPlaceModel model;
    model.interpreter.num_outputs = 7;  // the last state output missing
    Captured console;
    OutputTensorState access(&model.interpreter, kLayout, 3);
    TP_CHECK_EQ(access.FirstMismatch(console), 4);
    TP_CHECK(Has(console.out, "has 0 bytes, type -1"));
  }
  {
    InPlaceModel model;  // the wrong first state output: output 2 is k, not the kernel
    Captured console;
    OutputTensorState access(&model.interpreter, kLayout, 2);
    TP_CHECK_EQ(access.FirstMismatch(console), 0);
  }
}

struct VariableModel {
  tflite::MicroResourceVariables variables;
  std::vector<std::vector<uint8_t>> state;
  VariableModel() {
    for (int i = 0; i < 5; ++i) state.emplace_back(kVars[i].bytes, 0);
    // Shared names in another order than the layout: the adapter finds them by name.
    const int order[5] = {3, 0, 4, 1, 2};
    for (int id = 0; id < 5; ++id) {
      variables.names[id] = kVars[order[id]].name;
      variables.buffers[id] = state[order[id]].data();
      variables.bytes[id] = kVars[order[id]].bytes;
    }
    variables.count = 5;
  }
};

TP_TEST(TflmResourceVariableStateStreamsThroughOneVariableOfScratch) {
  VariableModel model;
  alignas(8) uint8_t scratch[400];  // the largest variable
  ResourceVariableState access(&model.variables, kLayout, 5, scratch, sizeof(scratch));
  Fill(model.state, 5);
  const auto trained = model.state;
  Captured console;
  Flash board;
  TP_CHECK(tinyprop::app::SaveState(board.flash, kLayout, access, 9, console));
  Flash reference;
  const std::vector<uint8_t> image = ImageOf(trained);
  const tinyprop::RecordMeta meta = {0xfeedu, 9};
  TP_CHECK(tinyprop::SaveWeights(reference.flash, kSlots, image.data(), kLayout.image_bytes, &meta, nullptr) ==
           tinyprop::PersistStatus::kOk);
  TP_CHECK(board.storage == reference.storage);

  Fill(model.state, 6);
  model.variables.assigns = 0;
  uint32_t steps = 0;
  TP_CHECK(tinyprop::app::LoadState(board.flash, kLayout, access, &steps, console) == LoadOutcome::kRestored);
  TP_CHECK(model.state == trained);
  TP_CHECK_EQ(model.variables.assigns, 5);  // each variable assigned once, whole, not once per piece

  // A partial read at offset 0 refreshes the scratch: a change in the model (an Invoke) is seen.
  uint8_t b[4];
  TP_CHECK(access.Read(0, 0, b, 4));
  model.state[0][0] ^= 0xFF;
  model.state[0][200] ^= 0xFF;
  TP_CHECK(access.Read(0, 200, b, 4));
  TP_CHECK_EQ(b[0], static_cast<uint8_t>(trained[0][200]));  // same pass: from the scratch
  TP_CHECK(access.Read(0, 0, b, 4));
  TP_CHECK_EQ(b[0], static_cast<uint8_t>(trained[0][0] ^ 0xFF));  // a new pass: from the model
  // Partial writes become visible at the variable's last byte (or Flush).
  const uint8_t ones[4] = {1, 1, 1, 1};
  TP_CHECK(access.Write(1, 0, ones, 4));
  TP_CHECK(model.state[1][0] == trained[1][0] || trained[1][0] == 1);  // not yet assigned
  TP_CHECK(access.Flush());
  TP_CHECK_EQ(model.state[1][0], 1);
  TP_CHECK(access.Write(1, 16, ones, 4));  // the last 4 bytes: assigned at once
  TP_CHECK_EQ(model.state[1][19], 1);
}

TP_TEST(TflmResourceVariableStateReportsTooSmallAScratchAndUnknownNames) {
  VariableModel model;
  Fill(model.state, 8);
  alignas(8) uint8_t scratch[100];  // smaller than dense/kernel
  ResourceVariableState access(&model.variables, kLayout, 5, scratch, sizeof(scratch));
  Captured console;
  Flash board;
  TP_CHECK(!tinyprop::app::SaveState(board.flash, kLayout, access, 1, console));
  TP_CHECK(Has(console.out, "state tensor 'dense/kernel' could not be read from the model"));
  // Whole-variable access needs no scratch.
  uint8_t bias[20];
  TP_CHECK(access.Read(1, 0, bias, 20));
  TP_CHECK(memcmp(bias, model.state[1].data(), 20) == 0);
  // A name the model does not have.
  model.variables.names[2] = "other";
  TP_CHECK(!access.Read(4, 0, bias, 4));
}

}  // namespace
