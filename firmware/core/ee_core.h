/*
 * ee_core.h - the portable benchmark harness (MLPerf Tiny / EEMBC protocol
 * plus the edge-ecg extensions; see PROTOCOL.md).
 *
 * A port calls ee_core_init() once, then hands every received byte to
 * ee_core_rx_byte() (or a run of them to ee_core_rx_bytes()) and calls
 * ee_core_poll() whenever it is idle, at least every few milliseconds. Both
 * run commands to completion and reply through th_serial_write(), so call
 * them from the main loop, never from an interrupt handler: a UART interrupt
 * should only queue bytes for the main loop.
 */
#ifndef EE_CORE_H
#define EE_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "ee_config.h"
#include "ee_protocol.h"

/* Callable from C++ ports (TensorFlow Lite Micro is C++). */
#ifdef __cplusplus
extern "C" {
#endif

/* Reset the harness, initialise the model and print the boot banner. */
void ee_core_init(void);

/* Feed one received byte. */
void ee_core_rx_byte(uint8_t byte);

/* Feed `count` received bytes; faster than byte by byte during a binary load. */
void ee_core_rx_bytes(const uint8_t *bytes, size_t count);

/* Housekeeping while idle: abandons a stalled binary load after
 * EE_BIN_TIMEOUT_MS without a byte. */
void ee_core_poll(void);

#ifdef __cplusplus
}
#endif

#endif /* EE_CORE_H */
