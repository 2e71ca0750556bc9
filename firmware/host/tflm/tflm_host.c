/*
 * tflm_host.c - the host side of the TensorFlow Lite Micro board: the host
 * port (../main.c) with the ESP32 port's own runner,
 * firmware/esp32/main/tflm_runner.cc, compiled against a TFLite Micro tree.
 *
 * The runner supplies the model hooks and model_runner.h; this file supplies
 * what th_esp32.cc supplies on the ESP32 (the target facts of `info%`, from
 * the same model_runner_* functions) and what the host port expects from a
 * model (port_model.h). edge_ecg.bench.tflm_board builds it; see README.md.
 *
 * Linked with -Wl,--wrap=th_model_init,--wrap=th_model_invoke: the core's
 * calls reach the wrappers below, which honour the host port's --fail-init /
 * --fail-invoke flags and, after init, write the runner's one-line status to
 * stderr (the ESP32 port prints it as its boot line), then call the runner.
 */
#include <stdio.h>

#include "ee_core.h"
#include "model_config.h"
#include "model_runner.h"
#include "port_model.h"
#include "th_hooks.h"

#define EE_TFLM_TARGET_NAME "host-tflm"

const char ee_host_model_description[] =
    "TensorFlow Lite Micro (firmware/esp32/main/tflm_runner.cc) running ECG model sha256 " ECG_MODEL_SHA256;

int __real_th_model_init(void);
int __real_th_model_invoke(void);
int __wrap_th_model_init(void);
int __wrap_th_model_invoke(void);

int __wrap_th_model_init(void) {
    int status;
    if (ee_port_fail_init) {
        return -1;
    }
    status = __real_th_model_init();
    if (status == 0) {
        fprintf(stderr, "%s: model ready, arena %u B in %s, %u B used\n", EE_TFLM_TARGET_NAME,
                (unsigned)model_runner_arena_bytes(), model_runner_arena_memory(),
                (unsigned)model_runner_arena_used_bytes());
    } else {
        fprintf(stderr, "%s: model init failed: %s\n", EE_TFLM_TARGET_NAME, model_runner_error());
    }
    fflush(stderr);
    return status;
}

int __wrap_th_model_invoke(void) {
    return ee_port_fail_invoke ? -1 : __real_th_model_invoke();
}

void th_target_info(th_target_info_t *info) {
    info->target_name = EE_TFLM_TARGET_NAME;
    info->firmware_version = EE_TFLM_TARGET_NAME "-" EE_CORE_VERSION "+tflm";
    info->model_hash = ECG_MODEL_SHA256;
    info->cpu_hz = 0u; /* unknown: timestamps are host microseconds */
    info->arena_bytes = (uint32_t)model_runner_arena_bytes();
    info->arena_used_bytes = (uint32_t)model_runner_arena_used_bytes();
}
