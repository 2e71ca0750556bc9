/*
 * unit_tests.c - host-side checks of the core's pure functions, driven by
 * tests/test_firmware_core.py, which writes the inputs and the numpy answers.
 *
 *   unit_tests preprocess CASE EXPECTED
 *       CASE (native byte order): uint32 n_samples, uint32 n_leads,
 *       float clip, float scale, int32 zero_point, int32 has_highpass,
 *       float highpass[5], float mean[n_leads], float std[n_leads],
 *       float samples[n_samples * n_leads].
 *       EXPECTED: int8[n_samples * n_leads] from the numpy reference.
 *       Exit 0 when ee_preprocess_mv() matches bit for bit, else 1.
 *
 *   unit_tests format-float FLOATS
 *       FLOATS: float32 values; prints ee_format_float() of each, one a line.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ee_preprocess.h"
#include "ee_util.h"

#define MAX_LEADS 64
#define MAX_VALUES (1u << 20)

static float g_samples[MAX_VALUES];
static float g_work[MAX_VALUES];
static int8_t g_expected[MAX_VALUES];
static int8_t g_actual[MAX_VALUES];

static int read_exact(FILE *f, void *dst, size_t size, const char *what) {
    if (fread(dst, 1, size, f) != size) {
        fprintf(stderr, "short read: %s\n", what);
        return -1;
    }
    return 0;
}

static int run_preprocess(const char *case_path, const char *expected_path) {
    uint32_t n_samples;
    uint32_t n_leads;
    float clip;
    float scale;
    int32_t zero_point;
    int32_t has_highpass;
    float highpass[5];
    float mean[MAX_LEADS];
    float std[MAX_LEADS];
    ee_preprocess_params_t params;
    size_t n;
    size_t i;
    size_t mismatches = 0;
    FILE *f = fopen(case_path, "rb");
    FILE *g;

    if (f == NULL) {
        perror(case_path);
        return 2;
    }
    if (read_exact(f, &n_samples, sizeof n_samples, "n_samples") ||
        read_exact(f, &n_leads, sizeof n_leads, "n_leads") || read_exact(f, &clip, sizeof clip, "clip") ||
        read_exact(f, &scale, sizeof scale, "scale") ||
        read_exact(f, &zero_point, sizeof zero_point, "zero_point") ||
        read_exact(f, &has_highpass, sizeof has_highpass, "has_highpass") ||
        read_exact(f, highpass, sizeof highpass, "highpass")) {
        fclose(f);
        return 2;
    }
    n = (size_t)n_samples * n_leads;
    if (n_leads == 0 || n_leads > MAX_LEADS || n > MAX_VALUES) {
        fprintf(stderr, "case too large: %u x %u\n", (unsigned)n_samples, (unsigned)n_leads);
        fclose(f);
        return 2;
    }
    if (read_exact(f, mean, n_leads * sizeof(float), "mean") || read_exact(f, std, n_leads * sizeof(float), "std") ||
        read_exact(f, g_samples, n * sizeof(float), "samples")) {
        fclose(f);
        return 2;
    }
    fclose(f);

    g = fopen(expected_path, "rb");
    if (g == NULL) {
        perror(expected_path);
        return 2;
    }
    if (read_exact(g, g_expected, n, "expected")) {
        fclose(g);
        return 2;
    }
    fclose(g);

    params.mean = mean;
    params.std = std;
    params.clip = clip;
    params.scale = scale;
    params.zero_point = zero_point;
    params.highpass = has_highpass ? highpass : NULL;
    params.work = g_work;
    if (ee_preprocess_mv(g_samples, n_samples, n_leads, &params, g_actual) != EE_PREPROCESS_OK) {
        fprintf(stderr, "ee_preprocess_mv rejected the parameters\n");
        return 1;
    }
    for (i = 0; i < n; ++i) {
        if (g_actual[i] != g_expected[i]) {
            if (mismatches < 10) {
                fprintf(stderr, "mismatch at %lu (t=%lu, lead=%lu): x=%.9g C=%d numpy=%d\n", (unsigned long)i,
                        (unsigned long)(i / n_leads), (unsigned long)(i % n_leads), (double)g_samples[i], g_actual[i],
                        g_expected[i]);
            }
            mismatches++;
        }
    }
    if (mismatches > 0) {
        fprintf(stderr, "%lu of %lu values differ\n", (unsigned long)mismatches, (unsigned long)n);
        return 1;
    }
    printf("preprocess: %lu values match\n", (unsigned long)n);

    /* Invalid parameters must be refused, not divided by. */
    if (has_highpass) {
        params.work = NULL;
        if (ee_preprocess_mv(g_samples, n_samples, n_leads, &params, g_actual) != EE_PREPROCESS_BAD_ARGUMENT) {
            fprintf(stderr, "a high-pass without a work buffer was accepted\n");
            return 1;
        }
        params.work = g_work;
    }
    std[0] = 0.0f;
    if (ee_preprocess_mv(g_samples, n_samples, n_leads, &params, g_actual) != EE_PREPROCESS_BAD_ARGUMENT) {
        fprintf(stderr, "std = 0 was accepted\n");
        return 1;
    }
    return 0;
}

static int run_format_float(const char *path) {
    FILE *f = fopen(path, "rb");
    float value;
    char text[EE_FLOAT_TEXT_MAX];
    if (f == NULL) {
        perror(path);
        return 2;
    }
    while (fread(&value, sizeof value, 1, f) == 1) {
        size_t length = ee_format_float(text, value);
        if (length != strlen(text) || length >= sizeof text) {
            fprintf(stderr, "bad length %lu for %.9g\n", (unsigned long)length, (double)value);
            fclose(f);
            return 1;
        }
        printf("%s\n", text);
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "preprocess") == 0) {
        return run_preprocess(argv[2], argv[3]);
    }
    if (argc == 3 && strcmp(argv[1], "format-float") == 0) {
        return run_format_float(argv[2]);
    }
    fprintf(stderr, "usage: %s preprocess CASE EXPECTED | format-float FLOATS\n", argv[0]);
    return 2;
}
