/*
 * fuzz_core.c - a libFuzzer target for the firmware core's byte intake: every
 * command, argument, hex and binary load, and the idle poll, with the host
 * port's checksum model behind the hooks.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DEE_HAVE_MODEL_CONFIG=1 \
 *       -DEE_INFER_TIME_LIMIT_MS=5 -Ifirmware/host -Ifirmware/core \
 *       firmware/host/fuzz_core.c firmware/core/ee_[a-z]*.c -o fuzz_core
 *   ./fuzz_core -max_total_time=60 NEW_CORPUS_DIR firmware/host/fuzz_corpus
 *
 * tests/test_fuzz.py builds and runs it for a bounded time when clang is there.
 * Besides the sanitizers' checks it asserts one property of the output: the
 * device only ever prints printable ASCII lines ended by CR LF, whatever the
 * host sends (host text is echoed sanitized, JSON strings escaped).
 */
#include <stdint.h>
#include <stdlib.h>

#include "checksum_model.c"

int ee_port_fail_init = 0;
int ee_port_fail_invoke = 0;

/* A clock that advances 1 ms per read, so the binary-load timeout and the
 * infer time limit (built small) are reached within a few calls. */
static uint32_t g_clock_us;

uint32_t th_timestamp_us(void) {
    g_clock_us += 1000u;
    return g_clock_us;
}

static char g_previous;

void th_serial_write(const char *data, size_t length) {
    size_t i;
    for (i = 0; i < length; ++i) {
        const char c = data[i];
        const int printable = c >= 0x20 && c < 0x7F;
        /* CR only before LF, LF only after CR. */
        if (!(printable || c == '\r' || c == '\n') || (c == '\n' && g_previous != '\r') ||
            (g_previous == '\r' && c != '\n')) {
            abort();
        }
        g_previous = c;
    }
}

/* The input's first byte picks how the rest is fed: in chunks of 1..16 bytes,
 * with an idle poll after each chunk when its top bit is set, as a UART driver
 * hands over whatever has arrived. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t chunk;
    int poll;
    size_t i;
    if (size == 0) {
        return 0;
    }
    chunk = (size_t)(data[0] & 0x0Fu) + 1u;
    poll = (data[0] & 0x80u) != 0;
    g_previous = '\n';
    ee_core_init();
    for (i = 1; i < size; i += chunk) {
        const size_t n = size - i < chunk ? size - i : chunk;
        ee_core_rx_bytes(&data[i], n);
        if (poll) {
            ee_core_poll();
        }
    }
    /* A load left unfinished times out on later polls. */
    ee_core_poll();
    ee_core_poll();
    return 0;
}
