#include "tinyprop/app/console.h"

#include <stdarg.h>
#include <stdio.h>

namespace tinyprop {
namespace app {

void Console::Printf(const char* format, ...) {
  char line[kLineBytes];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof(line), format, args);
  va_end(args);
  Write(line);
}

void FormatFloat(float value, char* out, size_t size) {
  if (size == 0) return;
  if (value != value) {
    snprintf(out, size, "nan");
    return;
  }
  const char* sign = value < 0.0f ? "-" : "";
  float magnitude = value < 0.0f ? -value : value;
  if (magnitude > 3.4e38f) {
    snprintf(out, size, "%sinf", sign);
    return;
  }
  // Scientific notation outside [1e-3, 1e7), where six decimals would lose the value or unsigned long overflow.
  int exponent = 0;
  if (magnitude != 0.0f && (magnitude >= 1.0e7f || magnitude < 1.0e-3f)) {
    while (magnitude >= 10.0f) {
      magnitude /= 10.0f;
      ++exponent;
    }
    while (magnitude < 1.0f) {
      magnitude *= 10.0f;
      --exponent;
    }
  }
  unsigned long whole = static_cast<unsigned long>(magnitude);
  unsigned long frac =
      static_cast<unsigned long>((magnitude - static_cast<float>(whole)) * 1000000.0f + 0.5f);
  if (frac >= 1000000ul) {
    whole += 1;
    frac -= 1000000ul;
  }
  if (exponent != 0) {
    snprintf(out, size, "%s%lu.%06lue%d", sign, whole, frac, exponent);
  } else {
    snprintf(out, size, "%s%lu.%06lu", sign, whole, frac);
  }
}

}  // namespace app
}  // namespace tinyprop
