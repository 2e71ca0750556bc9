"""The run folder: every file name, its readers and writers, atomic writes and the one-writer lock.

No TensorFlow: a serial bench, ``build`` and the benchmarks read run folders with numpy alone.

A run folder (``runs/NAME/``) is the only thing the stages pass between them::

    config.json              resolved training configuration (format RUN_FORMAT), written first
    standardization.json     per-lead mean/std fitted on the training folds
    model.keras              best float model by validation macro AUC
    history.csv, state/      training history and the resumable state (edge_ecg.train)
    predictions/             per-record outputs and labels of the validation and test folds
    compress/final.h5        the compression stage's model (what export takes first)
    export/                  model_int8.tflite, C sources, export.json, test_int8_outputs.npy, test_ecg_ids.npy
    firmware/TARGET/         rendered firmware projects (edge_ecg.firmware)
    bench/BACKEND.jsonl|json bench results, appended as they arrive, and their summary
    bench/BACKEND.md         bench report with its figures (BACKEND_*.png)
    report.md, compress/report.md, export/report.md   stage reports with figures
    compression.md           every variant exported and scored (benchmarks/compression.py)
    index.md                 links every stage report that exists (write_index, rewritten by each stage)

:class:`RunFolder` names each of them; stages ask it for paths instead of spelling them.

Atomic writes go to a temporary file in the same folder, are flushed to disk and then
renamed over the target (``os.replace``), so a reader, or a run killed half-way,
sees either the previous file or the new one, never a mix.

:class:`RunLock` lets one process at a time write a run folder: an exclusive,
non-blocking ``flock`` on ``RUN/.lock``. A second writer is refused with the holder's
pid, stage and command. The kernel drops the lock when its process ends, so a crash
never leaves a run folder locked; the file's text is only what the message shows.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

RUN_FORMAT = 1
"""Version of the run-folder layout; a folder written with another one is refused."""

CONFIG_FILE = "config.json"
STANDARDIZATION_FILE = "standardization.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
STATE_DIR = "state"
PREDICTIONS_DIR = "predictions"
COMPRESS_DIR = "compress"
COMPRESSED_MODELS = ("final.keras", "final.h5")
"""The compression stage's result in COMPRESS_DIR, taken before ``model.keras`` when present (first found)."""
EXPORT_DIR = "export"
EXPORT_FILE = "export.json"
TFLITE_FILE = "model_int8.tflite"
TEST_OUTPUTS_FILE = "test_int8_outputs.npy"
TEST_IDS_FILE = "test_ecg_ids.npy"
TRAIN_IDS_FILE = "train_ecg_ids.npy"
"""The records a model trained on (train writes it; edge_ecg.distill audits a cross-fitted teacher with it)."""
VAL_IDS_FILE = "val_ecg_ids.npy"
"""The records that selected a cross-fitted teacher model's epoch (edge_ecg.distill audits them too)."""
LABELLED_IDS_FILE = "labelled_ecg_ids.npy"
"""The records a cross-fitted teacher model labels (edge_ecg.distill)."""
PIPELINE_FILE = "pipeline.json"
"""Each stage's key figures of ``edge-ecg run`` (edge_ecg.run)."""
FIRMWARE_DIR = "firmware"
BENCH_DIR = "bench"
CV_FILE = "cv.json"
"""The configuration file of a cross-validation rotation folder (edge_ecg.cv)."""
# A federated run folder (edge_ecg.federate): configuration, sites, report, plot and the global weights.
FEDERATE_CONFIG = "federate.json"
FEDERATE_SITES_FILE = "sites.json"
FEDERATE_REPORT_JSON = "federate_report.json"
FEDERATE_REPORT_MD = "federate_report.md"
FEDERATE_ROUNDS_PLOT = "federate_auc_rounds.png"
FEDERATE_WEIGHTS_FILE = "federate_weights.npz"
FEDERATE_SITES_DIR = "sites"
"""Per-site run folders of a federated run (``sites/<site>/``: fine-tuned model, compress, export, firmware)."""
FEDERATE_APP_DIR = "flower_app"
"""With ``federate --deployment``: the Flower app folder ``flwr run`` packs (its pyproject.toml)."""
FEDERATE_RESULTS = "flower_results"
"""With ``federate --deployment``: what the ServerApp wrote (``.npz`` arrays, ``.json`` rounds and failures)."""
# Reports: markdown with figures beside it, one per stage, and the index that links them.
REPORT_FILE = "report.md"
"""The training/evaluation report in the run folder, and the export's in ``export/`` (same name, its own folder)."""
COMPRESSION_REPORT_MD = "compression.md"
COMPRESSION_REPORT_JSON = "compression.json"
EVALUATION_DIR = "evaluation"
"""``evaluation/MODEL/``: the test-fold evaluation of the compressed or int8 model (the float model's is the run's own)."""
BUILD_RECORD = "build.json"
"""What ``build`` writes into each rendered firmware project (``firmware/TARGET/build.json``)."""
INDEX_FILE = "index.md"
EXPORT_FIGURES = ("int8_vs_float.png", "auc_per_class.png", "memory.png")
"""The export report's figures, in ``export/``: output scatter, per-class AUC bars, arena/flash bars."""
COMPRESS_FIGURES = ("size_vs_auc.png", "size_per_stage.png")
"""The compression report's figures, in ``compress/`` beside its ``report.md``: validation AUC against
estimated int8 bytes per stage, and int8 bytes and MACs per stage relative to the float model."""
CV_REPORT_JSON = "pooled.json"
CV_FIGURES = ("fold_auc.png",)
"""The rotation report's figure, beside its ``report.md`` in the rotation folder: per-fold and pooled AUC."""


def cv_fold_dir(cv_dir: str | os.PathLike, test_fold: int) -> Path:
    """The run folder of one fold of a cross-validation rotation (``CV/foldKK``)."""
    return Path(cv_dir) / f"fold{test_fold:02d}"


def federate_site_dir(run: str | os.PathLike, site: str) -> Path:
    """The run folder of one site of a federated run (``RUN/sites/<site>``); ValueError for a name that is not a plain folder name."""
    if not site or site in (".", "..") or "/" in site or "\\" in site:
        raise ValueError(f"site name {site!r} cannot name a folder")
    return Path(run) / FEDERATE_SITES_DIR / site


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the model hash (``model_hash`` in ``info%``, export.json, build.json)."""
    return hashlib.sha256(bytes(data)).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RunFolder:
    """The paths of one run folder and its readers. Cheap: nothing is read until asked."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # ---- training
    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def standardization(self) -> Path:
        return self.root / STANDARDIZATION_FILE

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS_DIR

    # ---- compression
    @property
    def compress(self) -> Path:
        return self.root / COMPRESS_DIR

    def compressed_model(self) -> Path | None:
        """The compression stage's model if there is one (``final.keras`` before ``final.h5``)."""
        for name in COMPRESSED_MODELS:
            if (self.compress / name).is_file():
                return self.compress / name
        return None

    def deployable_model(self) -> Path:
        """The model export takes: the compressed one if present, else ``model.keras``; RunError if neither."""
        path = self.compressed_model() or self.model
        if not path.is_file():
            raise RunError(f"{self.model}: no trained model in this run folder; run `edge-ecg train --run {self.root}` first")
        return path

    # ---- export
    @property
    def export(self) -> Path:
        return self.root / EXPORT_DIR

    @property
    def export_report(self) -> Path:
        return self.export / EXPORT_FILE

    @property
    def tflite(self) -> Path:
        return self.export / TFLITE_FILE

    def read_config(self) -> dict:
        """config.json, checked for the run-folder format; RunError naming the file otherwise."""
        path = self.config
        if not path.is_file():
            raise RunError(f"{path}: not found; is {self.root} a run folder? Create one with `edge-ecg train`")
        try:
            saved = json.loads(path.read_text())
        except ValueError as exc:
            raise RunError(f"{path}: not valid JSON ({exc})") from exc
        if saved.get("format") != RUN_FORMAT:
            from edge_ecg import __version__

            raise RunError(
                f"{path}: run folder format {saved.get('format')!r} (edge-ecg {saved.get('edge_ecg', '?')}), "
                f"this edge-ecg {__version__} reads format {RUN_FORMAT}; retrain into a new run folder"
            )
        return saved

    def leads(self) -> tuple[str, ...]:
        """The model's input leads, canonical names in channel order (config.json's ``train.leads``; older runs: all 12)."""
        from edge_ecg.data.leads import parse_leads

        return parse_leads(self.read_config()["train"].get("leads"), f"{self.config}: train.leads")

    def data_dir(self) -> Path:
        """The data folder the run was trained on (config.json; the default data folder when it names none)."""
        from edge_ecg import settings

        return Path(self.read_config()["train"].get("data") or settings.data_dir(None))

    def is_own_data(self, data: str | os.PathLike) -> bool:
        """Whether ``data`` is the folder the run was trained on (evaluate and bench then use its test fold)."""
        return Path(data).resolve() == self.data_dir().resolve()

    def read_export(self) -> dict:
        """export.json; RunError saying to export first when it is missing."""
        path = self.export_report
        if not path.is_file():
            raise RunError(f"{path} not found: run `edge-ecg export --run {self.root}` first")
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise RunError(f"{path}: not valid JSON ({exc}); export again") from exc

    def reference_outputs(self) -> dict[int, list[int]]:
        """The exported int8 model's TFLite Micro outputs on the test fold, by ecg_id (what boards must match)."""
        import numpy as np

        ids = np.load(self.export / TEST_IDS_FILE)
        outputs = np.load(self.export / TEST_OUTPUTS_FILE)
        return dict(zip(ids.tolist(), outputs.tolist()))

    # ---- firmware and bench
    def firmware(self, target: str) -> Path:
        return self.root / FIRMWARE_DIR / target

    @property
    def bench(self) -> Path:
        return self.root / BENCH_DIR

    def bench_results(self, backend: str) -> Path:
        """The JSONL file a benchmark appends to, one line per record."""
        return self.bench / f"{backend}.jsonl"

    def bench_summary(self, backend: str) -> Path:
        return self.bench / f"{backend}.json"

    def bench_report(self, backend: str) -> Path:
        """The benchmark's markdown report; its figures are ``<backend>_*.png`` beside it."""
        return self.bench / f"{backend}.md"

    # ---- reports
    @property
    def export_markdown(self) -> Path:
        return self.export / REPORT_FILE

    def evaluation(self, model: str) -> Path:
        """Where ``evaluate --model MODEL`` writes for a model other than the float one (metrics.json, report.md ...)."""
        return self.root / EVALUATION_DIR / model

    @property
    def compress_markdown(self) -> Path:
        """The compression stage's report (its figures, COMPRESS_FIGURES, beside it)."""
        return self.compress / REPORT_FILE

    @property
    def index(self) -> Path:
        return self.root / INDEX_FILE


def write_index(run: str | os.PathLike) -> Path:
    """(Re)write ``run/index.md``: a link to every stage report that exists now, in pipeline order.

    Each stage calls it after writing its own report, so the index never links a missing file.
    """
    folder = RunFolder(run)
    stages = [
        ("training and evaluation", [folder.root / REPORT_FILE]),
        ("compression", [folder.compress_markdown, folder.root / COMPRESSION_REPORT_MD, folder.root / COMPRESSION_REPORT_JSON]),
        ("export (int8)", [folder.export_markdown, folder.export_report]),
        ("evaluation of other models (`evaluate --model`)", sorted(folder.root.glob(f"{EVALUATION_DIR}/*/{REPORT_FILE}"))),
        ("firmware", sorted((folder.root / FIRMWARE_DIR).glob(f"*/{BUILD_RECORD}"))),
        ("bench", sorted(folder.bench.glob("*.md"))),
    ]
    if (folder.root / CV_FILE).is_file():  # a rotation folder (edge_ecg.cv): its folds are run folders of their own
        stages = [("rotation (ten folds, pooled)", [folder.root / REPORT_FILE, folder.root / CV_REPORT_JSON])]
    lines = [f"# Run {folder.root.name}", ""]
    for title, paths in stages:
        links = [f"[{p.relative_to(folder.root).as_posix()}]({p.relative_to(folder.root).as_posix()})" for p in paths if p.is_file()]
        if links or not title.startswith("evaluation of other models"):  # an optional step: listed once it has run
            lines.append(f"- {title}: {', '.join(links) if links else 'no report yet'}")
    lines.append("")
    atomic_write_text(folder.index, "\n".join(lines))
    return folder.index

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process is writing the same run folder."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


DISPLAY_DIGITS = 6
"""Significant digits of every float in a report JSON (metrics, timings, sizes): 0.747096, 2696.38 µs."""
EXACT_KEYS = frozenset({"scale", "zero_point", "input_scale", "mean", "std", "clip_sigma", "thresholds"})
"""Keys whose floats a report JSON keeps exact: quantization parameters, standardization, the input clipping
and the decision thresholds, all read back to compute (a threshold rounded up past an int8 output's
dequantized value would flip that record's decision)."""


def display_floats(obj, exact_keys: frozenset = EXACT_KEYS):
    """``obj`` with its floats rounded to DISPLAY_DIGITS significant digits, except under ``exact_keys``.

    The one rounding rule of the reports (metrics.json, export.json, bench and compression
    summaries): what a reader compares by eye is short; what a program reads back to compute
    (quantization scales and zero points, standardization) stays exact. Training state is
    never rounded (it is written with :func:`atomic_write_json`).
    """
    if isinstance(obj, float):
        return float(f"{obj:.{DISPLAY_DIGITS}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: (v if k in exact_keys else display_floats(v, exact_keys)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [display_floats(v, exact_keys) for v in obj]
    return obj


def write_report_json(path: str | os.PathLike, obj) -> dict:
    """:func:`atomic_write_json` of :func:`display_floats` of ``obj``; returns what was written."""
    shown = display_floats(obj)
    atomic_write_json(path, shown)
    return shown


class RunLock:
    """Context manager: hold the exclusive writer lock of ``run_dir`` while ``stage`` writes it.

    With ``create``, makes ``run_dir`` if needed; without, a missing ``run_dir`` is not
    locked (the stage fails on it with its own message, and nothing is created).
    Raises :class:`RunLockedError` at once (no waiting) when another process holds it.
    Re-entering in the same process (a stage calling another on the same folder) is
    allowed: only the outermost holder takes and releases the lock.
    """

    _held: dict[Path, int] = {}  # lock path -> nesting depth in this process

    def __init__(self, run_dir: str | os.PathLike, stage: str, *, create: bool = False):
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.create = create
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._key: Path | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        if self.create:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        elif not self.run_dir.is_dir():
            return self
        key = self.path.resolve()
        if key in RunLock._held:
            RunLock._held[key] += 1
            self._key = key
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is being written by another process ({holder}); wait for it to finish, "
                f"or stop it, before running {self.stage} on this run folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "stage": self.stage, "command": " ".join(sys.argv)}).encode())
        self._fd, self._key = fd, key
        RunLock._held[key] = 1
        return self

    def __exit__(self, *exc) -> None:
        if self._key is None:  # nothing was locked
            return
        RunLock._held[self._key] -= 1
        if RunLock._held[self._key]:
            return
        del RunLock._held[self._key]
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking it would race a new holder)
            self._fd = None
        self._key = None


def locks_run(stage: str) -> Callable[[F], F]:
    """Decorator: the wrapped stage function (first argument: the run folder) runs holding its :class:`RunLock`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def locked(run, *args, **kwargs):
            with RunLock(run, stage):
                return fn(run, *args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate


def _read_holder(fd: int) -> str:
    """'pid N, stage S, command C' from an open lock file, or what is known."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info.get('pid', '?')}, stage {info.get('stage', '?')}, command: {info.get('command', '?')}"
    except (OSError, ValueError):
        return "holder unknown"
