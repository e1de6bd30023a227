// Zephyr / nRF Connect SDK entry of the TinyProp on-device training app (micro/app): train on the compiled-in
// samples, keep the training state in the devicetree partition TINYPROP_STATE_PARTITION (see boards/*.overlay).
// Yours to edit (a regenerated project keeps an edited copy and writes the new one beside it as main.cpp.new):
// to train on live data, pass your own tinyprop::app::BatchSource (batches.h) instead of the compiled-in samples.
#include <stdio.h>

#include "tflm_training.h"
#include "tinyprop_app_config.h"
#include "zephyr_platform.h"

int main(void) {
  tinyprop::app::ZephyrConsole console;
  const struct flash_area* area = nullptr;
  if (flash_area_open(FIXED_PARTITION_ID(TINYPROP_STATE_PARTITION), &area) != 0) {
    printf("tinyprop: cannot open the state's flash partition\n");
    return 1;
  }
  uint32_t sector = 0;
  uint32_t write_block = 0;
  if (!tinyprop::app::FlashAreaDevice::Geometry(area, &sector, &write_block)) {
    printf("tinyprop: cannot read the flash page size, or it is not uniform over the partition\n");
    flash_area_close(area);
    return 1;
  }
  tinyprop::app::FlashAreaDevice flash(area, sector, write_block);
  tinyprop::app::SampleBatches batches(g_tinyprop_samples);
  const int status = tinyprop::app::RunTflmTraining(flash, batches, console);
  flash_area_close(area);
  printf("tinyprop: %s\n", status == 0 ? "done" : "FAILED");
  return status;
}
