/*
 * aot_harness.c - runs a generated AOT model (ecg_model.c) on the emulated
 * Cortex-M4 without the benchmark protocol: for each record of
 * harness_inputs.h it fills the model's input tensor (inside its activation
 * buffer), invokes, and prints on UART0
 *
 *   out <record> <output bytes as hex>
 *   ticks <record> <SYSCLK ticks of the invoke>
 *
 * and, built with -DECG_MODEL_PROFILE, the ticks of each op summed over all
 * invokes ("op <index> <ticks>"), then "done". Under qemu -icount shift=0 a tick
 * is 40 instructions. Built by edge_ecg.aot.cortex_m (not by the board Makefile):
 * startup.c, board.c, this file and the model, with the board's flags.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "ecg_model.h"
#include "harness_inputs.h" /* HARNESS_RECORDS, harness_inputs[][ECG_MODEL_INPUT_SIZE] */

#if defined(ECG_MODEL_PROFILE)
static uint64_t g_op_ticks[ECG_MODEL_OP_COUNT];
static uint64_t g_last;

void ecg_model_profile_op(int op_index) {
    const uint64_t now = board_ticks();
    g_op_ticks[op_index] += now - g_last;
    g_last = now;
}
#endif

static void put_text(const char *text) {
    board_uart_write(text, strlen(text));
}

static void put_u64(uint64_t v) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        board_uart_putc((uint8_t)digits[--n]);
    }
}

static void put_hex(uint8_t byte) {
    static const char hex[] = "0123456789abcdef";
    board_uart_putc((uint8_t)hex[byte >> 4]);
    board_uart_putc((uint8_t)hex[byte & 15u]);
}

int main(void) {
    static int8_t output[ECG_MODEL_OUTPUT_SIZE];
    board_init();
    for (int r = 0; r < HARNESS_RECORDS; ++r) {
        memcpy(ecg_model_input(), harness_inputs[r], ECG_MODEL_INPUT_SIZE);
        const uint64_t t0 = board_ticks();
#if defined(ECG_MODEL_PROFILE)
        g_last = t0;
#endif
        const int status = ecg_model_invoke(ecg_model_input(), output);
        const uint64_t t1 = board_ticks();
        put_text(status == ECG_MODEL_OK ? "out " : "error ");
        put_u64((uint64_t)r);
        board_uart_putc(' ');
        for (int i = 0; i < ECG_MODEL_OUTPUT_SIZE; ++i) {
            put_hex((uint8_t)output[i]);
        }
        put_text("\nticks ");
        put_u64((uint64_t)r);
        board_uart_putc(' ');
        put_u64(t1 - t0);
        board_uart_putc('\n');
    }
#if defined(ECG_MODEL_PROFILE)
    for (int op = 0; op < ECG_MODEL_OP_COUNT; ++op) {
        put_text("op ");
        put_u64((uint64_t)op);
        board_uart_putc(' ');
        put_u64(g_op_ticks[op]);
        board_uart_putc('\n');
    }
#endif
    put_text("done\n");
    for (;;) {
        board_idle();
    }
}
