/*
 * model_runner.h - what the port needs from the model runtime besides the
 * core's model hooks (th_hooks.h: th_model_init, th_model_invoke, ...).
 *
 * A project compiles exactly one runner (main/CMakeLists.txt, ECG_RUNTIME):
 *   tflm_runner.cc  TensorFlow Lite Micro (esp-tflite-micro) interpreting
 *                   model/model_data.cc in a heap-allocated tensor arena
 *   aot_runner.c    the ahead-of-time C model model/ecg_model.c, whose
 *                   activations live in one static buffer; no interpreter
 * Both implement the model hooks and these functions, callable from C and C++.
 */
#ifndef MODEL_RUNNER_H
#define MODEL_RUNNER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Prepare the model. Runs once; later calls return the first result. 0 on
 * success. th_model_init() calls it too. */
int model_runner_init(void);

/* Why model_runner_init() failed, in one line; "" when it succeeded. */
const char *model_runner_error(void);

/* The runtime: "tflm" or "aot" (as `edge-ecg build --runtime`). */
const char *model_runner_name(void);

/* Bytes of the model's working memory (tflm: the tensor arena, this chip's
 * ECG_ARENA_BYTES_ESP32 or _ESP32S3 rounded up to 16; aot:
 * ECG_MODEL_ACTIVATION_BYTES); 0 when none. */
size_t model_runner_arena_bytes(void);

/* Of those, the bytes the model really uses (tflm: after AllocateTensors, 0
 * before a successful init; aot: all of them, always). */
size_t model_runner_arena_used_bytes(void);

/* Where that memory lives: "PSRAM", "internal RAM", "static (internal RAM)"
 * or "none". */
const char *model_runner_arena_memory(void);

#ifdef __cplusplus
}
#endif

#endif /* MODEL_RUNNER_H */
