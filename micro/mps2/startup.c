// Bare-metal startup for QEMU's MPS2 boards (mps2-an386 Cortex-M4F, mps2-an505 Cortex-M33), shared by the kernel
// bench (micro/bench) and the TFLM runner (micro/tflm/mps2): vector table, reset handler (FPU on before any C
// code), .data/.bss init, a painted stack (high-water mark), static constructors, a heap bounded by the linker
// script, semihosting helpers (command line as argc/argv, exit with a status), and a 64-bit SysTick tick counter
// (24-bit down-counter + wrap count from its interrupt). Memory layout: sections.ld.
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mps2_support.h"

extern uint32_t __stack_limit, __stack_top;
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern char __heap_start, __heap_end;
extern void (*__preinit_array_start[])(void), (*__preinit_array_end[])(void);
extern void (*__init_array_start[])(void), (*__init_array_end[])(void);
extern int main(int argc, char** argv);
extern void initialise_monitor_handles(void);  // newlib rdimon: opens the semihosting stdin/stdout/stderr

void Reset_Handler(void) __attribute__((naked, noreturn));
void Fault_Handler(void);
void SysTick_Handler(void);
static void reset_c(void) __attribute__((noreturn, used));

// C++ objects with static storage register their destructors against it (__cxa_atexit); -nostartfiles drops
// crtbegin, which would define it.
void* __dso_handle = 0;

#define REG32(addr) (*(volatile uint32_t*)(addr))
#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SCB_ICSR REG32(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define STACK_PAINT 0xC5C5C5C5u

// Cortex-M vector table: initial SP, reset, the 13 system exceptions. No external interrupt is enabled.
__attribute__((section(".isr_vector"), used)) void (*const g_vectors[16])(void) = {
    (void (*)(void))(&__stack_top),
    Reset_Handler,
    Fault_Handler,  // NMI
    Fault_Handler,  // HardFault
    Fault_Handler,  // MemManage
    Fault_Handler,  // BusFault
    Fault_Handler,  // UsageFault
    Fault_Handler,  // SecureFault (ARMv8-M)
    0, 0, 0,
    Fault_Handler,  // SVCall
    Fault_Handler,  // DebugMonitor
    0,
    Fault_Handler,  // PendSV
    SysTick_Handler,
};

// Enable CP10/CP11 (the FPU) in CPACR first: the C code below is compiled with -mfloat-abi=hard.
void Reset_Handler(void) {
  __asm volatile(
      "ldr r0, =0xE000ED88\n"
      "ldr r1, [r0]\n"
      "orr r1, r1, #(0xF << 20)\n"
      "str r1, [r0]\n"
      "dsb\n"
      "isb\n"
      "b reset_c\n");
}

static char g_cmdline[1024];
static char* g_argv[32];

// The semihosting command line split at spaces (no quoting: the runner's paths have none).
static int split_cmdline(void) {
  int argc = 0;
  if (mps2_cmdline(g_cmdline, sizeof g_cmdline) != 0) return 0;
  for (char* p = g_cmdline; *p != '\0' && argc < (int)(sizeof g_argv / sizeof g_argv[0]) - 1;) {
    while (*p == ' ') *p++ = '\0';
    if (*p == '\0') break;
    g_argv[argc++] = p;
    while (*p != '\0' && *p != ' ') ++p;
  }
  g_argv[argc] = 0;
  return argc;
}

static void reset_c(void) {
  // Paint the stack below this frame (the reset handler runs at its top), so the high-water mark can be read.
  uintptr_t sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (volatile uint32_t* p = &__stack_limit; (uintptr_t)p < sp - 64;) *p++ = STACK_PAINT;
  const uint32_t* src = &__data_load;
  for (uint32_t* dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  initialise_monitor_handles();
  // Static constructors (C++ globals: TFLM has some) before main, as crt0 would.
  for (void (**f)(void) = __preinit_array_start; f < __preinit_array_end; ++f) (*f)();
  for (void (**f)(void) = __init_array_start; f < __init_array_end; ++f) (*f)();
  const int argc = split_cmdline();
  mps2_exit(main(argc, g_argv));
}

uint32_t mps2_stack_bytes(void) { return (uint32_t)((char*)&__stack_top - (char*)&__stack_limit); }

uint32_t mps2_stack_high_water(void) {
  const uint32_t* p = &__stack_limit;
  while (p < &__stack_top && *p == STACK_PAINT) ++p;
  return (uint32_t)((const char*)&__stack_top - (const char*)p);
}

// ---- heap: newlib's malloc grows it within [__heap_start, __heap_end) (libgloss's _sbrk would grow it up to
// the stack pointer, which sits below it here) -----------------------------------------------------------------
static char* g_break = &__heap_start;

void* _sbrk(ptrdiff_t increment) {
  if (increment > &__heap_end - g_break || increment < &__heap_start - g_break) {
    errno = ENOMEM;
    return (void*)-1;
  }
  char* previous = g_break;
  g_break += increment;
  return previous;
}

uint32_t mps2_heap_bytes(void) { return (uint32_t)(&__heap_end - &__heap_start); }

uint32_t mps2_heap_used(void) { return (uint32_t)(g_break - &__heap_start); }

extern char __arena_end;  // the end of RAM (sections.ld)

void mps2_print_ram_map(void) {
  printf("ram_bytes %ld\n", (long)(&__arena_end - (char*)&__stack_limit));
  printf("stack_bytes %lu\n", (unsigned long)mps2_stack_bytes());
  printf("data_bytes %ld\nbss_bytes %ld\n", (long)((char*)&__data_end - (char*)&__data_start),
         (long)((char*)&__bss_end - (char*)&__bss_start));
  printf("heap_bytes %lu\n", (unsigned long)mps2_heap_bytes());
}

// ---- semihosting ------------------------------------------------------------------------------------------
static int32_t semihost(uint32_t op, void* arg) {
  register uint32_t r0 __asm("r0") = op;
  register void* r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return (int32_t)r0;
}

enum { kSysWrite0 = 0x04, kSysGetCmdline = 0x15, kSysExit = 0x18, kSysExitExtended = 0x20 };
enum { kAdpApplicationExit = 0x20026, kAdpRunTimeErrorUnknown = 0x20023 };

int mps2_cmdline(char* buffer, int size) {
  struct {
    char* buffer;
    int32_t size;
  } block = {buffer, size};
  return semihost(kSysGetCmdline, &block) == 0 ? 0 : -1;
}

void mps2_exit(int status) {
  fflush(stdout);
  fflush(stderr);
  if (status != 0) {
    // SYS_EXIT_EXTENDED carries the status (QEMU exits with it); plain SYS_EXIT can only say "error" (1).
    uint32_t block[2] = {kAdpApplicationExit, (uint32_t)status};
    semihost(kSysExitExtended, block);
    semihost(kSysExit, (void*)(uintptr_t)kAdpRunTimeErrorUnknown);
  }
  semihost(kSysExit, (void*)(uintptr_t)kAdpApplicationExit);
  for (;;) {
  }
}

void Fault_Handler(void) {
  semihost(kSysWrite0, (void*)"FAULT: unexpected exception\n");
  uint32_t block[2] = {kAdpApplicationExit, 99};
  semihost(kSysExitExtended, block);
  semihost(kSysExit, (void*)(uintptr_t)kAdpRunTimeErrorUnknown);
  for (;;) {
  }
}

// ---- SysTick ----------------------------------------------------------------------------------------------
static volatile uint32_t g_wraps;

void SysTick_Handler(void) { g_wraps = g_wraps + 1; }

void ticks_init(void) {
  SYST_CSR = 0;
  SYST_RVR = 0x00FFFFFFu;  // period 2^24 ticks
  SYST_CVR = 0;            // any write clears the counter (reloads on the next tick)
  g_wraps = 0;
  SYST_CSR = 7;            // processor clock, interrupt on wrap, enabled
}

uint64_t ticks_now(void) {
  uint32_t wraps, value, pending;
  do {
    wraps = g_wraps;
    value = SYST_CVR;
    pending = SCB_ICSR & ICSR_PENDSTSET;
  } while (wraps != g_wraps);
  // A wrap whose interrupt has not run yet: the counter has just reloaded (value near the top).
  if (pending && value > 0x800000u) ++wraps;
  return ((uint64_t)wraps << 24) + (0x00FFFFFFu - value);
}
