// In-memory simulated NOR flash with fault injection, for host tests (and on-target self-tests: it allocates
// nothing, the caller provides the storage).
//
// Semantics: Erase sets a sector to 0xFF; Write ANDs data into the array (bits can only be cleared); offsets and
// lengths of writes must be multiples of the write block. Faults:
//   - power cut: ArmPowerCut(n) lets exactly n more "byte operations" (one per byte erased or written) happen. The
//     operation that would do byte n+1 is truncated there -- the bytes before it are done, the rest untouched --
//     and fails, and every later Read / Erase / Write fails too, until Reboot(). Optionally the byte at the cut is
//     left half-done (some of its bits changed, others not), as a real cell interrupted mid-program/erase can be.
//   - bit flips (FlipBit) and bits stuck at 1 that no write can clear (StuckBit, worn-out cells).
//   - forbid_reprogram: a write to a block that was written since its last erase fails (ECC flash such as
//     STM32L4/H7 or nRF RRAM in some modes cannot program a block twice).
#ifndef TINYPROP_PERSIST_SIM_FLASH_H_
#define TINYPROP_PERSIST_SIM_FLASH_H_

#include <stddef.h>
#include <stdint.h>

#include "tinyprop/persist.h"

namespace tinyprop {

class SimFlash final : public FlashDevice {
 public:
  static constexpr int32_t kErrPowerOff = -5;   // like -EIO
  static constexpr int32_t kErrInvalid = -22;   // like -EINVAL: out of range, misaligned
  static constexpr int32_t kErrReprogram = -1;  // forbid_reprogram violated

  struct Config {
    uint32_t size;         // bytes, a nonzero multiple of sector_size
    uint32_t sector_size;  // a nonzero multiple of write_block
    uint32_t write_block;  // power of two
    bool forbid_reprogram;
    bool partial_cut_byte;  // the byte at a power cut is half-programmed / half-erased
  };

  // `storage` must hold config.size bytes (and, with forbid_reprogram, `block_flags` size / write_block bytes;
  // may be null otherwise). Both stay owned by the caller. The content is set to 0xFF (erased).
  SimFlash(const Config& config, uint8_t* storage, uint8_t* block_flags);

  // Whether the constructor's arguments were usable; if not, every operation returns kErrInvalid.
  bool ok() const { return ok_; }

  uint32_t Size() const override { return config_.size; }
  uint32_t SectorSize() const override { return config_.sector_size; }
  uint32_t WriteBlockSize() const override { return config_.write_block; }
  int32_t Read(uint32_t offset, void* buffer, uint32_t n) override;
  int32_t Erase(uint32_t sector) override;
  int32_t Write(uint32_t offset, const void* data, uint32_t n) override;

  // ---- fault injection and inspection ----
  void ArmPowerCut(uint64_t byte_ops);
  void DisarmPowerCut() { cut_armed_ = false; }
  bool powered_off() const { return powered_off_; }
  void Reboot();  // power back on; the contents stay as they are; disarms the cut
  void FlipBit(uint32_t offset, uint32_t bit);
  // Marks one bit as stuck at 1 (writes cannot clear it); offset = size (out of range) clears the stuck bit.
  void StuckBit(uint32_t offset, uint32_t bit);

  uint64_t byte_ops() const { return byte_ops_; }  // bytes erased + bytes written since construction
  uint32_t erase_count() const { return erase_count_; }
  uint32_t write_count() const { return write_count_; }
  uint32_t read_count() const { return read_count_; }
  const uint8_t* data() const { return storage_; }
  uint8_t* mutable_data() { return storage_; }  // direct access for tests (no semantics enforced)

 private:
  // Consumes one byte operation; false if the power fails at this byte.
  bool Tick();
  uint8_t PartialMask(uint32_t offset) const;

  Config config_;
  uint8_t* storage_;
  uint8_t* block_flags_;
  bool ok_;
  bool cut_armed_ = false;
  bool powered_off_ = false;
  uint64_t cut_remaining_ = 0;
  uint64_t byte_ops_ = 0;
  uint32_t erase_count_ = 0;
  uint32_t write_count_ = 0;
  uint32_t read_count_ = 0;
  uint32_t stuck_offset_;
  uint8_t stuck_mask_ = 0;
};

}  // namespace tinyprop

#endif  // TINYPROP_PERSIST_SIM_FLASH_H_
