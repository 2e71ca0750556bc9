"""Bring a record of any rate and length to the model's input: resampling and the window policy.

**Rate.** :func:`resample` uses scipy's polyphase filter (``resample_poly``: upsample, FIR
low-pass with a Kaiser window, downsample) with the up/down factors of ``to_hz / from_hz``
as a reduced fraction, so 500 -> 100 Hz is 1/5 and 257 -> 100 Hz is 100/257. The filter
removes what lies above the new Nyquist frequency instead of aliasing it.

**Length** (after resampling; ``window`` = the model's input length, 10 s):

* exactly ``window`` samples: one window;
* longer: ``ceil(length / window)`` windows spread evenly from the first to the last sample
  (a 60-s record gives 6 disjoint windows; a 15-s record 2 windows overlapping by 5 s), so
  every sample is seen; the model's outputs of a record's windows are averaged
  (:func:`average_windows`);
* shorter, down to ``min_samples`` (default :data:`MIN_RECORD_S` seconds): zero-padded at the
  end to ``window`` (0 mV is the isoelectric line);
* shorter than that: refused (:class:`WindowError`), too little of the window would be signal.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

MIN_RECORD_S = 5.0
"""Records shorter than this are refused; between this and the window they are zero-padded."""


class WindowError(ValueError):
    """A record too short for the window policy."""


def resample(x: np.ndarray, from_hz: float, to_hz: float, axis: int = 0) -> np.ndarray:
    """``x`` sampled at ``from_hz`` resampled to ``to_hz`` along ``axis`` (polyphase, float32)."""
    if not (from_hz > 0 and to_hz > 0 and math.isfinite(from_hz) and math.isfinite(to_hz)):
        raise ValueError(f"sampling rates must be positive and finite, got {from_hz!r} -> {to_hz!r}")
    # exact for integer rates (500 -> 100 is 1/5); a fractional header rate is read as its decimal text
    ratio = (Fraction(repr(float(to_hz))) / Fraction(repr(float(from_hz)))).limit_denominator(10000)
    if ratio == 1:
        return np.asarray(x, np.float32)
    from scipy.signal import resample_poly

    return resample_poly(np.asarray(x, np.float64), ratio.numerator, ratio.denominator, axis=axis).astype(np.float32)


def window_starts(length: int, window: int) -> list[int]:
    """Start samples of the windows of a record of ``length >= window`` samples (see the module docstring)."""
    n = math.ceil(length / window)
    if n == 1:
        return [0]
    return [round(i * (length - window) / (n - 1)) for i in range(n)]


def windows(x: np.ndarray, window: int, min_samples: int) -> np.ndarray:
    """A (samples, leads) record as (n, window, leads) float32 windows; WindowError below ``min_samples``."""
    length = x.shape[0]
    if length < min_samples:
        raise WindowError(f"{length} samples, fewer than the minimum {min_samples}")
    if length < window:
        padded = np.zeros((window, *x.shape[1:]), np.float32)
        padded[:length] = x
        return padded[None]
    return np.stack([x[s : s + window] for s in window_starts(length, window)]).astype(np.float32)


def average_windows(record_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over the rows of each record: (ids in first-seen order, (R, ...) means)."""
    record_ids = np.asarray(record_ids)
    ids, first, inverse = np.unique(record_ids, return_index=True, return_inverse=True)
    sums = np.zeros((len(ids), *values.shape[1:]), np.float64)
    np.add.at(sums, inverse, values)
    means = sums / np.bincount(inverse, minlength=len(ids)).reshape(-1, *([1] * (values.ndim - 1)))
    order = np.argsort(first)
    return ids[order], means[order].astype(values.dtype)
