// The training app on the emulated Cortex-M4F (QEMU mps2-an386): the same micro/app sources and generated data a
// Zephyr / ESP-IDF project builds, with a flash partition kept in a host file, and every step traced
// (TINYPROP_TRACE_STEPS) for the host's check against its reference (converters/m4_app.py).
//
//   qemu-system-arm -M mps2-an386 ... -kernel tinyprop_app_mps2 -append "FLASH_FILE"   (argv[0]: the ELF path)
//
// Prints the image's RAM map first and, after the boot, the stack's high-water mark and the heap used, as
// "name value" lines. Exit status: RunTflmTraining's (0 done, 1 a reported failure), 2 bad arguments or flash.
#include <stdio.h>

#include "mps2_platform.h"
#include "mps2_support.h"
#include "tflm_training.h"
#include "tinyprop_app_config.h"

int main(int argc, char** argv) {
  mps2_print_ram_map();
  if (argc != 2) {
    fprintf(stderr, "usage: tinyprop_app_mps2 FLASH_FILE\n");
    return 2;
  }
  tinyprop::app::SemihostedFileFlash flash(argv[1], TINYPROP_STATE_PARTITION_BYTES);
  if (!flash.ok()) {
    fprintf(stderr, "cannot open %s as the state's flash\n", argv[1]);
    return 2;
  }
  tinyprop::app::Mps2Console console;
  tinyprop::app::SampleBatches batches(g_tinyprop_samples);
  const int status = tinyprop::app::RunTflmTraining(flash, batches, console);
  printf("stack_high_water_bytes %lu\nheap_used_bytes %lu\n", static_cast<unsigned long>(mps2_stack_high_water()),
         static_cast<unsigned long>(mps2_heap_used()));
  printf("tinyprop: %s\n", status == 0 ? "done" : "FAILED");
  return status;
}
