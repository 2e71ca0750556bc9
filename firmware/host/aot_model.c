/*
 * aot_model.c - model hooks running the REAL ECG network: the ahead-of-time C
 * model that `edge-ecg export --runtime aot` generates (export/aot/ecg_model.c,
 * entry point ecg_model_invoke), described by the export's model_config.h.
 *
 * Used by the "virtual board" (the host port built with
 * -DEE_HOST_MODEL_SEPARATE=1, see README.md) and by the emulated Cortex-M4
 * board (firmware/mps2-an386), so both run the same code as a device would.
 * Build with the run's export/ folder FIRST on the include path (its
 * model_config.h, not the host port's), plus export/aot/.
 *
 * A port may define, on the command line:
 *   EE_AOT_TARGET_NAME  string literal, `name%` and info "target" ("host-aot")
 *   EE_AOT_CPU_HZ       CPU clock in Hz reported by info, 0 if unknown (0)
 */
#include <string.h>

#include "ecg_model.h"
#include "ee_core.h"
#include "port_model.h"
#include "th_hooks.h"

#ifndef ECG_MODEL_SHA256
#error "model_config.h is not an exported one (no ECG_MODEL_SHA256): put the run's export/ folder first on the include path"
#endif
#if ECG_MODEL_INPUT_SIZE != EE_INPUT_BYTES
#error "the AOT model's input size differs from model_config.h's EE_INPUT_BYTES: export/aot and model_config.h are from different exports"
#endif
#if ECG_MODEL_OUTPUT_SIZE != EE_OUTPUT_COUNT
#error "the AOT model's output count differs from model_config.h's EE_OUTPUT_COUNT"
#endif

#ifndef EE_AOT_TARGET_NAME
#define EE_AOT_TARGET_NAME "host-aot"
#endif
#ifndef EE_AOT_CPU_HZ
#define EE_AOT_CPU_HZ 0
#endif

const char ee_host_model_description[] =
    "the ahead-of-time C model of ECG model sha256 " ECG_MODEL_SHA256;

/* The model's input tensor is ecg_model_input(), inside the model's activation
 * buffer (as TFLite Micro's is inside its arena): later ops reuse its bytes, and the
 * core copies the loaded record into it before every invoke. The output is ours. */
static int8_t g_output_tensor[EE_OUTPUT_COUNT];

int th_model_init(void) {
    memset(ecg_model_input(), 0, EE_INPUT_BYTES);
    memset(g_output_tensor, 0, sizeof g_output_tensor);
    return ee_port_fail_init ? -1 : 0;
}

int th_model_invoke(void) {
    if (ee_port_fail_invoke) {
        return -1;
    }
    return ecg_model_invoke(ecg_model_input(), g_output_tensor) == ECG_MODEL_OK ? 0 : -1;
}

int8_t *th_input_tensor(size_t *size_bytes) {
    *size_bytes = EE_INPUT_BYTES;
    return ecg_model_input();
}

const int8_t *th_output_tensor(size_t *count) {
    *count = EE_OUTPUT_COUNT;
    return g_output_tensor;
}

th_quant_params_t th_input_quant(void) {
    th_quant_params_t q;
    q.scale = ECG_INPUT_SCALE;
    q.zero_point = ECG_INPUT_ZERO_POINT;
    return q;
}

th_quant_params_t th_output_quant(void) {
    th_quant_params_t q;
    q.scale = ECG_OUTPUT_SCALE;
    q.zero_point = ECG_OUTPUT_ZERO_POINT;
    return q;
}

void th_target_info(th_target_info_t *info) {
    info->target_name = EE_AOT_TARGET_NAME;
    info->firmware_version = EE_AOT_TARGET_NAME "-" EE_CORE_VERSION;
    info->model_hash = ECG_MODEL_SHA256;
    info->cpu_hz = (uint32_t)(EE_AOT_CPU_HZ);
    /* No interpreter arena: the activation buffer (input included) plays its part. */
    info->arena_bytes = (uint32_t)ECG_MODEL_ACTIVATION_BYTES;
    info->arena_used_bytes = (uint32_t)ECG_MODEL_ACTIVATION_BYTES;
}
