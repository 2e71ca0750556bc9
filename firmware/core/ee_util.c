/*
 * ee_util.c - CRC-32 and float formatting for the firmware core.
 */
#include "ee_util.h"

#include <string.h>

/* 10^n for n >= 0; exact in double up to n = 22. */
static double pow10_nonneg(int n) {
    double p = 1.0;
    while (n-- > 0) {
        p *= 10.0;
    }
    return p;
}

/* value * 10^k in at most two roundings (every float fits in |k| <= 54). */
static double scale_by_pow10(double value, int k) {
    if (k >= 0) {
        if (k > 22) {
            value *= 1e22;
            k -= 22;
        }
        return value * pow10_nonneg(k);
    }
    k = -k;
    if (k > 22) {
        value /= 1e22;
        k -= 22;
    }
    return value / pow10_nonneg(k);
}

size_t ee_format_float(char *out, float value) {
    /* 9 significant digits always round-trip a float32. The digits come
     * from double arithmetic, accurate to ~1e-15, far below the 1e-8
     * resolution of the ninth digit, so no bignum printing is needed. */
    enum { SIG_DIGITS = 9 };
    const uint32_t mant_min = 100000000u; /* 10^(SIG_DIGITS-1) */
    double v = (double)value;
    char digits[SIG_DIGITS];
    size_t n = 0;
    int exp10 = 0;
    int nd;
    int i;
    uint32_t mant;
    double t;

    if (v != v) {
        strcpy(out, "nan");
        return 3;
    }
    if (v < 0.0) {
        out[n++] = '-';
        v = -v;
    }
    if (v > 3.4028235e38) {
        strcpy(out + n, "inf");
        return n + 3;
    }
    if (v == 0.0) {
        out[n++] = '0';
        out[n] = '\0';
        return n;
    }

    /* Estimate the decimal exponent, then scale once into [1e8, 1e9). */
    for (t = v; t >= 10.0; t /= 10.0) {
        exp10++;
    }
    for (; t < 1.0; t *= 10.0) {
        exp10--;
    }
    mant = (uint32_t)(scale_by_pow10(v, SIG_DIGITS - 1 - exp10) + 0.5);
    if (mant >= 10u * mant_min) { /* estimate one too low, or rounded up */
        mant = (mant + 5u) / 10u;
        exp10++;
    } else if (mant < mant_min) { /* estimate one too high */
        exp10--;
        mant = (uint32_t)(scale_by_pow10(v, SIG_DIGITS - 1 - exp10) + 0.5);
    }
    for (i = SIG_DIGITS - 1; i >= 0; --i) {
        digits[i] = (char)('0' + mant % 10u);
        mant /= 10u;
    }
    nd = SIG_DIGITS;
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
    }

    if (exp10 >= 0 && exp10 < SIG_DIGITS) { /* ddd.ddd */
        for (i = 0; i <= exp10; ++i) {
            out[n++] = i < nd ? digits[i] : '0';
        }
        if (nd > exp10 + 1) {
            out[n++] = '.';
            for (i = exp10 + 1; i < nd; ++i) {
                out[n++] = digits[i];
            }
        }
    } else if (exp10 < 0 && exp10 >= -5) { /* 0.000ddd */
        out[n++] = '0';
        out[n++] = '.';
        for (i = -1; i > exp10; --i) {
            out[n++] = '0';
        }
        for (i = 0; i < nd; ++i) {
            out[n++] = digits[i];
        }
    } else { /* d.ddde-XX */
        int e = exp10 < 0 ? -exp10 : exp10;
        out[n++] = digits[0];
        if (nd > 1) {
            out[n++] = '.';
            for (i = 1; i < nd; ++i) {
                out[n++] = digits[i];
            }
        }
        out[n++] = 'e';
        out[n++] = exp10 < 0 ? '-' : '+';
        out[n++] = (char)('0' + e / 10);
        out[n++] = (char)('0' + e % 10);
    }
    out[n] = '\0';
    return n;
}

/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), four bits per step:
 * a 64-byte table keeps it small and still far faster than any UART. */
static const uint32_t crc32_nibble_table[16] = {
    0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu,
    0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
    0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu,
    0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
};

uint32_t ee_crc32_update(uint32_t crc, const uint8_t *data, size_t count) {
    uint32_t c = ~crc;
    size_t i;
    for (i = 0; i < count; ++i) {
        c ^= data[i];
        c = (c >> 4) ^ crc32_nibble_table[c & 0xFu];
        c = (c >> 4) ^ crc32_nibble_table[c & 0xFu];
    }
    return ~c;
}
