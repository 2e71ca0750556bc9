/*
 * checksum_model.c - the host port's default model hooks: a CHECKSUM RUNNER,
 * FOR TRANSPORT TESTS ONLY.
 *
 * It never runs the ECG network and its outputs mean nothing medically: each
 * of the five int8 outputs is a position-weighted hash of the input bytes
 * (see checksum_runner_invoke), so a host can recompute them and prove that
 * every byte arrived intact and in its place. Never use it to measure accuracy.
 *
 * Like TensorFlow Lite Micro, whose memory planner reuses the input tensor's
 * bytes for later tensors, it OVERWRITES ITS INPUT TENSOR on every invoke
 * (clobber_input): a harness that invokes twice without restoring the input
 * gets other outputs the second time. The core restores it before every
 * invoke, and the tests of `infer N W` prove it on this model.
 *
 * main.c includes this file unless built with -DEE_HOST_MODEL_SEPARATE=1, so
 * the plain build (main.c and the core, nothing else) keeps this model; do
 * not also compile it on its own next to that build.
 */
#include <string.h>

#include "ee_core.h"
#include "port_model.h"
#include "th_hooks.h"

const char ee_host_model_description[] = "a checksum runner, for transport tests only";

static int8_t g_input_tensor[EE_INPUT_SAMPLES * EE_INPUT_LEADS];
static int8_t g_output_tensor[EE_OUTPUT_COUNT];


/* Output k hashes the input bytes at positions i = k, k+5, k+10, ... in
 * order, each weighted by its position: h = h*31 + (byte+1)*(i+1) mod 2^32,
 * then folded to 8 bits. A changed, lost or moved byte changes the outputs.
 * edge_ecg/bench/protocol.py (checksum_runner_outputs) computes the same. */
static void checksum_runner_invoke(void) {
    const uint8_t *bytes = (const uint8_t *)g_input_tensor;
    const size_t n = sizeof g_input_tensor;
    size_t k;
    for (k = 0; k < EE_OUTPUT_COUNT; ++k) {
        uint32_t h = 0;
        size_t i;
        for (i = k; i < n; i += EE_OUTPUT_COUNT) {
            h = h * 31u + ((uint32_t)bytes[i] + 1u) * (uint32_t)(i + 1u);
        }
        {
            /* Fold to a byte and read it as two's complement. */
            const int folded = (int)((h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) & 0xFFu);
            g_output_tensor[k] = (int8_t)(folded >= 128 ? folded - 256 : folded);
        }
    }
}

/* What TFLite Micro's planner does to the input: later tensors are written
 * over it. x -> 7x + 1 (mod 256) has no fixed point, so every byte changes. */
static void clobber_input(void) {
    uint8_t *bytes = (uint8_t *)g_input_tensor;
    size_t i;
    for (i = 0; i < sizeof g_input_tensor; ++i) {
        bytes[i] = (uint8_t)(bytes[i] * 7u + 1u);
    }
}

int th_model_init(void) {
    memset(g_input_tensor, 0, sizeof g_input_tensor);
    memset(g_output_tensor, 0, sizeof g_output_tensor);
    return ee_port_fail_init ? -1 : 0;
}

int th_model_invoke(void) {
    if (ee_port_fail_invoke) {
        return -1;
    }
    checksum_runner_invoke();
    clobber_input();
    return 0;
}

int8_t *th_input_tensor(size_t *size_bytes) {
    *size_bytes = sizeof g_input_tensor;
    return g_input_tensor;
}

const int8_t *th_output_tensor(size_t *count) {
    *count = EE_OUTPUT_COUNT;
    return g_output_tensor;
}

th_quant_params_t th_input_quant(void) {
    /* Placeholder values of plausible size; the runner ignores them. */
    th_quant_params_t q = {1.0f / 32.0f, 0};
    return q;
}

th_quant_params_t th_output_quant(void) {
    /* Softmax-style outputs: [0, 1) in steps of 1/256. */
    th_quant_params_t q = {1.0f / 256.0f, -128};
    return q;
}

void th_target_info(th_target_info_t *info) {
    info->target_name = "host-checksum";
    info->firmware_version = "host-" EE_CORE_VERSION;
    info->model_hash = "checksum-runner";
    info->cpu_hz = 0;
    info->arena_bytes = 0;
    info->arena_used_bytes = 0;
}
