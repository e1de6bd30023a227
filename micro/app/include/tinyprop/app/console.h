// Where the training app's report goes, and the clock it times steps with: the platform's part (printf and
// esp_timer / k_uptime_get on the boards, a capture buffer in the host tests).
#ifndef TINYPROP_APP_CONSOLE_H_
#define TINYPROP_APP_CONSOLE_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyprop {
namespace app {

class Console {
 public:
  virtual void Write(const char* text) = 0;  // text as is (lines end with '\n')
  virtual int64_t Millis() = 0;              // monotonic milliseconds
  virtual void Yield() = 0;                  // between steps: lets the idle task / watchdog run
  // A free-running counter finer than Millis for the step trace (TrainingConfig::trace_steps): the emulated
  // board's SysTick of QEMU's virtual time (instructions = ticks x 0.625 on mps2-an386); 0 where there is none.
  virtual uint64_t Ticks() { return 0; }

  // printf-style into a bounded buffer, then Write (longer output is cut at kLineBytes - 1).
  void Printf(const char* format, ...) __attribute__((format(printf, 2, 3)));
  static constexpr size_t kLineBytes = 160;

 protected:
  Console() = default;
  Console(const Console&) = default;
  Console& operator=(const Console&) = default;
  ~Console() = default;
};

// `value` as text without %f (not every embedded libc formats floats): "nan", "-inf", "0.123457",
// "1.500000e7". Always NUL-terminated when size > 0.
void FormatFloat(float value, char* out, size_t size);

}  // namespace app
}  // namespace tinyprop

#endif  // TINYPROP_APP_CONSOLE_H_
