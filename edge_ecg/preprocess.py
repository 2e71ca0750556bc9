"""The Python twin of ``firmware/core/ee_preprocess.c``: millivolts to the model's int8 input.

For every value x of lead l, in float32 and in this order (as ``ee_preprocess.h`` states)::

    z = (x - mean[l]) / std[l]
    if clip > 0:  z = min(max(z, -clip), clip)
    q = round_half_to_even(z / scale) + zero_point, clamped to [-128, 127]

Export (calibration, the TFLite Micro checks), bench (the bytes sent to a board) and the
tests that hold the C code to this reference all call these functions, so the int8 input is
written once in Python. No TensorFlow import: a serial bench needs only numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clip_inputs", "dequantize_output", "int8_input", "output_probabilities", "quantize_input", "standardize"]


def standardize(x_mv: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per lead (last axis), in float32."""
    return ((np.asarray(x_mv, dtype=np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def clip_inputs(z: np.ndarray, clip_sigma: float | None) -> np.ndarray:
    """Standardized inputs clipped to ±clip_sigma (no-op for None or <= 0), in float32 as the firmware does."""
    if clip_sigma is None or clip_sigma <= 0:
        return z
    c = np.float32(clip_sigma)
    return np.clip(z, -c, c).astype(np.float32)


def quantize_input(z: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 = clip(round(z / scale) + zero_point, -128, 127), in float32 as a 32-bit MCU computes it.

    ``np.round`` rounds halves to even, as the firmware's ``nearbyintf`` does in the default
    rounding mode. A NaN becomes ``zero_point`` (clamped), as in ``ee_preprocess_mv``.
    """
    x = np.asarray(z, dtype=np.float32)
    q = np.round(x / np.float32(scale)) + np.float32(zero_point)
    q = np.where(np.isnan(q), np.float32(zero_point), q)
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize_output(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 = (q - zero_point) * scale, TFLite's dequantize (and the core's ``m-results-[...]``)."""
    return ((np.asarray(q).astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def output_probabilities(q: np.ndarray, scale: float, zero_point: int, kind: str) -> np.ndarray:
    """Probabilities from the int8 model outputs: dequantized, then the sigmoid if they are logits."""
    x = dequantize_output(q, scale, zero_point)
    if kind == "logit":
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    if kind != "probability":
        raise ValueError(f"output kind must be 'logit' or 'probability', got {kind!r}")
    return x


def int8_input(
    x_mv: np.ndarray, mean: np.ndarray, std: np.ndarray, clip_sigma: float | None, scale: float, zero_point: int
) -> np.ndarray:
    """Records in millivolts, (..., samples, leads), to the model's int8 input: standardize, clip, quantize."""
    return quantize_input(clip_inputs(standardize(x_mv, mean, std), clip_sigma), scale, zero_point)
