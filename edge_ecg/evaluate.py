"""Evaluate a trained run on the test fold: metrics.json, report.md, predictions and plots.

Fold 10 is used for nothing but this report: decision thresholds are tuned on the
validation fold (9) and only applied to the test fold.

Which model is scored (``model=``, the CLI's ``--model``; the report says it):

* ``float`` (default): ``model.keras``, the trained model; its files are the run's own
  (``metrics.json``, ``report.md``, ``predictions/``, plots), which later stages read;
* ``compressed``: ``compress/final.h5``, the compress stage's model (pruned and/or QAT, Keras);
* ``int8``: ``export/model_int8.tflite`` through TFLite Micro with the firmware's preprocessing.

The last two write the same files into ``evaluation/MODEL/`` (RunFolder.evaluation), so the
float model's predictions, from which external evaluations take their thresholds, stay its own.
Their predictions come from :mod:`edge_ecg.external_eval`'s model sides (one way to run each).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES
from edge_ecg import metrics as m
from edge_ecg.data import PtbxlDataset, Standardizer
from edge_ecg.train import (
    HISTORY_FILE,
    STANDARDIZATION_FILE,
    TrainConfig,
    write_json,
    check_input_shape,
    load_run_model,
    load_split,
    predict,
    read_run_config,
)

METRICS_FILE = "metrics.json"
from edge_ecg.runfolder import MODEL_FILE, REPORT_FILE, RunFolder, write_index, write_report_json  # noqa: E402  (the run folder owns its file names)

MODELS = ("float", "compressed", "int8")
MODEL_DESCRIPTIONS = {
    "float": "the trained float model",
    "compressed": "the compress stage's model in Keras: float weights, fake-quantized where trained with QAT",
    "int8": "the exported int8 model through TFLite Micro, inputs by the firmware's preprocessing",
}


def save_predictions(run: Path, split_name: str, ecg_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> None:
    """Predictions as plain .npy beside their record ids and labels (no pickle)."""
    folder = run / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split_name}_ecg_ids.npy", ecg_ids.astype(np.int64))
    np.save(folder / f"{split_name}_probs.npy", probs.astype(np.float32))
    np.save(folder / f"{split_name}_labels.npy", labels.astype(np.uint8))


def classification_report(
    y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict:
    """All test-fold metrics; thresholds come from the validation predictions."""
    thresholds = m.tune_thresholds(y_val, p_val)
    lo, hi = m.bootstrap_auc(y_test, p_test, n_boot=n_boot, seed=seed)
    f_max, f_max_t = m.fmax(y_test, p_test)
    return {
        "records": int(len(y_test)),
        "macro_auc": m.macro_auc(y_test, p_test),
        "macro_auc_ci95": [lo, hi],
        "per_class_auc": dict(zip(CLASSES, m.per_class_auc(y_test, p_test).tolist())),
        "thresholds_val": dict(zip(CLASSES, thresholds.tolist())),
        "per_class_f1": dict(zip(CLASSES, m.per_class_f1(y_test, p_test, thresholds).tolist())),
        "fmax": f_max,
        "fmax_threshold": f_max_t,
        "exact_match_accuracy": m.exact_match_accuracy(y_test, p_test, thresholds),
        "label_accuracy_at_0.5": m.label_accuracy(y_test, p_test),
        "confusion_val_thresholds": {
            c: dict(zip(("tp", "fp", "fn", "tn"), row)) for c, row in zip(CLASSES, m.confusion_counts(y_test, p_test, thresholds).tolist())
        },
    }


def evaluate(
    run: str | os.PathLike, *, dataset: PtbxlDataset | None = None, data: str | None = None, plots: bool = True, model: str = "float"
) -> dict:
    """Evaluate ``model`` (float, compressed or int8; see the module) of ``run`` on its test fold.

    Writes metrics, report, predictions and plots: into the run folder for the float model,
    into ``evaluation/MODEL/`` for the others. Returns metrics.json's content.
    """
    if model not in MODELS:
        raise ValueError(f"--model {model!r}: use one of {', '.join(MODELS)}")
    run = Path(run)
    saved = read_run_config(run)
    config = TrainConfig.from_dict(saved["train"])
    if data is not None:
        config.data = data
    split = load_split(config, dataset)
    from edge_ecg.models import summary

    if model == "float":
        keras_model = load_run_model(run)
        standardizer = Standardizer.load(run / STANDARDIZATION_FILE)
        x_val, x_test = standardizer.transform(split.val.signals), standardizer.transform(split.test.signals)
        check_input_shape(keras_model, x_test, f"data {config.data}")
        p_val, p_test = predict(keras_model, x_val), predict(keras_model, x_test)
        model_file, size = RunFolder(run).model.name, summary(keras_model)
        out = run
    else:
        from edge_ecg.external_eval import int8_side, compressed_predictor

        if model == "int8":
            predict_mv, window, _, _, model_file = int8_side(run, progress=False)
        else:
            predict_mv, window, model_file = compressed_predictor(run)
        if split.test.signals.shape[1] != window:
            raise ValueError(f"data {config.data}: records are {split.test.signals.shape[1]} samples, {model_file}'s window is {window}")
        p_val, p_test = predict_mv(split.val.signals), predict_mv(split.test.signals)
        from edge_ecg.compress import load_model

        # the size columns describe the network: for int8, the Keras model the export was made from
        scored = run / RunFolder(run).read_export()["model"] if model == "int8" else RunFolder(run).deployable_model()
        size = summary(load_model(scored))
        out = RunFolder(run).evaluation(model)
        out.mkdir(parents=True, exist_ok=True)
    save_predictions(out, "val", split.val.ecg_ids, p_val, split.val.labels)
    save_predictions(out, "test", split.test.ecg_ids, p_test, split.test.labels)

    report = {
        "arch": config.arch,
        "test_fold": config.test_fold,
        "val_fold": config.val_fold,
        "scored": {"model": model, "file": model_file, "description": MODEL_DESCRIPTIONS[model]},
        "model": {k: v for k, v in size.items() if k != "layers"},
        "test": classification_report(split.val.labels, p_val, split.test.labels, p_test, seed=config.seed),
    }
    report = write_report_json(out / METRICS_FILE, report)
    if plots:
        from edge_ecg import plots as pl

        pl.roc_curves(split.test.labels, p_test, out / "roc.png", title=f"{config.arch} ({model}): test fold {config.test_fold}")
        pl.confusion_summary(report["test"]["confusion_val_thresholds"], out / "confusion.png")
        if model == "float" and (run / HISTORY_FILE).is_file():
            pl.training_curves(run / HISTORY_FILE, run / "training.png")
    (out / REPORT_FILE).write_text(markdown_report(out, report))  # after the figures: it links those that exist
    write_index(run)
    return report


def markdown_report(run: Path, report: dict) -> str:
    t, mod = report["test"], report["model"]
    lo, hi = t["macro_auc_ci95"]
    scored = report.get("scored", {"model": "float", "file": MODEL_FILE, "description": MODEL_DESCRIPTIONS["float"]})
    lines = [
        f"# {report['arch']} ({scored['model']}) — test fold {report['test_fold']} ({t['records']} records)",
        "",
        f"- model scored: **{scored['model']}**, `{scored['file']}` ({scored['description']}); the others: "
        f"`edge-ecg evaluate --run RUN --model {'|'.join(m for m in MODELS if m != scored['model'])}`",
        f"- parameters: {mod['params']:,}; multiply-accumulates per record: {mod['macs']:,}; int8 weight bytes (estimate: "
        f"int8 weights, int32 biases, float32 per-channel scales): {mod['int8_bytes']:,} (the exported `.tflite` is larger: "
        "it adds the graph, tensor metadata and zero points)",
        f"- **macro AUC {t['macro_auc']:.4f}** (95 % bootstrap interval {lo:.4f}–{hi:.4f})",
        f"- Fmax {t['fmax']:.4f} at threshold {t['fmax_threshold']:.2f} (PTB-XL benchmark definition)",
        f"- exact-match (sample-wise) accuracy {t['exact_match_accuracy']:.4f} with thresholds tuned on fold {report['val_fold']}",
        f"- label-wise accuracy at 0.5 (Keras `binary_accuracy`) {t['label_accuracy_at_0.5']:.4f}",
        "",
        "| class | AUC | F1 | threshold (fold %d) | TP | FP | FN | TN |" % report["val_fold"],
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in CLASSES:
        cm = t["confusion_val_thresholds"][c]
        lines.append(
            f"| {c} | {t['per_class_auc'][c]:.4f} | {t['per_class_f1'][c]:.4f} | {t['thresholds_val'][c]:.2f} "
            f"| {cm['tp']} | {cm['fp']} | {cm['fn']} | {cm['tn']} |"
        )
    figures = [("ROC curves per class", "roc.png"), ("confusion at the fold-%d thresholds" % report["val_fold"], "confusion.png"),
               ("training curves", "training.png")]
    lines += ["", "Predictions: `predictions/*.npy`.", ""]
    for title, name in figures:
        if (run / name).is_file():
            lines += [f"![{title}]({name})", ""]
    return "\n".join(lines)


def read_metrics(run: str | os.PathLike) -> dict:
    return json.loads((Path(run) / METRICS_FILE).read_text())
