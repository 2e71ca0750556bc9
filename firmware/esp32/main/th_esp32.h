/*
 * th_esp32.h - what the ESP32 port's main loop needs from its platform code
 * (th_esp32.cc); the core's hooks themselves are declared in th_hooks.h.
 */
#ifndef TH_ESP32_H
#define TH_ESP32_H

#include <cstddef>
#include <cstdint>

/* Version of this port, reported in `info%` as part of firmware_version. */
#define ECG_ESP32_PORT_VERSION "0.1.0"

/* Install the benchmark UART driver and measure the CPU clock. Call first. */
void esp32_port_init();

/* Wait up to timeout_ms for a received byte, then take every byte already
 * buffered, up to `capacity`. Returns the number of bytes stored. */
size_t esp32_port_read(uint8_t *bytes, size_t capacity, uint32_t timeout_ms);

/* CPU clock in Hz, measured with the cycle counter at esp32_port_init(). */
uint32_t esp32_cpu_hz();

/* "edge-ecg-esp32/<port version>+<runtime> ESP-IDF v<x.y.z>", runtime tflm or aot. */
const char *esp32_firmware_version();

#endif /* TH_ESP32_H */
