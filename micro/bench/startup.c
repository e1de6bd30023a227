// Bare-metal startup for the QEMU instruction-count bench (mps2-an386 Cortex-M4F, mps2-an505 Cortex-M33):
// vector table, reset handler (FPU on before any C code), .data/.bss init, semihosting helpers (command line,
// exit with a status), and a 64-bit SysTick tick counter (24-bit down-counter + wrap count from its interrupt).
#include <stdint.h>
#include <stdio.h>

#include "bench_support.h"

extern uint32_t __stack_top;
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern int main(void);
extern void initialise_monitor_handles(void);  // newlib rdimon: opens the semihosting stdin/stdout/stderr

void Reset_Handler(void) __attribute__((naked, noreturn));
void Fault_Handler(void);
void SysTick_Handler(void);
static void reset_c(void) __attribute__((noreturn, used));

#define REG32(addr) (*(volatile uint32_t*)(addr))
#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SCB_ICSR REG32(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)

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

static void reset_c(void) {
  const uint32_t* src = &__data_load;
  for (uint32_t* dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  initialise_monitor_handles();
  bench_exit(main());
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

int bench_cmdline(char* buffer, int size) {
  struct {
    char* buffer;
    int32_t size;
  } block = {buffer, size};
  return semihost(kSysGetCmdline, &block) == 0 ? 0 : -1;
}

void bench_exit(int status) {
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
