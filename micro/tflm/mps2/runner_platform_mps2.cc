// tinyprop_tflm_runner on QEMU's mps2-an386 (Cortex-M4F), linked by mps2/CMakeLists.txt against micro/mps2's
// startup and linker script with the RAM limited to a board's usable RAM.
//
// The model is read at run time into the free code memory ([__flash_free, __flash_end): on a device it sits in
// flash, so it is not RAM), which lets one image serve every model. The arena is the RAM the image leaves
// ([__arena_start, __arena_end): after the stack, .data, .bss and the heap), capped at the size asked for.
// Measures, one "name value" line each on stdout: the RAM map when the arena is set up (ram_bytes, stack_bytes,
// data_bytes, bss_bytes, heap_bytes, arena_available_bytes), per invoke "invoke_ticks STEP TICKS" (SysTick: under
// QEMU -icount, instructions = ticks x 0.625 on AN386; an instruction count, not cycles), and after the steps
// stack_high_water_bytes (the painted stack) and heap_used_bytes. Per operator of each invoke, after its
// invoke_ticks line: "op_ticks STEP INDEX TICKS NAME" (TFLM's per-operator profiler events, kept in a table during
// the invoke and printed after it, so printing is not counted; each event's own tick reads, a few dozen
// instructions, are in the invoke's count).
#include <cstdio>

#include "../runner_platform.h"
#include "mps2_support.h"

extern "C" char __flash_free, __flash_end, __arena_start, __arena_end;

namespace tinyprop::runner {
namespace {

uint64_t g_started;

// The operators' Eval calls of one invoke: name and ticks, in order.
class OpTicks : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    if (count_ == kMaxEvents) return kMaxEvents;  // more operators than the table: the rest go uncounted
    events_[count_] = Event{tag, static_cast<uint32_t>(ticks_now()), 0};
    return count_++;
  }
  void EndEvent(uint32_t handle) override {
    // Modulo 2^32: one operator takes far fewer ticks.
    if (handle < kMaxEvents) events_[handle].ticks = static_cast<uint32_t>(ticks_now()) - events_[handle].start;
  }
  void Print(long step) {
    for (uint32_t i = 0; i < count_; ++i) {
      std::printf("op_ticks %ld %lu %lu %s\n", step, static_cast<unsigned long>(i),
                  static_cast<unsigned long>(events_[i].ticks), events_[i].tag);
    }
    count_ = 0;
  }

 private:
  struct Event {
    const char* tag;
    uint32_t start;
    uint32_t ticks;
  };
  static constexpr uint32_t kMaxEvents = 256;  // 3 KB of .bss
  Event events_[kMaxEvents];
  uint32_t count_ = 0;
};

OpTicks g_op_ticks;

}  // namespace

tflite::MicroProfilerInterface* Profiler() { return &g_op_ticks; }

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
  g_op_ticks.Print(step);
}

void Report() {
  std::printf("stack_high_water_bytes %lu\n", static_cast<unsigned long>(mps2_stack_high_water()));
  std::printf("heap_used_bytes %lu\n", static_cast<unsigned long>(mps2_heap_used()));
}

}  // namespace tinyprop::runner
