"""Read a PhysioNet/CinC 2020-2021 folder (WFDB header + MATLAB ``.mat``, SNOMED CT ``#Dx`` labels).

The records come out as the PTB-XL reader's: a :class:`CincDataset` is a
:class:`~edge_ecg.data.ptbxl.PtbxlDataset` (float32 millivolts in PTB-XL's lead order, multi-hot
superclass labels), so every later stage takes it unchanged. What differs, and why:

* **Rows are windows.** Every record is resampled to the model's rate
  (:func:`edge_ecg.data.resample.resample`) and cut into the model's window by the policy of
  :mod:`edge_ecg.data.resample` (several windows for a long record, zero-padding for a short
  one, refusal below :data:`~edge_ecg.data.resample.MIN_RECORD_S`). A 10-s record is one row;
  the rows of one record share its ``ecg_ids`` value, and evaluation averages their outputs.
* **ecg_ids** number the ``.hea`` files found under the folder (sorted by path, from 1), so an
  id does not depend on which records were skipped; ``names`` maps them to ``source/record``.
* **folds are** :data:`EXTERNAL_FOLD` **(0)**: an external record is never a training,
  validation or test-fold record of PTB-XL's scheme; it is a test record for an external
  evaluation (``edge-ecg evaluate --run R --data DIR --out OUT``) and nothing else. Training on
  such a folder is refused by ``split_folds`` (no training fold).
* **Labels** come from the ``#Dx`` codes through :mod:`edge_ecg.data.snomed` with its
  rhythm-only policy; codes giving no superclass are counted per source in ``code_counts``.
* **Source** is the first folder under the root (``georgia``, ``chapman_shaoxing``, as the
  Challenge distributes its training sets), or the root's own name for a flat folder.

Headers are parsed here rather than with wfdb: some Georgia headers name the record
``Exxxxx.mat`` in their first line, which wfdb refuses, and the ``#`` comment lines hold the
labels. Per-record faults (missing or unreadable files, wrong shape, checksum mismatch, missing
leads, flat leads, no ``#Dx`` line, too short) skip the record with a reason naming its file;
``strict=True`` turns them into one error. Implausible amplitudes (the CinC-2020 copies with a
wrong gain of 4880/mV or 200/mV, saturation) keep the record and report it as suspicious.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES
from edge_ecg.data.ptbxl import (
    DURATION_S,
    LEADS,
    SUSPICIOUS_PEAK_MV,
    DataError,
    PtbxlDataset,
    RecordError,
    RecordIssue,
    multi_hot,
)
from edge_ecg.data.resample import MIN_RECORD_S, WindowError, resample, windows
from edge_ecg.data.snomed import RHYTHM_ONLY_POLICIES, map_codes

EXTERNAL_FOLD = 0
"""The fold of every external record: not one of PTB-XL's ten, so never trained or validated on."""

LOW_AMPLITUDE_MV = 0.5
HIGH_AMPLITUDE_MV = 5.0
"""Plausible range of a record's largest lead amplitude (99.5th percentile of |x - median|, mV).
The 94 shared CinC records span 0.67-4.43 mV and the 987 PTB-XL records 0.71-10.8 mV (1st
percentile 0.84); a gain of 4880/mV read for data recorded at 1000/mV shrinks a record 4.9
times (the three Georgia records that carried it would read 0.22-0.41 mV), 200/mV grows it 5
times. Amplitude alone cannot tell every wrong gain, so the known wrong values are flagged too."""
KNOWN_WRONG_GAINS = (4880.0, 200.0)
"""Gains (units per mV) that some CinC-2020 copies carry where the 2021 release says 1000/mV."""

_UNITS_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class CincHeader:
    """One parsed ``.hea`` file."""

    path: Path
    record: str
    fs: float
    n_samples: int
    file: str  # the signal file (every lead in one .mat)
    fmt: int
    gains: tuple[float, ...]  # units per physical unit
    baselines: tuple[int, ...]
    to_mv: tuple[float, ...]  # physical unit -> mV
    checksums: tuple[int | None, ...]
    leads: tuple[str, ...]  # as written (aVR...)
    dx: tuple[str, ...] | None  # None: no #Dx line
    age: float | None = None
    sex: str | None = None


def parse_header(path: str | os.PathLike) -> CincHeader:
    """Parse a CinC WFDB header; RecordError naming the file on anything that cannot be used."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = [ln.strip() for ln in text.splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    comments = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#")]
    if not body:
        raise RecordError(f"{path}: empty header (no record line)")
    head = body[0].split()
    if len(head) < 4:
        raise RecordError(f"{path}: record line {body[0]!r} needs name, signals, rate and samples")
    record = head[0][:-4] if head[0].endswith(".mat") else head[0]  # Georgia quirk: 'E00001.mat' as the name
    try:
        n_sig = int(head[1])
        fs = float(head[2].split("/")[0].split("(")[0])
        n_samples = int(head[3])
    except ValueError:
        raise RecordError(f"{path}: record line {body[0]!r} is not '<name> <signals> <rate> <samples>'") from None
    if "/" in head[0] or n_sig < 1 or not (fs > 0 and math.isfinite(fs)) or n_samples < 1:
        raise RecordError(f"{path}: record line {body[0]!r}: expected one segment, signals >= 1, rate > 0, samples >= 1")
    sig_lines = body[1 : 1 + n_sig]
    if len(sig_lines) != n_sig:
        raise RecordError(f"{path}: the record line announces {n_sig} signals, {len(sig_lines)} signal line(s) follow")
    files, fmts, gains, baselines, to_mv, checksums, leads = set(), set(), [], [], [], [], []
    for n, line in enumerate(sig_lines, start=1):
        tok = line.split()
        if len(tok) < 9:
            raise RecordError(f"{path}: signal line {n} {line!r} has {len(tok)} fields; a CinC header has 9 (file ... lead name)")
        files.add(tok[0])
        fmts.add(tok[1].split("+")[0].split("x")[0])
        gain, baseline, unit = _gain_field(tok[2], tok[4], path, n)
        gains.append(gain)
        baselines.append(baseline)
        to_mv.append(unit)
        try:
            checksums.append(int(tok[6]))
        except ValueError:
            checksums.append(None)
        leads.append(" ".join(tok[8:]))
    if len(files) != 1 or len(fmts) != 1:
        raise RecordError(f"{path}: signals spread over files {sorted(files)} / formats {sorted(fmts)}; expected one .mat")
    fmt = next(iter(fmts))
    if fmt != "16":
        raise RecordError(f"{path}: signal format {fmt}; the CinC .mat layout is format 16 (int16)")
    meta = {}
    for c in comments:
        key, sep, value = c.partition(":")
        if sep:
            meta.setdefault(key.strip().lower(), value.strip())
    dx = None
    if "dx" in meta:
        dx = tuple(code.strip() for code in meta["dx"].split(",") if code.strip())
    try:
        age = float(meta.get("age", "nan"))
    except ValueError:
        age = math.nan
    return CincHeader(
        path=path, record=record, fs=fs, n_samples=n_samples, file=next(iter(files)), fmt=int(fmt),
        gains=tuple(gains), baselines=tuple(baselines), to_mv=tuple(to_mv), checksums=tuple(checksums),
        leads=tuple(leads), dx=dx, age=None if math.isnan(age) else age, sex=meta.get("sex") or None,
    )


def _gain_field(text: str, adc_zero: str, path: Path, n: int) -> tuple[float, int, float]:
    """'1000/mV', '1000(0)/mV' or '1000' -> (gain, baseline, factor to mV). WFDB: gain 0 means 200."""
    spec, _, unit = text.partition("/")
    baseline_text = None
    if "(" in spec:
        spec, _, rest = spec.partition("(")
        baseline_text = rest.rstrip(")")
    try:
        gain = float(spec) or 200.0
        baseline = int(baseline_text) if baseline_text is not None else int(adc_zero)
    except ValueError:
        raise RecordError(f"{path}: signal line {n}: gain {text!r} is not '<gain>[(<baseline>)]/<units>'") from None
    factor = _UNITS_TO_MV.get((unit or "mV").lower())
    if factor is None:
        raise RecordError(f"{path}: signal line {n}: units {unit!r}; expected mV, uV or V")
    if not math.isfinite(gain) or gain <= 0:
        raise RecordError(f"{path}: signal line {n}: gain {text!r} must be a positive number")
    return gain, baseline, factor


def has_dx(path: Path) -> bool:
    """Whether a ``.hea`` file has a ``#Dx`` comment line (the mark of a CinC record)."""
    try:
        with open(path, errors="replace") as fh:
            return any(line.lstrip().startswith("#") and line.lstrip("# \t").lower().startswith("dx") for line in fh)
    except OSError:
        return False


# --------------------------------------------------------------------------- signal


def read_signal(header: CincHeader, leads: tuple[str, ...] = LEADS) -> np.ndarray:
    """The record's samples as float32 (samples, len(leads)) mV in ``leads`` order; RecordError naming the file."""
    import scipy.io

    mat = header.path.with_name(header.file)
    if not mat.is_file():
        raise RecordError(f"{mat}: file not found (named by {header.path.name})")
    names = [name.upper() for name in header.leads]
    missing = [lead for lead in leads if lead not in names]
    if missing:
        raise RecordError(
            f"{header.path}: leads {','.join(header.leads)}; the model needs {','.join(leads)} and "
            f"{','.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
        )
    if len(set(names)) != len(names):
        raise RecordError(f"{header.path}: a lead name appears twice in {','.join(header.leads)}")
    try:
        val = scipy.io.loadmat(str(mat))["val"]
    except Exception as exc:  # scipy raises ValueError, KeyError, struct errors... on a damaged file
        raise RecordError(f"{mat}: unreadable MATLAB file ({type(exc).__name__}: {exc})") from None
    if not np.issubdtype(val.dtype, np.integer) or val.shape != (len(names), header.n_samples):
        raise RecordError(
            f"{mat}: 'val' is {val.dtype} {val.shape}, {header.path.name} announces int16 "
            f"({len(names)}, {header.n_samples}) (leads x samples)"
        )
    digital = val.astype(np.int64)
    sums = digital.sum(axis=1)
    wrong = [names[i] for i, c in enumerate(header.checksums) if c is not None and (int(sums[i]) - c) % 65536]
    if wrong:
        raise RecordError(f"{mat}: samples do not match the checksum in {header.path.name} for lead(s) {','.join(wrong)} (corrupted file)")
    order = [names.index(lead) for lead in leads]
    gain = np.asarray(header.gains, np.float64)[order, None]
    base = np.asarray(header.baselines, np.float64)[order, None]
    unit = np.asarray(header.to_mv, np.float64)[order, None]
    signal = ((digital[order] - base) / gain * unit).T.astype(np.float32)
    flat = np.ptp(signal, axis=0) == 0
    if flat.any():
        raise RecordError(f"{mat}: flat-line lead(s) {','.join(np.asarray(leads)[flat])} (constant signal)")
    return signal


def amplitude_issue(signal: np.ndarray, header: CincHeader, leads: tuple[str, ...] = LEADS) -> str | None:
    """Why a record's amplitudes look implausible (naming the file and its header gain), or None."""
    peak = np.abs(signal).max(axis=0)
    amp = np.percentile(np.abs(signal - np.median(signal, axis=0)), 99.5, axis=0).max()
    problems = []
    if peak.max() > SUSPICIOUS_PEAK_MV:
        problems.append(f"peak {peak.max():.1f} mV in lead {leads[int(peak.argmax())]} (> {SUSPICIOUS_PEAK_MV:g} mV)")
    if amp < LOW_AMPLITUDE_MV or amp > HIGH_AMPLITUDE_MV:
        problems.append(
            f"largest lead amplitude {amp:.2f} mV (99.5th percentile of |x - median|), outside "
            f"{LOW_AMPLITUDE_MV:g}-{HIGH_AMPLITUDE_MV:g} mV"
        )
    odd = sorted({g for g in header.gains if g in KNOWN_WRONG_GAINS})
    if odd:
        problems.append(
            f"gain {'/'.join(f'{g:g}' for g in odd)}/mV in {header.path.name}: some CinC-2020 copies carry this value "
            "where the 2021 release says 1000/mV for the same samples"
        )
    if not problems:
        return None
    hint = "; check the gain in the header" if len(problems) > 1 or not problems[0].startswith("peak") else ""
    return f"{header.path.with_name(header.file)}: " + "; ".join(problems) + hint + "; kept"


# --------------------------------------------------------------------------- dataset


@dataclass
class CincDataset(PtbxlDataset):
    """CinC records as PTB-XL-shaped rows (one per window); per-record facts keyed by ecg_id."""

    names: dict[int, str] = field(default_factory=dict)  # ecg_id -> 'source/record'
    sources: dict[int, str] = field(default_factory=dict)  # ecg_id -> source folder
    codes: dict[int, tuple[str, ...]] = field(default_factory=dict)  # ecg_id -> #Dx codes
    ages: dict[int, float | None] = field(default_factory=dict)
    sexes: dict[int, str | None] = field(default_factory=dict)
    code_counts: dict[str, dict] = field(default_factory=dict)  # per source, see load_cinc
    rhythm_only: str = "sinus"
    window_policy: dict = field(default_factory=dict)
    format: str = "cinc"

    def summary(self) -> dict:
        out = super().summary()
        out.update(
            format=self.format,
            records=self.records_found,
            labelled=len(set(self.ecg_ids.tolist())),
            windows=len(self),
            rhythm_only=self.rhythm_only,
            window_policy=self.window_policy,
            per_source=self.code_counts,
            skipped=[{"ecg_id": i.ecg_id, "record": self.names.get(i.ecg_id), "reason": i.reason} for i in self.skipped],
            suspicious=[{"ecg_id": i.ecg_id, "record": self.names.get(i.ecg_id), "reason": i.reason} for i in self.suspicious],
            unlabelled_records=[self.names[i] for i in self.unlabelled],
        )
        out["per_class"] = {c: int(v) for c, v in zip(self.classes, self.record_labels()[1].sum(axis=0))}
        return out

    def record_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(ecg_ids, labels) with one row per record (windows collapsed)."""
        ids, first = np.unique(self.ecg_ids, return_index=True)
        order = np.argsort(first)
        return ids[order], self.labels[first[order]]


def load_cinc(
    path: str | os.PathLike,
    rate: int = 100,
    *,
    window: int | None = None,
    min_seconds: float = MIN_RECORD_S,
    rhythm_only: str = "sinus",
    leads: tuple[str, ...] = LEADS,
    strict: bool = False,
    progress: bool = False,
) -> CincDataset:
    """Every ``*.hea`` under ``path`` (recursively) as a :class:`CincDataset` at ``rate`` Hz.

    ``window`` is the model's input length in samples (default ``rate * 10``). Records
    whose codes give no superclass under ``rhythm_only`` (see :mod:`edge_ecg.data.snomed`)
    are left out and listed in ``unlabelled``. ``code_counts[source]`` counts, per source:
    headers found, records labelled, unlabelled and skipped, NORM given by the rhythm-only
    policy, and, over every record whose ``#Dx`` was read, the records carrying each code
    that gives no superclass (``codes_without_superclass``) or is not in the table
    (``unknown_codes``).
    """
    if rhythm_only not in RHYTHM_ONLY_POLICIES:
        raise DataError(f"rhythm_only={rhythm_only!r}: use one of {', '.join(RHYTHM_ONLY_POLICIES)}")
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise DataError(f"rate={rate!r}: the model's sampling rate must be a positive integer (Hz)")
    window = rate * DURATION_S if window is None else int(window)
    min_samples = math.ceil(min_seconds * rate)
    if window < 1 or not (0 < min_samples <= window):
        raise DataError(f"window={window} samples and min_seconds={min_seconds} need 0 < min_seconds*rate <= window")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (--data must be a CinC folder of .hea/.mat records)")
    headers = sorted(root.rglob("*.hea"))
    if not headers:
        raise DataError(f"{root}: no .hea header found; a CinC folder holds <record>.hea and <record>.mat files")

    from edge_ecg.progress import track

    rows_x, rows_y, rows_id = [], [], []
    issues: list[RecordIssue] = []
    unlabelled: list[int] = []
    names, sources, codes_of, ages, sexes = {}, {}, {}, {}, {}
    counts: dict[str, dict] = {}
    for ecg_id, hea in enumerate(track(headers, total=len(headers), description="Reading records", enabled=progress), start=1):
        rel = hea.relative_to(root)
        source = rel.parts[0] if len(rel.parts) > 1 else root.resolve().name
        names[ecg_id], sources[ecg_id] = str(rel.with_suffix("")), source
        c = counts.setdefault(source, _empty_counts())
        c["records"] += 1
        try:
            header = parse_header(hea)
            if header.dx is None:
                raise RecordError(f"{hea}: no #Dx line (the SNOMED CT labels of a CinC record); add it or remove the record")
            if not header.dx:
                raise RecordError(f"{hea}: the #Dx line holds no code")
            mapped = map_codes(header.dx, rhythm_only)
            codes_of[ecg_id], ages[ecg_id], sexes[ecg_id] = header.dx, header.age, header.sex
            c["codes_without_superclass"].update(mapped.no_superclass)
            c["unknown_codes"].update(mapped.unknown)
            signal = read_signal(header, leads)
            issue = amplitude_issue(signal, header, leads)
            x = windows(resample(signal, header.fs, rate), window, min_samples)
        except RecordError as exc:
            issues.append(RecordIssue(ecg_id, str(exc)))
            c["skipped"] += 1
            continue
        except WindowError as exc:
            seconds = header.n_samples / header.fs
            issues.append(RecordIssue(ecg_id, f"{hea}: {seconds:.2f} s record ({exc} at {rate} Hz); the window policy refuses "
                                              f"records shorter than {min_seconds:g} s"))
            c["skipped"] += 1
            continue
        if not mapped.labelled:
            unlabelled.append(ecg_id)
            c["unlabelled"] += 1
            continue
        if issue:
            issues.append(RecordIssue(ecg_id, issue, "suspicious"))
        c["labelled"] += 1
        c["norm_from_rhythm"] += int(mapped.norm_from_rhythm)
        for cls in mapped.classes:
            c["per_class"][cls] += 1
        rows_x.append(x)
        rows_y.append(np.repeat(multi_hot(mapped.classes)[None], len(x), axis=0))
        rows_id.append(np.full(len(x), ecg_id, np.int64))
    for c in counts.values():  # Counters -> plain, sorted dicts (JSON-ready, stable)
        for key in ("codes_without_superclass", "unknown_codes"):
            c[key] = dict(sorted(c[key].items(), key=lambda kv: (-kv[1], kv[0])))
    skipped = [i for i in issues if i.kind == "skipped"]
    if strict and skipped:
        lines = "\n".join(f"  {i.reason}" for i in skipped)
        raise DataError(f"{len(skipped)} record(s) of {root} cannot be used (strict mode):\n{lines}")
    n = len(rows_id)
    signals = np.concatenate(rows_x) if n else np.zeros((0, window, len(leads)), np.float32)
    ids = np.concatenate(rows_id) if n else np.zeros(0, np.int64)
    return CincDataset(
        signals=signals,
        labels=np.concatenate(rows_y) if n else np.zeros((0, len(CLASSES)), np.uint8),
        folds=np.full(len(ids), EXTERNAL_FOLD, np.int64),
        ecg_ids=ids,
        patient_ids=np.full(len(ids), -1, np.int64),  # CinC headers carry no patient id
        rate=rate,
        root=root,
        records_found=len(headers),
        folds_found={EXTERNAL_FOLD: len(headers)},
        unlabelled=unlabelled,
        issues=issues,
        leads=tuple(leads),
        names=names,
        sources=sources,
        codes=codes_of,
        ages=ages,
        sexes=sexes,
        code_counts=counts,
        rhythm_only=rhythm_only,
        window_policy={"window_samples": window, "rate_hz": rate, "min_seconds": min_seconds,
                       "longer": "several windows spread evenly, outputs averaged", "shorter": "zero-padded at the end"},
    )


def _empty_counts() -> dict:
    return {
        "records": 0, "labelled": 0, "unlabelled": 0, "skipped": 0, "norm_from_rhythm": 0,
        "per_class": {c: 0 for c in CLASSES}, "codes_without_superclass": Counter(), "unknown_codes": Counter(),
    }
