"""Folds and per-lead standardization, as the PTB-XL benchmark uses them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ecg.data.ptbxl import LEADS, DataError, PtbxlDataset
from edge_ecg.preprocess import highpass_coefficients, highpass_filter, standardize

TEST_FOLD = 10
VAL_FOLD = 9


@dataclass
class Split:
    train: PtbxlDataset
    val: PtbxlDataset
    test: PtbxlDataset


def split_folds(ds: PtbxlDataset, test_fold: int = TEST_FOLD, val_fold: int = VAL_FOLD) -> Split:
    """Train on every fold but ``val_fold`` and ``test_fold`` (default: 1-8 / 9 / 10)."""
    if test_fold == val_fold or not (1 <= test_fold <= 10 and 1 <= val_fold <= 10):
        raise ValueError(f"test_fold={test_fold} and val_fold={val_fold} must be two different folds in 1..10")
    split = Split(
        train=ds.select((ds.folds != test_fold) & (ds.folds != val_fold)),
        val=ds.select(ds.folds == val_fold),
        test=ds.select(ds.folds == test_fold),
    )
    for name, part in (("training", split.train), ("validation", split.val), ("test", split.test)):
        if len(part) == 0:
            raise DataError(f"the {name} folds of {ds.root} hold no labelled record; cannot split")
    return split


class NonFiniteStandardization(DataError):
    """A standardization whose mean or std is NaN or infinite; never written, and refitted by ``train``."""


@dataclass(frozen=True)
class Standardizer:
    """Per-lead standardization ``(x - mean) / std``, fitted on the training folds only; with ``highpass`` the
    records are first high-pass filtered (``edge_ecg.preprocess.highpass_filter``), and mean and std are those
    of the filtered records. The firmware does the same (``ECG_HIGHPASS_SOS`` in model_config.h)."""

    mean: np.ndarray  # (leads,) float32
    std: np.ndarray  # (leads,) float32
    leads: tuple[str, ...] | None = None  # names of the channels; None: the first len(mean) of LEADS
    highpass: np.ndarray | None = None  # (b0, b1, b2, a1, a2) float32; None: no filter
    highpass_hz: float = 0.0  # the cutoff ``highpass`` was designed for (0: none), at ``rate_hz``
    rate_hz: int | None = None

    @classmethod
    def fit(cls, signals: np.ndarray, leads: tuple[str, ...] | None = None, highpass_hz: float = 0.0,
            rate_hz: int = 100) -> "Standardizer":
        """Per-lead mean and standard deviation over every record and sample of ``signals`` (channels named ``leads``),
        after a ``highpass_hz`` high-pass at ``rate_hz`` when ``highpass_hz`` > 0."""
        if signals.ndim != 3 or signals.shape[0] == 0:
            raise ValueError(f"fit needs signals of shape (records, samples, leads), got {signals.shape}")
        coefficients = highpass_coefficients(highpass_hz, rate_hz) if highpass_hz else None
        if coefficients is not None:
            signals = highpass_filter(signals, coefficients)
        flat = signals.reshape(-1, signals.shape[-1]).astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN input: reported below, naming the leads
            std = flat.std(axis=0)
        std[std == 0] = 1.0  # a constant lead is left unscaled rather than divided by zero
        fitted = cls(flat.mean(axis=0).astype(np.float32), std.astype(np.float32), tuple(leads) if leads is not None else None,
                     coefficients, float(highpass_hz) if coefficients is not None else 0.0,
                     int(rate_hz) if coefficients is not None else None)
        if fitted.bad_leads():
            raise NonFiniteStandardization(
                f"the training signals give a non-finite mean or std for lead(s) {fitted.bad_leads()}: they hold NaN, "
                "infinite or float32-overflowing samples; load them with load_ptbxl, which skips such records"
            )
        return fitted

    def bad_leads(self) -> str:
        """Comma-separated names of the leads whose mean or std is not finite ('' when all are)."""
        bad = ~(np.isfinite(self.mean) & np.isfinite(self.std) & (self.std > 0))
        return ",".join(self.lead_names()[i] for i in np.flatnonzero(bad))

    def lead_names(self) -> list[str]:
        """Names of the standardized channels (``leads``, else PTB-XL's order; an index where neither names one)."""
        names = list(self.leads) if self.leads is not None else list(LEADS[: len(self.mean)])
        return names + [str(i) for i in range(len(names), len(self.mean))]

    def transform(self, signals: np.ndarray) -> np.ndarray:
        if signals.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"signals have {signals.shape[-1]} leads, the standardization {self.mean.shape[0]}")
        if self.highpass is not None:
            signals = highpass_filter(signals, self.highpass)
        return standardize(signals, self.mean, self.std)  # the firmware's arithmetic: edge_ecg.preprocess

    def to_dict(self) -> dict:
        # float32 values stored as Python floats are exact and round-trip through JSON
        d = {"leads": self.lead_names(), "mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.highpass is not None:
            d["highpass"] = {"cutoff_hz": self.highpass_hz, "rate_hz": self.rate_hz, "order": 2,
                             "coefficients_b0_b1_b2_a1_a2": self.highpass.tolist()}
        return d

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` atomically; a non-finite standardization is refused (it would poison every rerun)."""
        if self.bad_leads():
            raise NonFiniteStandardization(f"{path}: refusing to write a non-finite mean or std for lead(s) {self.bad_leads()}")
        from edge_ecg.runfolder import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Standardizer":
        """Read ``path``; NonFiniteStandardization if it holds NaN or infinite values."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            leads = tuple(d["leads"]) if isinstance(d.get("leads"), list) and len(d["leads"]) == len(d["mean"]) else None
            hp = d.get("highpass")
            coefficients = None if hp is None else np.asarray(hp["coefficients_b0_b1_b2_a1_a2"], np.float32)
            if coefficients is not None and coefficients.shape != (5,):
                raise ValueError(f"the high-pass needs 5 coefficients, got {coefficients.shape}")
            loaded = cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32), leads, coefficients,
                         0.0 if hp is None else float(hp["cutoff_hz"]), None if hp is None else int(hp["rate_hz"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a standardization file ({exc})") from exc
        if loaded.bad_leads():
            raise NonFiniteStandardization(
                f"{path}: the mean or std of lead(s) {loaded.bad_leads()} is not finite (left by a run on bad data); "
                "run `edge-ecg train` on this run folder again to refit it from the training folds"
            )
        return loaded
