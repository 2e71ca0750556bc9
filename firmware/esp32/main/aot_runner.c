/*
 * aot_runner.c - the generated ECG model as ahead-of-time C (model/ecg_model.c,
 * written by `edge-ecg export --runtime aot`), behind the core's model hooks.
 * No interpreter and no TensorFlow Lite Micro: ecg_model_invoke() runs the
 * ops as plain C functions with the weights in flash and every intermediate
 * tensor at a fixed offset in one static buffer of ECG_MODEL_ACTIVATION_BYTES
 * (internal RAM, .bss), so nothing is allocated at run time.
 *
 * The input tensor is inside that buffer, the output a static int8 buffer; the quantization
 * reported to the host is model_config.h's, which must agree with the one the
 * generator read from the model (ecg_model.h): the integer facts are checked
 * at compile time, the scales at init. Same hook contract as tflm_runner.cc.
 *
 * C99; built with -DEE_HAVE_MODEL_CONFIG=1 and config/, core/, model/ on the
 * include path (main/CMakeLists.txt).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ecg_model.h"
#include "model_config.h"
#include "model_runner.h"
#include "th_hooks.h"

/* The generated model must be the one model_config.h describes: the core
 * sizes its load buffer and the host its input from model_config.h. A stale
 * pair stops the build here; the fix is `edge-ecg export --run RUN --runtime
 * aot`, then `edge-ecg build --runtime aot` again. */
#if ECG_MODEL_INPUT_SIZE != (EE_INPUT_SAMPLES * EE_INPUT_LEADS)
#error "model/ecg_model.h: ECG_MODEL_INPUT_SIZE differs from model_config.h's samples x leads: stale export"
#endif
#if ECG_MODEL_OUTPUT_SIZE != ECG_NUM_CLASSES
#error "model/ecg_model.h: ECG_MODEL_OUTPUT_SIZE differs from model_config.h's ECG_NUM_CLASSES: stale export"
#endif
#if ECG_MODEL_INPUT_ZERO_POINT != ECG_INPUT_ZERO_POINT || ECG_MODEL_OUTPUT_ZERO_POINT != ECG_OUTPUT_ZERO_POINT
#error "model/ecg_model.h: zero points differ from model_config.h's: stale export"
#endif

enum { kNotRun, kReady, kFailed };

static int g_state = kNotRun;
static char g_error[160] = "";

/* The model's input tensor is ecg_model_input(), inside its activation buffer
 * (later ops reuse those bytes); the core fills it (th_input_tensor) before every
 * invoke. The output is written to g_output. */
static int8_t g_output[ECG_MODEL_OUTPUT_SIZE];

/* The generator and model_config.h print the same float32 scale with a
 * different number of digits; equal within float rounding is the same. */
static int same_scale(double actual, double expected) {
    const double difference = actual > expected ? actual - expected : expected - actual;
    return difference <= 1e-6 * (expected > 0.0 ? expected : -expected);
}

static int fail(const char *message) {
    snprintf(g_error, sizeof g_error, "%s", message);
    g_state = kFailed;
    return -1;
}

int model_runner_init(void) {
    if (g_state != kNotRun) {
        return g_state == kReady ? 0 : -1;
    }
    if (!same_scale(ECG_MODEL_INPUT_SCALE, ECG_INPUT_SCALE) ||
        !same_scale(ECG_MODEL_OUTPUT_SCALE, ECG_OUTPUT_SCALE)) {
        return fail("ecg_model.h and model_config.h have different scales: stale export? "
                    "Run `edge-ecg export --run RUN --runtime aot` again");
    }
    g_state = kReady;
    return 0;
}

const char *model_runner_error(void) { return g_error; }

const char *model_runner_name(void) { return "aot"; }

/* The activation buffer is static and planned to the byte at generation time:
 * all of it is the model's, whatever init said. */
size_t model_runner_arena_bytes(void) { return (size_t)ECG_MODEL_ACTIVATION_BYTES; }

size_t model_runner_arena_used_bytes(void) { return (size_t)ECG_MODEL_ACTIVATION_BYTES; }

const char *model_runner_arena_memory(void) { return "static (internal RAM)"; }

/* ---- th_hooks.h: the model ------------------------------------------------- */

int th_model_init(void) { return model_runner_init(); }

int th_model_invoke(void) {
    if (g_state != kReady) {
        return -1;
    }
    return ecg_model_invoke(ecg_model_input(), g_output) == ECG_MODEL_OK ? 0 : -1;
}

int8_t *th_input_tensor(size_t *size_bytes) {
    if (g_state != kReady) {
        *size_bytes = 0;
        return NULL;
    }
    *size_bytes = ECG_MODEL_INPUT_SIZE;
    return ecg_model_input();
}

const int8_t *th_output_tensor(size_t *count) {
    if (g_state != kReady) {
        *count = 0;
        return NULL;
    }
    *count = sizeof g_output;
    return g_output;
}

/* model_config.h's quantization, before and after init alike (the compile-time
 * and init checks above tie it to the generated model's). */
th_quant_params_t th_input_quant(void) {
    th_quant_params_t q;
    q.scale = (float)ECG_INPUT_SCALE;
    q.zero_point = ECG_INPUT_ZERO_POINT;
    return q;
}

th_quant_params_t th_output_quant(void) {
    th_quant_params_t q;
    q.scale = (float)ECG_OUTPUT_SCALE;
    q.zero_point = ECG_OUTPUT_ZERO_POINT;
    return q;
}
