/*
 * th_hooks.h - what a port implements for the firmware core (MLPerf Tiny
 * "th_*" style: test-harness hooks).
 *
 * The core calls only these functions to reach the outside world, so it never
 * includes a platform header. Every hook is called from the thread that calls
 * ee_core_rx_byte()/ee_core_poll(), never from an interrupt.
 */
#ifndef TH_HOOKS_H
#define TH_HOOKS_H

#include <stddef.h>
#include <stdint.h>

/* Callable from C++ ports (TensorFlow Lite Micro is C++). */
#ifdef __cplusplus
extern "C" {
#endif

/* Affine int8 quantization: real = scale * (q - zero_point). */
typedef struct {
    float scale;
    int32_t zero_point;
} th_quant_params_t;

/* Facts about the target and model, reported by the `info%` command. */
typedef struct {
    const char *target_name;      /* board or port, e.g. "esp32s3"; also `name%` */
    const char *firmware_version; /* the port's own version, e.g. a git describe */
    const char *model_hash;       /* hex digest of the deployed model file */
    uint32_t cpu_hz;              /* CPU clock in Hz; 0 when unknown */
    uint32_t arena_bytes;         /* tensor arena size; 0 when not applicable */
    uint32_t arena_used_bytes;    /* arena bytes the model really uses */
} th_target_info_t;

/* Send `length` bytes to the host. Blocks until they are queued or sent. */
void th_serial_write(const char *data, size_t length);

/* Microseconds from a free-running monotonic clock; wraps at 2^32. */
uint32_t th_timestamp_us(void);

/* Prepare the model (interpreter, arena). Returns 0 on success. */
int th_model_init(void);

/* Run one inference on the input tensor. Returns 0 on success. */
int th_model_invoke(void);

/* The model's int8 input tensor; its size in bytes goes to *size_bytes. */
int8_t *th_input_tensor(size_t *size_bytes);

/* The model's int8 output tensor; its element count goes to *count. */
const int8_t *th_output_tensor(size_t *count);

/* Quantization of the input and output tensors. */
th_quant_params_t th_input_quant(void);
th_quant_params_t th_output_quant(void);

/* Fill *info; strings must stay valid for the life of the program. */
void th_target_info(th_target_info_t *info);

#ifdef __cplusplus
}
#endif

#endif /* TH_HOOKS_H */
