/*
 * tflm_runner.cc - the generated ECG model on TensorFlow Lite Micro
 * (espressif/esp-tflite-micro, ESP-NN kernels), behind the core's model hooks.
 *
 * The model (model/model_data.cc) stays in flash; the tensor arena, 16-byte
 * aligned and as long as the export says this chip needs (EE_ESP32_ARENA_BYTES,
 * config/model_config.h), goes to PSRAM when the board has it and to
 * internal RAM otherwise (Kconfig ECG_ARENA_INTERNAL_FIRST reverses the
 * order). The resolver holds exactly the model's ops (model/model_ops.h).
 */
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

#include "esp_heap_caps.h"
#include "sdkconfig.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "model_config.h"
#include "model_data.h"
#include "model_ops.h"
#include "model_runner.h"
#include "th_hooks.h"

#if !defined(EE_ESP32_ARENA_BYTES) || !defined(EE_ESP32_ARENA_TARGET)
#error "no tensor arena size for this chip: the export sizes it for esp32, esp32s3 and esp32c3 (config/model_config.h)"
#endif

namespace {

constexpr size_t kArenaAlignment = 16;
constexpr size_t kArenaBytes = (static_cast<size_t>(EE_ESP32_ARENA_BYTES) + kArenaAlignment - 1) /
                               kArenaAlignment * kArenaAlignment;
constexpr size_t kInputBytes = static_cast<size_t>(EE_INPUT_SAMPLES) * static_cast<size_t>(EE_INPUT_LEADS);

struct ArenaPlacement {
    uint32_t caps;
    const char *name;
};
constexpr ArenaPlacement kPsram = {MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT, "PSRAM"};
constexpr ArenaPlacement kInternal = {MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT, "internal RAM"};
#if defined(CONFIG_ECG_ARENA_INTERNAL_FIRST)
constexpr ArenaPlacement kArenaPlacements[] = {kInternal, kPsram};
#else
// PSRAM first keeps internal RAM for the stack and drivers; without PSRAM
// (ESP32-C3, most ESP32 boards) the first attempt just returns NULL.
constexpr ArenaPlacement kArenaPlacements[] = {kPsram, kInternal};
#endif

enum class InitState { kNotRun, kReady, kFailed };

InitState g_state = InitState::kNotRun;
char g_error[160] = "";
uint8_t *g_arena = nullptr;
const char *g_arena_memory = "none";
tflite::MicroInterpreter *g_interpreter = nullptr;
TfLiteTensor *g_input = nullptr;
TfLiteTensor *g_output = nullptr;

int fail(const char *format, ...) __attribute__((format(printf, 1, 2)));

int fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(g_error, sizeof g_error, format, args);
    va_end(args);
    g_state = InitState::kFailed;
    return -1;
}

bool same_scale(float actual, double expected) {
    return std::fabs(static_cast<double>(actual) - expected) <= 1e-6 * std::fabs(expected);
}

uint8_t *allocate_arena() {
    for (const ArenaPlacement &placement : kArenaPlacements) {
        void *arena = heap_caps_aligned_alloc(kArenaAlignment, kArenaBytes, placement.caps);
        if (arena != nullptr) {
            g_arena_memory = placement.name;
            return static_cast<uint8_t *>(arena);
        }
    }
    return nullptr;
}

// The interpreter's tensors must be the ones model_config.h describes: the
// core sizes its load buffer and the host its input from those numbers.
int check_tensors() {
    if (g_interpreter->inputs_size() != 1 || g_interpreter->outputs_size() != 1) {
        return fail("model has %u inputs and %u outputs; the port expects 1 and 1",
                    static_cast<unsigned>(g_interpreter->inputs_size()),
                    static_cast<unsigned>(g_interpreter->outputs_size()));
    }
    g_input = g_interpreter->input(0);
    g_output = g_interpreter->output(0);
    if (g_input->type != kTfLiteInt8 || g_output->type != kTfLiteInt8) {
        return fail("input and output must be int8 (types %d, %d): export a full-int8 model",
                    static_cast<int>(g_input->type), static_cast<int>(g_output->type));
    }
    if (g_input->bytes != kInputBytes) {
        return fail("input tensor has %u bytes, model_config.h says %u x %u: stale export?",
                    static_cast<unsigned>(g_input->bytes), static_cast<unsigned>(EE_INPUT_SAMPLES),
                    static_cast<unsigned>(EE_INPUT_LEADS));
    }
    if (g_output->bytes != static_cast<size_t>(ECG_NUM_CLASSES)) {
        return fail("output tensor has %u values, model_config.h says %u classes: stale export?",
                    static_cast<unsigned>(g_output->bytes), static_cast<unsigned>(ECG_NUM_CLASSES));
    }
    if (!same_scale(g_input->params.scale, ECG_INPUT_SCALE) ||
        g_input->params.zero_point != ECG_INPUT_ZERO_POINT ||
        !same_scale(g_output->params.scale, ECG_OUTPUT_SCALE) ||
        g_output->params.zero_point != ECG_OUTPUT_ZERO_POINT) {
        return fail("tensor quantization differs from model_config.h: stale export?");
    }
    return 0;
}

}  // namespace

int model_runner_init(void) {
    if (g_state != InitState::kNotRun) {
        return g_state == InitState::kReady ? 0 : -1;
    }
    const tflite::Model *model = tflite::GetModel(g_ecg_model_data);
    if (model->version() != TFLITE_SCHEMA_VERSION) {
        return fail("model schema version %u, this TFLite Micro reads version %d",
                    static_cast<unsigned>(model->version()), TFLITE_SCHEMA_VERSION);
    }

    g_arena = allocate_arena();
    if (g_arena == nullptr) {
        return fail("no room for the %u-byte tensor arena %s needs (largest free block: internal %u, PSRAM %u)",
                    static_cast<unsigned>(kArenaBytes), EE_ESP32_ARENA_TARGET,
                    static_cast<unsigned>(heap_caps_get_largest_free_block(kInternal.caps)),
                    static_cast<unsigned>(heap_caps_get_largest_free_block(kPsram.caps)));
    }

    // Static: the interpreter keeps pointers to both for the life of the program.
    static tflite::MicroMutableOpResolver<kEcgOpCount> resolver;
    if (ecg_register_ops(resolver) != kTfLiteOk) {
        return fail("registering the model's %d ops failed (model_ops.h)", kEcgOpCount);
    }
    static tflite::MicroInterpreter interpreter(model, resolver, g_arena, kArenaBytes);
    g_interpreter = &interpreter;
    if (g_interpreter->AllocateTensors() != kTfLiteOk) {
        // TFLM prints the cause (arena too small, op missing) on the console:
        // USB-Serial-JTAG on ESP32-S3/C3, nowhere on ESP32 (sdkconfig.defaults).
        // The export sized the arena for this chip; TFLM's log says how many bytes were missing.
        return fail("AllocateTensors() failed on %s: the export says it needs %u B, the arena has %u B in %s; "
                    "check the ops and the esp-nn version",
                    EE_ESP32_ARENA_TARGET, static_cast<unsigned>(EE_ESP32_ARENA_BYTES),
                    static_cast<unsigned>(kArenaBytes), g_arena_memory);
    }
    if (check_tensors() != 0) {
        return -1;
    }
    g_state = InitState::kReady;
    return 0;
}

const char *model_runner_error(void) { return g_error; }

const char *model_runner_name(void) { return "tflm"; }

size_t model_runner_arena_bytes(void) { return g_arena != nullptr ? kArenaBytes : 0; }

size_t model_runner_arena_used_bytes(void) {
    return g_state == InitState::kReady ? g_interpreter->arena_used_bytes() : 0;
}

const char *model_runner_arena_memory(void) { return g_arena_memory; }

/* ---- th_hooks.h: the model ------------------------------------------------- */

int th_model_init(void) { return model_runner_init(); }

int th_model_invoke(void) {
    if (g_state != InitState::kReady) {
        return -1;
    }
    return g_interpreter->Invoke() == kTfLiteOk ? 0 : -1;
}

int8_t *th_input_tensor(size_t *size_bytes) {
    if (g_state != InitState::kReady) {
        *size_bytes = 0;
        return nullptr;
    }
    *size_bytes = g_input->bytes;
    return g_input->data.int8;
}

const int8_t *th_output_tensor(size_t *count) {
    if (g_state != InitState::kReady) {
        *count = 0;
        return nullptr;
    }
    *count = g_output->bytes;
    return g_output->data.int8;
}

// Before a successful init (or after a failed one) `info%` still reports the
// quantization the export promised, from model_config.h.
th_quant_params_t th_input_quant(void) {
    th_quant_params_t q = {static_cast<float>(ECG_INPUT_SCALE), ECG_INPUT_ZERO_POINT};
    if (g_state == InitState::kReady) {
        q.scale = g_input->params.scale;
        q.zero_point = g_input->params.zero_point;
    }
    return q;
}

th_quant_params_t th_output_quant(void) {
    th_quant_params_t q = {static_cast<float>(ECG_OUTPUT_SCALE), ECG_OUTPUT_ZERO_POINT};
    if (g_state == InitState::kReady) {
        q.scale = g_output->params.scale;
        q.zero_point = g_output->params.zero_point;
    }
    return q;
}
