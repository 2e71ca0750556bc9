/*
 * tflm_runner.h - the generated model on TensorFlow Lite Micro.
 *
 * tflm_runner.cc implements the core's model hooks (th_model_init,
 * th_model_invoke, th_input_tensor, ...) and these extras for the port.
 */
#ifndef TFLM_RUNNER_H
#define TFLM_RUNNER_H

#include <cstddef>

/* Load the model, allocate the arena and the tensors. Runs once; later calls
 * return the first result. 0 on success. th_model_init() calls it too. */
int tflm_runner_init();

/* Why tflm_runner_init() failed, in one line; "" when it succeeded. */
const char *tflm_runner_error();

/* Size of the tensor arena (ECG_ARENA_BYTES rounded up to 16); 0 when none. */
size_t tflm_arena_bytes();

/* Arena bytes the model really uses (after AllocateTensors); 0 when none. */
size_t tflm_arena_used_bytes();

/* Where the arena lives: "PSRAM", "internal RAM" or "none". */
const char *tflm_arena_memory();

#endif /* TFLM_RUNNER_H */
