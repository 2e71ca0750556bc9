/*
 * model_config.h - the TFLite Micro host board's model description: the run's
 * exported model_config.h, with an optional arena override for tests.
 *
 * Built with -DEE_HOST_EXPORT_MODEL_CONFIG='"RUN/export/model_config.h"'
 * (a computed include: the export's header has the same name as this one).
 * -DEE_HOST_ARENA_BYTES=N replaces the export's ECG_ARENA_BYTES, so a test can
 * build the same runner with the exported arena and with a smaller one.
 * The export defines the core's EE_* names itself.
 */
#ifndef EE_HOST_TFLM_MODEL_CONFIG_H
#define EE_HOST_TFLM_MODEL_CONFIG_H

#ifndef EE_HOST_EXPORT_MODEL_CONFIG
#error "define EE_HOST_EXPORT_MODEL_CONFIG as the quoted path of RUN/export/model_config.h"
#endif
#include EE_HOST_EXPORT_MODEL_CONFIG

#ifndef ECG_MODEL_SHA256
#error "EE_HOST_EXPORT_MODEL_CONFIG is not an exported model_config.h (no ECG_MODEL_SHA256)"
#endif

#ifdef EE_HOST_ARENA_BYTES
#undef ECG_ARENA_BYTES
#define ECG_ARENA_BYTES EE_HOST_ARENA_BYTES
#endif

/* The runner's per-chip arena (the ESP32 port's config/model_config.h picks
 * one per CONFIG_IDF_TARGET_*): the host runs TFLM's reference kernels, which
 * take no scratch from the arena, so it gets the export's host figure. */
#define EE_ESP32_ARENA_BYTES ECG_ARENA_BYTES
#define EE_ESP32_ARENA_TARGET "host"

#endif /* EE_HOST_TFLM_MODEL_CONFIG_H */
