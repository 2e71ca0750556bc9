"""Exact Python twins of TFLite Micro's integer arithmetic, for generation-time constants.

Everything the generator folds into the C file (multipliers and shifts, activation
clamps, lookup tables) is computed here exactly as TFLite Micro's Prepare step and
reference kernels compute it, with Python integers standing in for C's int32/int64.
Written from the behaviour of ``tensorflow/lite/kernels/internal/common.h``,
``quantization_util.cc``, ``kernel_util.cc`` and gemmlowp's ``fixedpoint.h``.

Two rounding variants exist in TFLite (the ``TFLITE_SINGLE_ROUNDING`` build flag):

* ``"double"`` (the default build, and what the pip ``tflite-micro`` package uses, as
  the tests confirm): gemmlowp's SaturatingRoundingDoublingHighMul (nearest, ties
  towards +infinity) then RoundingDivideByPOT (nearest, ties away from zero): two
  roundings.
* ``"single"``: one 64-bit product, add half, arithmetic shift (ties towards +infinity).
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
ROUNDINGS = ("double", "single")


def wrap32(x: int) -> int:
    """``x`` reduced to a two's-complement int32, as C's int32 arithmetic wraps."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _trunc_div(a: int, b: int) -> int:
    """C integer division (truncates towards zero); ``b`` > 0."""
    q = abs(a) // b
    return q if a >= 0 else -q


def round_half_away(x: float) -> int:
    """std::round (TfLiteRound): halves go away from zero. Exact for any double."""
    if x < 0:
        return -round_half_away(-x)
    f = math.floor(x)
    return int(f) + (1 if x - f >= 0.5 else 0)


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


# --- quantization_util.cc ------------------------------------------------------------


def quantize_multiplier(real: float, rounding: str = "double") -> tuple[int, int]:
    """QuantizeMultiplier: ``real`` ~= multiplier * 2**(shift - 31), multiplier in
    [2**30, 2**31). Uses frexp like TFLite (not its TFLITE_EMULATE_FLOAT path)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed > (1 << 31):
        raise ValueError(f"multiplier {real!r} out of range")
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:  # flush tiny multipliers to zero, as TFLite does
        shift, q_fixed = 0, 0
    if rounding == "single" and shift > 30:  # single rounding saturates the shift
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def quantize_to_int(scale: float, zero_point: int, value: float) -> int:
    """kernel_util.cc's Quantize(): float32 division, std::round, plus zero point."""
    tmp = np.float32(value) / np.float32(scale)  # float arithmetic, as in C++
    return zero_point + round_half_away(float(tmp))


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for an int8 output. ``activation`` is the
    TFLite ActivationFunctionType (0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6)."""
    qmin, qmax = -128, 127
    if activation == 0:
        return qmin, qmax
    if activation == 1:
        return max(qmin, quantize_to_int(scale, zero_point, 0.0)), qmax
    if activation == 3:
        return (
            max(qmin, quantize_to_int(scale, zero_point, 0.0)),
            min(qmax, quantize_to_int(scale, zero_point, 6.0)),
        )
    if activation == 2:
        return (
            max(qmin, quantize_to_int(scale, zero_point, -1.0)),
            min(qmax, quantize_to_int(scale, zero_point, 1.0)),
        )
    raise ValueError(f"unsupported fused activation {activation}")


# --- common.h / gemmlowp ---------------------------------------------------------------


def srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return wrap32(_trunc_div(ab + nudge, 1 << 31))


def rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT: rounding arithmetic right shift of an int32."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int, rounding: str = "double") -> int:
    """MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift)."""
    if rounding == "single":
        total = 31 - shift
        return wrap32((x * multiplier + (1 << (total - 1))) >> total)
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rdbpot(srdhm(wrap32(x * (1 << left)), multiplier), right)


def _sat_shift_left(x: int, exponent: int) -> int:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> for exponent > 0 (int32)."""
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return wrap32(x << exponent)


def _rescale(x: int, src_integer_bits: int, dst_integer_bits: int) -> int:
    exponent = src_integer_bits - dst_integer_bits
    if exponent > 0:
        return _sat_shift_left(x, exponent)
    if exponent < 0:
        return rdbpot(x, -exponent)
    return x


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    # Q0.31 in and out; Taylor expansion around -1/8.
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(wrap32(srdhm(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap32(constant_term + srdhm(constant_term, wrap32(x + poly)))


_EXP_BARREL = (
    (-2, 1672461947),  # exp(-1/4)
    (-1, 1302514674),  # exp(-1/2)
    (0, 790015084),  # exp(-1)
    (1, 290630308),  # exp(-2)
    (2, 39332535),  # exp(-4)
    (3, 720401),  # exp(-8)
    (4, 242),  # exp(-16)
)


def _exp_on_negative_values(a: int, integer_bits: int) -> int:
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = wrap32((a & mask) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0)
    )
    remainder = wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            if remainder & (1 << (fractional_bits + exponent)):
                result = srdhm(result, multiplier)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        if a < clamp:
            result = 0
    if a == 0:
        result = INT32_MAX  # FixedPoint<int32, 0>::One()
    return result


def _one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    total = a + INT32_MAX  # RoundingHalfSum(a, One()) in 64-bit
    half_denominator = wrap32(_trunc_div(total + (1 if total >= 0 else -1), 2))
    # Newton-Raphson division in Q2.29.
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 * d
    one_q2 = 1 << 29
    for _ in range(3):
        half_denominator_times_x = srdhm(half_denominator, x)
        one_minus = wrap32(one_q2 - half_denominator_times_x)
        x = wrap32(x + _rescale(srdhm(x, one_minus), 4, 2))
    return _rescale(x, 1, 0)  # ExactMulByPot<-1> then Rescale<0>


def logistic_raw(a: int, integer_bits: int) -> int:
    """gemmlowp::logistic on a FixedPoint<int32, integer_bits> raw value; Q0.31 out."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else wrap32(-a)
    positive = _one_over_one_plus_x_for_x_in_0_1(
        _exp_on_negative_values(wrap32(-abs_a), integer_bits)
    )
    return positive if a > 0 else wrap32(INT32_MAX - positive)


# --- whole-op lookup tables (int8 in -> int8 out) ---------------------------------------


def logistic_table(input_scale: float, input_zero_point: int, rounding: str) -> list[int]:
    """Output for each int8 input -128..127 of TFLM's int8 LOGISTIC (Prepare in
    logistic_common.cc, kernel reference_integer_ops::Logistic; output zero point
    -128, scale 1/256)."""
    input_integer_bits = 4
    real = float(input_scale) * float(1 << (31 - input_integer_bits))
    q, left_shift = math.frexp(real)
    multiplier = round_half_away(q * (1 << 31))
    if left_shift < 0:
        raise ValueError(f"LOGISTIC input scale {input_scale!r} is too small")
    # CalculateInputRadius(4, left_shift, 31): floor(15 * 2**27 / 2**left_shift)
    radius = math.floor(
        1.0 * ((1 << input_integer_bits) - 1) * (1 << (31 - input_integer_bits)) / (1 << left_shift)
    )
    table = []
    for value in range(-128, 128):
        x = value - input_zero_point
        if x <= -radius:
            table.append(-128)
        elif x >= radius:
            table.append(127)
        else:
            x_q4 = mbqm(x, multiplier, left_shift, rounding)
            out_q0 = logistic_raw(x_q4, input_integer_bits)
            out = rdbpot(out_q0, 31 - 8) - 128
            table.append(min(max(out, -128), 127))
    return table


def requantize_table(
    input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
    rounding: str,
) -> list[int]:
    """Output for each int8 input of TFLM's int8 -> int8 QUANTIZE (reference Requantize)."""
    multiplier, shift = quantize_multiplier(float(input_scale) / float(output_scale), rounding)
    table = []
    for value in range(-128, 128):
        out = mbqm(value - input_zero_point, multiplier, shift, rounding) + output_zero_point
        table.append(min(max(out, -128), 127))
    return table
