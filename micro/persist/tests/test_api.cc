// SaveWeights / LoadWeights / InspectWeights: round trip, slot alternation, generations and their wrap-around,
// the on-flash format, argument and layout errors, device errors and read-back verification.
#include "common.h"

namespace {

using namespace tpt;
using tinyprop::CheckPersistLayout;
using tinyprop::InspectWeights;
using tinyprop::LoadWeights;
using tinyprop::SaveWeights;

TP_TEST(api_round_trip_float_weights) {
  for (uint32_t wb : {1u, 4u, 8u, 16u, 32u, 64u}) {
    Rig rig(256, wb, 4);
    // A layer's weights as float32, stored as raw bytes.
    std::vector<float> w(200);
    for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i) - 1.0f;
    SaveReport sr{};
    const RecordMeta meta{0xC0FFEEu, 1234u};
    TP_CHECK_EQ(SaveWeights(rig.flash, rig.layout, w.data(), static_cast<uint32_t>(w.size() * 4), &meta, &sr),
                PersistStatus::kOk);
    TP_CHECK_EQ(sr.slot, 0);
    TP_CHECK_EQ(sr.generation, 1u);
    TP_CHECK_EQ(sr.previous_slot, -1);
    TP_CHECK_EQ(sr.device_error, 0);
    std::vector<float> back(200, -7.0f);
    LoadReport r{};
    TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, back.data(), static_cast<uint32_t>(back.size() * 4), &r),
                PersistStatus::kOk);
    TP_CHECK(std::memcmp(back.data(), w.data(), w.size() * 4) == 0);
    TP_CHECK_EQ(r.slot, 0);
    TP_CHECK_EQ(r.generation, 1u);
    TP_CHECK_EQ(r.size, 800u);
    TP_CHECK_EQ(r.meta.model_id, 0xC0FFEEu);
    TP_CHECK_EQ(r.meta.step, 1234u);
    TP_CHECK_EQ(r.other_slot_valid, false);
    TP_CHECK_EQ(r.slots[0].state, SlotState::kValid);
    TP_CHECK_EQ(r.slots[1].state, SlotState::kEmpty);
    TP_CHECK_EQ(r.device_error, 0);
    // Null meta / report are allowed; meta defaults to zeros.
    const Bytes p = MakePayload(333, 5);
    TP_CHECK_EQ(SaveWeights(rig.flash, rig.layout, p.data(), 333, nullptr, nullptr), PersistStatus::kOk);
    Bytes q(333);
    TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, q.data(), 333, &r), PersistStatus::kOk);
    TP_CHECK(q == p);
    TP_CHECK_EQ(r.meta.model_id, 0u);
    TP_CHECK_EQ(r.meta.step, 0u);
    TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, q.data(), 333, nullptr), PersistStatus::kOk);
    TP_CHECK(rig.SparesUntouched());
  }
}

TP_TEST(api_alternating_slots_and_generations) {
  Rig rig(128, 4, 3);
  uint32_t sizes[] = {300, 17, rig.max_payload(), 1, 129, 128, 250, 4, 99, 200};
  Bytes previous;
  for (uint32_t i = 0; i < 10; ++i) {
    const Bytes p = MakePayload(sizes[i], i);
    const int expect_slot = static_cast<int>(i % 2);
    // The slot holding the newest record must come out of the save byte-identical.
    const Bytes other_before = rig.SlotBytes(1 - expect_slot);
    SaveReport sr{};
    TP_CHECK_EQ(Save(rig, p, &sr, {7, i * 10}), PersistStatus::kOk);
    TP_CHECK_EQ(sr.slot, expect_slot);
    TP_CHECK_EQ(sr.generation, i + 1);
    TP_CHECK_EQ(sr.previous_slot, i == 0 ? -1 : 1 - expect_slot);
    TP_CHECK(rig.SlotBytes(1 - expect_slot) == other_before);
    ExpectLoad(rig, expect_slot, i + 1, p, "save " + std::to_string(i));
    LoadReport r{};
    TP_CHECK_EQ(InspectWeights(rig.flash, rig.layout, &r), PersistStatus::kOk);
    TP_CHECK_EQ(r.other_slot_valid, i > 0);
    TP_CHECK_EQ(r.meta.step, i * 10);
    if (i > 0) {
      TP_CHECK_EQ(r.slots[1 - expect_slot].generation, i);
      TP_CHECK_EQ(r.slots[1 - expect_slot].size, static_cast<uint32_t>(previous.size()));
    }
    previous = p;
  }
  TP_CHECK(rig.SparesUntouched());
}

TP_TEST(api_saves_erase_only_the_sectors_the_record_needs) {
  Rig rig(128, 4, 4);
  const Bytes p = MakePayload(96, 1);  // header area 32 + 96 bytes: exactly one sector
  const uint64_t ops0 = rig.flash.byte_ops();
  TP_CHECK_EQ(Save(rig, p, nullptr), PersistStatus::kOk);
  TP_CHECK_EQ(rig.flash.erase_count(), 1u);
  TP_CHECK_EQ(rig.flash.byte_ops() - ops0, 128u + 96u + 32u);  // erase + payload + header, nothing else
  const Bytes big = MakePayload(rig.max_payload(), 2);
  TP_CHECK_EQ(Save(rig, big, nullptr), PersistStatus::kOk);
  TP_CHECK_EQ(rig.flash.erase_count(), 5u);  // + the 4 sectors of slot 1
  const Bytes p97 = MakePayload(97, 3);       // one byte more: two sectors
  TP_CHECK_EQ(Save(rig, p97, nullptr), PersistStatus::kOk);
  TP_CHECK_EQ(rig.flash.erase_count(), 7u);
}

TP_TEST(api_on_flash_format_matches_the_documentation) {
  for (uint32_t wb : {1u, 4u, 64u}) {
    Rig rig(256, wb, 2);
    const Bytes p = MakePayload(101, 9);  // 101: the tail needs padding for wb > 1
    const RecordMeta meta{0xAABBCCDDu, 77u};
    TP_CHECK_EQ(Save(rig, p, nullptr, meta), PersistStatus::kOk);
    const Bytes slot = rig.SlotBytes(0);
    const Bytes h = EncodeHeader(1, p, meta);
    TP_CHECK(std::equal(h.begin(), h.end(), slot.begin()));
    const uint32_t ha = rig.header_area();
    TP_CHECK_EQ(ha, wb > 32 ? wb : 32u);
    for (uint32_t i = 32; i < ha; ++i) TP_CHECK_EQ(slot[i], 0xFF);                  // header padding
    TP_CHECK(std::equal(p.begin(), p.end(), slot.begin() + ha));                      // raw payload bytes
    for (uint32_t i = ha + 101; i < rig.layout.slot_size; ++i) TP_CHECK_EQ(slot[i], 0xFF);  // padding, unused
  }
}

TP_TEST(api_generation_wrap_around) {
  Rig rig(128, 4, 2);
  const Bytes a = MakePayload(90, 1), b = MakePayload(91, 2), c = MakePayload(92, 3), d = MakePayload(93, 4);
  WriteRawRecord(rig, 0, 0xFFFFFFFEu, a, {1, 1});
  WriteRawRecord(rig, 1, 0xFFFFFFFFu, b, {1, 2});
  ExpectLoad(rig, 1, 0xFFFFFFFFu, b, "before wrap");
  SaveReport sr{};
  TP_CHECK_EQ(Save(rig, c, &sr), PersistStatus::kOk);
  TP_CHECK_EQ(sr.slot, 0);
  TP_CHECK_EQ(sr.generation, 0u);  // 0xFFFFFFFF + 1
  ExpectLoad(rig, 0, 0u, c, "generation 0 is newer than 0xFFFFFFFF");
  TP_CHECK_EQ(Save(rig, d, &sr), PersistStatus::kOk);
  TP_CHECK_EQ(sr.slot, 1);
  TP_CHECK_EQ(sr.generation, 1u);
  ExpectLoad(rig, 1, 1u, d, "after wrap");

  // Serial-number arithmetic on crafted pairs: {gen slot 0, gen slot 1, expected slot}.
  struct Case {
    uint32_t g0, g1;
    int newest;
  } cases[] = {
      {5, 6, 1},           {6, 5, 0},                     {0xFFFFFFFFu, 0, 1}, {0, 0xFFFFFFFFu, 0},
      {0x7FFFFFFFu, 0, 0}, {1, 0x80000002u, 0},           {0x80000002u, 1, 1}, {0xFFFFFFF0u, 0x10u, 1},
      {9, 9, 0},  // equal generations (never written by SaveWeights): slot 0
      {0, 0x80000000u, 0},  // exactly 2^31 apart is ambiguous: slot 0
      {0x80000000u, 0, 0},
  };
  for (const Case& k : cases) {
    WriteRawRecord(rig, 0, k.g0, a, {0, 0});
    WriteRawRecord(rig, 1, k.g1, b, {0, 0});
    const std::string where = "g0=" + std::to_string(k.g0) + " g1=" + std::to_string(k.g1);
    ExpectLoad(rig, k.newest, k.newest == 0 ? k.g0 : k.g1, k.newest == 0 ? a : b, where);
    // The next save goes to the other slot with generation newest + 1.
    TP_CHECK_EQ(Save(rig, c, &sr), PersistStatus::kOk);
    TP_CHECK_EQ_AT(sr.slot, 1 - k.newest, where);
    TP_CHECK_EQ_AT(sr.generation, (k.newest == 0 ? k.g0 : k.g1) + 1u, where);
    ExpectLoad(rig, 1 - k.newest, (k.newest == 0 ? k.g0 : k.g1) + 1u, c, where);
  }
}

TP_TEST(api_loads_records_written_by_the_independent_encoder) {
  Rig rig(256, 8, 2);
  const Bytes p = MakePayload(200, 3);
  WriteRawRecord(rig, 1, 42, p, {9, 8});
  ExpectLoad(rig, 1, 42, p, "raw record");
  LoadReport r{};
  TP_CHECK_EQ(InspectWeights(rig.flash, rig.layout, &r), PersistStatus::kOk);
  TP_CHECK_EQ(r.meta.model_id, 9u);
  TP_CHECK_EQ(r.meta.step, 8u);
  TP_CHECK_EQ(r.slots[0].state, SlotState::kEmpty);
  // Next save: slot 0, generation 43, and slot 1 untouched.
  SaveReport sr{};
  const Bytes before = rig.SlotBytes(1);
  TP_CHECK_EQ(Save(rig, MakePayload(10, 4), &sr), PersistStatus::kOk);
  TP_CHECK_EQ(sr.slot, 0);
  TP_CHECK_EQ(sr.generation, 43u);
  TP_CHECK(rig.SlotBytes(1) == before);
}

TP_TEST(api_header_sanity_fields_are_checked) {
  // A header with a correct CRC but a wrong magic / version / header size / payload size is not a record.
  Rig rig(128, 4, 2);
  const Bytes p = MakePayload(60, 1);
  struct Mutation {
    size_t off;
    uint8_t value;
  } muts[] = {{0, 'X'}, {4, 2}, {6, 33}, {12, 0}, {13, 0x10}};  // size 0x10xx > slot capacity
  for (const Mutation& m : muts) {
    WriteRawRecord(rig, 0, 3, p, {0, 0});
    uint8_t* h = rig.storage.data() + rig.layout.slot_offset[0];
    h[m.off] = m.value;
    if (m.off == 12) h[13] = h[14] = h[15] = 0;  // size exactly 0
    const uint32_t crc = BitwiseCrc(h, 28);
    for (int i = 0; i < 4; ++i) h[28 + i] = static_cast<uint8_t>(crc >> (8 * i));
    LoadReport r{};
    TP_CHECK_EQ_AT(InspectWeights(rig.flash, rig.layout, &r), PersistStatus::kNoValidWeights, std::to_string(m.off));
    TP_CHECK_EQ_AT(r.slots[0].state, SlotState::kBadHeader, std::to_string(m.off));
  }
}

TP_TEST(api_bad_arguments_and_layouts) {
  Rig rig(128, 4, 2);
  const Bytes p = MakePayload(100, 1);
  Bytes buf(300, 0x33);
  LoadReport r{};
  SaveReport sr{};
  const uint64_t ops = rig.flash.byte_ops();
  const uint32_t reads = rig.flash.read_count();
  // Null pointers, zero size.
  TP_CHECK_EQ(SaveWeights(rig.flash, rig.layout, nullptr, 100, nullptr, &sr), PersistStatus::kBadArgument);
  TP_CHECK_EQ(SaveWeights(rig.flash, rig.layout, p.data(), 0, nullptr, &sr), PersistStatus::kBadArgument);
  TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, nullptr, 100, &r), PersistStatus::kBadArgument);
  TP_CHECK_EQ(InspectWeights(rig.flash, rig.layout, nullptr), PersistStatus::kBadArgument);
  // Payload larger than a slot can take after the header.
  const uint32_t maxp = rig.max_payload();
  const Bytes big(maxp + 1, 1);
  TP_CHECK_EQ(SaveWeights(rig.flash, rig.layout, big.data(), maxp + 1, nullptr, &sr), PersistStatus::kPayloadTooLarge);
  TP_CHECK_EQ(SaveWeights(rig.flash, rig.layout, big.data(), 0xFFFFFFFFu, nullptr, &sr),
              PersistStatus::kPayloadTooLarge);
  uint32_t reported_max = 0;
  TP_CHECK_EQ(CheckPersistLayout(rig.flash, rig.layout, &reported_max), PersistStatus::kOk);
  TP_CHECK_EQ(reported_max, maxp);
  TP_CHECK_EQ(CheckPersistLayout(rig.flash, rig.layout, nullptr), PersistStatus::kOk);

  // Layout errors.
  const PersistLayout good = rig.layout;
  const uint32_t sector = 128, dev = rig.cfg.size;
  const PersistLayout bad_layouts[] = {
      {{good.slot_offset[0], good.slot_offset[1]}, 0},                // zero-size slots
      {{good.slot_offset[0] + 4, good.slot_offset[1]}, good.slot_size},  // misaligned slot 0
      {{good.slot_offset[0], good.slot_offset[1] + 1}, good.slot_size},  // misaligned slot 1
      {{good.slot_offset[0], good.slot_offset[1]}, good.slot_size + 64},  // size not a sector multiple
      {{0, sector}, 2 * sector},                                       // overlapping
      {{sector, sector}, sector},                                      // the same slot twice
      {{0, dev - sector}, 2 * sector},                                 // slot 1 past the end
      {{0xFFFFFF80u, 0}, sector},                                      // offset + size overflows 32 bits
      {{0, sector}, 0x80000000u},                                      // larger than the device
  };
  int i = 0;
  for (const PersistLayout& l : bad_layouts) {
    const std::string where = "layout " + std::to_string(i++);
    TP_CHECK_EQ_AT(SaveWeights(rig.flash, l, p.data(), 100, nullptr, &sr), PersistStatus::kBadLayout, where);
    TP_CHECK_EQ_AT(LoadWeights(rig.flash, l, buf.data(), 300, &r), PersistStatus::kBadLayout, where);
    TP_CHECK_EQ_AT(InspectWeights(rig.flash, l, &r), PersistStatus::kBadLayout, where);
    TP_CHECK_EQ_AT(CheckPersistLayout(rig.flash, l, nullptr), PersistStatus::kBadLayout, where);
  }
  // A slot too small for the header area plus one byte (write block 64: header area 64, slot 64 bytes).
  {
    SimFlash::Config cfg{512, 64, 64, false, false};
    Bytes st(512);
    SimFlash f(cfg, st.data(), nullptr);
    const PersistLayout tiny{{0, 64}, 64};
    TP_CHECK_EQ(CheckPersistLayout(f, tiny, nullptr), PersistStatus::kBadLayout);
    const PersistLayout ok{{0, 128}, 128};
    uint32_t m = 0;
    TP_CHECK_EQ(CheckPersistLayout(f, ok, &m), PersistStatus::kOk);
    TP_CHECK_EQ(m, 64u);
  }
  // Bad device geometry (write block not a power of two / too large, sector not a multiple of it, ...).
  {
    struct Geo : tinyprop::FlashDevice {
      uint32_t size, sector, wb;
      Geo(uint32_t s, uint32_t sec, uint32_t w) : size(s), sector(sec), wb(w) {}
      uint32_t Size() const override { return size; }
      uint32_t SectorSize() const override { return sector; }
      uint32_t WriteBlockSize() const override { return wb; }
      int32_t Read(uint32_t, void*, uint32_t) override { return -1; }
      int32_t Erase(uint32_t) override { return -1; }
      int32_t Write(uint32_t, const void*, uint32_t) override { return -1; }
    };
    const PersistLayout l{{0, 1024}, 1024};
    const Geo geos[] = {{4096, 1024, 0}, {4096, 1024, 3}, {4096, 1024, 128}, {4096, 0, 4},
                        {4096, 1000, 16}, {4000, 1024, 4}, {0, 1024, 4}};
    for (const Geo& g0 : geos) {
      Geo g = g0;
      TP_CHECK_EQ(CheckPersistLayout(g, l, nullptr), PersistStatus::kBadLayout);
      TP_CHECK_EQ(SaveWeights(g, l, p.data(), 100, nullptr, &sr), PersistStatus::kBadLayout);
      TP_CHECK_EQ(LoadWeights(g, l, buf.data(), 300, &r), PersistStatus::kBadLayout);
    }
    Geo fine(4096, 1024, 4);
    TP_CHECK_EQ(CheckPersistLayout(fine, l, nullptr), PersistStatus::kOk);
    // Its reads fail: errors come back as kFlashError with the device's code.
    TP_CHECK_EQ(LoadWeights(fine, l, buf.data(), 300, &r), PersistStatus::kFlashError);
    TP_CHECK_EQ(r.device_error, -1);
  }
  // None of the rejected calls touched the flash (no read, erase or write) or the caller's buffer.
  TP_CHECK_EQ(rig.flash.byte_ops(), ops);
  TP_CHECK_EQ(rig.flash.read_count(), reads);
  bool untouched = true;
  for (uint8_t b : buf) untouched = untouched && b == 0x33;
  TP_CHECK(untouched);
}

TP_TEST(api_empty_flash_and_small_buffers) {
  Rig rig(128, 4, 2);
  ExpectNothing(rig, "fresh flash");
  LoadReport r{};
  TP_CHECK_EQ(InspectWeights(rig.flash, rig.layout, &r), PersistStatus::kNoValidWeights);
  TP_CHECK_EQ(r.slots[0].state, SlotState::kEmpty);
  TP_CHECK_EQ(r.slots[1].state, SlotState::kEmpty);
  const Bytes p = MakePayload(150, 2);
  TP_CHECK_EQ(Save(rig, p, nullptr), PersistStatus::kOk);
  // Capacity one byte short: kBufferTooSmall, the report gives the size, the buffer is untouched.
  Bytes buf(149, 0x77);
  TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, buf.data(), 149, &r), PersistStatus::kBufferTooSmall);
  TP_CHECK_EQ(r.size, 150u);
  TP_CHECK_EQ(r.slot, 0);
  bool untouched = true;
  for (uint8_t b : buf) untouched = untouched && b == 0x77;
  TP_CHECK(untouched);
  uint8_t one = 0x77;
  TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, &one, 0, &r), PersistStatus::kBufferTooSmall);
  TP_CHECK_EQ(one, 0x77);
  Bytes exact(150);
  TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, exact.data(), 150, &r), PersistStatus::kOk);
  TP_CHECK(exact == p);
}

TP_TEST(api_device_errors_are_reported) {
  Rig rig(128, 4, 2);
  const Bytes a = MakePayload(100, 1);
  TP_CHECK_EQ(Save(rig, a, nullptr), PersistStatus::kOk);
  // The power fails at the first byte the save erases.
  rig.flash.ArmPowerCut(0);
  SaveReport sr{};
  TP_CHECK_EQ(Save(rig, MakePayload(100, 2), &sr), PersistStatus::kFlashError);
  TP_CHECK_EQ(sr.device_error, SimFlash::kErrPowerOff);
  TP_CHECK(rig.flash.powered_off());
  Bytes buf(200, 0x11);
  LoadReport r{};
  TP_CHECK_EQ(LoadWeights(rig.flash, rig.layout, buf.data(), 200, &r), PersistStatus::kFlashError);
  TP_CHECK_EQ(r.device_error, SimFlash::kErrPowerOff);
  bool untouched = true;
  for (uint8_t b : buf) untouched = untouched && b == 0x11;
  TP_CHECK(untouched);
  TP_CHECK_EQ(Save(rig, a, &sr), PersistStatus::kFlashError);
  TP_CHECK_EQ(sr.device_error, SimFlash::kErrPowerOff);
  rig.flash.Reboot();
  ExpectLoad(rig, 0, 1, a, "after reboot");
}

TP_TEST(api_read_back_verification_catches_worn_cells) {
  const Bytes a = MakePayload(200, 1), b = MakePayload(200, 2);
  // A bit stuck at 1 in the payload area of the target slot: the payload check fails, the header is never written.
  {
    Rig rig(128, 4, 3);
    TP_CHECK_EQ(Save(rig, a, nullptr), PersistStatus::kOk);  // slot 0
    const uint32_t off = rig.layout.slot_offset[1] + rig.header_area() + 17;
    uint8_t bit = 0;
    while (b[17] & (1u << bit)) ++bit;  // a bit b needs cleared
    rig.flash.StuckBit(off, bit);
    SaveReport sr{};
    TP_CHECK_EQ(Save(rig, b, &sr), PersistStatus::kVerifyFailed);
    TP_CHECK_EQ(sr.slot, 1);
    const Bytes s1 = rig.SlotBytes(1);
    bool header_erased = true;
    for (uint32_t i = 0; i < rig.header_area(); ++i) header_erased = header_erased && s1[i] == 0xFF;
    TP_CHECK(header_erased);
    ExpectLoad(rig, 0, 1, a, "after payload verify failure");
  }
  // A bit stuck at 1 in the header of the target slot: committed header is corrupt; verification says so.
  {
    Rig rig(128, 4, 3);
    TP_CHECK_EQ(Save(rig, a, nullptr), PersistStatus::kOk);
    rig.flash.StuckBit(rig.layout.slot_offset[1] + 0, 0);  // magic byte 'T' = 0x54 needs bit 0 cleared
    SaveReport sr{};
    TP_CHECK_EQ(Save(rig, b, &sr), PersistStatus::kVerifyFailed);
    LoadReport r{};
    TP_CHECK_EQ(InspectWeights(rig.flash, rig.layout, &r), PersistStatus::kOk);
    TP_CHECK_EQ(r.slots[1].state, SlotState::kBadHeader);
    ExpectLoad(rig, 0, 1, a, "after header verify failure");
    // The cell heals (StuckBit off): the next save retries into slot 1 with the same generation.
    rig.flash.StuckBit(rig.cfg.size, 0);
    TP_CHECK_EQ(Save(rig, b, &sr), PersistStatus::kOk);
    TP_CHECK_EQ(sr.generation, 2u);
    ExpectLoad(rig, 1, 2, b, "after retry");
  }
}

// A device that changes the payload between the two reads of LoadWeights (unstable cells): kVerifyFailed.
TP_TEST(api_load_rechecks_the_copy) {
  struct Flaky : tinyprop::FlashDevice {
    SimFlash* inner;
    uint32_t flip_at_read;
    uint32_t reads = 0;
    uint32_t Size() const override { return inner->Size(); }
    uint32_t SectorSize() const override { return inner->SectorSize(); }
    uint32_t WriteBlockSize() const override { return inner->WriteBlockSize(); }
    int32_t Read(uint32_t o, void* b, uint32_t n) override {
      const int32_t rc = inner->Read(o, b, n);
      if (++reads == flip_at_read && n > 0) static_cast<uint8_t*>(b)[n - 1] ^= 1;
      return rc;
    }
    int32_t Erase(uint32_t s) override { return inner->Erase(s); }
    int32_t Write(uint32_t o, const void* d, uint32_t n) override { return inner->Write(o, d, n); }
  };
  Rig rig(128, 4, 2);
  const Bytes a = MakePayload(100, 1);
  TP_CHECK_EQ(Save(rig, a, nullptr), PersistStatus::kOk);
  // Reads: header 0, payload 0 (one chunk), header 1, then the copy = read 4.
  Flaky f;
  f.inner = &rig.flash;
  f.flip_at_read = 4;
  Bytes buf(100);
  LoadReport r{};
  TP_CHECK_EQ(LoadWeights(f, rig.layout, buf.data(), 100, &r), PersistStatus::kVerifyFailed);
  f.reads = 0;
  f.flip_at_read = 0;
  TP_CHECK_EQ(LoadWeights(f, rig.layout, buf.data(), 100, &r), PersistStatus::kOk);
  TP_CHECK(buf == a);
}

// The payload buffer changes while it is being saved (e.g. a training thread): never committed.
TP_TEST(api_payload_changed_during_save_is_not_committed) {
  struct Mutating : tinyprop::FlashDevice {
    SimFlash* inner;
    uint8_t* payload;
    uint32_t Size() const override { return inner->Size(); }
    uint32_t SectorSize() const override { return inner->SectorSize(); }
    uint32_t WriteBlockSize() const override { return inner->WriteBlockSize(); }
    int32_t Read(uint32_t o, void* b, uint32_t n) override { return inner->Read(o, b, n); }
    int32_t Erase(uint32_t s) override { return inner->Erase(s); }
    int32_t Write(uint32_t o, const void* d, uint32_t n) override {
      payload[150] ^= 0x40;  // the source changes after SaveWeights computed its CRC
      return inner->Write(o, d, n);
    }
  };
  Rig rig(128, 4, 3);
  const Bytes a = MakePayload(200, 1);
  TP_CHECK_EQ(Save(rig, a, nullptr), PersistStatus::kOk);
  Bytes b = MakePayload(200, 2);
  Mutating m;
  m.inner = &rig.flash;
  m.payload = b.data();
  TP_CHECK_EQ(SaveWeights(m, rig.layout, b.data(), 200, nullptr, nullptr), PersistStatus::kVerifyFailed);
  ExpectLoad(rig, 0, 1, a, "torn snapshot not committed");
}

TP_TEST(api_status_names) {
  TP_CHECK_EQ(std::string(tinyprop::PersistStatusName(PersistStatus::kOk)), std::string("kOk"));
  TP_CHECK_EQ(std::string(tinyprop::PersistStatusName(PersistStatus::kNoValidWeights)),
              std::string("kNoValidWeights"));
  TP_CHECK_EQ(std::string(tinyprop::PersistStatusName(PersistStatus::kVerifyFailed)), std::string("kVerifyFailed"));
  TP_CHECK_EQ(std::string(tinyprop::PersistStatusName(static_cast<PersistStatus>(99))), std::string("unknown"));
}

}  // namespace
