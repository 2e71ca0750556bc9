/*
 * startup.c - reset and exception vectors of the Cortex-M4 on MPS2 AN386.
 *
 * Reset_Handler enables the FPU (the firmware core computes in float and the
 * build uses the hard-float ABI), copies .data from its load image in
 * "flash", zeroes .bss and calls main(). Addresses come from link.ld.
 */
#include <stdint.h>

#include "board.h"

extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_top[];

int main(void);

/* System Control Block: Coprocessor Access Control Register. */
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void);  /* board.c */
void UART0_RX_Handler(void); /* board.c */

/* Must run before any floating-point instruction, hence before anything
 * the compiler might vectorize: plain volatile word loops. */
void Reset_Handler(void) {
    volatile uint32_t *src = __data_load;
    volatile uint32_t *dst = __data_start;

    /* CP10 and CP11 (the FPU): full access, then wait for it to take. */
    SCB_CPACR |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");

    while (dst < __data_end) {
        *dst++ = *src++;
    }
    for (dst = __bss_start; dst < __bss_end; ++dst) {
        *dst = 0u;
    }
    (void)main();
    for (;;) {
    }
}

void HardFault_Handler(void) {
    board_panic("HardFault");
}

void Default_Handler(void) {
    board_panic("unexpected exception");
}

/* One vector-table entry: the initial stack pointer or a handler. */
typedef union {
    void (*handler)(void);
    const void *stack;
} vector_t;

/* 16 system exceptions, then the AN386's 32 external interrupts, of which
 * only IRQ 0 (UART0 RX, a wake-up from WFI) is enabled. */
__attribute__((section(".vectors"), used)) const vector_t g_vectors[16 + 32] = {
    {.stack = __stack_top},
    {Reset_Handler},
    {Default_Handler},   /* NMI */
    {HardFault_Handler}, /* HardFault */
    {Default_Handler},   /* MemManage */
    {Default_Handler},   /* BusFault */
    {Default_Handler},   /* UsageFault */
    {0},
    {0},
    {0},
    {0},
    {Default_Handler}, /* SVCall */
    {Default_Handler}, /* DebugMonitor */
    {0},
    {Default_Handler}, /* PendSV */
    {SysTick_Handler},
    /* External interrupts 0..31 */
    {UART0_RX_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
    {Default_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
    {Default_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
    {Default_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
    {Default_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
    {Default_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
    {Default_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
    {Default_Handler}, {Default_Handler}, {Default_Handler}, {Default_Handler},
};
