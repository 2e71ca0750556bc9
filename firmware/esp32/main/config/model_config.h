/*
 * config/model_config.h - the ESP32 port's model description for the core.
 *
 * The core's ee_config.h includes "model_config.h" (built with
 * -DEE_HAVE_MODEL_CONFIG=1) and expects EE_* names. The export stage writes
 * model/model_config.h with ECG_* names. This header comes first on the
 * include path (main/CMakeLists.txt), includes the generated one and maps the
 * names, so the generated file and the core both stay untouched. If the
 * exporter renames a macro, change it here only.
 */
#ifndef EE_ESP32_MODEL_CONFIG_BRIDGE_H
#define EE_ESP32_MODEL_CONFIG_BRIDGE_H

#include "../model/model_config.h"

/* What this port uses from the generated header (edge_ecg.firmware checks
 * that the export defines each of them before it renders a project). */
#if !defined(ECG_INPUT_SAMPLES) || !defined(ECG_INPUT_LEADS) || !defined(ECG_NUM_CLASSES) || \
    !defined(ECG_INPUT_SCALE) || !defined(ECG_INPUT_ZERO_POINT) ||                           \
    !defined(ECG_OUTPUT_SCALE) || !defined(ECG_OUTPUT_ZERO_POINT) ||                         \
    !defined(ECG_ARENA_BYTES) || !defined(ECG_ARENA_BYTES_ESP32) ||                          \
    !defined(ECG_ARENA_BYTES_ESP32S3) || !defined(ECG_MODEL_SHA256)
#error "model/model_config.h lacks a macro this port needs: run `edge-ecg export --run RUN` again"
#endif

/* ECG_* (export) -> EE_* (core). The export may define the EE_* names itself. */
#ifndef EE_INPUT_SAMPLES
#define EE_INPUT_SAMPLES ECG_INPUT_SAMPLES
#endif
#ifndef EE_INPUT_LEADS
#define EE_INPUT_LEADS ECG_INPUT_LEADS
#endif
#ifndef EE_OUTPUT_COUNT
#define EE_OUTPUT_COUNT ECG_NUM_CLASSES
#endif
/* EE_INPUT_BYTES: the export defines it; otherwise ee_config.h derives it
 * from EE_INPUT_SAMPLES * EE_INPUT_LEADS. */

/* The tensor arena of the chip being built (CONFIG_IDF_TARGET_*, from
 * sdkconfig.h): esp-tflite-micro's ESP-NN conv kernels take scratch buffers
 * from the arena on ESP32-S3 only, so each chip has its own figure (export.json
 * "arena" "targets"). ESP32-C3 runs the same ESP-NN kernels as ESP32, with
 * esp-nn's generic functions: the ESP32 figure. Left undefined for other chips:
 * tflm_runner.cc stops the build there. */
#if defined(ESP_PLATFORM)
#include "sdkconfig.h"
#endif
#if defined(CONFIG_IDF_TARGET_ESP32S3)
#define EE_ESP32_ARENA_BYTES ECG_ARENA_BYTES_ESP32S3
#define EE_ESP32_ARENA_TARGET "esp32s3"
#elif defined(CONFIG_IDF_TARGET_ESP32)
#define EE_ESP32_ARENA_BYTES ECG_ARENA_BYTES_ESP32
#define EE_ESP32_ARENA_TARGET "esp32"
#elif defined(CONFIG_IDF_TARGET_ESP32C3)
#define EE_ESP32_ARENA_BYTES ECG_ARENA_BYTES_ESP32
#define EE_ESP32_ARENA_TARGET "esp32c3"
#endif

#endif /* EE_ESP32_MODEL_CONFIG_BRIDGE_H */
