// Two-slot weight persistence: see include/tinyprop/persist.h and persist/README.md.
#include "tinyprop/persist.h"

#include <string.h>

namespace tinyprop {
namespace {

constexpr uint32_t kIoChunk = kStreamChunk;  // stack I/O buffer; a multiple of every allowed write block
static_assert(kIoChunk % kMaxWriteBlock == 0, "the I/O chunk must be a multiple of every write block");

// ---- CRC32, 4 bits per step, 16-entry table computed at compile time (read-only) ----------------------------------
struct NibbleTable {
  uint32_t v[16];
};

constexpr NibbleTable MakeNibbleTable() {
  NibbleTable t{};
  for (uint32_t i = 0; i < 16; ++i) {
    uint32_t c = i;
    for (int b = 0; b < 4; ++b) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    t.v[i] = c;
  }
  return t;
}

constexpr NibbleTable kNibbleTable = MakeNibbleTable();

// ---- little-endian fields ------------------------------------------------------------------------------------------
void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// Header field offsets (see persist.h).
constexpr uint32_t kOffMagic = 0, kOffVersion = 4, kOffHeaderSize = 6, kOffGeneration = 8, kOffPayloadSize = 12,
                   kOffPayloadCrc = 16, kOffModelId = 20, kOffStep = 24, kOffHeaderCrc = 28;
static_assert(kOffHeaderCrc + 4 == kHeaderSize, "header layout");

// a is newer than b in serial-number arithmetic (RFC 1982 style, 32 bits).
bool Newer(uint32_t a, uint32_t b) {
  const uint32_t d = a - b;
  return d != 0 && d < 0x80000000u;
}

struct Geometry {
  uint32_t sector;
  uint32_t write_block;
  uint32_t header_area;
  uint32_t max_payload;
};

PersistStatus CheckGeometry(const FlashDevice& flash, const PersistLayout& layout, Geometry* g) {
  const uint32_t wb = flash.WriteBlockSize();
  const uint32_t sector = flash.SectorSize();
  const uint32_t size = flash.Size();
  if (wb == 0 || wb > kMaxWriteBlock || (wb & (wb - 1)) != 0) return PersistStatus::kBadLayout;
  if (sector == 0 || sector % wb != 0) return PersistStatus::kBadLayout;
  if (size == 0 || size % sector != 0) return PersistStatus::kBadLayout;
  const uint32_t ss = layout.slot_size;
  if (ss == 0 || ss % sector != 0) return PersistStatus::kBadLayout;
  for (int s = 0; s < 2; ++s) {
    const uint32_t off = layout.slot_offset[s];
    if (off % sector != 0) return PersistStatus::kBadLayout;
    if (static_cast<uint64_t>(off) + ss > size) return PersistStatus::kBadLayout;
  }
  const uint64_t a = layout.slot_offset[0], b = layout.slot_offset[1];
  if (a < b + ss && b < a + ss) return PersistStatus::kBadLayout;  // overlap (or the same slot twice)
  const uint32_t ha = HeaderAreaSize(wb);
  if (ss <= ha) return PersistStatus::kBadLayout;
  g->sector = sector;
  g->write_block = wb;
  g->header_area = ha;
  g->max_payload = ss - ha;
  return PersistStatus::kOk;
}

// CRC of n flash bytes at `offset`, streamed through a stack buffer.
PersistStatus FlashCrc(FlashDevice& flash, uint32_t offset, uint32_t n, uint32_t* crc, int32_t* device_error) {
  uint8_t buf[kIoChunk];
  uint32_t c = 0;
  while (n > 0) {
    const uint32_t len = n < kIoChunk ? n : kIoChunk;
    const int32_t rc = flash.Read(offset, buf, len);
    if (rc != 0) {
      *device_error = rc;
      return PersistStatus::kFlashError;
    }
    c = Crc32(c, buf, len);
    offset += len;
    n -= len;
  }
  *crc = c;
  return PersistStatus::kOk;
}

// Examines one slot: fills *info and, for a valid header, *payload_crc.
PersistStatus ValidateSlot(FlashDevice& flash, const PersistLayout& layout, const Geometry& g, int slot,
                           SlotInfo* info, uint32_t* payload_crc, int32_t* device_error) {
  *info = SlotInfo{SlotState::kNotRead, 0, 0, RecordMeta{0, 0}};
  const uint32_t base = layout.slot_offset[slot];
  uint8_t h[kHeaderSize];
  const int32_t rc = flash.Read(base, h, kHeaderSize);
  if (rc != 0) {
    *device_error = rc;
    return PersistStatus::kFlashError;
  }
  bool erased = true;
  for (uint32_t i = 0; i < kHeaderSize; ++i) erased = erased && h[i] == 0xFF;
  if (erased) {
    info->state = SlotState::kEmpty;
    return PersistStatus::kOk;
  }
  const uint32_t size = Get32(h + kOffPayloadSize);
  if (Get32(h + kOffMagic) != kRecordMagic || Get16(h + kOffVersion) != kFormatVersion ||
      Get16(h + kOffHeaderSize) != kHeaderSize || Crc32(0, h, kOffHeaderCrc) != Get32(h + kOffHeaderCrc) ||
      size == 0 || size > g.max_payload) {
    info->state = SlotState::kBadHeader;
    return PersistStatus::kOk;
  }
  info->generation = Get32(h + kOffGeneration);
  info->size = size;
  info->meta = RecordMeta{Get32(h + kOffModelId), Get32(h + kOffStep)};
  *payload_crc = Get32(h + kOffPayloadCrc);
  uint32_t crc = 0;
  const PersistStatus st = FlashCrc(flash, base + g.header_area, size, &crc, device_error);
  if (st != PersistStatus::kOk) {
    info->state = SlotState::kNotRead;
    return st;
  }
  info->state = crc == *payload_crc ? SlotState::kValid : SlotState::kBadPayload;
  return PersistStatus::kOk;
}

LoadReport EmptyReport() {
  LoadReport r{};
  r.slot = -1;
  for (auto& s : r.slots) s = SlotInfo{SlotState::kNotRead, 0, 0, RecordMeta{0, 0}};
  return r;
}

// Validates both slots and picks the newest valid one; payload_crc[s] is the header's CRC of slot s.
PersistStatus Inspect(FlashDevice& flash, const PersistLayout& layout, const Geometry& g, LoadReport* r,
                      uint32_t payload_crc[2]) {
  *r = EmptyReport();
  for (int s = 0; s < 2; ++s) {
    payload_crc[s] = 0;
    const PersistStatus st = ValidateSlot(flash, layout, g, s, &r->slots[s], &payload_crc[s], &r->device_error);
    if (st != PersistStatus::kOk) return st;
  }
  const bool v0 = r->slots[0].state == SlotState::kValid;
  const bool v1 = r->slots[1].state == SlotState::kValid;
  int newest = -1;
  if (v0 && v1) {
    newest = Newer(r->slots[1].generation, r->slots[0].generation) ? 1 : 0;
  } else if (v0) {
    newest = 0;
  } else if (v1) {
    newest = 1;
  }
  if (newest < 0) return PersistStatus::kNoValidWeights;
  r->slot = newest;
  r->generation = r->slots[newest].generation;
  r->size = r->slots[newest].size;
  r->meta = r->slots[newest].meta;
  r->other_slot_valid = r->slots[1 - newest].state == SlotState::kValid;
  return PersistStatus::kOk;
}

PersistStatus SaveDone(SaveReport* report, const SaveReport& r, PersistStatus st) {
  if (report != nullptr) *report = r;
  return st;
}

}  // namespace

const char* PersistStatusName(PersistStatus status) {
  switch (status) {
    case PersistStatus::kOk: return "kOk";
    case PersistStatus::kBadArgument: return "kBadArgument";
    case PersistStatus::kBadLayout: return "kBadLayout";
    case PersistStatus::kPayloadTooLarge: return "kPayloadTooLarge";
    case PersistStatus::kBufferTooSmall: return "kBufferTooSmall";
    case PersistStatus::kNoValidWeights: return "kNoValidWeights";
    case PersistStatus::kFlashError: return "kFlashError";
    case PersistStatus::kVerifyFailed: return "kVerifyFailed";
    case PersistStatus::kPayloadIoError: return "kPayloadIoError";
  }
  return "unknown";
}

uint32_t Crc32(uint32_t crc, const void* data, size_t n) {
  if (data == nullptr) return crc;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    crc = (crc >> 4) ^ kNibbleTable.v[crc & 15u];
    crc = (crc >> 4) ^ kNibbleTable.v[crc & 15u];
  }
  return ~crc;
}

PersistStatus CheckPersistLayout(const FlashDevice& flash, const PersistLayout& layout, uint32_t* max_payload) {
  Geometry g{};
  const PersistStatus st = CheckGeometry(flash, layout, &g);
  if (st == PersistStatus::kOk && max_payload != nullptr) *max_payload = g.max_payload;
  return st;
}

PersistStatus InspectWeights(FlashDevice& flash, const PersistLayout& layout, LoadReport* report) {
  if (report == nullptr) return PersistStatus::kBadArgument;
  Geometry g{};
  const PersistStatus st = CheckGeometry(flash, layout, &g);
  if (st != PersistStatus::kOk) return st;
  uint32_t crc[2];
  return Inspect(flash, layout, g, report, crc);
}

namespace {

// The loads' first pass: the geometry (*geometry_ok false: its error, nothing read, no report), then the newest
// record whose CRC checks (Inspect) and that fits `capacity`.
PersistStatus FindRecord(FlashDevice& flash, const PersistLayout& layout, uint32_t capacity, Geometry* g,
                         LoadReport* r, uint32_t crc[2], bool* geometry_ok) {
  const PersistStatus geometry = CheckGeometry(flash, layout, g);
  *geometry_ok = geometry == PersistStatus::kOk;
  if (!*geometry_ok) return geometry;
  PersistStatus st = Inspect(flash, layout, *g, r, crc);
  if (st == PersistStatus::kOk && r->size > capacity) st = PersistStatus::kBufferTooSmall;
  return st;
}

}  // namespace

PersistStatus LoadWeights(FlashDevice& flash, const PersistLayout& layout, void* payload, uint32_t capacity,
                          LoadReport* report) {
  if (payload == nullptr) return PersistStatus::kBadArgument;
  Geometry g{};
  LoadReport r;
  uint32_t crc[2];
  bool geometry_ok = false;
  PersistStatus st = FindRecord(flash, layout, capacity, &g, &r, crc, &geometry_ok);
  if (!geometry_ok) return st;
  if (st == PersistStatus::kOk) {
    // Second pass straight into the caller's buffer, checked again: the CRC that was verified is the one of the
    // bytes handed out.
    const int32_t rc = flash.Read(layout.slot_offset[r.slot] + g.header_area, payload, r.size);
    if (rc != 0) {
      r.device_error = rc;
      st = PersistStatus::kFlashError;
    } else if (Crc32(0, payload, r.size) != crc[r.slot]) {
      st = PersistStatus::kVerifyFailed;
    }
  }
  if (report != nullptr) *report = r;
  return st;
}

namespace {

// A contiguous RAM payload as a PayloadSource (SaveWeights).
class MemorySource final : public PayloadSource {
 public:
  explicit MemorySource(const uint8_t* data) : data_(data) {}
  bool Read(uint32_t offset, void* out, uint32_t n) override {
    memcpy(out, data_ + offset, n);
    return true;
  }

 private:
  const uint8_t* data_;
};

// CRC of the source's bytes [0, size), through `buf` (kIoChunk bytes).
bool SourceCrc(PayloadSource& source, uint32_t size, uint8_t* buf, uint32_t* crc) {
  uint32_t c = 0;
  for (uint32_t done = 0; done < size;) {
    const uint32_t len = size - done < kIoChunk ? size - done : kIoChunk;
    if (!source.Read(done, buf, len)) return false;
    c = Crc32(c, buf, len);
    done += len;
  }
  *crc = c;
  return true;
}

// SaveWeights / SaveWeightsFrom after the argument checks.
PersistStatus SaveImpl(FlashDevice& flash, const PersistLayout& layout, const Geometry& g, PayloadSource& source,
                       uint32_t size, const RecordMeta* meta, SaveReport* report) {
  const RecordMeta m = meta != nullptr ? *meta : RecordMeta{0, 0};
  alignas(8) uint8_t buf[kIoChunk];
  // 0. The CRC of what is to be saved, before anything is touched: the read-back check compares against it.
  uint32_t src_crc = 0;
  if (!SourceCrc(source, size, buf, &src_crc)) return SaveDone(report, SaveReport{-1, 0, -1, 0},
                                                               PersistStatus::kPayloadIoError);

  SaveReport out{-1, 0, -1, 0};
  LoadReport cur;
  uint32_t crc[2];
  PersistStatus st = Inspect(flash, layout, g, &cur, crc);
  if (st == PersistStatus::kFlashError) {
    out.device_error = cur.device_error;
    return SaveDone(report, out, st);
  }
  // The target is the slot that does not hold the newest valid record; that record is never touched.
  out.previous_slot = cur.slot;
  out.slot = cur.slot < 0 ? 0 : 1 - cur.slot;
  out.generation = cur.slot < 0 ? 1u : cur.generation + 1u;  // wraps to 0 after 0xFFFFFFFF (serial arithmetic)
  const uint32_t base = layout.slot_offset[out.slot];

  // 1. Erase the sectors the record needs, header sector first (invalidates whatever the slot held).
  const uint32_t record_bytes = g.header_area + size;  // <= slot_size
  const uint32_t sectors = record_bytes / g.sector + (record_bytes % g.sector != 0 ? 1u : 0u);
  for (uint32_t i = 0; i < sectors; ++i) {
    const int32_t rc = flash.Erase(base / g.sector + i);
    if (rc != 0) {
      out.device_error = rc;
      return SaveDone(report, out, PersistStatus::kFlashError);
    }
  }

  // 2. Payload, through the aligned stack buffer, the last block padded with 0xFF.
  for (uint32_t done = 0; done < size;) {
    const uint32_t len = size - done < kIoChunk ? size - done : kIoChunk;
    if (!source.Read(done, buf, len)) return SaveDone(report, out, PersistStatus::kPayloadIoError);
    const uint32_t padded = (len + g.write_block - 1) / g.write_block * g.write_block;  // <= kIoChunk
    memset(buf + len, 0xFF, padded - len);
    const int32_t rc = flash.Write(base + g.header_area + done, buf, padded);
    if (rc != 0) {
      out.device_error = rc;
      return SaveDone(report, out, PersistStatus::kFlashError);
    }
    done += len;
  }

  // 3. Read-back check of the payload before committing (worn cells, or the buffer changed under us).
  uint32_t flash_crc = 0;
  st = FlashCrc(flash, base + g.header_area, size, &flash_crc, &out.device_error);
  if (st != PersistStatus::kOk) return SaveDone(report, out, st);
  if (flash_crc != src_crc) return SaveDone(report, out, PersistStatus::kVerifyFailed);

  // 4. Commit: the header, written last in one write of the header area.
  alignas(8) uint8_t h[kMaxWriteBlock];
  memset(h, 0xFF, sizeof(h));
  Put32(h + kOffMagic, kRecordMagic);
  Put16(h + kOffVersion, kFormatVersion);
  Put16(h + kOffHeaderSize, static_cast<uint16_t>(kHeaderSize));
  Put32(h + kOffGeneration, out.generation);
  Put32(h + kOffPayloadSize, size);
  Put32(h + kOffPayloadCrc, src_crc);
  Put32(h + kOffModelId, m.model_id);
  Put32(h + kOffStep, m.step);
  Put32(h + kOffHeaderCrc, Crc32(0, h, kOffHeaderCrc));
  const int32_t rc = flash.Write(base, h, g.header_area);
  if (rc != 0) {
    out.device_error = rc;
    return SaveDone(report, out, PersistStatus::kFlashError);
  }

  // 5. The committed record must validate as exactly what was meant.
  SlotInfo info;
  uint32_t stored_crc = 0;
  st = ValidateSlot(flash, layout, g, out.slot, &info, &stored_crc, &out.device_error);
  if (st != PersistStatus::kOk) return SaveDone(report, out, st);
  if (info.state != SlotState::kValid || info.generation != out.generation || info.size != size ||
      stored_crc != src_crc || info.meta.model_id != m.model_id || info.meta.step != m.step) {
    return SaveDone(report, out, PersistStatus::kVerifyFailed);
  }
  return SaveDone(report, out, PersistStatus::kOk);
}

}  // namespace

PersistStatus SaveWeights(FlashDevice& flash, const PersistLayout& layout, const void* payload, uint32_t size,
                          const RecordMeta* meta, SaveReport* report) {
  if (payload == nullptr || size == 0) return PersistStatus::kBadArgument;
  Geometry g{};
  const PersistStatus st = CheckGeometry(flash, layout, &g);
  if (st != PersistStatus::kOk) return st;
  if (size > g.max_payload) return PersistStatus::kPayloadTooLarge;
  MemorySource source(static_cast<const uint8_t*>(payload));
  return SaveImpl(flash, layout, g, source, size, meta, report);
}

PersistStatus SaveWeightsFrom(FlashDevice& flash, const PersistLayout& layout, PayloadSource& source, uint32_t size,
                              const RecordMeta* meta, SaveReport* report) {
  if (size == 0) return PersistStatus::kBadArgument;
  Geometry g{};
  const PersistStatus st = CheckGeometry(flash, layout, &g);
  if (st != PersistStatus::kOk) return st;
  if (size > g.max_payload) return PersistStatus::kPayloadTooLarge;
  return SaveImpl(flash, layout, g, source, size, meta, report);
}

PersistStatus LoadWeightsInto(FlashDevice& flash, const PersistLayout& layout, PayloadSink& sink, uint32_t capacity,
                              LoadReport* report) {
  Geometry g{};
  LoadReport r;
  uint32_t crc[2];
  bool geometry_ok = false;
  PersistStatus st = FindRecord(flash, layout, capacity, &g, &r, crc, &geometry_ok);
  if (!geometry_ok) return st;
  if (st == PersistStatus::kOk) {
    // Second pass: flash -> stack buffer -> sink, the CRC of exactly the bytes handed out checked again.
    uint8_t buf[kIoChunk];
    const uint32_t base = layout.slot_offset[r.slot] + g.header_area;
    uint32_t c = 0;
    for (uint32_t done = 0; done < r.size && st == PersistStatus::kOk;) {
      const uint32_t len = r.size - done < kIoChunk ? r.size - done : kIoChunk;
      const int32_t rc = flash.Read(base + done, buf, len);
      if (rc != 0) {
        r.device_error = rc;
        st = PersistStatus::kFlashError;
        break;
      }
      c = Crc32(c, buf, len);
      if (!sink.Write(done, buf, len)) st = PersistStatus::kPayloadIoError;
      done += len;
    }
    if (st == PersistStatus::kOk && c != crc[r.slot]) st = PersistStatus::kVerifyFailed;
  }
  if (report != nullptr) *report = r;
  return st;
}

}  // namespace tinyprop
