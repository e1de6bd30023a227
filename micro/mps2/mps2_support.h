// Support functions of the bare-metal QEMU MPS2 images (startup.c): the kernel bench and the TFLM runner.
#ifndef TINYPROP_MPS2_SUPPORT_H_
#define TINYPROP_MPS2_SUPPORT_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The semihosting command line ("<program> <args...>") into buffer; 0 on success. (main also gets it split.)
int mps2_cmdline(char* buffer, int size);
// Flushes stdio and ends the QEMU run with this status (0: success).
void mps2_exit(int status) __attribute__((noreturn));
// SysTick as a 64-bit up-counter of processor-clock ticks (under QEMU -icount: virtual time, i.e. instructions).
void ticks_init(void);
uint64_t ticks_now(void);
// The stack's size and the most of it used so far (painted at reset, scanned from its limit).
uint32_t mps2_stack_bytes(void);
uint32_t mps2_stack_high_water(void);
// The heap's size (the linker script's) and how much of it malloc has taken so far.
uint32_t mps2_heap_bytes(void);
uint32_t mps2_heap_used(void);
// The image's static RAM map on stdout, one "name value" line each: ram_bytes (the linker script's RAM: everything
// below is inside it), stack_bytes, data_bytes, bss_bytes, heap_bytes.
void mps2_print_ram_map(void);

#ifdef __cplusplus
}
#endif

#endif  // TINYPROP_MPS2_SUPPORT_H_
