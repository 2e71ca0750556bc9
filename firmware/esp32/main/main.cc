/*
 * main.cc - the ESP32 port of the edge-ecg firmware core: set up once, then
 * serve the benchmark protocol (firmware/core/PROTOCOL.md) on the benchmark
 * UART forever.
 */
#include <cstdio>

#include "sdkconfig.h"

#include "ee_core.h"
#include "model_runner.h"
#include "th_esp32.h"
#include "th_hooks.h"

namespace {

// How long a read waits for a byte before the core's idle housekeeping
// (ee_core_poll) runs; well under the core's 500 ms binary-load timeout.
constexpr uint32_t kIdlePollMs = 10;

// One line before the protocol's boot banner, so that a person at a terminal
// sees what runs and, on failure, why. It starts with '#': hosts skip lines
// that are not m-/e- messages until the first m-ready (PROTOCOL.md, Boot).
void print_boot_line() {
    char line[256];
    const int length =
        model_runner_error()[0] == '\0'
            ? snprintf(line, sizeof line, "# %s on %s at %u MHz: model ready, arena %u B in %s, %u B used\r\n",
                       esp32_firmware_version(), CONFIG_IDF_TARGET,
                       static_cast<unsigned>(esp32_cpu_hz() / 1000000u),
                       static_cast<unsigned>(model_runner_arena_bytes()), model_runner_arena_memory(),
                       static_cast<unsigned>(model_runner_arena_used_bytes()))
            : snprintf(line, sizeof line, "# %s on %s: model init failed: %s\r\n", esp32_firmware_version(),
                       CONFIG_IDF_TARGET, model_runner_error());
    if (length > 0) {
        th_serial_write(line, static_cast<size_t>(length) < sizeof line ? static_cast<size_t>(length)
                                                                         : sizeof line - 1);
    }
}

void setup() {
    esp32_port_init();
    // The model is set up before the core starts, so that its result can go
    // into the boot line; ee_core_init() then gets the same result from
    // th_model_init() and prints the protocol's banner.
    model_runner_init();
    print_boot_line();
    ee_core_init();
}

void loop() {
    uint8_t received[512];
    const size_t count = esp32_port_read(received, sizeof received, kIdlePollMs);
    if (count > 0) {
        ee_core_rx_bytes(received, count);
    }
    ee_core_poll();
}

}  // namespace

extern "C" void app_main(void) {
    setup();
    for (;;) {
        loop();
    }
}
