"""External evaluation: a trained run scored on every labelled record of another folder.

``evaluate_external(run, data, out, model="float"|"int8")`` treats every labelled record of
``data`` (PTB-XL or CinC layout, see :func:`edge_ecg.data.load_dataset`) as a test record:

* **float**: the run's ``model.keras``; decision thresholds tuned (max F1 per class) on the
  run's own validation-fold predictions, ``predictions/val_probs.npy``, written by the run's
  ``evaluate``;
* **int8**: the run's ``export/model_int8.tflite`` through the real TFLite Micro interpreter,
  inputs made by :func:`edge_ecg.preprocess.int8_input` (the firmware's preprocessing twin, with
  the export's clipping), outputs dequantized; thresholds are the export's, tuned on the int8
  outputs of the run's validation fold (``export.json``).

Records longer than the model's window give several windows whose probabilities are averaged
(:mod:`edge_ecg.data.resample`). Metrics per class and macro, with percentile bootstrap
intervals, are reported for all records and for each source (Georgia, Chapman-Shaoxing...).
A class with no positive (or no negative) record in a subset has no AUC there; the macro AUC is
then the mean over the classes that have one, and the report names them.

Everything goes to ``out``; the run folder is only read. ``out`` may not be the run folder, nor
inside it except under ``RUN/external/``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
import os
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES
from edge_ecg import metrics as m

MODELS: tuple[str, ...] = ("float", "int8")
METRICS_FILE = "metrics.json"
from edge_ecg.runfolder import REPORT_FILE  # noqa: E402  (the run folder owns its file names)
DATA_FILE = "data.json"
RECORDS_FILE = "records.csv"
EXTERNAL_SUBDIR = "external"


class ExternalEvalError(ValueError):
    """An external evaluation that cannot run; the message names the file or argument."""


# --------------------------------------------------------------------------- model side


def _check_out(run: Path, out: Path) -> None:
    r, o = run.resolve(), out.resolve()
    if o == r or (r in o.parents and o.relative_to(r).parts[0] != EXTERNAL_SUBDIR):
        raise ExternalEvalError(
            f"--out {out}: inside the run folder {run}, whose own reports are never written by an external evaluation; "
            f"use a folder outside the run, or {run / EXTERNAL_SUBDIR / 'NAME'}"
        )


def _float_side(run: Path):
    """(predict function on mV windows, window samples, thresholds, threshold note, model file)."""
    from edge_ecg.data import Standardizer
    from edge_ecg.train import MODEL_FILE, STANDARDIZATION_FILE, RunError, load_run_model, predict

    model = load_run_model(run)
    standardizer = Standardizer.load(run / STANDARDIZATION_FILE)
    val_probs, val_labels = run / "predictions" / "val_probs.npy", run / "predictions" / "val_labels.npy"
    if not (val_probs.is_file() and val_labels.is_file()):
        raise RunError(
            f"{val_probs}: the run's validation predictions are missing (they give the decision thresholds); "
            f"run `edge-ecg evaluate --run {run}` first"
        )
    p_val, y_val = np.load(val_probs), np.load(val_labels)
    if p_val.shape != y_val.shape or p_val.shape[1:] != (len(CLASSES),):
        raise RunError(f"{val_probs}: shape {p_val.shape} does not match {val_labels.name} {y_val.shape}")
    thresholds = m.tune_thresholds(y_val, p_val)
    note = f"max F1 per class on the run's validation fold ({len(y_val)} records, {val_probs.relative_to(run)})"
    return (lambda x: predict(model, standardizer.transform(x))), int(model.input_shape[1]), thresholds, note, MODEL_FILE


def compressed_predictor(run: Path):
    """(predict function on mV windows, window samples, model file) of the compress stage's model (QAT wrappers included)."""
    from edge_ecg.compress import load_model
    from edge_ecg.data import Standardizer
    from edge_ecg.runfolder import RunError, RunFolder
    from edge_ecg.train import STANDARDIZATION_FILE, predict

    path = RunFolder(run).compressed_model()
    if path is None:
        raise RunError(f"{RunFolder(run).compress}: no compressed model in this run; run `edge-ecg compress --run {run} --qat` first")
    model = load_model(path)
    standardizer = Standardizer.load(run / STANDARDIZATION_FILE)
    return (lambda x: predict(model, standardizer.transform(x))), int(model.input_shape[1]), str(path.relative_to(run))


def int8_side(run: Path, progress: bool):
    """(predict function on mV windows, window samples, thresholds, threshold note, model file) of the exported
    int8 model through TFLite Micro; shared by external evaluation and ``evaluate --model int8``."""
    from edge_ecg.data import Standardizer
    from edge_ecg.export.convert import model_io
    from edge_ecg.export.emulator import tflm_run
    from edge_ecg.preprocess import int8_input, output_probabilities
    from edge_ecg.runfolder import EXPORT_DIR, TFLITE_FILE, RunError, RunFolder, sha256_bytes
    from edge_ecg.train import STANDARDIZATION_FILE

    folder = RunFolder(run)
    tflite_path = folder.tflite
    if not tflite_path.is_file():
        raise RunError(f"{tflite_path}: no int8 export in this run; run `edge-ecg export --run {run}` first")
    info = folder.read_export()  # RunError naming export.json and the fix when it is missing or broken
    tflite = tflite_path.read_bytes()
    if sha256_bytes(tflite) != info["tflite"]["sha256"]:
        raise RunError(f"{tflite_path}: its SHA-256 differs from {folder.export_report.name}'s; the export is inconsistent, "
                       "run export again")
    standardizer = Standardizer.load(run / STANDARDIZATION_FILE)
    io_ = model_io(tflite)
    in_q, out_q = io_["inputs"][0], io_["outputs"][0]
    clip = info["calibration"]["clip_sigma"]
    kind = info["tflite"]["output_kind"]
    thresholds = np.asarray([info["thresholds"]["values"][c] for c in CLASSES])
    note = f"the export's: {info['thresholds']['source']}"

    def run_int8(x_mv: np.ndarray) -> np.ndarray:
        q = int8_input(x_mv, standardizer.mean, standardizer.std, clip, in_q["scale"], in_q["zero_point"], standardizer.highpass)
        y = tflm_run(tflite, q, progress=progress, description="TFLM external")
        return output_probabilities(y, out_q["scale"], out_q["zero_point"], kind)

    return run_int8, int(in_q["shape"][1]), thresholds, note, str(Path(EXPORT_DIR) / TFLITE_FILE)


# --------------------------------------------------------------------------- metrics


def subset_report(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Metrics of one set of records; AUCs only for classes with both label values (others listed)."""
    n = len(y)
    pos = y.sum(axis=0)
    defined = [c for c in range(len(CLASSES)) if 0 < pos[c] < n]
    aucs = m.per_class_auc(y, p)
    out = {
        "records": int(n),
        "positives": dict(zip(CLASSES, pos.astype(int).tolist())),
        "auc_classes": [CLASSES[c] for c in defined],
        "auc_undefined": {CLASSES[c]: ("no positive record" if pos[c] == 0 else "no negative record")
                          for c in range(len(CLASSES)) if c not in defined},
        "macro_auc": None,
        "macro_auc_ci95": None,
        "per_class_auc": {c: (None if np.isnan(a) else float(a)) for c, a in zip(CLASSES, aucs)},
        "per_class_auc_ci95": {c: None for c in CLASSES},
    }
    if defined:
        yd, pd_ = y[:, defined], p[:, defined]
        out["macro_auc"] = m.macro_auc(yd, pd_)
        out["macro_auc_ci95"] = list(m.bootstrap_auc(yd, pd_, n_boot=n_boot, seed=seed))
        for c, ci in zip(defined, _per_class_ci(yd, pd_, n_boot, seed)):
            out["per_class_auc_ci95"][CLASSES[c]] = ci
    f_max, f_max_t = m.fmax(y, p)
    out.update(
        per_class_f1=dict(zip(CLASSES, m.per_class_f1(y, p, thresholds).tolist())),
        fmax=f_max,
        fmax_threshold=f_max_t,
        exact_match_accuracy=m.exact_match_accuracy(y, p, thresholds),
        confusion=({c: dict(zip(("tp", "fp", "fn", "tn"), row)) for c, row in zip(CLASSES, m.confusion_counts(y, p, thresholds).tolist())}),
    )
    return out


def _per_class_ci(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> list[list[float]]:
    """Percentile 95 % interval of each class's AUC over the same record resamples as the macro interval."""
    values = [m.per_class_auc(y[idx], p[idx]) for idx in m.bootstrap_samples(y, n_boot, seed)]
    lo, hi = np.quantile(np.asarray(values), [0.025, 0.975], axis=0)
    return [[float(a), float(b)] for a, b in zip(lo, hi)]


# --------------------------------------------------------------------------- main


def evaluate_external(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str = "float",
    format: str = "auto",
    rhythm_only: str = "sinus",
    n_boot: int = 1000,
    plots: bool = True,
    progress: bool = False,
    dataset=None,
) -> dict:
    """Score ``run`` on every labelled record of ``data``; write metrics, report, predictions, plots to ``out``.

    ``dataset`` (an already loaded dataset at the run's rate and window) replaces ``data``'s
    reading. Returns metrics.json's content. Nothing is written before the data and the
    model have been read and scored, and nothing is ever written into the run's own files.
    """
    from edge_ecg.data import load_dataset
    from edge_ecg.data.resample import average_windows
    from edge_ecg.train import TrainConfig, read_run_config

    if model not in MODELS:
        raise ExternalEvalError(f"--model {model!r}: use one of {', '.join(MODELS)}")
    run, out = Path(run), Path(out)
    _check_out(run, out)
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    predict_mv, window, thresholds, threshold_note, model_file = (
        _float_side(run) if model == "float" else int8_side(run, progress)
    )
    ds = dataset if dataset is not None else load_dataset(
        data, config.rate, format=format, window=window, rhythm_only=rhythm_only, leads=config.leads, progress=progress
    )
    if ds.signals.shape[1] != window:
        raise ExternalEvalError(f"{data}: records are {ds.signals.shape[1]} samples, the model's window is {window}")
    if len(ds) == 0:
        reasons = [i.reason for i in ds.skipped][:5]
        raise ExternalEvalError(
            f"{ds.root}: no labelled record to evaluate ({ds.records_found} found, {len(ds.skipped)} skipped, "
            f"{len(ds.unlabelled)} without a superclass)" + "".join(f"\n  {r}" for r in reasons)
        )
    probs_windows = predict_mv(ds.signals)
    ids, probs = average_windows(ds.ecg_ids, probs_windows)
    first = {int(i): k for k, i in reversed(list(enumerate(ds.ecg_ids.tolist())))}
    labels = ds.labels[[first[int(i)] for i in ids]]
    names = getattr(ds, "names", {})
    source_of = getattr(ds, "sources", {})
    sources = np.asarray([source_of.get(int(i), "ptbxl") for i in ids])
    per_record = Counter(ds.ecg_ids.tolist())
    windows = np.asarray([per_record[int(i)] for i in ids])

    report = {
        "run": str(run),
        "data": str(ds.root),
        "format": getattr(ds, "format", "ptbxl"),
        "model": model,
        "model_file": model_file,
        "arch": config.arch,
        "rate_hz": config.rate,
        "window_samples": window,
        "rhythm_only": getattr(ds, "rhythm_only", None),
        "thresholds": {"source": threshold_note, "values": dict(zip(CLASSES, [float(t) for t in thresholds]))},
        "records": {
            "found": int(ds.records_found),
            "evaluated": int(len(ids)),
            "windows": int(len(ds)),
            "skipped": len(ds.skipped),
            "suspicious": len(ds.suspicious),
            "unlabelled": len(ds.unlabelled),
        },
        "all": subset_report(labels, probs, thresholds, n_boot=n_boot, seed=config.seed),
        "per_source": {
            s: subset_report(labels[sources == s], probs[sources == s], thresholds, n_boot=n_boot, seed=config.seed)
            for s in sorted(set(sources.tolist()))
        },
    }

    # files: only now, and only under out
    from edge_ecg.runfolder import atomic_write_json, atomic_write_text, write_report_json

    (out / "predictions").mkdir(parents=True, exist_ok=True)
    np.save(out / "predictions" / "external_ecg_ids.npy", ids.astype(np.int64))
    np.save(out / "predictions" / "external_probs.npy", probs.astype(np.float32))
    np.save(out / "predictions" / "external_labels.npy", labels.astype(np.uint8))
    atomic_write_text(out / RECORDS_FILE, _records_csv(ids, names, sources, windows, labels, probs, getattr(ds, "codes", {})))
    atomic_write_json(out / DATA_FILE, ds.summary())
    report = write_report_json(out / METRICS_FILE, report)
    atomic_write_text(out / REPORT_FILE, markdown_report(report))
    if plots:
        from edge_ecg import plots as pl

        pl.roc_curves(labels, probs, out / "roc.png", title=f"{config.arch} {model}: {Path(ds.root).name} (all)")
        for s in report["per_source"]:
            pl.roc_curves(labels[sources == s], probs[sources == s], out / f"roc_{s}.png", title=f"{config.arch} {model}: {s}")
        pl.confusion_summary(report["all"]["confusion"], out / "confusion.png")
    return report


def _records_csv(ids, names, sources, windows, labels, probs, codes) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["ecg_id", "record", "source", "windows", "labels", "dx_codes", *[f"p_{c}" for c in CLASSES]])
    for i, rid in enumerate(ids.tolist()):
        w.writerow([rid, names.get(rid, rid), sources[i], int(windows[i]),
                    " ".join(c for c, v in zip(CLASSES, labels[i]) if v), " ".join(codes.get(rid, ())),
                    *[f"{v:.6f}" for v in probs[i]]])
    return buf.getvalue()


def _fmt(v, ci=None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown_report(report: dict) -> str:
    r = report["records"]
    lines = [
        f"# {report['arch']} ({report['model']}) on {report['data']}",
        "",
        f"- run `{report['run']}`, model `{report['model_file']}`; format {report['format']}, rhythm-only policy "
        f"{report['rhythm_only']}; {report['rate_hz']} Hz, window {report['window_samples']} samples",
        f"- records: {r['found']} found, {r['evaluated']} evaluated ({r['windows']} windows), {r['skipped']} skipped, "
        f"{r['unlabelled']} without a superclass, {r['suspicious']} suspicious (see `data.json`)",
        f"- thresholds: {report['thresholds']['source']}",
        "",
        "| subset | records | macro AUC [95 % CI] | classes in macro | " + " | ".join(f"{c} AUC" for c in CLASSES) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in CLASSES) + " |",
    ]
    for name, t in [("all", report["all"]), *report["per_source"].items()]:
        lines.append(
            f"| {name} | {t['records']} | {_fmt(t['macro_auc'], t['macro_auc_ci95'])} | {', '.join(t['auc_classes']) or '-'} | "
            + " | ".join(_fmt(t["per_class_auc"][c], t["per_class_auc_ci95"][c]) for c in CLASSES) + " |"
        )
    t = report["all"]
    lines += [
        "",
        "| class | positives | F1 at the run's threshold | threshold | TP | FP | FN | TN |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in CLASSES:
        cm = t["confusion"][c]
        lines.append(f"| {c} | {t['positives'][c]} | {t['per_class_f1'][c]:.3f} | {report['thresholds']['values'][c]:.2f} "
                     f"| {cm['tp']} | {cm['fp']} | {cm['fn']} | {cm['tn']} |")
    lines += ["", f"Fmax {t['fmax']:.3f}; exact-match accuracy {t['exact_match_accuracy']:.3f}.",
              "Plots: `roc.png`, `roc_<source>.png`, `confusion.png`. Per record: `records.csv`, `predictions/*.npy`.", ""]
    return "\n".join(lines)
