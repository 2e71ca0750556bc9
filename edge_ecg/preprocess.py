"""The Python twin of ``firmware/core/ee_preprocess.c``: millivolts to the model's int8 input.

For every value x of lead l, in float32 and in this order (as ``ee_preprocess.h`` states)::

    if the run has a high-pass:  x = highpass_filter(x)   (over the window, per lead; below)
    z = (x - mean[l]) / std[l]
    if clip > 0:  z = min(max(z, -clip), clip)
    q = round_half_to_even(z / scale) + zero_point, clamped to [-128, 127]

Export (calibration, the TFLite Micro checks), bench (the bytes sent to a board) and the
tests that hold the C code to this reference all call these functions, so the int8 input is
written once in Python. No TensorFlow import: a serial bench needs only numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "clip_inputs", "dequantize_output", "highpass_coefficients", "highpass_filter", "int8_input", "output_probabilities",
    "quantize_input", "standardize",
]

HIGHPASS_ORDER = 2
"""Order of the Butterworth high-pass (one biquad): the 0.5 Hz filter the site-shift benchmark measured."""


def highpass_coefficients(cutoff_hz: float, rate_hz: int) -> np.ndarray:
    """(b0, b1, b2, a1, a2) in float32 of a 2nd-order Butterworth high-pass (a0 = 1), what ``highpass_filter`` and the
    firmware's ``ECG_HIGHPASS_SOS`` take. Designed once (scipy) and then stored, so a device never designs a filter."""
    import scipy.signal

    if not 0 < cutoff_hz < rate_hz / 2:
        raise ValueError(f"high-pass cutoff must lie between 0 and the Nyquist frequency {rate_hz / 2} Hz, got {cutoff_hz}")
    sos = scipy.signal.butter(HIGHPASS_ORDER, cutoff_hz, btype="highpass", fs=rate_hz, output="sos")[0]
    return np.asarray([sos[0], sos[1], sos[2], sos[4], sos[5]], np.float32)


def _biquad(u: np.ndarray, c: np.ndarray) -> np.ndarray:
    """One causal pass over axis -2 from zero state, transposed direct form II, each step in float32 in C's order."""
    b0, b1, b2, a1, a2 = (np.float32(v) for v in c)
    s1 = np.zeros(u.shape[:-2] + u.shape[-1:], np.float32)
    s2 = np.zeros_like(s1)
    y = np.empty_like(u)
    for t in range(u.shape[-2]):
        x = u[..., t, :]
        yt = b0 * x + s1
        s1 = b1 * x - a1 * yt + s2
        s2 = b2 * x - a2 * yt
        y[..., t, :] = yt
    return y


def highpass_filter(x_mv: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Zero-phase high-pass of each lead over the window (axis -2): a forward then a backward biquad pass.

    Each pass starts as if its first sample had been there forever (the sample is subtracted, the state is
    zero: a high-pass's steady state for a constant input), so the window's offset leaves no transient. In
    float32, operation by operation as ``ee_preprocess.c``: bit-exact with the firmware. A NaN sample makes
    its whole lead NaN, which quantizes to the zero point ("no information"), as a NaN sample does unfiltered.
    """
    x = np.asarray(x_mv, np.float32)
    c = np.asarray(coefficients, np.float32)
    if c.shape != (5,):
        raise ValueError(f"high-pass coefficients must be (b0, b1, b2, a1, a2), got shape {c.shape}")
    if x.ndim == 3 and len(x) > _FILTER_CHUNK:  # whole training sets: bounded temporaries
        return np.concatenate([highpass_filter(x[i:i + _FILTER_CHUNK], c) for i in range(0, len(x), _FILTER_CHUNK)])
    forward = _biquad(x - x[..., :1, :], c)
    backward = forward[..., ::-1, :]
    return np.ascontiguousarray(_biquad(backward - backward[..., :1, :], c)[..., ::-1, :])


_FILTER_CHUNK = 1024  # records filtered at once


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
    x_mv: np.ndarray, mean: np.ndarray, std: np.ndarray, clip_sigma: float | None, scale: float, zero_point: int,
    highpass: np.ndarray | None = None,
) -> np.ndarray:
    """Records in millivolts, (..., samples, leads), to the model's int8 input: high-pass (when the run has one:
    ``Standardizer.highpass``), standardize, clip, quantize."""
    x = x_mv if highpass is None else highpass_filter(x_mv, highpass)
    return quantize_input(clip_inputs(standardize(x, mean, std), clip_sigma), scale, zero_point)
