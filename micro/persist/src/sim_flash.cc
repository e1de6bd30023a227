// In-memory NOR flash with power-cut / bit-flip injection: see include/tinyprop/persist_sim_flash.h.
#include "tinyprop/persist_sim_flash.h"

#include <string.h>

namespace tinyprop {

SimFlash::SimFlash(const Config& config, uint8_t* storage, uint8_t* block_flags)
    : config_(config), storage_(storage), block_flags_(block_flags), ok_(false), stuck_offset_(config.size) {
  const uint32_t wb = config.write_block;
  if (storage == nullptr || wb == 0 || (wb & (wb - 1)) != 0 || config.sector_size == 0 ||
      config.sector_size % wb != 0 || config.size == 0 || config.size % config.sector_size != 0 ||
      (config.forbid_reprogram && block_flags == nullptr)) {
    return;
  }
  ok_ = true;
  memset(storage_, 0xFF, config.size);
  if (config.forbid_reprogram) memset(block_flags_, 0, config.size / wb);
}

bool SimFlash::Tick() {
  if (cut_armed_) {
    if (cut_remaining_ == 0) {
      cut_armed_ = false;
      powered_off_ = true;
      return false;
    }
    --cut_remaining_;
  }
  ++byte_ops_;
  return true;
}

uint8_t SimFlash::PartialMask(uint32_t offset) const {
  const uint32_t r = offset % 8u;
  return static_cast<uint8_t>((0x5Au << r) | (0x5Au >> (8u - r)));  // a rotating mix of done / not-done bits
}

int32_t SimFlash::Read(uint32_t offset, void* buffer, uint32_t n) {
  if (!ok_) return kErrInvalid;
  if (powered_off_) return kErrPowerOff;
  if ((buffer == nullptr && n > 0) || static_cast<uint64_t>(offset) + n > config_.size) return kErrInvalid;
  ++read_count_;
  if (n > 0) memcpy(buffer, storage_ + offset, n);
  return 0;
}

int32_t SimFlash::Erase(uint32_t sector) {
  if (!ok_) return kErrInvalid;
  if (powered_off_) return kErrPowerOff;
  if (sector >= config_.size / config_.sector_size) return kErrInvalid;
  ++erase_count_;
  const uint32_t begin = sector * config_.sector_size;
  for (uint32_t o = begin; o < begin + config_.sector_size; ++o) {
    if (!Tick()) {
      if (config_.partial_cut_byte) storage_[o] = static_cast<uint8_t>(storage_[o] | PartialMask(o));
      if (o == stuck_offset_) storage_[o] = static_cast<uint8_t>(storage_[o] | stuck_mask_);
      return kErrPowerOff;  // block flags stay set: a half-erased sector still needs a full erase
    }
    storage_[o] = 0xFF;
  }
  if (config_.forbid_reprogram) {
    const uint32_t wb = config_.write_block;
    memset(block_flags_ + begin / wb, 0, config_.sector_size / wb);
  }
  return 0;
}

int32_t SimFlash::Write(uint32_t offset, const void* data, uint32_t n) {
  if (!ok_) return kErrInvalid;
  if (powered_off_) return kErrPowerOff;
  const uint32_t wb = config_.write_block;
  if ((data == nullptr && n > 0) || static_cast<uint64_t>(offset) + n > config_.size || offset % wb != 0 ||
      n % wb != 0) {
    return kErrInvalid;
  }
  if (config_.forbid_reprogram) {
    for (uint32_t b = offset / wb; b < (offset + n) / wb; ++b) {
      if (block_flags_[b] != 0) return kErrReprogram;
    }
  }
  ++write_count_;
  const uint8_t* d = static_cast<const uint8_t*>(data);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t o = offset + i;
    if (config_.forbid_reprogram) block_flags_[o / wb] = 1;
    if (!Tick()) {
      if (config_.partial_cut_byte) storage_[o] = static_cast<uint8_t>(storage_[o] & (d[i] | PartialMask(o)));
      if (o == stuck_offset_) storage_[o] = static_cast<uint8_t>(storage_[o] | stuck_mask_);
      return kErrPowerOff;
    }
    storage_[o] = static_cast<uint8_t>(storage_[o] & d[i]);
    if (o == stuck_offset_) storage_[o] = static_cast<uint8_t>(storage_[o] | stuck_mask_);
  }
  return 0;
}

void SimFlash::ArmPowerCut(uint64_t byte_ops) {
  cut_armed_ = true;
  cut_remaining_ = byte_ops;
}

void SimFlash::Reboot() {
  powered_off_ = false;
  cut_armed_ = false;
}

void SimFlash::FlipBit(uint32_t offset, uint32_t bit) {
  if (!ok_ || offset >= config_.size) return;
  storage_[offset] = static_cast<uint8_t>(storage_[offset] ^ (1u << (bit & 7u)));
}

void SimFlash::StuckBit(uint32_t offset, uint32_t bit) {
  if (!ok_ || offset >= config_.size) {
    stuck_offset_ = config_.size;
    stuck_mask_ = 0;
    return;
  }
  stuck_offset_ = offset;
  stuck_mask_ = static_cast<uint8_t>(1u << (bit & 7u));
  storage_[offset] = static_cast<uint8_t>(storage_[offset] | stuck_mask_);
}

}  // namespace tinyprop
