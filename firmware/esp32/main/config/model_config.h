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
    !defined(ECG_ARENA_BYTES) || !defined(ECG_MODEL_SHA256)
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

#endif /* EE_ESP32_MODEL_CONFIG_BRIDGE_H */
