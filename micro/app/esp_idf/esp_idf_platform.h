// The ESP-IDF side of the training app: the "tinyprop" data partition (partitions.csv) as a
// tinyprop::FlashDevice, and stdout / esp_timer / FreeRTOS as its Console.
#ifndef TINYPROP_APP_ESP_IDF_PLATFORM_H_
#define TINYPROP_APP_ESP_IDF_PLATFORM_H_

#include <stdint.h>
#include <stdio.h>

#include "esp_err.h"
#include "esp_partition.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "tinyprop/app/console.h"
#include "tinyprop/persist.h"

namespace tinyprop {
namespace app {

class PartitionFlash final : public FlashDevice {
 public:
  explicit PartitionFlash(const esp_partition_t* partition) : partition_(partition) {}
  uint32_t Size() const override { return static_cast<uint32_t>(partition_->size); }
  uint32_t SectorSize() const override { return static_cast<uint32_t>(partition_->erase_size); }
  // Flash encryption writes 16-byte blocks; otherwise any byte can be programmed.
  uint32_t WriteBlockSize() const override { return partition_->encrypted ? 16 : 1; }
  int32_t Read(uint32_t offset, void* buffer, uint32_t n) override {
    return esp_partition_read(partition_, offset, buffer, n);
  }
  int32_t Erase(uint32_t sector) override {
    return esp_partition_erase_range(partition_, static_cast<size_t>(sector) * partition_->erase_size,
                                     partition_->erase_size);
  }
  int32_t Write(uint32_t offset, const void* data, uint32_t n) override {
    return esp_partition_write(partition_, offset, data, n);
  }

 private:
  const esp_partition_t* partition_;
};

class EspIdfConsole final : public Console {
 public:
  void Write(const char* text) override { fputs(text, stdout); }
  int64_t Millis() override { return esp_timer_get_time() / 1000; }
  // One tick lets the idle task run between steps (the task watchdog watches it).
  void Yield() override { vTaskDelay(1); }
};

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_ESP_IDF_PLATFORM_H_
