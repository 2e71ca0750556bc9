/*
 * board.c - UART0 and SysTick of the MPS2 AN386 board (Cortex-M4).
 *
 * UART0 is an ARM CMSDK APB UART at 0x40004000 (AN386 memory map):
 *   0x000 DATA     read: received byte, write: byte to send
 *   0x004 STATE    bit 0 TX buffer full, bit 1 RX buffer full,
 *                  bits 2/3 TX/RX overrun (write 1 to clear)
 *   0x008 CTRL     bit 0 TX enable, bit 1 RX enable, bits 2..5 interrupt enables
 *   0x00C INTSTATUS / INTCLEAR
 *   0x010 BAUDDIV  SYSCLK / baud rate, at least 16
 * Both directions hold one byte. Reception is polled from the main loop:
 * the host never sends while an inference runs (every command waits for
 * m-ready), and between commands the main loop reads each byte long before
 * the next one arrives at any standard baud rate. (QEMU's model holds the
 * next byte until DATA has been read, so nothing can overrun there.) The RX
 * interrupt (IRQ 0) only wakes the CPU from board_idle()'s WFI; its handler
 * clears it and the main loop reads the byte.
 *
 * Time: SysTick counts SYSCLK (CLKSOURCE = processor clock, 25 MHz) down,
 * wrapping every millisecond; its interrupt counts the wraps, so
 * board_ticks() is a 64-bit tick count, and it wakes board_idle() often
 * enough for ee_core_poll(). DWT CYCCNT is not used: QEMU does not model the
 * DWT. Under `qemu-system-arm -icount shift=0` one instruction takes exactly
 * 1 ns of virtual time, so SysTick (and m-lap-us) measures instructions
 * executed: 1 us = 1000 instructions, 1 tick = 40 instructions. (The SysTick
 * handler itself runs once per million instructions: a few ppm.)
 */
#include "board.h"

/* ---- registers ---------------------------------------------------------- */

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x000u))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x004u))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x008u))
#define UART_INTCLEAR (*(volatile uint32_t *)(UART0_BASE + 0x00Cu))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x010u))

#define UART_STATE_TX_FULL (1u << 0)
#define UART_STATE_RX_FULL (1u << 1)
#define UART_STATE_TX_OVERRUN (1u << 2)
#define UART_STATE_RX_OVERRUN (1u << 3)
#define UART_CTRL_TX_EN (1u << 0)
#define UART_CTRL_RX_EN (1u << 1)
#define UART_CTRL_RX_INT_EN (1u << 3)
#define UART_INT_RX (1u << 1)

#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define UART0_RX_IRQ 0u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)

#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2) /* 1: processor clock (SYSCLK) */
#define SCB_ICSR_PENDSTSET (1u << 26)

#define SYSTICK_PERIOD (BOARD_SYSCLK_HZ / 1000u) /* ticks per wrap: 1 ms */
#define SYSTICK_RELOAD (SYSTICK_PERIOD - 1u)
#define TICKS_PER_US (BOARD_SYSCLK_HZ / 1000000u)

/* ---- SysTick ------------------------------------------------------------ */

static volatile uint32_t g_systick_wraps;

void SysTick_Handler(void);
void SysTick_Handler(void) {
    ++g_systick_wraps;
}

uint64_t board_ticks(void) {
    uint32_t wraps;
    uint32_t value;
    uint32_t pending;
    /* Read the count between two reads of the wrap counter; retry if the
     * interrupt ran meanwhile. A wrap whose interrupt is still pending (it
     * has reloaded the counter but not been counted yet) is added here. */
    for (;;) {
        wraps = g_systick_wraps;
        value = SYST_CVR;
        pending = SCB_ICSR & SCB_ICSR_PENDSTSET;
        if (wraps == g_systick_wraps) {
            break;
        }
    }
    value = SYSTICK_RELOAD - value; /* ticks since the last reload */
    if (pending && value < SYSTICK_PERIOD / 2u) {
        ++wraps;
    }
    return ((uint64_t)wraps * SYSTICK_PERIOD) + value;
}

uint32_t board_time_us(void) {
    return (uint32_t)(board_ticks() / TICKS_PER_US);
}

/* ---- UART0 -------------------------------------------------------------- */

void board_uart_putc(uint8_t byte) {
    while (UART_STATE & UART_STATE_TX_FULL) {
    }
    UART_DATA = byte;
}

void board_uart_write(const char *data, size_t length) {
    while (length-- > 0) {
        board_uart_putc((uint8_t)*data++);
    }
}

void UART0_RX_Handler(void);
void UART0_RX_Handler(void) {
    UART_INTCLEAR = UART_INT_RX; /* only a wake-up: the main loop reads DATA */
}

void board_idle(void) {
    /* With interrupts masked, a byte or a tick that comes between the check
     * and the WFI still ends the WFI (a pending interrupt wakes it), so no
     * wake-up is lost; unmasking then runs the handlers. */
    __asm__ volatile("cpsid i" ::: "memory");
    if ((UART_STATE & UART_STATE_RX_FULL) == 0u) {
        __asm__ volatile("dsb\n\twfi" ::: "memory");
    }
    __asm__ volatile("cpsie i\n\tisb" ::: "memory");
}

int board_uart_getc(uint8_t *byte) {
    if ((UART_STATE & UART_STATE_RX_FULL) == 0u) {
        return 0;
    }
    *byte = (uint8_t)UART_DATA;
    return 1;
}

/* ---- set-up ------------------------------------------------------------- */

void board_init(void) {
    UART_CTRL = 0u;
    UART_BAUDDIV = BOARD_SYSCLK_HZ / BOARD_BAUD;
    UART_STATE = UART_STATE_TX_OVERRUN | UART_STATE_RX_OVERRUN;
    UART_INTCLEAR = UART_INT_RX;
    UART_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INT_EN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;

    g_systick_wraps = 0u;
    SYST_CSR = 0u;
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0u; /* any write clears the counter; it reloads on the next tick */
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

void board_panic(const char *what) {
    static const char open[] = "\r\ne-[Fatal: ";
    static const char close[] = "]\r\n";
    const char *end = what;
    __asm__ volatile("cpsid i" ::: "memory");
    while (*end != '\0') {
        ++end;
    }
    board_uart_write(open, sizeof open - 1u);
    board_uart_write(what, (size_t)(end - what));
    board_uart_write(close, sizeof close - 1u);
    for (;;) {
    }
}
