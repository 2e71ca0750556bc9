/*
 * ee_util.h - stateless helpers of the firmware core: the CRC-32 of binary
 * loads and float formatting without printf. Exposed for ports and tests.
 */
#ifndef EE_UTIL_H
#define EE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Callable from C++ ports (TensorFlow Lite Micro is C++). */
#ifdef __cplusplus
extern "C" {
#endif

/* CRC-32 as zlib computes it: ee_crc32_update(0, d, n) == zlib.crc32(d), and
 * ee_crc32_update(ee_crc32_update(0, a, n), b, m) is the CRC of a then b. */
uint32_t ee_crc32_update(uint32_t crc, const uint8_t *data, size_t count);

/* Room for any text ee_format_float() writes, including the final NUL. */
#define EE_FLOAT_TEXT_MAX 24

/* Write `value` with 9 significant digits, trailing zeros dropped ("0.5",
 * "0.00390625", "1.5e-07"), so that parsing it back gives the same float32.
 * `out` holds at least EE_FLOAT_TEXT_MAX chars; returns the length. */
size_t ee_format_float(char *out, float value);

#ifdef __cplusplus
}
#endif

#endif /* EE_UTIL_H */
