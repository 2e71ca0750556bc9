/*
 * board.h - the few peripherals of MPS2 AN386 this port uses: UART0 (an ARM
 * CMSDK APB UART) and the Cortex-M4 SysTick timer.
 */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

/* SYSCLK of the AN385/AN386 images: CPU, SysTick ("processor clock"), UARTs. */
#define BOARD_SYSCLK_HZ 25000000u

/* UART0, 115200 baud 8N1 (QEMU ignores the rate and moves bytes at once). */
#define BOARD_BAUD 115200u

/* Set up UART0 (polled; its RX interrupt only wakes the CPU) and start the
 * SysTick clock (1 ms wraps). */
void board_init(void);

/* Blocking write of one byte / `length` bytes to UART0. */
void board_uart_putc(uint8_t byte);
void board_uart_write(const char *data, size_t length);

/* 1 and the byte in *byte when UART0 has received one, else 0; never blocks. */
int board_uart_getc(uint8_t *byte);

/* Sleep (WFI) until a byte has arrived or the next SysTick wrap (1 ms);
 * returns at once if a byte is already waiting. */
void board_idle(void);

/* SYSCLK ticks since board_init(), 64 bits (SysTick's 24-bit counter plus
 * the wraps counted by its interrupt). */
uint64_t board_ticks(void);

/* Microseconds since board_init(), wrapping at 2^32. */
uint32_t board_time_us(void);

/* Print `e-[Fatal: <what>]` on UART0 and stop; for fault handlers. */
void board_panic(const char *what);

#endif /* BOARD_H */
