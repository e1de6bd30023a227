// The emulated board's side of the training app (QEMU mps2-an386, Cortex-M4F, micro/mps2): a flash partition kept
// in a file on the host through semihosting, and the semihosted stdout and SysTick as its Console.
#ifndef TINYPROP_APP_MPS2_PLATFORM_H_
#define TINYPROP_APP_MPS2_PLATFORM_H_

#include <stdint.h>
#include <stdio.h>

#include "mps2_support.h"
#include "tinyprop/app/console.h"
#include "tinyprop/persist.h"

namespace tinyprop {
namespace app {

// NOR flash of `size` bytes in a host file (newlib's semihosted stdio): Erase writes 0xFF over a sector, Write
// clears bits only (new = old & data), as the nRF52's NVMC does, so micro/persist runs as on the board and a
// second boot over the same file restores what the first saved. A missing or short file is erased flash.
class SemihostedFileFlash final : public FlashDevice {
 public:
  static constexpr uint32_t kSectorBytes = 4096;  // nRF52840 / nRF5340 page
  static constexpr uint32_t kWriteBlockBytes = 4;  // NVMC word

  SemihostedFileFlash(const char* path, uint32_t size) : size_(size) {
    file_ = fopen(path, "r+b");
    if (file_ == nullptr) file_ = fopen(path, "w+b");
    if (file_ == nullptr || fseek(file_, 0, SEEK_END) != 0) return;
    const long have = ftell(file_);
    for (long at = have < 0 ? 0 : have; at < static_cast<long>(size_); ++at) {  // erased
      if (fputc(0xFF, file_) == EOF) return;
    }
    ok_ = fflush(file_) == 0;
  }
  ~SemihostedFileFlash() {
    if (file_ != nullptr) fclose(file_);
  }
  SemihostedFileFlash(const SemihostedFileFlash&) = delete;
  SemihostedFileFlash& operator=(const SemihostedFileFlash&) = delete;

  bool ok() const { return ok_; }
  uint32_t Size() const override { return size_; }
  uint32_t SectorSize() const override { return kSectorBytes; }
  uint32_t WriteBlockSize() const override { return kWriteBlockBytes; }
  int32_t Read(uint32_t offset, void* buffer, uint32_t n) override {
    return At(offset) && fread(buffer, 1, n, file_) == n ? 0 : -1;
  }
  int32_t Erase(uint32_t sector) override {
    if (!At(sector * kSectorBytes)) return -1;
    for (uint32_t i = 0; i < kSectorBytes; ++i) {
      if (fputc(0xFF, file_) == EOF) return -1;
    }
    return fflush(file_) == 0 ? 0 : -1;
  }
  int32_t Write(uint32_t offset, const void* data, uint32_t n) override {
    const uint8_t* bytes = static_cast<const uint8_t*>(data);
    uint8_t old[kWriteBlockBytes];
    for (uint32_t done = 0; done < n; done += kWriteBlockBytes) {
      const uint32_t len = n - done < kWriteBlockBytes ? n - done : kWriteBlockBytes;
      if (Read(offset + done, old, len) != 0 || !At(offset + done)) return -1;
      for (uint32_t i = 0; i < len; ++i) old[i] = static_cast<uint8_t>(old[i] & bytes[done + i]);
      if (fwrite(old, 1, len, file_) != len) return -1;
    }
    return fflush(file_) == 0 ? 0 : -1;
  }

 private:
  bool At(uint32_t offset) { return ok_ && fseek(file_, static_cast<long>(offset), SEEK_SET) == 0; }

  FILE* file_ = nullptr;
  uint32_t size_;
  bool ok_ = false;
};

// stdout (semihosted); SysTick under QEMU -icount is virtual time: 25 MHz on AN386, 1.6 ticks per instruction.
class Mps2Console final : public Console {
 public:
  static constexpr uint64_t kTicksPerMilli = 25000;

  Mps2Console() { ticks_init(); }
  void Write(const char* text) override { fputs(text, stdout); }
  int64_t Millis() override { return static_cast<int64_t>(ticks_now() / kTicksPerMilli); }
  void Yield() override {}
  uint64_t Ticks() override { return ticks_now(); }
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_MPS2_PLATFORM_H_
