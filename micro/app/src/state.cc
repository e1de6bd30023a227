#include "tinyprop/app/state.h"

#include <string.h>

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

namespace {

// Calls `piece(i, offset in tensor, offset in [0, n), length)` for every variable overlapping image bytes
// [offset, offset + n), in ascending order, starting the search at *cursor (reset when the piece lies before it);
// stops at the first piece that returns false and gives its index. -1 when all succeeded.
template <typename Piece>
int32_t ForEachOverlap(const StateLayout& layout, int32_t* cursor, uint32_t offset, uint32_t n, Piece piece) {
  const uint64_t end = static_cast<uint64_t>(offset) + n;
  int32_t i = *cursor;
  if (i < 0 || i >= layout.count || layout.variables[i].offset > offset) i = 0;
  while (i < layout.count && layout.variables[i].offset + layout.variables[i].bytes <= offset) ++i;
  for (; i < layout.count && layout.variables[i].offset < end; ++i) {
    const StateVariable& v = layout.variables[i];
    const uint32_t lo = offset > v.offset ? offset : v.offset;
    const uint64_t v_end = static_cast<uint64_t>(v.offset) + v.bytes;
    const uint32_t hi = static_cast<uint32_t>(end < v_end ? end : v_end);
    *cursor = i;
    if (hi > lo && !piece(i, lo - v.offset, lo - offset, hi - lo)) return i;
    if (v_end > end) break;  // this variable continues into the next piece
  }
  return -1;
}

}  // namespace

bool StateImageSource::Read(uint32_t offset, void* out, uint32_t n) {
  uint8_t* dst = static_cast<uint8_t*>(out);
  memset(dst, 0, n);  // the gaps
  failed_ = ForEachOverlap(layout_, &cursor_, offset, n, [&](int32_t i, uint32_t at, uint32_t to, uint32_t len) {
    return state_.Read(i, at, dst + to, len);
  });
  return failed_ < 0;
}

bool StateImageSink::Write(uint32_t offset, const void* data, uint32_t n) {
  const uint8_t* src = static_cast<const uint8_t*>(data);
  failed_ = ForEachOverlap(layout_, &cursor_, offset, n, [&](int32_t i, uint32_t at, uint32_t from, uint32_t len) {
    written_ += len;
    return state_.Write(i, at, src + from, len);
  });
  return failed_ < 0;
}

bool CopyImageToState(const StateLayout& layout, const uint8_t* image, StateAccess& state, Console& console) {
  for (int32_t i = 0; i < layout.count; ++i) {
    const StateVariable& v = layout.variables[i];
    if (!state.Write(i, 0, image + v.offset, v.bytes)) {
      console.Printf("tinyprop: state tensor '%s' could not be written into the model\n", v.name);
      return false;
    }
  }
  if (!state.Flush()) {
    console.Printf("tinyprop: the state could not be written into the model\n");
    return false;
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

LoadOutcome LoadState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint32_t* steps_done,
                      Console& console) {
  PersistLayout slots;
  if (!TwoSlotLayout(flash, layout.image_bytes, &slots, console)) return LoadOutcome::kStartFresh;
  // 1. Which record, whose: both slots validated (CRCs over the flash), nothing written yet.
  LoadReport report = {};
  PersistStatus status = InspectWeights(flash, slots, &report);
  if (status == PersistStatus::kNoValidWeights) {
    console.Printf("tinyprop: no saved state in flash: starting from the exported weights\n");
    return LoadOutcome::kStartFresh;
  }
  if (status != PersistStatus::kOk) {
    console.Printf("tinyprop: loading the saved state failed: %s (device error %d)\n", PersistStatusName(status),
                   static_cast<int>(report.device_error));
    return LoadOutcome::kStartFresh;
  }
  if (report.meta.model_id != layout.model_id || report.size != layout.image_bytes) {
    console.Printf("tinyprop: saved state belongs to another model (id 0x%08x, %u bytes): ignored\n",
                   static_cast<unsigned>(report.meta.model_id), static_cast<unsigned>(report.size));
    return LoadOutcome::kStartFresh;
  }
  // 2. That record, streamed into the state tensors (validated again before the first byte goes in, and its CRC
  // re-checked on the bytes handed out).
  const LoadReport inspected = report;
  StateImageSink sink(layout, state);
  status = LoadWeightsInto(flash, slots, sink, layout.image_bytes, &report);
  const bool same = status == PersistStatus::kOk && report.slot == inspected.slot &&
                    report.generation == inspected.generation && report.meta.model_id == layout.model_id &&
                    report.size == layout.image_bytes;
  if (!same || !state.Flush()) {
    if (sink.failed_index() >= 0) {
      console.Printf("tinyprop: state tensor '%s' could not be written into the model\n",
                     layout.variables[sink.failed_index()].name);
    } else {
      console.Printf("tinyprop: loading the saved state failed: %s (device error %d)\n", PersistStatusName(status),
                     static_cast<int>(report.device_error));
    }
    if (sink.bytes_written() == 0) return LoadOutcome::kStartFresh;
    console.Printf("tinyprop: the state tensors are partly overwritten\n");
    return LoadOutcome::kFailed;
  }
  *steps_done = report.meta.step;
  console.Printf("tinyprop: restored the training state from slot %d (generation %u, %u steps trained before)%s\n",
                 static_cast<int>(report.slot), static_cast<unsigned>(report.generation),
                 static_cast<unsigned>(report.meta.step), report.other_slot_valid ? "" : "; no older backup");
  return LoadOutcome::kRestored;
}

bool SaveState(FlashDevice& flash, const StateLayout& layout, StateAccess& state, uint32_t steps_done,
               Console& console) {
  PersistLayout slots;
  if (!TwoSlotLayout(flash, layout.image_bytes, &slots, console)) return false;
  const RecordMeta meta = {layout.model_id, steps_done};
  StateImageSource source(layout, state);
  SaveReport report = {};
  const PersistStatus status = SaveWeightsFrom(flash, slots, source, layout.image_bytes, &meta, &report);
  if (status != PersistStatus::kOk) {
    if (source.failed_index() >= 0) {
      console.Printf("tinyprop: state tensor '%s' could not be read from the model\n",
                     layout.variables[source.failed_index()].name);
    }
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
