/*
 * ee_preprocess.c - standardize, clip and quantize ECG samples (see the
 * header for the exact formula).
 *
 * Bit-exactness with numpy needs every step in float32 with no fused or
 * reordered operations: build without -ffast-math, and on targets whose
 * compiler may contract a*b+c into an FMA there is nothing to contract here
 * (only subtractions and divisions).
 */
#include "ee_preprocess.h"

#include <math.h>

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

ee_preprocess_status_t ee_preprocess_mv(const float *samples_mv, size_t n_samples, size_t n_leads,
                                        const ee_preprocess_params_t *params, int8_t *out) {
    size_t t;
    size_t l;
    const float clip = params != NULL ? params->clip : 0.0f;
    float zero_point;

    if (samples_mv == NULL || params == NULL || out == NULL || params->mean == NULL ||
        params->std == NULL || !(params->scale > 0.0f)) {
        return EE_PREPROCESS_BAD_ARGUMENT;
    }
    for (l = 0; l < n_leads; ++l) {
        if (!(params->std[l] > 0.0f)) {
            return EE_PREPROCESS_BAD_ARGUMENT;
        }
    }
    /* numpy adds a Python int to a float32 array in float32; so do we. */
    zero_point = (float)params->zero_point;

    for (t = 0; t < n_samples; ++t) {
        for (l = 0; l < n_leads; ++l) {
            const size_t i = t * n_leads + l;
            float z = (samples_mv[i] - params->mean[l]) / params->std[l];
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
