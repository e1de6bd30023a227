// ESP-IDF entry of the TinyProp on-device training app (micro/app): train on the compiled-in samples, keep the
// training state in the data partition TINYPROP_STATE_PARTITION of partitions.csv. Yours to edit (a regenerated
// project keeps an edited copy and writes the new one beside it as main.cc.new): to train on live data, pass
// your own tinyprop::app::BatchSource (batches.h) instead of the compiled-in samples.
#include <stdio.h>

#include "esp_idf_platform.h"
#include "tflm_training.h"
#include "tinyprop_app_config.h"

#define TINYPROP_NAME_OF(token) TINYPROP_NAME_OF_EXPANDED(token)
#define TINYPROP_NAME_OF_EXPANDED(token) #token

extern "C" void app_main(void) {
  tinyprop::app::EspIdfConsole console;
  const esp_partition_t* partition =
      esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_ANY,
                               TINYPROP_NAME_OF(TINYPROP_STATE_PARTITION));
  if (partition == nullptr) {
    printf("tinyprop: no '%s' data partition: flash the partition table of partitions.csv\n",
           TINYPROP_NAME_OF(TINYPROP_STATE_PARTITION));
    return;
  }
  tinyprop::app::PartitionFlash flash(partition);
  tinyprop::app::SampleBatches batches(g_tinyprop_samples);
  const int status = tinyprop::app::RunTflmTraining(flash, batches, console);
  printf("tinyprop: %s\n", status == 0 ? "done" : "FAILED");
}
