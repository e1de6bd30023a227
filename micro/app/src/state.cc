#include "tinyprop/app/state.h"

namespace tinyprop {
namespace app {

uint32_t StateDtypeBytes(StateDtype dtype) {
  switch (dtype) {
    case StateDtype::kFloat32:
    case StateDtype::kInt32:
      return 4;
    case StateDtype::kInt64:
      return 8;
  }
  return 0;
}

bool StateLayoutOk(const StateLayout& layout) {
  if (layout.variables == nullptr || layout.count < 1 || layout.image_bytes == 0) return false;
  uint32_t end = 0;
  for (int32_t i = 0; i < layout.count; ++i) {
    const StateVariable& v = layout.variables[i];
    const uint32_t item = StateDtypeBytes(v.dtype);
    // 64-bit products: a corrupt table must not pass the check by overflowing.
    if (item == 0 || v.offset < end || v.offset % item != 0 ||
        static_cast<uint64_t>(v.elements) * item != v.bytes ||
        static_cast<uint64_t>(v.offset) + v.bytes > layout.image_bytes) {
      return false;
    }
    end = v.offset + v.bytes;
  }
  return true;
}

bool CopyStateToImage(const StateLayout& layout, StateAccess& state, uint8_t* image, Console& console) {
  for (int32_t i = 0; i < layout.count; ++i) {
    const StateVariable& v = layout.variables[i];
    if (!state.Read(i, image + v.offset, v.bytes)) {
      console.Printf("tinyprop: state tensor '%s' could not be read from the model\n", v.name);
      return false;
    }
  }
  return true;
}

bool CopyImageToState(const StateLayout& layout, const uint8_t* image, StateAccess& state, Console& console) {
  for (int32_t i = 0; i < layout.count; ++i) {
    const StateVariable& v = layout.variables[i];
    if (!state.Write(i, image + v.offset, v.bytes)) {
      console.Printf("tinyprop: state tensor '%s' could not be written into the model\n", v.name);
      return false;
    }
  }
  return true;
}

bool TwoSlotLayout(const FlashDevice& flash, uint32_t payload_bytes, PersistLayout* out, Console& console) {
  const uint32_t sector = flash.SectorSize();
  const uint32_t slot = sector == 0 ? 0 : flash.Size() / 2 / sector * sector;
  out->slot_offset[0] = 0;
  out->slot_offset[1] = slot;
  out->slot_size = slot;
  uint32_t max_payload = 0;
  const PersistStatus status =
      sector == 0 ? PersistStatus::kBadLayout : CheckPersistLayout(flash, *out, &max_payload);
  if (status != PersistStatus::kOk || max_payload < payload_bytes) {
    console.Printf("tinyprop: state partition unusable (%s, %u payload bytes per slot, %u needed)\n",
                   PersistStatusName(status), static_cast<unsigned>(max_payload),
                   static_cast<unsigned>(payload_bytes));
    return false;
  }
  return true;
}

LoadOutcome LoadState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint8_t* image,
                      uint32_t* steps_done, Console& console) {
  PersistLayout slots;
  if (!TwoSlotLayout(flash, layout.image_bytes, &slots, console)) return LoadOutcome::kStartFresh;
  LoadReport report = {};
  const PersistStatus status = LoadWeights(flash, slots, image, layout.image_bytes, &report);
  if (status == PersistStatus::kNoValidWeights) {
    console.Printf("tinyprop: no saved state in flash: starting from the exported weights\n");
    return LoadOutcome::kStartFresh;
  }
  // A larger record of another model does not fit the image: it is foreign like a smaller one.
  if (status == PersistStatus::kBufferTooSmall ||
      (status == PersistStatus::kOk && (report.meta.model_id != layout.model_id || report.size != layout.image_bytes))) {
    console.Printf("tinyprop: saved state belongs to another model (id 0x%08x, %u bytes): ignored\n",
                   static_cast<unsigned>(report.meta.model_id), static_cast<unsigned>(report.size));
    return LoadOutcome::kStartFresh;
  }
  if (status != PersistStatus::kOk) {
    console.Printf("tinyprop: loading the saved state failed: %s (device error %d)\n", PersistStatusName(status),
                   static_cast<int>(report.device_error));
    return LoadOutcome::kStartFresh;
  }
  if (!CopyImageToState(layout, image, state, console)) return LoadOutcome::kFailed;
  *steps_done = report.meta.step;
  console.Printf("tinyprop: restored the training state from slot %d (generation %u, %u steps trained before)%s\n",
                 static_cast<int>(report.slot), static_cast<unsigned>(report.generation),
                 static_cast<unsigned>(report.meta.step), report.other_slot_valid ? "" : "; no older backup");
  return LoadOutcome::kRestored;
}

bool SaveState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint8_t* image,
               uint32_t steps_done, Console& console) {
  PersistLayout slots;
  if (!TwoSlotLayout(flash, layout.image_bytes, &slots, console)) return false;
  if (!CopyStateToImage(layout, state, image, console)) return false;
  const RecordMeta meta = {layout.model_id, steps_done};
  SaveReport report = {};
  const PersistStatus status = SaveWeights(flash, slots, image, layout.image_bytes, &meta, &report);
  if (status != PersistStatus::kOk) {
    console.Printf("tinyprop: saving the state failed: %s (device error %d); the previous state is kept\n",
                   PersistStatusName(status), static_cast<int>(report.device_error));
    return false;
  }
  console.Printf("tinyprop: saved the training state (%u bytes) to slot %d, generation %u\n",
                 static_cast<unsigned>(layout.image_bytes), static_cast<int>(report.slot),
                 static_cast<unsigned>(report.generation));
  return true;
}

}  // namespace app
}  // namespace tinyprop
