"""Which reader a data folder needs: PTB-XL (``ptbxl_database.csv``) or CinC (``*.hea`` with ``#Dx``)."""

from __future__ import annotations

import os

from edge_ecg import settings
from edge_ecg.data.ptbxl import DATABASE_CSV, DataError, PtbxlDataset, load_ptbxl

FORMATS: tuple[str, ...] = ("auto", "ptbxl", "cinc")


def detect_format(path: str | os.PathLike | None = None) -> str:
    """'ptbxl' for a folder with ptbxl_database.csv, 'cinc' for one with a .hea header that has a #Dx line."""
    from edge_ecg.data.cinc import has_dx

    root = settings.data_dir(path)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (set --data to a PTB-XL or CinC folder)")
    if (root / DATABASE_CSV).is_file():
        return "ptbxl"
    headers = sorted(root.rglob("*.hea"))
    if any(has_dx(h) for h in headers):
        return "cinc"
    found = f"{len(headers)} .hea header(s) but none has a #Dx line" if headers else "no .hea header"
    raise DataError(
        f"{root}: neither a PTB-XL folder (no {DATABASE_CSV}) nor a CinC folder ({found}); "
        "point --data at the folder that holds ptbxl_database.csv, or at CinC <record>.hea/.mat files with #Dx labels"
    )


def load_dataset(
    path: str | os.PathLike | None = None,
    rate: int = 100,
    *,
    format: str = "auto",
    window: int | None = None,
    rhythm_only: str = "sinus",
    leads: "tuple[str, ...] | str | None" = None,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = False,
    progress: bool = False,
) -> PtbxlDataset:
    """Load a PTB-XL or CinC folder (``format='auto'`` detects it) as the records and labels every stage takes.

    ``window`` and ``rhythm_only`` apply to CinC folders (see :func:`edge_ecg.data.cinc.load_cinc`);
    PTB-XL records are 10 s at 100 or 500 Hz, read as they are. ``leads`` (names or a preset,
    see :mod:`edge_ecg.data.leads`; None: all twelve) picks the model's channels, in order; a CinC
    record without one of them is skipped with a reason naming its file.
    """
    from edge_ecg.data.leads import parse_leads, select_leads

    leads = parse_leads(leads)
    if format not in FORMATS:
        import difflib

        hint = difflib.get_close_matches(str(format), FORMATS, n=1)
        raise DataError(f"format {format!r} is not one of {', '.join(FORMATS)}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    kind = detect_format(path) if format == "auto" else format
    if kind == "ptbxl":
        ds = load_ptbxl(path, rate, cache_dir=cache_dir, strict=strict, progress=progress)
        if window is not None and ds.signals.shape[1] != window:
            raise DataError(f"{ds.root}: PTB-XL records are {ds.signals.shape[1]} samples at {rate} Hz, the model's window {window}")
        return select_leads(ds, leads)
    from edge_ecg.data.cinc import load_cinc

    return load_cinc(settings.data_dir(path), rate, window=window, rhythm_only=rhythm_only, leads=leads, strict=strict, progress=progress)
