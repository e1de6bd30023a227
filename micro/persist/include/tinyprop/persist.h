// TinyProp weight persistence: two flash slots (A/B), a generation counter and CRC32 (see persist/README.md).
//
// Same rules as the kernel library (micro/README.md): no dynamic allocation, no exceptions, no RTTI, no global
// or static mutable state, only C headers. Every entry point validates its arguments before it touches the flash
// or any output; the caller owns every buffer. Stack use is bounded: under 1 KB (128-byte I/O buffer, 64-byte header).
//
// On-flash record (little-endian), at the start of each slot:
//   off  0  u32 magic           kRecordMagic ("TPPW")
//   off  4  u16 version         kFormatVersion
//   off  6  u16 header_size     kHeaderSize (32)
//   off  8  u32 generation      serial number, newest record wins (wrap-around aware)
//   off 12  u32 payload_size    bytes, >= 1
//   off 16  u32 payload_crc     CRC32 of the payload bytes
//   off 20  u32 model_id        caller metadata (RecordMeta)
//   off 24  u32 step            caller metadata (RecordMeta)
//   off 28  u32 header_crc      CRC32 of bytes 0..27
//   header area = max(32, write block) bytes (padding 0xFF), then the payload, padded with 0xFF to the write block.
#ifndef TINYPROP_PERSIST_H_
#define TINYPROP_PERSIST_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyprop {

// ---- status ---------------------------------------------------------------------------------------------------
enum class PersistStatus : int32_t {
  kOk = 0,
  kBadArgument = 1,      // null pointer where one is required, or a zero payload size
  kBadLayout = 2,        // bad device geometry or slot layout (zero size, misaligned, overlapping, out of range)
  kPayloadTooLarge = 3,  // the payload does not fit in a slot after the header
  kBufferTooSmall = 4,   // LoadWeights: the newest valid record is larger than the capacity (buffer untouched)
  kNoValidWeights = 5,   // neither slot holds a valid record (buffer untouched)
  kFlashError = 6,       // the device returned an error (report->device_error holds its code)
  kVerifyFailed = 7,     // read-back differs from what was written / verified (see SaveWeights, LoadWeights)
  kPayloadIoError = 8,   // SaveWeightsFrom / LoadWeightsInto: the PayloadSource / PayloadSink returned false
};

// Short constant name ("kOk", "kNoValidWeights", ...); "unknown" for other values.
const char* PersistStatusName(PersistStatus status);

// ---- CRC32 (IEEE 802.3 / zlib: reflected, polynomial 0xEDB88320, init and final xor 0xFFFFFFFF) -------------------
// Streaming in the zlib convention: start with crc = 0 and pass each result back in;
// Crc32(Crc32(0, a, n), b, m) == Crc32 of the concatenation. Crc32(0, "123456789", 9) == 0xCBF43926.
// Uses a 16-entry constexpr (read-only) table, 4 bits per step.
uint32_t Crc32(uint32_t crc, const void* data, size_t n);

// Bit-at-a-time reference, usable in constant expressions (static_assert) and in tests.
constexpr uint32_t Crc32Bitwise(uint32_t crc, const char* data, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= static_cast<uint8_t>(data[i]);
    for (int b = 0; b < 8; ++b) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}
static_assert(Crc32Bitwise(0, "123456789", 9) == 0xCBF43926u, "CRC32 check value");

// ---- flash device -------------------------------------------------------------------------------------------------
// NOR-flash semantics: Erase sets a whole sector to 0xFF; Write can only clear bits (new = old & data). Offsets are
// relative to the start of the device (a partition / flash area). The persistence code only ever issues:
//   - Read at any offset and length inside the device;
//   - Erase of whole sectors (index = offset / SectorSize());
//   - Write with offset and length multiples of WriteBlockSize(), each write block programmed once per erase.
// Methods return 0 on success and a device-specific nonzero code (esp_err_t, negative errno, ...) on failure;
// the code is reported back in LoadReport / SaveReport::device_error.
class FlashDevice {
 public:
  virtual uint32_t Size() const = 0;            // bytes; a multiple of SectorSize()
  virtual uint32_t SectorSize() const = 0;      // erase unit, bytes, a multiple of WriteBlockSize()
  virtual uint32_t WriteBlockSize() const = 0;  // program unit, a power of two in [1, kMaxWriteBlock]
  virtual int32_t Read(uint32_t offset, void* buffer, uint32_t n) = 0;
  virtual int32_t Erase(uint32_t sector) = 0;
  virtual int32_t Write(uint32_t offset, const void* data, uint32_t n) = 0;

 protected:
  FlashDevice() = default;
  FlashDevice(const FlashDevice&) = default;
  FlashDevice& operator=(const FlashDevice&) = default;
  ~FlashDevice() = default;  // not virtual: never deleted through the interface (no heap)
};

// ---- format constants ----------------------------------------------------------------------------------------------
constexpr uint32_t kRecordMagic = 0x57505054u;  // bytes 'T' 'P' 'P' 'W' in little-endian order
constexpr uint16_t kFormatVersion = 1;
constexpr uint32_t kHeaderSize = 32;
constexpr uint32_t kMaxWriteBlock = 64;

// Bytes reserved for the header at the start of a slot: max(kHeaderSize, write block).
constexpr uint32_t HeaderAreaSize(uint32_t write_block) {
  return write_block > kHeaderSize ? write_block : kHeaderSize;
}

// ---- layout, metadata, reports ------------------------------------------------------------------------------------
// Two slots inside the device. Each offset and slot_size must be a nonzero multiple of the sector size (offset 0 is
// fine), the slots must not overlap and must lie inside the device, and a slot must hold the header area plus at
// least one payload byte.
struct PersistLayout {
  uint32_t slot_offset[2];
  uint32_t slot_size;
};

// Caller metadata stored in (and protected by) the header.
struct RecordMeta {
  uint32_t model_id;  // e.g. a hash of the model architecture, so a firmware update can reject foreign weights
  uint32_t step;      // e.g. the training step count
};

enum class SlotState : int32_t {
  kNotRead = 0,     // not examined (the operation stopped at a flash error or an argument error)
  kEmpty = 1,       // header bytes all 0xFF: erased, never written, or a save was cut before its commit
  kBadHeader = 2,   // wrong magic / version / size field or header CRC mismatch (e.g. a torn header write)
  kBadPayload = 3,  // header fine, payload CRC mismatch (torn payload write, erase cut, bit rot)
  kValid = 4,
};

struct SlotInfo {
  SlotState state;
  uint32_t generation;  // the header's fields: meaningful for kBadPayload and kValid, else 0
  uint32_t size;
  RecordMeta meta;
};

struct LoadReport {
  int32_t slot;           // slot the weights came from (0 or 1), -1 if none
  uint32_t generation;    // of that record (0 if none)
  uint32_t size;          // payload bytes of that record (0 if none)
  RecordMeta meta;        // of that record
  bool other_slot_valid;  // whether the other slot also holds a valid (older) record: false = no backup left
  SlotInfo slots[2];
  int32_t device_error;   // the device's code when the status is kFlashError, else 0
};

struct SaveReport {
  int32_t slot;           // slot written (0 or 1); -1 before a target was chosen
  uint32_t generation;    // generation of the new record
  int32_t previous_slot;  // slot holding the newest valid record before the save (left untouched), -1 if none
  int32_t device_error;   // the device's code when the status is kFlashError, else 0
};

// ---- API ------------------------------------------------------------------------------------------------------------
// Checks the device geometry and the layout; on success *max_payload (optional) is the largest payload a slot takes.
PersistStatus CheckPersistLayout(const FlashDevice& flash, const PersistLayout& layout, uint32_t* max_payload);

// Writes `size` bytes as a new record with generation = newest valid generation + 1 (1 if there is none) into the
// slot that does NOT hold the newest valid record: erases the sectors the record needs (header sector first),
// writes the payload, verifies it by read-back CRC, then writes the header last (the commit) and verifies the
// record. The slot with the newest valid record is never erased or written, so a failure or power cut at any point
// leaves it loadable. `meta` and `report` may be null (meta null = zeros).
// Errors: kBadArgument (payload null, size 0), kBadLayout, kPayloadTooLarge (nothing touched for these three);
// kFlashError (device error, e.g. power loss), kVerifyFailed (read-back mismatch: worn flash, or the payload
// buffer changed during the save) -- then the new record is not committed or not trusted and the previous one is
// still what LoadWeights returns. `report` (if given) is written on every return except the first three errors.
PersistStatus SaveWeights(FlashDevice& flash, const PersistLayout& layout, const void* payload, uint32_t size,
                          const RecordMeta* meta, SaveReport* report);

// Validates both slots (header CRC, then payload CRC streamed through a stack buffer) and fills *report: which slot
// holds the newest valid record (serial-number arithmetic on the 32-bit generation: a is newer than b iff
// int32(a - b) > 0; ties and the ambiguous distance 2^31 go to slot 0). Does not copy a payload. Returns kOk,
// kNoValidWeights, kFlashError, or an argument/layout error (report untouched for those).
PersistStatus InspectWeights(FlashDevice& flash, const PersistLayout& layout, LoadReport* report);

// InspectWeights, then copies the newest valid payload into `payload` and re-checks its CRC on the copy.
// `report` may be null. The payload is only written once a valid record has been found and fits, so argument
// errors, kNoValidWeights, kBufferTooSmall (the report gives the size needed) and a kFlashError while validating
// leave `payload` untouched. Only a failure during the copy itself -- kFlashError, or kVerifyFailed when the flash
// reads back differently the second time (unstable cells) -- leaves the buffer content unspecified.
PersistStatus LoadWeights(FlashDevice& flash, const PersistLayout& layout, void* payload, uint32_t capacity,
                          LoadReport* report);

// ---- streamed payloads (gather / scatter) -----------------------------------------------------------------------
// The payload need not be one contiguous RAM buffer: SaveWeightsFrom pulls it from a PayloadSource and
// LoadWeightsInto pushes it into a PayloadSink, in pieces of at most kStreamChunk bytes at ascending offsets
// (through the functions' own stack buffer), e.g. straight from and into the tensors that hold the state. Same
// on-flash records, same guarantees as SaveWeights / LoadWeights.
constexpr uint32_t kStreamChunk = 128;

class PayloadSource {
 public:
  // Copies payload bytes [offset, offset + n) into `out` (n >= 1, offset + n <= size); false when it cannot.
  // Must give the same bytes every time for the same range while the save runs (SaveWeightsFrom reads the
  // payload twice: once for its CRC, once to write it; a change in between is caught, see below).
  virtual bool Read(uint32_t offset, void* out, uint32_t n) = 0;

 protected:
  PayloadSource() = default;
  PayloadSource(const PayloadSource&) = default;
  PayloadSource& operator=(const PayloadSource&) = default;
  ~PayloadSource() = default;
};

class PayloadSink {
 public:
  // Receives payload bytes [offset, offset + n); false aborts the load. Called only with bytes of a record whose
  // CRC has been checked, in ascending order, covering [0, size) exactly once.
  virtual bool Write(uint32_t offset, const void* data, uint32_t n) = 0;

 protected:
  PayloadSink() = default;
  PayloadSink(const PayloadSink&) = default;
  PayloadSink& operator=(const PayloadSink&) = default;
  ~PayloadSink() = default;
};

// SaveWeights with the payload read from `source`: a first pass computes its CRC (a source failure here returns
// kPayloadIoError before the flash is touched), then the save proceeds exactly as SaveWeights, reading the source
// again chunk by chunk to write it. The read-back check compares the flash with the first pass's CRC, so a source
// that changed between the passes gives kVerifyFailed and nothing is committed. A source failure during the second
// pass gives kPayloadIoError with the target slot erased but uncommitted. In every failure the previous newest
// record stays untouched and loadable. The bytes on flash are those SaveWeights writes for the same payload.
PersistStatus SaveWeightsFrom(FlashDevice& flash, const PersistLayout& layout, PayloadSource& source, uint32_t size,
                              const RecordMeta* meta, SaveReport* report);

// LoadWeights with the payload pushed into `sink`: InspectWeights first (both slots' CRCs over the flash), so the
// sink is not called at all unless the newest valid record has been found and its size is <= `capacity` (argument
// errors, kNoValidWeights, kBufferTooSmall and a kFlashError while validating leave the sink's target untouched).
// Then the payload is read a second time, chunk by chunk, handed to the sink and its CRC re-checked: a kFlashError,
// a kPayloadIoError (the sink returned false) or a kVerifyFailed (the flash read back differently the second time)
// during that pass leaves what the sink received so far unspecified.
PersistStatus LoadWeightsInto(FlashDevice& flash, const PersistLayout& layout, PayloadSink& sink, uint32_t capacity,
                              LoadReport* report);

}  // namespace tinyprop

#endif  // TINYPROP_PERSIST_H_
