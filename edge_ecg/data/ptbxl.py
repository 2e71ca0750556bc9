"""Read PTB-XL as the PTB-XL benchmark does (Strodthoff et al. 2020, ``scp_experiment.py``).

Labels: every key of a record's ``scp_codes`` whose statement in ``scp_statements.csv``
has ``diagnostic == 1`` is mapped to its ``diagnostic_class``, whatever its likelihood.
Records with no superclass are left out and counted. Per-record faults (missing or
corrupt files, a ``.dat`` whose samples do not match the ``.hea`` checksums, wrong rate
or length, NaN, infinite or flat-line leads, unknown SCP codes, a ``strat_fold`` that is
not an integer 1..10) are skipped and reported; ``strict=True`` turns them into an error. Problems with the
tables themselves are always errors.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from edge_ecg import CLASSES, settings

LEADS: tuple[str, ...] = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
RATES: tuple[int, ...] = (100, 500)
DURATION_S = 10
DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
SUSPICIOUS_PEAK_MV = 10.0
"""Records kept but reported: a peak above this many mV (saturation, artefact or a
large-amplitude recording that widens the int8 input range)."""

_CACHE_FORMAT = 2  # bump when the prepared arrays change meaning (2: checksums and inf are skip reasons)


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class RecordIssue:
    """A record that was skipped (``kind='skipped'``) or kept but looks wrong (``'suspicious'``)."""

    ecg_id: int
    reason: str
    kind: str = "skipped"


# "<file>: <why>" as the readers word a skip reason; the file's own name is left out of the grouping key.
_REASON = re.compile(r"^(?P<file>[^:]*?)(?P<ext>\.(?:hea|dat|mat|csv))?: (?P<why>.*)$", re.S)


def skip_reason_kind(reason: str) -> str:
    """The kind of a skip reason, the same for every record it hits: the file's extension and the
    problem, without the file name, quoted values or a parenthesized detail
    (``/d/records100/00000/00001_lr.hea: file not found`` -> ``*.hea: file not found``)."""
    m = _REASON.match(reason)
    why, ext = (m["why"], m["ext"]) if m else (reason, None)
    why = re.sub(r"\s*\(.*\)\s*$", "", why, flags=re.S)  # the library's own message varies per file
    why = re.sub(r"'[^']*'|\"[^\"]*\"", "...", why)
    if ext == ".csv":  # one of the tables: its name is the kind
        return f"{Path(m['file']).name}{ext}: {why}"
    return f"*{ext}: {why}" if ext else why


def group_skipped(skipped: Iterable[dict], examples: int = 3) -> list[dict]:
    """Skipped records (``{"ecg_id", "reason"}`` items of a summary) grouped by :func:`skip_reason_kind`,
    most frequent first: ``{"reason": kind, "records": n, "examples": [first few reasons]}``."""
    groups: dict[str, dict] = {}
    for item in skipped:
        g = groups.setdefault(skip_reason_kind(item["reason"]), {"records": 0, "examples": []})
        g["records"] += 1
        if len(g["examples"]) < examples:
            g["examples"].append(item["reason"])
    return [{"reason": k, **v} for k, v in sorted(groups.items(), key=lambda kv: -kv[1]["records"])]


@dataclass
class PtbxlDataset:
    """Prepared PTB-XL records, one row per labelled record that could be read."""

    signals: np.ndarray  # (N, rate*10, 12) float32, mV, leads in LEADS order
    labels: np.ndarray  # (N, 5) uint8 multi-hot over CLASSES
    folds: np.ndarray  # (N,) strat_fold, 1..10
    ecg_ids: np.ndarray  # (N,) int64
    patient_ids: np.ndarray  # (N,) int64
    rate: int
    root: Path | None = None
    records_found: int = 0  # rows of ptbxl_database.csv
    folds_found: dict[int, int] = field(default_factory=dict)  # rows per strat_fold
    unlabelled: list[int] = field(default_factory=list)  # ecg_ids with no superclass
    issues: list[RecordIssue] = field(default_factory=list)
    cache_file: Path | None = None

    classes: tuple[str, ...] = CLASSES
    leads: tuple[str, ...] = LEADS

    def __len__(self) -> int:
        return int(self.signals.shape[0])

    @property
    def skipped(self) -> list[RecordIssue]:
        return [i for i in self.issues if i.kind == "skipped"]

    @property
    def suspicious(self) -> list[RecordIssue]:
        return [i for i in self.issues if i.kind == "suspicious"]

    def select(self, mask: np.ndarray) -> "PtbxlDataset":
        """A dataset with the rows where ``mask`` is true (or the given indices)."""
        return replace(
            self,
            signals=self.signals[mask],
            labels=self.labels[mask],
            folds=self.folds[mask],
            ecg_ids=self.ecg_ids[mask],
            patient_ids=self.patient_ids[mask],
        )

    def summary(self) -> dict:
        """Counts for ``edge-ecg data info`` (JSON-ready)."""
        per_fold_labelled = {str(k): int((self.folds == k).sum()) for k in sorted(set(self.folds.tolist()))}
        return {
            "root": str(self.root) if self.root else None,
            "rate": self.rate,
            "records": self.records_found,
            "labelled": len(self),
            "unlabelled": len(self.unlabelled),
            "per_fold": {str(k): v for k, v in sorted(self.folds_found.items())},
            "per_fold_labelled": per_fold_labelled,
            "per_class": {c: int(self.labels[:, i].sum()) for i, c in enumerate(self.classes)},
            "skipped": [{"ecg_id": i.ecg_id, "reason": i.reason} for i in self.skipped],
            "suspicious": [{"ecg_id": i.ecg_id, "reason": i.reason} for i in self.suspicious],
            "unlabelled_ids": list(self.unlabelled),
            "cache_file": str(self.cache_file) if self.cache_file else None,
        }


# --------------------------------------------------------------------------- tables


def _filename_column(rate: int) -> str:
    return "filename_lr" if rate == 100 else "filename_hr"


def read_database(path: Path, rate: int):
    """``ptbxl_database.csv`` as a DataFrame indexed by ecg_id, columns checked."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: file not found (expected PTB-XL's {DATABASE_CSV}; is --data the PTB-XL folder?)")
    try:
        db = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for a broken CSV
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from exc
    needed = ["ecg_id", "patient_id", "scp_codes", "strat_fold", _filename_column(rate)]
    missing = [c for c in needed if c not in db.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the official file has {', '.join(needed)}")
    if db["ecg_id"].isna().any() or db["ecg_id"].duplicated().any():
        raise DataError(f"{path}: column ecg_id has empty or duplicate values")
    return db.set_index(db["ecg_id"].astype(int))


def read_statements(path: Path):
    """``scp_statements.csv`` as a DataFrame indexed by SCP code, columns checked."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: file not found (expected PTB-XL's {STATEMENTS_CSV})")
    try:
        table = pd.read_csv(path, index_col=0)
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in ("diagnostic", "diagnostic_class") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def superclasses(scp_codes: dict, statements) -> list[str]:
    """The diagnostic superclasses of one record's ``scp_codes`` (benchmark rule, any likelihood).

    Raises KeyError naming the first code that ``statements`` does not list.
    """
    found = []
    for code in scp_codes:
        if code not in statements.index:
            raise KeyError(code)
        row = statements.loc[code]
        if row["diagnostic"] == 1 and isinstance(row["diagnostic_class"], str):
            if row["diagnostic_class"] not in found:
                found.append(row["diagnostic_class"])
    return found


def multi_hot(classes: Iterable[str]) -> np.ndarray:
    """Multi-hot uint8 vector over CLASSES."""
    vec = np.zeros(len(CLASSES), np.uint8)
    for c in classes:
        vec[CLASSES.index(c)] = 1
    return vec


# --------------------------------------------------------------------------- records


class RecordError(Exception):
    """One record cannot be used; ``str()`` is the reason, naming the file."""


def read_record(root: Path, relpath: str, rate: int) -> np.ndarray:
    """One WFDB record as float32 (rate*10, 12) in mV, checked; raises RecordError."""
    import wfdb

    base = root / relpath
    for ext in (".hea", ".dat"):
        if not base.with_name(base.name + ext).is_file():
            raise RecordError(f"{base}{ext}: file not found")
    try:
        # Digital samples first: the header's per-lead checksums are over them. dac() is
        # what wfdb.rdsamp applies, so the millivolts are the same as rdsamp's.
        record = wfdb.rdrecord(str(base), physical=False)
        signal = record.dac(return_res=64)
    except Exception as exc:  # wfdb raises ValueError, IndexError, struct errors...
        raise RecordError(f"{base}: unreadable WFDB record ({type(exc).__name__}: {exc})") from None
    if record.fs != rate:
        raise RecordError(f"{base}.hea: sampling rate {record.fs} Hz, expected {rate} Hz")
    names = tuple(str(n).upper() for n in record.sig_name or ())
    if names != LEADS:
        raise RecordError(f"{base}.hea: leads {','.join(names)}, expected {','.join(LEADS)}")
    if signal.shape != (rate * DURATION_S, len(LEADS)):
        raise RecordError(
            f"{base}: {signal.shape[0]} samples x {signal.shape[1]} leads, expected {rate * DURATION_S} x {len(LEADS)}"
        )
    if record.checksum is not None:  # WFDB: sum of a lead's digital samples modulo 2^16
        actual = record.calc_checksum()
        wrong = np.array([c is not None and (a - c) % 65536 != 0 for a, c in zip(actual, record.checksum)])
        if wrong.any():
            raise RecordError(
                f"{base}.dat: samples do not match the checksum in {base.name}.hea for lead(s) {_leads(wrong)} "
                "(corrupted file); download it again"
            )
    bad = np.isnan(signal).any(axis=0)
    if bad.any():
        raise RecordError(f"{base}.dat: NaN samples in lead(s) {_leads(bad)}")
    flat = np.ptp(signal, axis=0) == 0
    if flat.any():
        raise RecordError(f"{base}.dat: flat-line lead(s) {_leads(flat)} (constant signal)")
    with np.errstate(over="ignore"):  # an overflow is reported below, naming the file
        signal = signal.astype(np.float32)
    infinite = ~np.isfinite(signal).all(axis=0)  # a tiny gain in the header overflows float32
    if infinite.any():
        raise RecordError(
            f"{base}.dat: infinite samples in lead(s) {_leads(infinite)} (values beyond float32; check the gain in {base.name}.hea)"
        )
    return signal


def _leads(mask: np.ndarray) -> str:
    return ",".join(LEADS[i] for i in np.flatnonzero(mask))


# --------------------------------------------------------------------------- loading


def load_ptbxl(
    path: str | os.PathLike | None = None,
    rate: int = 100,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = False,
    progress: bool = False,
) -> PtbxlDataset:
    """Load PTB-XL (or a subset in the official layout) as a :class:`PtbxlDataset`.

    The prepared arrays are cached under ``cache_dir`` (default: the user's cache
    folder, see :mod:`edge_ecg.settings`), keyed by the content of every input file,
    so editing a record or a table invalidates the cache and nothing is written into
    the data folder.
    """
    if rate not in RATES:
        raise DataError(f"rate={rate!r} is not a PTB-XL sampling rate; use one of {RATES}")
    root = settings.data_dir(path)
    if not root.is_dir():
        raise DataError(f"{root}: PTB-XL folder not found (set --data or EDGE_ECG_DATA, or run `edge-ecg data download`)")
    db = read_database(root / DATABASE_CSV, rate)
    statements = read_statements(root / STATEMENTS_CSV)
    column = _filename_column(rate)

    key = _content_key(root, db[column].astype(str).tolist(), rate)
    cache_file = settings.cache_dir(cache_dir) / "ptbxl" / f"{key}.npz"
    dataset = _read_cache(cache_file) if cache else None
    if dataset is None:
        dataset = _prepare(root, db, statements, rate, progress)
        if cache:
            _write_cache(cache_file, dataset)
    dataset.root = root
    dataset.cache_file = cache_file if cache else None
    if strict and dataset.skipped:
        lines = "\n".join(f"  ecg_id {i.ecg_id}: {i.reason}" for i in dataset.skipped)
        raise DataError(f"{len(dataset.skipped)} record(s) of {root} cannot be used (strict mode):\n{lines}")
    return dataset


def _prepare(root: Path, db, statements, rate: int, progress: bool) -> PtbxlDataset:
    from edge_ecg.progress import track

    column = _filename_column(rate)
    signals, labels, folds, ecg_ids, patient_ids = [], [], [], [], []
    issues: list[RecordIssue] = []
    unlabelled: list[int] = []
    folds_found: dict[int, int] = {}
    for ecg_id, row in track(db.iterrows(), total=len(db), description="Reading records", enabled=progress):
        ecg_id = int(ecg_id)
        try:
            value = float(row["strat_fold"])  # int() would truncate 3.5 to fold 3
            if not (value.is_integer() and 1 <= value <= 10):
                raise ValueError
            fold = int(value)
        except (TypeError, ValueError):
            issues.append(RecordIssue(ecg_id, f"{DATABASE_CSV}: strat_fold {row['strat_fold']!r} is not an integer 1..10"))
            continue
        folds_found[fold] = folds_found.get(fold, 0) + 1
        try:
            codes = ast.literal_eval(str(row["scp_codes"]))  # literal_eval: data, never code
            if not isinstance(codes, dict):
                raise ValueError
        except (ValueError, SyntaxError):
            issues.append(RecordIssue(ecg_id, f"{DATABASE_CSV}: scp_codes {row['scp_codes']!r} is not a dict"))
            continue
        try:
            classes = superclasses(codes, statements)
        except KeyError as exc:
            issues.append(RecordIssue(ecg_id, f"SCP code {exc.args[0]!r} is not in {STATEMENTS_CSV}"))
            continue
        try:
            signal = read_record(root, str(row[column]), rate)
        except RecordError as exc:
            issues.append(RecordIssue(ecg_id, str(exc)))
            continue
        if not classes:
            unlabelled.append(ecg_id)
            continue
        peak = np.abs(signal).max(axis=0)
        if peak.max() > SUSPICIOUS_PEAK_MV:
            lead = LEADS[int(peak.argmax())]
            issues.append(RecordIssue(ecg_id, f"peak {peak.max():.1f} mV in lead {lead} (> {SUSPICIOUS_PEAK_MV:g} mV); kept", "suspicious"))
        signals.append(signal)
        labels.append(multi_hot(classes))
        folds.append(fold)
        ecg_ids.append(ecg_id)
        patient_ids.append(int(float(row["patient_id"])) if row["patient_id"] == row["patient_id"] else -1)
    n = rate * DURATION_S
    return PtbxlDataset(
        signals=np.stack(signals) if signals else np.zeros((0, n, len(LEADS)), np.float32),
        labels=np.stack(labels) if labels else np.zeros((0, len(CLASSES)), np.uint8),
        folds=np.asarray(folds, np.int64),
        ecg_ids=np.asarray(ecg_ids, np.int64),
        patient_ids=np.asarray(patient_ids, np.int64),
        rate=rate,
        records_found=len(db),
        folds_found=folds_found,
        unlabelled=unlabelled,
        issues=issues,
    )


# --------------------------------------------------------------------------- cache


def _content_key(root: Path, relpaths: list[str], rate: int) -> str:
    """Hash of the tables and every record file's bytes (missing files hash as missing)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"edge-ecg ptbxl cache v{_CACHE_FORMAT} rate={rate}\n".encode())
    for name in (DATABASE_CSV, STATEMENTS_CSV):
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    for rel in relpaths:
        for ext in (".hea", ".dat"):
            p = root / (rel + ext)
            h.update(p.name.encode() + b"\0")
            try:
                h.update(p.read_bytes())
            except OSError:
                h.update(b"<missing>")
    return h.hexdigest()


def _write_cache(path: Path, ds: PtbxlDataset) -> None:
    meta = {
        "rate": ds.rate,
        "records_found": ds.records_found,
        "folds_found": {str(k): v for k, v in ds.folds_found.items()},
        "unlabelled": ds.unlabelled,
        "issues": [[i.ecg_id, i.reason, i.kind] for i in ds.issues],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                signals=ds.signals,
                labels=ds.labels,
                folds=ds.folds,
                ecg_ids=ds.ecg_ids,
                patient_ids=ds.patient_ids,
                meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            )
        os.replace(tmp, path)  # atomic: a reader never sees half a cache
    except OSError as exc:
        import warnings

        warnings.warn(f"could not write the data cache {path}: {exc}; set EDGE_ECG_CACHE to a writable folder")


def _read_cache(path: Path) -> PtbxlDataset | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            return PtbxlDataset(
                signals=z["signals"],
                labels=z["labels"],
                folds=z["folds"],
                ecg_ids=z["ecg_ids"],
                patient_ids=z["patient_ids"],
                rate=int(meta["rate"]),
                records_found=int(meta["records_found"]),
                folds_found={int(k): int(v) for k, v in meta["folds_found"].items()},
                unlabelled=[int(i) for i in meta["unlabelled"]],
                issues=[RecordIssue(int(i), r, k) for i, r, k in meta["issues"]],
            )
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
