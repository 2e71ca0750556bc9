/*
 * esp_heap_caps.h - mps2-an386 stand-in for ESP-IDF's capability-based allocator,
 * only what firmware/esp32/main/tflm_runner.cc calls (the host's stand-in,
 * firmware/host/tflm/esp_stubs/esp_heap_caps.h, uses posix_memalign, which
 * newlib-nano lacks). The board has no PSRAM: a MALLOC_CAP_SPIRAM request
 * returns NULL and the runner takes "internal RAM", newlib's heap (memalign;
 * _sbrk from nosys.specs grows from link.ld's `end`, after the stack).
 * Found before the host stubs' folder on the include path, which still
 * supplies sdkconfig.h.
 */
#ifndef EE_MPS2_ESP_HEAP_CAPS_H
#define EE_MPS2_ESP_HEAP_CAPS_H

#include <malloc.h>
#include <stddef.h>
#include <stdint.h>

#define MALLOC_CAP_8BIT (1u << 2)
#define MALLOC_CAP_SPIRAM (1u << 10)
#define MALLOC_CAP_INTERNAL (1u << 11)

static inline void *heap_caps_aligned_alloc(size_t alignment, size_t size, uint32_t caps) {
    return (caps & MALLOC_CAP_SPIRAM) != 0u ? NULL : memalign(alignment, size);
}

/* Only used in a failure message. */
static inline size_t heap_caps_get_largest_free_block(uint32_t caps) {
    (void)caps;
    return 0;
}

#endif /* EE_MPS2_ESP_HEAP_CAPS_H */
