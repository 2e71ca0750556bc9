/*
 * main.c - the edge-ecg firmware core on an emulated Cortex-M4 board: QEMU's
 * `mps2-an386` machine (ARM MPS2 with the AN386 FPGA image).
 *
 * Platform hooks (serial on UART0, microseconds from SysTick) and the main
 * loop are here; the model hooks are firmware/host/aot_model.c, the real
 * ahead-of-time C model of an export, as on the host's virtual board.
 *
 *   qemu-system-arm -machine mps2-an386 -nographic -kernel ecg_mps2.elf
 *
 * See README.md for building and for instruction counting with -icount.
 */
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "ee_core.h"
#include "port_model.h"
#include "th_hooks.h"

/* No fault injection on a board. */
int ee_port_fail_init = 0;
int ee_port_fail_invoke = 0;

void th_serial_write(const char *data, size_t length) {
    board_uart_write(data, length);
}

uint32_t th_timestamp_us(void) {
    return board_time_us();
}

/* Bytes taken from the UART per ee_core_rx_bytes() call at most. */
#define RX_BATCH 64

int main(void) {
    static const char boot_log[] = "mps2-an386: edge-ecg firmware core " EE_CORE_VERSION "\r\n";
    board_init();
    /* Not protocol: hosts skip it while waiting for the first m-ready. */
    board_uart_write(boot_log, sizeof boot_log - 1u);
    ee_core_init();
    for (;;) {
        uint8_t batch[RX_BATCH];
        size_t n = 0;
        while (n < sizeof batch && board_uart_getc(&batch[n])) {
            ++n;
        }
        if (n > 0) {
            ee_core_rx_bytes(batch, n);
        } else {
            ee_core_poll();
            board_idle(); /* until a byte or the next millisecond */
        }
    }
}
