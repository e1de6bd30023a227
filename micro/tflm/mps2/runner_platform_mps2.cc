// tinyprop_tflm_runner on QEMU's mps2-an386 (Cortex-M4F), linked by mps2/CMakeLists.txt against micro/mps2's
// startup and linker script with the RAM limited to a board's usable RAM.
//
// The model is read at run time into the free code memory ([__flash_free, __flash_end): on a device it sits in
// flash, so it is not RAM), which lets one image serve every model. The arena is the RAM the image leaves
// ([__arena_start, __arena_end): after the stack, .data, .bss and the heap), capped at the size asked for.
// Measures, one "name value" line each on stdout: the RAM map when the arena is set up (ram_bytes, stack_bytes,
// data_bytes, bss_bytes, heap_bytes, arena_available_bytes), per invoke "invoke_ticks STEP TICKS" (SysTick: under
// QEMU -icount, instructions = ticks x 0.625 on AN386; an instruction count, not cycles), and after the steps
// stack_high_water_bytes (the painted stack) and heap_used_bytes.
#include <cstdio>

#include "../runner_platform.h"
#include "mps2_support.h"

extern "C" char __flash_free, __flash_end, __arena_start, __arena_end;

namespace tinyprop::runner {
namespace {

uint64_t g_started;

}  // namespace

uint8_t* ModelBuffer(size_t bytes) {
  const size_t free_bytes = static_cast<size_t>(&__flash_end - &__flash_free);
  if (bytes > free_bytes) {
    std::fprintf(stderr, "model of %lu bytes does not fit the %lu bytes of free code memory\n",
                 static_cast<unsigned long>(bytes), static_cast<unsigned long>(free_bytes));
    return nullptr;
  }
  return reinterpret_cast<uint8_t*>(&__flash_free);
}

uint8_t* ArenaBuffer(long* bytes) {
  // The static RAM map first: a model whose arena does not fit stops at AllocateTensors, before Report.
  mps2_print_ram_map();
  const long available = static_cast<long>(&__arena_end - &__arena_start);
  std::printf("arena_available_bytes %ld\n", available);
  if (*bytes > available) *bytes = available;
  return reinterpret_cast<uint8_t*>(&__arena_start);
}

void InvokeStarts(long step) {
  if (step == 0) ticks_init();
  g_started = ticks_now();
}

void InvokeEnded(long step) {
  const uint64_t ticks = ticks_now() - g_started;
  std::printf("invoke_ticks %ld %llu\n", step, static_cast<unsigned long long>(ticks));
}

void Report() {
  std::printf("stack_high_water_bytes %lu\n", static_cast<unsigned long>(mps2_stack_high_water()));
  std::printf("heap_used_bytes %lu\n", static_cast<unsigned long>(mps2_heap_used()));
}

}  // namespace tinyprop::runner
