// The training state of the on-device training app: its layout in the state image, the one interface through
// which the app reaches the state tensors, and the glue to the two-slot flash persistence (micro/persist).
//
// No TFLM, no SDK: compiled and tested on the host (micro/app/tests) and copied into every board project.
#ifndef TINYPROP_APP_STATE_H_
#define TINYPROP_APP_STATE_H_

#include <stdint.h>

#include "tinyprop/app/console.h"
#include "tinyprop/persist.h"

namespace tinyprop {
namespace app {

enum class StateDtype : uint8_t { kFloat32 = 1, kInt32 = 2, kInt64 = 3 };

// Bytes of one element; 0 for a value outside the enum.
uint32_t StateDtypeBytes(StateDtype dtype);

// One tensor of the training state and where it sits in the state image (the flash record's payload).
struct StateVariable {
  const char* name;   // the tensor's name in the model (a resource variable's shared name)
  uint32_t offset;    // bytes into the state image, a multiple of the element size
  uint32_t bytes;     // elements x element size
  uint32_t elements;
  StateDtype dtype;
  bool is_weight;     // trainable weights come first: the image starts with exactly weights.bin
};

// The generated table (tinyprop_state.cc) and what identifies it.
struct StateLayout {
  const StateVariable* variables;
  int32_t count;
  uint32_t image_bytes;  // state image size (the record payload), >= the end of the last variable
  uint32_t model_id;     // stored with every record: a record of another export or layout is ignored
};

// Offsets ascending without overlap, aligned to the element size, inside image_bytes; bytes = elements x size.
bool StateLayoutOk(const StateLayout& layout);

// How the app reaches the state tensors: by index into StateLayout::variables, as bytes. Which tensors of the
// interpreter these are (TFLM resource variables by shared name, variable tensors exposed as model outputs, a
// test fake) is the implementation's concern only, so changing how the model holds its state changes one class.
class StateAccess {
 public:
  // Copies tensor `index` into `out` (`bytes` = the layout's size of it); false when it cannot.
  virtual bool Read(int32_t index, void* out, uint32_t bytes) = 0;
  // Overwrites tensor `index` with `data`.
  virtual bool Write(int32_t index, const void* data, uint32_t bytes) = 0;

 protected:
  StateAccess() = default;
  StateAccess(const StateAccess&) = default;
  StateAccess& operator=(const StateAccess&) = default;
  ~StateAccess() = default;  // never deleted through the interface (no heap)
};

// The layout walk: every state tensor into / out of the image at its offset; a tensor that fails is reported
// by name and stops the walk.
bool CopyStateToImage(const StateLayout& layout, StateAccess& state, uint8_t* image, Console& console);
bool CopyImageToState(const StateLayout& layout, const uint8_t* image, StateAccess& state, Console& console);

// Two equal slots over the whole flash device, each a whole number of erase sectors; false (reported) when a
// slot cannot hold `payload_bytes`.
bool TwoSlotLayout(const FlashDevice& flash, uint32_t payload_bytes, PersistLayout* out, Console& console);

enum class LoadOutcome : int32_t {
  kRestored = 0,  // the state tensors hold the saved state
  kStartFresh,    // nothing usable (no valid record, another model's, a flash error): the state is untouched
  kFailed,        // a state tensor could not be written: the state is undefined
};

// Loads the newest valid record of this layout's model into `image` (layout.image_bytes, 8-byte aligned) and
// from there into the state; *steps_done = the steps trained before (the record's RecordMeta::step).
LoadOutcome LoadState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint8_t* image,
                      uint32_t* steps_done, Console& console);

// Reads the state into `image` and saves it as a new record to the slot that does not hold the newest one (a
// power cut during the save leaves the previous state loadable).
bool SaveState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint8_t* image,
               uint32_t steps_done, Console& console);

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_STATE_H_
