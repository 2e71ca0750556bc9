/*
 * th_esp32.cc - the platform hooks of the ESP32 port (th_hooks.h): the
 * benchmark UART, the microsecond clock and the target facts of `info%`.
 * The model hooks are in the runner (model_runner.h): tflm_runner.cc or
 * aot_runner.c, whichever main/CMakeLists.txt compiles.
 *
 * The protocol owns the benchmark UART (UART0 by default, the dev board's
 * USB-UART bridge) at 921600 baud: sdkconfig.defaults keeps the ESP-IDF
 * console and its logs off it, so the host reads a clean line.
 */
#include <cstdio>

#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_idf_version.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "sdkconfig.h"
#include "soc/uart_pins.h"

#include "model_config.h"
#include "model_runner.h"
#include "th_esp32.h"
#include "th_hooks.h"

namespace {

constexpr uart_port_t kBenchUart = static_cast<uart_port_t>(CONFIG_ECG_BENCH_UART_NUM);
static_assert(CONFIG_ECG_BENCH_UART_NUM < UART_NUM_MAX,
              "CONFIG_ECG_BENCH_UART_NUM: this chip has no such UART");

// Room for a few milliseconds of input at 921600 baud (92 bytes/ms) while the
// main loop is busy with the previous bytes; must exceed the 128-byte FIFO.
constexpr int kRxBufferBytes = 4096;
// No TX ring buffer: uart_write_bytes() returns once the bytes are in the
// hardware FIFO, so no UART interrupt runs during a timed inference.
constexpr int kTxBufferBytes = 0;

// How long esp32_port_init() counts cycles to measure the CPU clock.
constexpr int64_t kClockMeasureUs = 20000;

uint32_t g_cpu_hz = 0;
char g_firmware_version[48];

int pin_or_default(int configured, int uart0_default) {
    if (configured >= 0) {
        return configured;
    }
    // UART0 has fixed default pins (the ones the boot ROM prints on); other
    // UARTs have none, so they keep whatever routing they already have.
    return kBenchUart == UART_NUM_0 ? uart0_default : UART_PIN_NO_CHANGE;
}

void install_bench_uart() {
    uart_config_t config = {};
    config.baud_rate = CONFIG_ECG_BENCH_UART_BAUD;
    config.data_bits = UART_DATA_8_BITS;
    config.parity = UART_PARITY_DISABLE;
    config.stop_bits = UART_STOP_BITS_1;
    config.flow_ctrl = UART_HW_FLOWCTRL_DISABLE;
    config.source_clk = UART_SCLK_DEFAULT;
    ESP_ERROR_CHECK(uart_driver_install(kBenchUart, kRxBufferBytes, kTxBufferBytes, 0, nullptr, 0));
    ESP_ERROR_CHECK(uart_param_config(kBenchUart, &config));
    ESP_ERROR_CHECK(uart_set_pin(kBenchUart, pin_or_default(CONFIG_ECG_BENCH_UART_TX_PIN, U0TXD_GPIO_NUM),
                                 pin_or_default(CONFIG_ECG_BENCH_UART_RX_PIN, U0RXD_GPIO_NUM),
                                 UART_PIN_NO_CHANGE, UART_PIN_NO_CHANGE));
}

// The clock the CPU really runs at, from its cycle counter against the 1 MHz
// esp_timer, rounded to whole MHz: this confirms that the sdkconfig clock
// took effect rather than repeating what the configuration asked for.
uint32_t measure_cpu_hz() {
    const int64_t start_us = esp_timer_get_time();
    const uint32_t start_cycles = esp_cpu_get_cycle_count();
    int64_t elapsed_us = 0;
    while (elapsed_us < kClockMeasureUs) {
        elapsed_us = esp_timer_get_time() - start_us;
    }
    const uint32_t cycles = esp_cpu_get_cycle_count() - start_cycles;  // wraps only after 17 s
    const uint64_t mhz = (static_cast<uint64_t>(cycles) + static_cast<uint64_t>(elapsed_us) / 2) /
                         static_cast<uint64_t>(elapsed_us);
    return static_cast<uint32_t>(mhz * 1000000u);
}

}  // namespace

void esp32_port_init() {
    install_bench_uart();
    g_cpu_hz = measure_cpu_hz();
    // "+tflm" or "+aot": `info%` tells a host which runtime produced its numbers.
    snprintf(g_firmware_version, sizeof g_firmware_version, "edge-ecg-esp32/%s+%s ESP-IDF v%d.%d.%d",
             ECG_ESP32_PORT_VERSION, model_runner_name(), ESP_IDF_VERSION_MAJOR, ESP_IDF_VERSION_MINOR,
             ESP_IDF_VERSION_PATCH);
}

size_t esp32_port_read(uint8_t *bytes, size_t capacity, uint32_t timeout_ms) {
    if (capacity == 0) {
        return 0;
    }
    TickType_t ticks = pdMS_TO_TICKS(timeout_ms);
    if (ticks == 0) {
        ticks = 1;  // never spin: the idle task and the tick must get their turn
    }
    // Block for the first byte only, then take what else has arrived: waiting
    // for a full buffer would delay every short command by the timeout.
    int received = uart_read_bytes(kBenchUart, bytes, 1, ticks);
    if (received <= 0) {
        return 0;
    }
    size_t buffered = 0;
    if (uart_get_buffered_data_len(kBenchUart, &buffered) == ESP_OK && buffered > 0) {
        if (buffered > capacity - 1) {
            buffered = capacity - 1;
        }
        const int more = uart_read_bytes(kBenchUart, bytes + 1, static_cast<uint32_t>(buffered), 0);
        if (more > 0) {
            received += more;
        }
    }
    return static_cast<size_t>(received);
}

uint32_t esp32_cpu_hz() { return g_cpu_hz; }

const char *esp32_firmware_version() { return g_firmware_version; }

/* ---- th_hooks.h: serial, time, target facts -------------------------------- */

void th_serial_write(const char *data, size_t length) {
    uart_write_bytes(kBenchUart, data, length);
}

uint32_t th_timestamp_us(void) {
    // esp_timer counts microseconds since boot in 64 bits; the protocol's
    // counter is its low 32 bits, wrapping every 71 minutes.
    return static_cast<uint32_t>(esp_timer_get_time());
}

void th_target_info(th_target_info_t *info) {
    info->target_name = CONFIG_IDF_TARGET;
    info->firmware_version = g_firmware_version;
    info->model_hash = ECG_MODEL_SHA256;
    info->cpu_hz = g_cpu_hz;
    info->arena_bytes = static_cast<uint32_t>(model_runner_arena_bytes());
    info->arena_used_bytes = static_cast<uint32_t>(model_runner_arena_used_bytes());
}
