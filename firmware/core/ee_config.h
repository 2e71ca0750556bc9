/*
 * ee_config.h - build-time sizes of the firmware core.
 *
 * A port or a generated model describes its model in a `model_config.h` on the
 * include path and builds with -DEE_HAVE_MODEL_CONFIG=1 (C99 cannot test
 * whether a header exists). Whatever it leaves undefined falls back to the
 * edge-ecg defaults below: one 10 s PTB-XL record at 100 Hz, 12 leads, int8,
 * and the five diagnostic superclasses.
 */
#ifndef EE_CONFIG_H
#define EE_CONFIG_H

#if defined(EE_HAVE_MODEL_CONFIG) && EE_HAVE_MODEL_CONFIG
#include "model_config.h"
#endif

/* Time steps of one input record. */
#ifndef EE_INPUT_SAMPLES
#define EE_INPUT_SAMPLES 1000
#endif

/* Leads per time step; the input is (EE_INPUT_SAMPLES, EE_INPUT_LEADS), row-major. */
#ifndef EE_INPUT_LEADS
#define EE_INPUT_LEADS 12
#endif

/* Capacity of the load buffer in bytes (one int8 per value). */
#ifndef EE_INPUT_BYTES
#define EE_INPUT_BYTES (EE_INPUT_SAMPLES * EE_INPUT_LEADS)
#endif

/* Number of model outputs (class scores). */
#ifndef EE_OUTPUT_COUNT
#define EE_OUTPUT_COUNT 5
#endif

/* Bytes the core gathers before handing output to th_serial_write(). */
#ifndef EE_TX_BUFFER_BYTES
#define EE_TX_BUFFER_BYTES 128
#endif

/* Longest the warm-ups, or the timed runs, of one `infer` may take, in ms:
 * past it the command stops with an error instead of running for hours (a
 * mistyped `infer 4294967295%` would otherwise hold the device until a reset).
 * Reported by `info%` as infer_time_limit_ms. */
#ifndef EE_INFER_TIME_LIMIT_MS
#define EE_INFER_TIME_LIMIT_MS 60000
#endif

#if (EE_INPUT_BYTES) < (EE_INPUT_SAMPLES) * (EE_INPUT_LEADS)
#error "EE_INPUT_BYTES cannot hold one (EE_INPUT_SAMPLES, EE_INPUT_LEADS) int8 record"
#endif

#if (EE_TX_BUFFER_BYTES) < 16
#error "EE_TX_BUFFER_BYTES must be at least 16"
#endif

#endif /* EE_CONFIG_H */
