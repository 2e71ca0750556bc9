/*
 * esp_heap_caps.h - host stand-in for ESP-IDF's capability-based allocator,
 * only what firmware/esp32/main/tflm_runner.cc calls. The host has no PSRAM,
 * so a MALLOC_CAP_SPIRAM request returns NULL and the runner falls back to
 * "internal RAM" (the heap), as it does on an ESP32-C3.
 */
#ifndef EE_HOST_ESP_HEAP_CAPS_H
#define EE_HOST_ESP_HEAP_CAPS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define MALLOC_CAP_8BIT (1u << 2)
#define MALLOC_CAP_SPIRAM (1u << 10)
#define MALLOC_CAP_INTERNAL (1u << 11)

static inline void *heap_caps_aligned_alloc(size_t alignment, size_t size, uint32_t caps) {
    void *memory = NULL;
    if ((caps & MALLOC_CAP_SPIRAM) != 0u) {
        return NULL;
    }
    return posix_memalign(&memory, alignment, size) == 0 ? memory : NULL;
}

/* Only used in a failure message; the host heap has no meaningful figure. */
static inline size_t heap_caps_get_largest_free_block(uint32_t caps) {
    (void)caps;
    return 0;
}

#endif /* EE_HOST_ESP_HEAP_CAPS_H */
