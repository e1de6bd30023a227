// Corrupted bits: every header bit and every payload bit of each slot, random 2- and 3-bit errors, and both slots
// corrupted at once. Load must return the other slot's intact weights (and say the corrupt one is invalid), or
// kNoValidWeights with the buffer untouched -- never corrupted bytes.
#include "common.h"

namespace {

using namespace tpt;
using tinyprop::InspectWeights;

struct TwoRecords {
  Bytes older, newer;  // slot 0 generation 1, slot 1 generation 2
};

TwoRecords SetUp(Rig& rig, uint32_t size0, uint32_t size1) {
  TwoRecords t{MakePayload(size0, 1), MakePayload(size1, 2)};
  TP_CHECK_EQ(Save(rig, t.older, nullptr, {1, 10}), PersistStatus::kOk);
  TP_CHECK_EQ(Save(rig, t.newer, nullptr, {1, 20}), PersistStatus::kOk);
  return t;
}

void Flip(Rig& rig, uint32_t offset, uint32_t bit) { rig.flash.FlipBit(offset, bit); }

// Flips one bit at (slot, offset in slot), checks the load falls back to the other slot, flips it back.
void CheckSingleFlip(Rig& rig, const TwoRecords& t, int slot, uint32_t off, uint32_t bit, SlotState expect_state,
                     const std::string& what) {
  const std::string where = what + " slot " + std::to_string(slot) + " byte " + std::to_string(off) + " bit " +
                            std::to_string(bit);
  Flip(rig, rig.layout.slot_offset[slot] + off, bit);
  if (slot == 1) {
    ExpectLoad(rig, 0, 1, t.older, where);
  } else {
    ExpectLoad(rig, 1, 2, t.newer, where);
  }
  LoadReport r{};
  TP_CHECK_EQ_AT(InspectWeights(rig.flash, rig.layout, &r), PersistStatus::kOk, where);
  TP_CHECK_EQ_AT(r.other_slot_valid, false, where);
  TP_CHECK_EQ_AT(r.slots[slot].state, expect_state, where);
  Flip(rig, rig.layout.slot_offset[slot] + off, bit);
}

TP_TEST(bit_flip_every_header_bit_in_each_slot) {
  for (uint32_t wb : {4u, 64u}) {
    Rig rig(128, wb, 4);
    const TwoRecords t = SetUp(rig, 300, 257);
    int flips = 0;
    for (int slot = 0; slot < 2; ++slot) {
      for (uint32_t off = 0; off < tinyprop::kHeaderSize; ++off) {
        for (uint32_t bit = 0; bit < 8; ++bit, ++flips) {
          CheckSingleFlip(rig, t, slot, off, bit, SlotState::kBadHeader, "header");
        }
      }
    }
    TP_CHECK_EQ(flips, 2 * 32 * 8);
    ExpectLoad(rig, 1, 2, t.newer, "all bits restored");
  }
}

TP_TEST(bit_flip_every_payload_bit_in_each_slot) {
  Rig rig(128, 4, 4);
  const TwoRecords t = SetUp(rig, 300, 257);
  const uint32_t ha = rig.header_area();
  for (int slot = 0; slot < 2; ++slot) {
    const uint32_t size = slot == 0 ? 300u : 257u;
    for (uint32_t off = 0; off < size; ++off) {
      for (uint32_t bit = 0; bit < 8; ++bit) {
        CheckSingleFlip(rig, t, slot, ha + off, bit, SlotState::kBadPayload, "payload");
      }
    }
  }
}

TP_TEST(bit_flip_outside_the_records_is_harmless) {
  // Header padding (write block 64: bytes 32..63) and the unused rest of a slot are not part of a record.
  Rig rig(128, 64, 4);
  const TwoRecords t = SetUp(rig, 300, 100);
  for (int slot = 0; slot < 2; ++slot) {
    const uint32_t used = rig.header_area() + (slot == 0 ? 300u : 100u);
    std::vector<uint32_t> offsets;
    for (uint32_t off = tinyprop::kHeaderSize; off < rig.header_area(); ++off) offsets.push_back(off);
    for (uint32_t off = used; off < rig.layout.slot_size; ++off) offsets.push_back(off);
    for (uint32_t off : offsets) {
      Flip(rig, rig.layout.slot_offset[slot] + off, off % 8);
      ExpectLoad(rig, 1, 2, t.newer, "slot " + std::to_string(slot) + " unused byte " + std::to_string(off));
      Flip(rig, rig.layout.slot_offset[slot] + off, off % 8);
    }
  }
}

TP_TEST(bit_flip_random_multi_bit_errors_are_detected) {
  // CRC32 has Hamming distance >= 4 at these lengths: every 2- and 3-bit error of a record is detected.
  Rig rig(128, 4, 4);
  const TwoRecords t = SetUp(rig, 400, 350);
  Rng rng(7);
  for (int trial = 0; trial < 3000; ++trial) {
    const int slot = trial % 2;
    const uint32_t len = rig.header_area() + (slot == 0 ? 400u : 350u);
    const int nbits = 2 + trial % 2;
    uint32_t pos[3];
    for (int k = 0; k < nbits; ++k) {
      bool dup;
      do {
        pos[k] = rng.Below(len * 8);
        dup = false;
        for (int j = 0; j < k; ++j) dup = dup || pos[j] == pos[k];
      } while (dup);
      // Bits in the header's trailing padding (none for write block 4) would be harmless; all are in the record.
      Flip(rig, rig.layout.slot_offset[slot] + pos[k] / 8, pos[k] % 8);
    }
    const std::string where = "trial " + std::to_string(trial);
    if (slot == 1) {
      ExpectLoad(rig, 0, 1, t.older, where);
    } else {
      ExpectLoad(rig, 1, 2, t.newer, where);
    }
    for (int k = 0; k < nbits; ++k) Flip(rig, rig.layout.slot_offset[slot] + pos[k] / 8, pos[k] % 8);
  }
  ExpectLoad(rig, 1, 2, t.newer, "restored");
}

TP_TEST(bit_flip_both_slots_corrupt_gives_no_valid_weights) {
  Rig rig(128, 4, 4);
  const TwoRecords t = SetUp(rig, 300, 257);
  const uint32_t ha = rig.header_area();
  Rng rng(3);
  for (int trial = 0; trial < 400; ++trial) {
    // One flipped bit in each slot, header or payload.
    uint32_t off[2], bit[2];
    for (int s = 0; s < 2; ++s) {
      const uint32_t len = ha + (s == 0 ? 300u : 257u);
      off[s] = trial % 3 == 0 ? rng.Below(32) : (trial % 3 == 1 ? ha + rng.Below(len - ha) : rng.Below(len));
      bit[s] = rng.Below(8);
      Flip(rig, rig.layout.slot_offset[s] + off[s], bit[s]);
    }
    ExpectNothing(rig, "trial " + std::to_string(trial));
    for (int s = 0; s < 2; ++s) Flip(rig, rig.layout.slot_offset[s] + off[s], bit[s]);
  }
  ExpectLoad(rig, 1, 2, t.newer, "restored");
}

TP_TEST(bit_flip_then_save_repairs_without_touching_the_survivor) {
  Rig rig(128, 4, 4);
  const TwoRecords t = SetUp(rig, 300, 257);
  // The newest record (slot 1) rots: load falls back to generation 1, and the next save overwrites slot 1.
  Flip(rig, rig.layout.slot_offset[1] + rig.header_area() + 100, 3);
  ExpectLoad(rig, 0, 1, t.older, "rotten newest");
  const Bytes survivor = rig.SlotBytes(0);
  const Bytes p = MakePayload(222, 3);
  SaveReport sr{};
  TP_CHECK_EQ(Save(rig, p, &sr), PersistStatus::kOk);
  TP_CHECK_EQ(sr.slot, 1);
  TP_CHECK_EQ(sr.generation, 2u);
  TP_CHECK_EQ(sr.previous_slot, 0);
  TP_CHECK(rig.SlotBytes(0) == survivor);
  ExpectLoad(rig, 1, 2, p, "repaired");
  // Both corrupt: a save starts over in slot 0 with generation 1.
  Flip(rig, rig.layout.slot_offset[0] + 5, 0);
  Flip(rig, rig.layout.slot_offset[1] + 5, 0);
  ExpectNothing(rig, "both rotten");
  TP_CHECK_EQ(Save(rig, p, &sr), PersistStatus::kOk);
  TP_CHECK_EQ(sr.slot, 0);
  TP_CHECK_EQ(sr.generation, 1u);
  TP_CHECK_EQ(sr.previous_slot, -1);
  ExpectLoad(rig, 0, 1, p, "fresh start");
}

}  // namespace
