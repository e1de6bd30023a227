// The Zephyr side of the training app: a devicetree flash partition (flash_area) as a tinyprop::FlashDevice,
// and printf / k_uptime_get / k_yield as its Console.
#ifndef TINYPROP_APP_ZEPHYR_PLATFORM_H_
#define TINYPROP_APP_ZEPHYR_PLATFORM_H_

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <zephyr/drivers/flash.h>
#include <zephyr/kernel.h>
#include <zephyr/storage/flash_map.h>

#include "tinyprop/app/console.h"
#include "tinyprop/persist.h"

namespace tinyprop {
namespace app {

class FlashAreaDevice final : public FlashDevice {
 public:
  FlashAreaDevice(const struct flash_area* area, uint32_t sector, uint32_t write_block)
      : area_(area), sector_(sector), write_block_(write_block) {}
  uint32_t Size() const override { return static_cast<uint32_t>(area_->fa_size); }
  uint32_t SectorSize() const override { return sector_; }
  uint32_t WriteBlockSize() const override { return write_block_; }
  int32_t Read(uint32_t offset, void* buffer, uint32_t n) override {
    return flash_area_read(area_, static_cast<off_t>(offset), buffer, n);
  }
  int32_t Erase(uint32_t sector) override {
    return flash_area_erase(area_, static_cast<off_t>(sector) * sector_, sector_);
  }
  int32_t Write(uint32_t offset, const void* data, uint32_t n) override {
    return flash_area_write(area_, static_cast<off_t>(offset), data, n);
  }

  // The erase and write units of an open area; false when its pages differ in size (the persistence needs one
  // erase size over the whole partition; nRF52/nRF53 have uniform 4 KiB pages).
  static bool Geometry(const struct flash_area* area, uint32_t* sector, uint32_t* write_block) {
    struct flash_pages_info first;
    struct flash_pages_info last;
    const struct device* device = flash_area_get_device(area);
    if (flash_get_page_info_by_offs(device, area->fa_off, &first) != 0 ||
        flash_get_page_info_by_offs(device, area->fa_off + static_cast<off_t>(area->fa_size) - 1, &last) != 0 ||
        first.size != last.size) {
      return false;
    }
    *sector = static_cast<uint32_t>(first.size);
    const uint32_t align = static_cast<uint32_t>(flash_area_align(area));
    *write_block = align == 0 ? 1 : align;
    return true;
  }

 private:
  const struct flash_area* area_;
  uint32_t sector_;
  uint32_t write_block_;
};

class ZephyrConsole final : public Console {
 public:
  void Write(const char* text) override { fputs(text, stdout); }
  int64_t Millis() override { return k_uptime_get(); }
  void Yield() override { k_yield(); }
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_ZEPHYR_PLATFORM_H_
