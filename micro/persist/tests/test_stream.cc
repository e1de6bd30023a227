// SaveWeightsFrom / LoadWeightsInto (the payload streamed through a PayloadSource / PayloadSink): the same bytes on
// flash as SaveWeights, round trips, corrupted records never handed to the sink, source / sink failures, a source
// that changes between the CRC pass and the write pass, and power cuts at every byte of streamed saves.
#include "common.h"

namespace {

using namespace tpt;
using tinyprop::kStreamChunk;
using tinyprop::LoadWeightsInto;
using tinyprop::PayloadSink;
using tinyprop::PayloadSource;
using tinyprop::SaveWeightsFrom;

// Serves a Bytes payload, recording every call; can fail at a given call or flip a byte after the first pass.
struct BytesSource final : PayloadSource {
  explicit BytesSource(const Bytes& p) : payload(p) {}
  bool Read(uint32_t offset, void* out, uint32_t n) override {
    ++calls;
    TP_CHECK(n >= 1 && n <= kStreamChunk && offset + n <= payload.size());
    if (offset == 0) ++passes;
    if (calls == fail_at_call) return false;
    if (passes == 2 && change_in_second_pass && offset <= 50 && 50 < offset + n) payload[50] ^= 0x10;
    std::memcpy(out, payload.data() + offset, n);
    return true;
  }
  Bytes payload;
  int calls = 0, passes = 0;
  int fail_at_call = -1;
  bool change_in_second_pass = false;
};

// Collects what the load hands out, checking the calls cover [0, size) in ascending order.
struct BytesSink final : PayloadSink {
  bool Write(uint32_t offset, const void* data, uint32_t n) override {
    ++calls;
    TP_CHECK_EQ(offset, static_cast<uint32_t>(got.size()));
    TP_CHECK(n >= 1 && n <= kStreamChunk);
    const uint8_t* p = static_cast<const uint8_t*>(data);
    got.insert(got.end(), p, p + n);
    return calls != fail_at_call;
  }
  Bytes got;
  int calls = 0;
  int fail_at_call = -1;
};

PersistStatus StreamSave(Rig& rig, const Bytes& payload, SaveReport* report, RecordMeta meta = {0, 0}) {
  BytesSource source(payload);
  return SaveWeightsFrom(rig.flash, rig.layout, source, static_cast<uint32_t>(payload.size()), &meta, report);
}

// LoadWeightsInto must give kOk, this record, and exactly its bytes.
void ExpectStreamLoad(Rig& rig, int slot, uint32_t generation, const Bytes& expected, const std::string& where) {
  BytesSink sink;
  LoadReport r{};
  TP_CHECK_EQ_AT(LoadWeightsInto(rig.flash, rig.layout, sink, rig.max_payload(), &r), PersistStatus::kOk, where);
  TP_CHECK_EQ_AT(r.slot, slot, where);
  TP_CHECK_EQ_AT(r.generation, generation, where);
  TP_CHECK_EQ_AT(sink.got == expected, true, where);
}

TP_TEST(stream_save_writes_the_same_flash_bytes_as_save_weights) {
  for (uint32_t wb : {1u, 4u, 16u, 64u}) {
    Rig a(128, wb, 4), b(128, wb, 4);
    const uint32_t sizes[] = {1, 127, 128, 129, 300, a.max_payload(), 77};
    for (uint32_t i = 0; i < 7; ++i) {
      const std::string where = "wb " + std::to_string(wb) + " save " + std::to_string(i);
      const Bytes p = MakePayload(sizes[i], 40 + i);
      const RecordMeta meta{0xABCD0000u + i, 10 * i};
      SaveReport ra{}, rb{};
      TP_CHECK_EQ_AT(Save(a, p, &ra, meta), PersistStatus::kOk, where);
      TP_CHECK_EQ_AT(StreamSave(b, p, &rb, meta), PersistStatus::kOk, where);
      TP_CHECK_EQ_AT(rb.slot, ra.slot, where);
      TP_CHECK_EQ_AT(rb.generation, ra.generation, where);
      TP_CHECK_EQ_AT(rb.previous_slot, ra.previous_slot, where);
      // The whole device, byte for byte, and the same write blocks programmed.
      TP_CHECK_EQ_AT(a.storage == b.storage, true, where);
      TP_CHECK_EQ_AT(a.flags == b.flags, true, where);
      // Either record reads back through either load.
      ExpectLoad(b, rb.slot, rb.generation, p, where);
      ExpectStreamLoad(a, ra.slot, ra.generation, p, where);
      ExpectStreamLoad(b, rb.slot, rb.generation, p, where);
    }
    TP_CHECK(b.SparesUntouched());
  }
}

TP_TEST(stream_round_trip_in_chunks) {
  Rig rig(256, 4, 4);
  const Bytes p = MakePayload(900, 3);
  BytesSource source(p);
  SaveReport sr{};
  const RecordMeta meta{7, 99};
  TP_CHECK_EQ(SaveWeightsFrom(rig.flash, rig.layout, source, 900, &meta, &sr), PersistStatus::kOk);
  TP_CHECK_EQ(source.passes, 2);  // the CRC pass, then the write pass
  TP_CHECK_EQ(source.calls, 2 * 8);  // 900 bytes in 128-byte pieces, twice
  BytesSink sink;
  LoadReport r{};
  TP_CHECK_EQ(LoadWeightsInto(rig.flash, rig.layout, sink, 900, &r), PersistStatus::kOk);
  TP_CHECK(sink.got == p);
  TP_CHECK_EQ(sink.calls, 8);
  TP_CHECK_EQ(r.size, 900u);
  TP_CHECK_EQ(r.meta.model_id, 7u);
  TP_CHECK_EQ(r.meta.step, 99u);
  // A record written by the independent encoder loads through the sink too.
  const Bytes q = MakePayload(333, 4);
  WriteRawRecord(rig, 1, 5, q, {1, 2});
  ExpectStreamLoad(rig, 1, 5, q, "raw record");
}

TP_TEST(stream_corrupted_record_is_never_handed_to_the_sink) {
  Rig rig(128, 4, 4);
  const Bytes older = MakePayload(300, 1), newer = MakePayload(257, 2);
  TP_CHECK_EQ(StreamSave(rig, older, nullptr), PersistStatus::kOk);
  TP_CHECK_EQ(StreamSave(rig, newer, nullptr), PersistStatus::kOk);
  // Every bit of the newest record's header and payload: the sink gets the older record, never bytes of the other.
  const uint32_t len = rig.header_area() + 257;
  for (uint32_t off = 0; off < len; off += 3) {
    const std::string where = "byte " + std::to_string(off);
    rig.flash.FlipBit(rig.layout.slot_offset[1] + off, off % 8);
    ExpectStreamLoad(rig, 0, 1, older, where);
    rig.flash.FlipBit(rig.layout.slot_offset[1] + off, off % 8);
  }
  // Both records corrupt: kNoValidWeights and the sink is not called at all.
  rig.flash.FlipBit(rig.layout.slot_offset[0] + rig.header_area() + 10, 2);
  rig.flash.FlipBit(rig.layout.slot_offset[1] + rig.header_area() + 200, 5);
  BytesSink sink;
  LoadReport r{};
  TP_CHECK_EQ(LoadWeightsInto(rig.flash, rig.layout, sink, rig.max_payload(), &r), PersistStatus::kNoValidWeights);
  TP_CHECK_EQ(sink.calls, 0);
  TP_CHECK_EQ(r.slots[0].state, SlotState::kBadPayload);
  TP_CHECK_EQ(r.slots[1].state, SlotState::kBadPayload);
}

TP_TEST(stream_load_leaves_the_sink_alone_when_the_record_does_not_fit_or_the_flash_fails) {
  Rig rig(128, 4, 4);
  const Bytes p = MakePayload(300, 1);
  TP_CHECK_EQ(StreamSave(rig, p, nullptr), PersistStatus::kOk);
  BytesSink sink;
  LoadReport r{};
  TP_CHECK_EQ(LoadWeightsInto(rig.flash, rig.layout, sink, 299, &r), PersistStatus::kBufferTooSmall);
  TP_CHECK_EQ(r.size, 300u);
  TP_CHECK_EQ(sink.calls, 0);
  // Empty flash.
  Rig empty(128, 4, 2);
  TP_CHECK_EQ(LoadWeightsInto(empty.flash, empty.layout, sink, 1000, &r), PersistStatus::kNoValidWeights);
  TP_CHECK_EQ(sink.calls, 0);
  // A bad layout.
  const PersistLayout bad{{0, 64}, 128};
  TP_CHECK_EQ(LoadWeightsInto(rig.flash, bad, sink, 1000, &r), PersistStatus::kBadLayout);
  TP_CHECK_EQ(sink.calls, 0);
  // The sink refusing a piece: kPayloadIoError, the load stops there.
  BytesSink refusing;
  refusing.fail_at_call = 2;
  TP_CHECK_EQ(LoadWeightsInto(rig.flash, rig.layout, refusing, 1000, &r), PersistStatus::kPayloadIoError);
  TP_CHECK_EQ(refusing.calls, 2);
}

TP_TEST(stream_source_failures_keep_the_previous_record) {
  Rig rig(128, 4, 4);
  const Bytes a = MakePayload(400, 1), b = MakePayload(400, 2);
  TP_CHECK_EQ(StreamSave(rig, a, nullptr), PersistStatus::kOk);  // slot 0, generation 1
  const Bytes slot0 = rig.SlotBytes(0), slot1 = rig.SlotBytes(1);
  // In the CRC pass: nothing on the flash is touched (not even read).
  {
    BytesSource source(b);
    source.fail_at_call = 2;
    const uint64_t ops = rig.flash.byte_ops();
    const uint32_t reads = rig.flash.read_count();
    SaveReport sr{};
    TP_CHECK_EQ(SaveWeightsFrom(rig.flash, rig.layout, source, 400, nullptr, &sr), PersistStatus::kPayloadIoError);
    TP_CHECK_EQ(rig.flash.byte_ops(), ops);
    TP_CHECK_EQ(rig.flash.read_count(), reads);
    TP_CHECK(rig.SlotBytes(0) == slot0 && rig.SlotBytes(1) == slot1);
  }
  // In the write pass: the target slot is left uncommitted, the newest record untouched and still loaded.
  {
    BytesSource source(b);
    source.fail_at_call = 4 + 2;  // 400 bytes = 4 pieces per pass
    SaveReport sr{};
    TP_CHECK_EQ(SaveWeightsFrom(rig.flash, rig.layout, source, 400, nullptr, &sr), PersistStatus::kPayloadIoError);
    TP_CHECK_EQ(sr.slot, 1);
    TP_CHECK(rig.SlotBytes(0) == slot0);
    ExpectLoad(rig, 0, 1, a, "after a source failure in the write pass");
    ExpectStreamLoad(rig, 0, 1, a, "after a source failure in the write pass (stream)");
  }
  // The source changes between the CRC pass and the write pass (a training thread still running): not committed.
  {
    BytesSource source(b);
    source.change_in_second_pass = true;
    SaveReport sr{};
    TP_CHECK_EQ(SaveWeightsFrom(rig.flash, rig.layout, source, 400, nullptr, &sr), PersistStatus::kVerifyFailed);
    TP_CHECK(rig.SlotBytes(0) == slot0);
    ExpectStreamLoad(rig, 0, 1, a, "after a changing source");
  }
  // Argument checks before anything: zero size, too large.
  BytesSource source(b);
  TP_CHECK_EQ(SaveWeightsFrom(rig.flash, rig.layout, source, 0, nullptr, nullptr), PersistStatus::kBadArgument);
  TP_CHECK_EQ(SaveWeightsFrom(rig.flash, rig.layout, source, rig.max_payload() + 1, nullptr, nullptr),
              PersistStatus::kPayloadTooLarge);
  TP_CHECK_EQ(source.calls, 0);
  // And a good save afterwards goes to slot 1, generation 2.
  SaveReport sr{};
  TP_CHECK_EQ(StreamSave(rig, b, &sr), PersistStatus::kOk);
  TP_CHECK_EQ(sr.slot, 1);
  TP_CHECK_EQ(sr.generation, 2u);
  ExpectStreamLoad(rig, 1, 2, b, "after the retry");
}

// Power cut at every byte operation of three successive streamed saves (slot 0, 1, 0): after the reboot the
// stream load gives the previous record (its slot byte-identical) until the header write completed, then the new.
TP_TEST(stream_power_cut_at_every_byte_keeps_the_previous_record) {
  struct Config {
    uint32_t sector, write_block, slot_sectors;
    bool partial;
  } configs[] = {{128, 4, 3, false}, {128, 1, 4, true}, {256, 64, 2, false}};
  long cut_points = 0;
  for (const Config& c : configs) {
    Rig rig(c.sector, c.write_block, c.slot_sectors, c.partial);
    const uint32_t sizes[] = {300, 129, rig.max_payload()};
    int prev_slot = -1;
    uint32_t prev_gen = 0;
    Bytes prev;
    for (int step = 0; step < 3; ++step) {
      const Bytes p = MakePayload(sizes[step], 500 + static_cast<uint32_t>(step));
      const Rig::Snapshot before = rig.Take();
      const uint64_t ops0 = rig.flash.byte_ops();
      SaveReport sr{};
      TP_CHECK_EQ(StreamSave(rig, p, &sr), PersistStatus::kOk);
      const uint64_t total = rig.flash.byte_ops() - ops0;
      const Rig::Snapshot after = rig.Take();
      const Bytes previous_slot_bytes = prev_slot < 0 ? Bytes() : rig.SlotBytes(prev_slot);
      for (uint64_t n = 0; n < total; ++n) {
        ++cut_points;
        const std::string where = "wb " + std::to_string(c.write_block) + " save " + std::to_string(step) +
                                  " cut after " + std::to_string(n);
        rig.Restore(before);
        rig.flash.ArmPowerCut(n);
        SaveReport cr{};
        TP_CHECK_EQ_AT(StreamSave(rig, p, &cr), PersistStatus::kFlashError, where);
        rig.flash.Reboot();
        if (prev_slot >= 0) TP_CHECK_EQ_AT(rig.SlotBytes(prev_slot) == previous_slot_bytes, true, where);
        BytesSink sink;
        LoadReport r{};
        const PersistStatus st = LoadWeightsInto(rig.flash, rig.layout, sink, rig.max_payload(), &r);
        if (st == PersistStatus::kOk && r.generation == sr.generation) {
          TP_CHECK_EQ_AT(r.slot, sr.slot, where);  // the cut came after the commit (trailing 0xFF header bytes)
          TP_CHECK_EQ_AT(sink.got == p, true, where);
        } else if (prev_slot < 0) {
          TP_CHECK_EQ_AT(st, PersistStatus::kNoValidWeights, where);
          TP_CHECK_EQ_AT(sink.calls, 0, where);
        } else {
          TP_CHECK_EQ_AT(st, PersistStatus::kOk, where);
          TP_CHECK_EQ_AT(r.slot, prev_slot, where);
          TP_CHECK_EQ_AT(r.generation, prev_gen, where);
          TP_CHECK_EQ_AT(sink.got == prev, true, where);
        }
      }
      rig.Restore(after);
      ExpectStreamLoad(rig, sr.slot, sr.generation, p, "uncut save " + std::to_string(step));
      prev_slot = sr.slot;
      prev_gen = sr.generation;
      prev = p;
    }
  }
  std::cout << "  " << cut_points << " cut points\n";
  TP_CHECK(cut_points > 3000);
}

TP_TEST(stream_status_name) {
  TP_CHECK_EQ(std::string(tinyprop::PersistStatusName(PersistStatus::kPayloadIoError)),
              std::string("kPayloadIoError"));
}

}  // namespace
