// The training state of the on-device training app: its layout in the state image (the flash record's payload),
// the one interface through which the app reaches the state tensors, and the glue to the two-slot flash
// persistence (micro/persist), which streams the image between the tensors and the flash.
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

// How the app reaches the state tensors: by index into StateLayout::variables, as byte ranges. Which tensors of
// the interpreter these are (TFLM resource variables by shared name, variable tensors exposed as model outputs, a
// test fake) is the implementation's concern only, so changing how the model holds its state changes one class.
class StateAccess {
 public:
  // Copies bytes [offset, offset + bytes) of tensor `index` into `out`; false when it cannot (no such tensor, a
  // tensor whose size differs from the layout's, a range outside it).
  virtual bool Read(int32_t index, uint32_t offset, void* out, uint32_t bytes) = 0;
  // Overwrites bytes [offset, offset + bytes) of tensor `index` with `data`.
  virtual bool Write(int32_t index, uint32_t offset, const void* data, uint32_t bytes) = 0;
  // After a series of Writes: makes all of them visible to the model (for an access that buffers writes).
  virtual bool Flush() { return true; }

 protected:
  StateAccess() = default;
  StateAccess(const StateAccess&) = default;
  StateAccess& operator=(const StateAccess&) = default;
  ~StateAccess() = default;  // never deleted through the interface (no heap)
};

// The state image (the flash record's payload, layout.image_bytes) is never held in RAM: it is streamed between
// the state tensors and the flash in pieces. Image byte b is byte b - v.offset of the variable v covering it;
// bytes no variable covers (alignment gaps, the tail) read as 0 and are ignored when written.
class StateImageSource final : public PayloadSource {
 public:
  StateImageSource(const StateLayout& layout, StateAccess& state) : layout_(layout), state_(state) {}
  bool Read(uint32_t offset, void* out, uint32_t n) override;
  int32_t failed_index() const { return failed_; }  // the tensor a Read failed on, -1 if none

 private:
  const StateLayout& layout_;
  StateAccess& state_;
  int32_t cursor_ = 0;  // first variable that may overlap the next piece (pieces come in ascending order)
  int32_t failed_ = -1;
};

class StateImageSink final : public PayloadSink {
 public:
  StateImageSink(const StateLayout& layout, StateAccess& state) : layout_(layout), state_(state) {}
  bool Write(uint32_t offset, const void* data, uint32_t n) override;
  int32_t failed_index() const { return failed_; }
  uint32_t bytes_written() const { return written_; }  // > 0: the state tensors were (partly) overwritten

 private:
  const StateLayout& layout_;
  StateAccess& state_;
  int32_t cursor_ = 0;
  int32_t failed_ = -1;
  uint32_t written_ = 0;
};

// The layout walk from a complete image (the generated initial state in flash, g_tinyprop_initial_state): every
// state tensor from its offset, then Flush; a tensor that fails is reported by name and stops the walk.
bool CopyImageToState(const StateLayout& layout, const uint8_t* image, StateAccess& state, Console& console);

// Two equal slots over the whole flash device, each a whole number of erase sectors; false (reported) when a
// slot cannot hold `payload_bytes`.
bool TwoSlotLayout(const FlashDevice& flash, uint32_t payload_bytes, PersistLayout* out, Console& console);

enum class LoadOutcome : int32_t {
  kRestored = 0,  // the state tensors hold the saved state
  kStartFresh,    // nothing usable (no valid record, another model's, a flash error): the state is untouched
  kFailed,        // the state tensors were partly overwritten (a tensor write failed, or the flash failed during
                  // the copy): the state is undefined
};

// Restores the newest valid record of this layout's model into the state tensors, streamed from flash (no RAM
// image): first both slots are validated and the record's model id and size checked, and only a record that
// passed goes into the state; *steps_done = the steps trained before (the record's RecordMeta::step).
LoadOutcome LoadState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint32_t* steps_done,
                      Console& console);

// Saves the state tensors, streamed, as a new record to the slot that does not hold the newest one (a power cut
// during the save leaves the previous state loadable).
bool SaveState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint32_t steps_done,
               Console& console);

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_STATE_H_
