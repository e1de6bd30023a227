// Power cuts at every byte of every save in a sequence of slot switches (erase, payload and header writes), with
// clean and half-programmed cut bytes and several write-block sizes; then random sequences with repeated cuts
// (cuts during the recovery saves too). After each "reboot" the load must return the newest committed weights.
#include "common.h"

namespace {

using namespace tpt;
using tinyprop::InspectWeights;

struct CutConfig {
  uint32_t sector, write_block, slot_sectors;
  bool partial;
};

std::string Where(const CutConfig& c, int step, uint64_t n) {
  return "sector=" + std::to_string(c.sector) + " wb=" + std::to_string(c.write_block) +
         " partial=" + std::to_string(c.partial) + " save#" + std::to_string(step) + " cut after " +
         std::to_string(n) + " byte ops";
}

void SweepEveryByte(const CutConfig& c, long* cut_points) {
  Rig rig(c.sector, c.write_block, c.slot_sectors, c.partial);
  const uint32_t ha = rig.header_area();
  // Sizes: shrink and grow across sector boundaries; the full slot; a single byte.
  const uint32_t sizes[] = {300, 120, rig.max_payload(), 1, 257};
  int prev_slot = -1;
  uint32_t prev_gen = 0;
  Bytes prev_payload;
  for (int step = 0; step < 5; ++step) {
    const Bytes p = MakePayload(sizes[step], 100 + static_cast<uint32_t>(step));
    const Rig::Snapshot before = rig.Take();

    // Uncut save: how many byte operations it takes, and where its commit completes.
    const uint64_t ops0 = rig.flash.byte_ops();
    SaveReport sr{};
    TP_CHECK_EQ(Save(rig, p, &sr), PersistStatus::kOk);
    const uint64_t total = rig.flash.byte_ops() - ops0;
    const int target = sr.slot;
    const uint32_t gen = sr.generation;
    TP_CHECK_EQ(target, prev_slot < 0 ? 0 : 1 - prev_slot);
    TP_CHECK_EQ(gen, prev_gen + 1);
    // The sweep covers the erase, the payload and the header: total = erased + written bytes.
    const uint32_t record = ha + sizes[step];
    const uint32_t erased = (record + c.sector - 1) / c.sector * c.sector;
    const uint32_t padded = (sizes[step] + c.write_block - 1) / c.write_block * c.write_block;
    TP_CHECK_EQ(total, static_cast<uint64_t>(erased) + padded + ha);
    const Bytes final_slot = rig.SlotBytes(target);
    uint32_t trailing_ff = 0;  // header-area bytes at the end that a write leaves as erased anyway
    while (trailing_ff < ha && final_slot[ha - 1 - trailing_ff] == 0xFF) ++trailing_ff;
    const uint64_t commit = total - trailing_ff;  // from this many byte ops on, the new record is complete
    const Rig::Snapshot after = rig.Take();

    for (uint64_t n = 0; n <= total; ++n) {
      ++*cut_points;
      const std::string where = Where(c, step, n);
      rig.Restore(before);
      rig.flash.ArmPowerCut(n);
      SaveReport cr{};
      const PersistStatus st = Save(rig, p, &cr);
      if (n >= total) {
        TP_CHECK_EQ_AT(st, PersistStatus::kOk, where);
      } else {
        TP_CHECK_EQ_AT(st, PersistStatus::kFlashError, where);
        TP_CHECK_EQ_AT(cr.device_error, SimFlash::kErrPowerOff, where);
        TP_CHECK_EQ_AT(cr.slot, target, where);
      }
      rig.flash.Reboot();

      LoadReport r{};
      const PersistStatus ist = InspectWeights(rig.flash, rig.layout, &r);
      bool expect_new = n >= commit;
      if (c.partial && n + 1 == commit && ist == PersistStatus::kOk && r.generation == gen) {
        expect_new = true;  // the half-programmed last byte happened to get its final value
      }
      if (expect_new) {
        ExpectLoad(rig, target, gen, p, where);
      } else if (prev_slot < 0) {
        ExpectNothing(rig, where);
      } else {
        ExpectLoad(rig, prev_slot, prev_gen, prev_payload, where);
        // Once the first byte was erased the target slot no longer holds a valid record.
        if (n > 0) TP_CHECK_EQ_AT(r.slots[target].state != SlotState::kValid, true, where);
      }
      // Recovery: the next save after the reboot works and lands in the other slot than the loaded record.
      const int loaded_slot = expect_new ? target : prev_slot;
      const uint32_t loaded_gen = expect_new ? gen : prev_gen;
      const Bytes q = MakePayload(77, 999);
      SaveReport rr{};
      TP_CHECK_EQ_AT(Save(rig, q, &rr), PersistStatus::kOk, where);
      TP_CHECK_EQ_AT(rr.slot, loaded_slot < 0 ? 0 : 1 - loaded_slot, where);
      TP_CHECK_EQ_AT(rr.generation, loaded_gen + 1, where);
      ExpectLoad(rig, rr.slot, loaded_gen + 1, q, where + " (recovery)");
    }
    rig.Restore(after);
    prev_slot = target;
    prev_gen = gen;
    prev_payload = p;
  }
  TP_CHECK(rig.SparesUntouched());
}

TP_TEST(power_cut_at_every_byte_of_every_save) {
  const CutConfig configs[] = {
      {128, 1, 4, false}, {128, 1, 4, true}, {256, 4, 2, false}, {256, 4, 2, true},
      {128, 16, 4, false}, {128, 64, 4, true}, {64, 8, 8, false},
  };
  long cut_points = 0;
  for (const CutConfig& c : configs) SweepEveryByte(c, &cut_points);
  std::cout << "  " << cut_points << " cut points\n";
  TP_CHECK(cut_points > 20000);
}

// Random sequences: saves of random sizes, most of them cut at a random byte, including several cuts in a row.
TP_TEST(power_cut_random_sequences_with_repeated_cuts) {
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    Rig rig(128, seed == 4 ? 8u : 4u, 3, /*partial_cut_byte=*/seed % 2 == 0);
    Rng rng(seed);
    int good_slot = -1;
    uint32_t good_gen = 0;
    Bytes good;
    int committed = 0, cut = 0;
    for (uint32_t it = 0; it < 1500; ++it) {
      const std::string where = "seed " + std::to_string(seed) + " iteration " + std::to_string(it);
      const Bytes p = MakePayload(1 + rng.Below(rig.max_payload()), 10000 + it);
      const bool arm = rng.Below(4) != 0;
      if (arm) rig.flash.ArmPowerCut(rng.Below(900));
      SaveReport sr{};
      const PersistStatus st = Save(rig, p, &sr);
      rig.flash.Reboot();
      LoadReport r{};
      const PersistStatus ist = InspectWeights(rig.flash, rig.layout, &r);
      if (st == PersistStatus::kOk) {
        TP_CHECK_EQ_AT(sr.generation, good_gen + 1, where);
        ExpectLoad(rig, sr.slot, sr.generation, p, where);
      } else {
        TP_CHECK_EQ_AT(st, PersistStatus::kFlashError, where);
        ++cut;
        if (ist == PersistStatus::kOk && r.generation == sr.generation && r.slot == sr.slot) {
          ExpectLoad(rig, sr.slot, sr.generation, p, where);  // the cut came after the commit
        } else if (good_slot < 0) {
          ExpectNothing(rig, where);
        } else {
          ExpectLoad(rig, good_slot, good_gen, good, where);
        }
      }
      if (ist == PersistStatus::kOk && (good_slot < 0 || r.generation != good_gen)) {
        good_slot = r.slot;
        good_gen = r.generation;
        good = p;
        ++committed;
      }
    }
    std::cout << "  seed " << seed << ": " << committed << " records committed, " << cut << " saves cut\n";
    TP_CHECK(committed > 300);
    TP_CHECK(cut > 400);
    TP_CHECK(rig.SparesUntouched());
  }
}

}  // namespace
