/*
 * ee_preprocess.c - high-pass (optional), standardize, clip and quantize ECG
 * samples (see the header for the exact formula).
 *
 * Bit-exactness with numpy needs every step in float32 with no fused or
 * reordered operations: build without -ffast-math and with -ffp-contract=off
 * (the filter's multiply-adds would otherwise become FMAs on targets that
 * have them). Each filter statement keeps numpy's left-to-right order.
 */
#include "ee_preprocess.h"

#include <float.h>
#include <math.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != -1
#error "ee_preprocess.c needs float arithmetic evaluated in float (FLT_EVAL_METHOD 0) to match numpy"
#endif

/* Saturate a rounded float to int8, NaN counting as `fallback`. */
static int8_t saturate_int8(float value, int32_t fallback) {
    if (value != value) {
        value = (float)fallback;
    }
    if (value <= -128.0f) {
        return -128;
    }
    if (value >= 127.0f) {
        return 127;
    }
    return (int8_t)value;
}

/* One biquad pass over work[0..n) in place, forward or (backward != 0) from
 * the end, on the values minus the pass's first one, from a zero state. */
static void biquad_pass(float *work, size_t n, int backward, const float *c) {
    const float b0 = c[0], b1 = c[1], b2 = c[2], a1 = c[3], a2 = c[4];
    const float origin = backward ? work[n - 1] : work[0];
    float s1 = 0.0f;
    float s2 = 0.0f;
    size_t k;
    for (k = 0; k < n; ++k) {
        const size_t t = backward ? n - 1 - k : k;
        const float u = work[t] - origin;
        const float y = b0 * u + s1;
        s1 = b1 * u - a1 * y + s2;
        s2 = b2 * u - a2 * y;
        work[t] = y;
    }
}

ee_preprocess_status_t ee_preprocess_mv(const float *samples_mv, size_t n_samples, size_t n_leads,
                                        const ee_preprocess_params_t *params, int8_t *out) {
    size_t t;
    size_t l;
    float clip;
    float zero_point;

    if (samples_mv == NULL || params == NULL || out == NULL || params->mean == NULL ||
        params->std == NULL || !(params->scale > 0.0f) ||
        (params->highpass != NULL && params->work == NULL)) {
        return EE_PREPROCESS_BAD_ARGUMENT;
    }
    for (l = 0; l < n_leads; ++l) {
        if (!(params->std[l] > 0.0f)) {
            return EE_PREPROCESS_BAD_ARGUMENT;
        }
    }
    clip = params->clip;
    /* numpy adds a Python int to a float32 array in float32; so do we. */
    zero_point = (float)params->zero_point;

    for (l = 0; l < n_leads; ++l) {
        float *lead = params->work;
        if (params->highpass != NULL && n_samples > 0) {
            for (t = 0; t < n_samples; ++t) {
                lead[t] = samples_mv[t * n_leads + l];
            }
            biquad_pass(lead, n_samples, 0, params->highpass);
            biquad_pass(lead, n_samples, 1, params->highpass);
        }
        for (t = 0; t < n_samples; ++t) {
            const size_t i = t * n_leads + l;
            const float x = params->highpass != NULL ? lead[t] : samples_mv[i];
            float z = (x - params->mean[l]) / params->std[l];
            if (clip > 0.0f) {
                z = z < -clip ? -clip : (z > clip ? clip : z);
            }
            /* nearbyintf under the default FE_TONEAREST mode rounds half to
             * even, exactly like np.round; roundf (half away from zero)
             * would differ on every .5 tie. */
            out[i] = saturate_int8(nearbyintf(z / params->scale) + zero_point, params->zero_point);
        }
    }
    return EE_PREPROCESS_OK;
}
