// Support functions of the bare-metal bench (startup.c).
#ifndef TINYPROP_BENCH_SUPPORT_H_
#define TINYPROP_BENCH_SUPPORT_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The semihosting command line ("<program> <args...>") into buffer; 0 on success.
int bench_cmdline(char* buffer, int size);
// Flushes stdio and ends the QEMU run with this status (0: success).
void bench_exit(int status) __attribute__((noreturn));
// SysTick as a 64-bit up-counter of processor-clock ticks (under QEMU -icount: virtual time, i.e. instructions).
void ticks_init(void);
uint64_t ticks_now(void);

#ifdef __cplusplus
}
#endif

#endif  // TINYPROP_BENCH_SUPPORT_H_
