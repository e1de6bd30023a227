// Shared fixtures for the persistence tests: a simulated flash with a two-slot layout, payload generators, an
// encoder of the on-flash format written independently of src/persist.cc (bitwise CRC, explicit byte offsets).
#ifndef TINYPROP_PERSIST_TESTS_COMMON_H_
#define TINYPROP_PERSIST_TESTS_COMMON_H_

#include <string>
#include <vector>

#include "harness.h"

namespace tpt {

using tinyprop::LoadReport;
using tinyprop::PersistLayout;
using tinyprop::PersistStatus;
using tinyprop::RecordMeta;
using tinyprop::SaveReport;
using tinyprop::SimFlash;
using tinyprop::SlotState;

using Bytes = std::vector<uint8_t>;

inline uint32_t BitwiseCrc(const uint8_t* p, size_t n) {
  return tinyprop::Crc32Bitwise(0, reinterpret_cast<const char*>(p), n);
}

// Device: [spare sector][slot 0: slot_sectors][spare sector][slot 1: slot_sectors][spare sector].
struct Rig {
  SimFlash::Config cfg;
  Bytes storage, flags;
  SimFlash flash;
  PersistLayout layout;

  Rig(uint32_t sector, uint32_t write_block, uint32_t slot_sectors, bool partial_cut_byte = false)
      : cfg{(2 * slot_sectors + 3) * sector, sector, write_block, /*forbid_reprogram=*/true, partial_cut_byte},
        storage(cfg.size),
        flags(cfg.size / write_block),
        flash(cfg, storage.data(), flags.data()),
        layout{{sector, (slot_sectors + 2) * sector}, slot_sectors * sector} {}
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;

  uint32_t header_area() const { return tinyprop::HeaderAreaSize(cfg.write_block); }
  uint32_t max_payload() const { return layout.slot_size - header_area(); }

  struct Snapshot {
    Bytes storage, flags;
  };
  Snapshot Take() const { return {storage, flags}; }
  void Restore(const Snapshot& s) {
    std::memcpy(storage.data(), s.storage.data(), storage.size());
    std::memcpy(flags.data(), s.flags.data(), flags.size());
    flash.DisarmPowerCut();
    flash.Reboot();
  }
  // Bytes of slot s as they are now.
  Bytes SlotBytes(int s) const {
    const auto* p = storage.data() + layout.slot_offset[s];
    return Bytes(p, p + layout.slot_size);
  }
  // Whether every byte outside the two slots is still erased (the code never touches them).
  bool SparesUntouched() const {
    for (uint32_t o = 0; o < cfg.size; ++o) {
      const bool in0 = o >= layout.slot_offset[0] && o < layout.slot_offset[0] + layout.slot_size;
      const bool in1 = o >= layout.slot_offset[1] && o < layout.slot_offset[1] + layout.slot_size;
      if (!in0 && !in1 && storage[o] != 0xFF) return false;
    }
    return true;
  }
};

// Deterministic payload: float32 weights as raw bytes, plus raw random bytes (0xFF included) for odd sizes.
inline Bytes MakePayload(uint32_t size, uint32_t seed) {
  Rng rng(seed + 1000);
  Bytes p(size);
  uint32_t i = 0;
  for (; i + 4 <= size; i += 4) {
    const float w = static_cast<float>(static_cast<int32_t>(rng.Below(20001)) - 10000) * 1e-4f +
                    static_cast<float>(seed);
    std::memcpy(&p[i], &w, 4);
  }
  for (; i < size; ++i) p[i] = static_cast<uint8_t>(rng.Next());
  return p;
}

// The 32-byte header exactly as persist.h documents it (little-endian), written field by field.
inline Bytes EncodeHeader(uint32_t generation, const Bytes& payload, RecordMeta meta) {
  Bytes h(tinyprop::kHeaderSize, 0);
  auto put32 = [&](size_t off, uint32_t v) {
    for (int i = 0; i < 4; ++i) h[off + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  h[0] = 'T';
  h[1] = 'P';
  h[2] = 'P';
  h[3] = 'W';
  h[4] = 1;   // version
  h[5] = 0;
  h[6] = 32;  // header size
  h[7] = 0;
  put32(8, generation);
  put32(12, static_cast<uint32_t>(payload.size()));
  put32(16, BitwiseCrc(payload.data(), payload.size()));
  put32(20, meta.model_id);
  put32(24, meta.step);
  put32(28, BitwiseCrc(h.data(), 28));
  return h;
}

// Writes a record straight into the simulated storage (bypassing SaveWeights): slot erased, header, payload.
inline void WriteRawRecord(Rig& rig, int slot, uint32_t generation, const Bytes& payload, RecordMeta meta) {
  uint8_t* base = rig.storage.data() + rig.layout.slot_offset[slot];
  std::memset(base, 0xFF, rig.layout.slot_size);
  const Bytes h = EncodeHeader(generation, payload, meta);
  std::memcpy(base, h.data(), h.size());
  std::memcpy(base + rig.header_area(), payload.data(), payload.size());
  // Mark the touched blocks as programmed, like a real write would (forbid_reprogram bookkeeping).
  const uint32_t wb = rig.cfg.write_block;
  const uint32_t first = rig.layout.slot_offset[slot] / wb;
  for (uint32_t b = 0; b < rig.layout.slot_size / wb; ++b) rig.flags[first + b] = 0;
  for (uint32_t b = 0; b < rig.header_area() / wb; ++b) rig.flags[first + b] = 1;
  const uint32_t pblocks = static_cast<uint32_t>((payload.size() + wb - 1) / wb);
  for (uint32_t b = 0; b < pblocks; ++b) rig.flags[first + rig.header_area() / wb + b] = 1;
}

// Loads with a sentinel-filled buffer of the slot's capacity; checks the status, which record came back and that
// the bytes are exactly `expected` (and nothing beyond them was written).
inline void ExpectLoad(Rig& rig, int slot, uint32_t generation, const Bytes& expected, const std::string& where) {
  Bytes buf(rig.max_payload(), 0xA5);
  LoadReport r{};
  TP_CHECK_EQ_AT(tinyprop::LoadWeights(rig.flash, rig.layout, buf.data(), static_cast<uint32_t>(buf.size()), &r),
                 PersistStatus::kOk, where);
  TP_CHECK_EQ_AT(r.slot, slot, where);
  TP_CHECK_EQ_AT(r.generation, generation, where);
  TP_CHECK_EQ_AT(r.size, static_cast<uint32_t>(expected.size()), where);
  if (r.slot >= 0 && r.slot < 2) {
    TP_CHECK_EQ_AT(r.slots[r.slot].state, SlotState::kValid, where);
    TP_CHECK_EQ_AT(r.other_slot_valid, r.slots[1 - r.slot].state == SlotState::kValid, where);
  }
  bool same = std::memcmp(buf.data(), expected.data(), expected.size()) == 0;
  for (size_t i = expected.size(); i < buf.size(); ++i) same = same && buf[i] == 0xA5;
  TP_CHECK_EQ_AT(same, true, where);
}

// No valid record: kNoValidWeights, the buffer untouched.
inline void ExpectNothing(Rig& rig, const std::string& where) {
  Bytes buf(rig.max_payload(), 0x5A);
  LoadReport r{};
  TP_CHECK_EQ_AT(tinyprop::LoadWeights(rig.flash, rig.layout, buf.data(), static_cast<uint32_t>(buf.size()), &r),
                 PersistStatus::kNoValidWeights, where);
  TP_CHECK_EQ_AT(r.slot, -1, where);
  TP_CHECK_EQ_AT(r.slots[0].state != SlotState::kValid && r.slots[1].state != SlotState::kValid, true, where);
  bool untouched = true;
  for (uint8_t b : buf) untouched = untouched && b == 0x5A;
  TP_CHECK_EQ_AT(untouched, true, where);
}

inline PersistStatus Save(Rig& rig, const Bytes& payload, SaveReport* report, RecordMeta meta = {0, 0}) {
  return tinyprop::SaveWeights(rig.flash, rig.layout, payload.data(), static_cast<uint32_t>(payload.size()), &meta,
                               report);
}

}  // namespace tpt

#endif  // TINYPROP_PERSIST_TESTS_COMMON_H_
