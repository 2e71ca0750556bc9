/*
 * ee_preprocess.h - PTB-XL samples in millivolts to the model's int8 input,
 * on the device, bit-exact with the Python reference (edge_ecg/preprocess.py).
 *
 * For every value x of lead l, in float32 and in this order:
 *
 *     if highpass != NULL:  x = the window's lead l, high-pass filtered (below)
 *     z = (x - mean[l]) / std[l]
 *     if clip > 0:  z = min(max(z, -clip), clip)
 *     q = round_half_to_even(z / scale) + zero_point, clamped to [-128, 127]
 *
 * which is, in numpy with float32 arrays,
 *
 *     z = (x - mean) / std
 *     if clip > 0: z = np.clip(z, -clip, clip)
 *     q = np.clip(np.round(z / scale) + zero_point, -128, 127).astype(np.int8)
 *
 * The high-pass (a model trained with `edge-ecg train --highpass HZ`; its
 * model_config.h defines ECG_HIGHPASS_SOS) is zero-phase over the window: one
 * biquad (b0, b1, b2, a1, a2; transposed direct form II) run forward over
 * u[t] = x[t] - x[0], then backward over the forward output minus its last
 * sample, each pass from a zero state. A NaN sample makes its whole lead NaN,
 * hence zero_point. Bit-exactness needs no fused multiply-add: build this file
 * with -ffp-contract=off (GCC contracts a*b+c in GNU C modes, and ESP32 and
 * Cortex-M4F have FMA instructions; the ESP-IDF project sets the flag).
 *
 * PTB-XL's WFDB files store int16 ADC units at 1000 units per mV; divide by
 * 1000 (in float32) to get the millivolts this function takes.
 *
 * Nothing here assumes 12 leads: a reduced-lead model (edge-ecg --leads) has
 * n_leads = ECG_INPUT_LEADS from its generated model_config.h, with the leads
 * in the order of ECG_LEAD_NAMES and one ECG_LEAD_MEAN/ECG_LEAD_STD per lead.
 */
#ifndef EE_PREPROCESS_H
#define EE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

/* Callable from C++ ports (TensorFlow Lite Micro is C++). */
#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const float *mean; /* per lead, n_leads values, in mV */
    const float *std;  /* per lead, n_leads values, in mV, each > 0 */
    float clip;        /* clip z to [-clip, clip] in std units; <= 0: no clipping */
    float scale;       /* input quantization scale, > 0 */
    int32_t zero_point;
    const float *highpass; /* NULL: none; else ECG_HIGHPASS_SOS, 5 values b0, b1, b2, a1, a2 */
    float *work;           /* with highpass: n_samples floats of scratch, else unused */
} ee_preprocess_params_t;

typedef enum {
    EE_PREPROCESS_OK = 0,
    EE_PREPROCESS_BAD_ARGUMENT /* NULL pointer, std <= 0, scale <= 0, highpass without work */
} ee_preprocess_status_t;

/* Convert samples_mv, (n_samples, n_leads) row-major, into out (same shape).
 * A NaN sample becomes zero_point (clamped), i.e. "no information". */
ee_preprocess_status_t ee_preprocess_mv(const float *samples_mv, size_t n_samples, size_t n_leads,
                                        const ee_preprocess_params_t *params, int8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* EE_PREPROCESS_H */
