"""Cross-validation over the ten official PTB-XL folds, pooled out-of-fold predictions, paired comparisons.

For k = 1..10 the rotation tests on fold k, validates on fold k+1 (10 -> 1) and trains
on the other eight. Every labelled record is tested exactly once, by a model that
never saw it, so the pooled predictions of all 975 shared records give a far tighter
macro AUC than fold 10's 126 records alone. Each fold is an ordinary run folder::

    runs/cv/NAME/
      cv.json                 the configuration (resuming with another one is refused)
      fold01/ ... fold10/     run folders; fold k's predictions/test_*.npy are its out-of-fold predictions

A fold whose run is complete is not retrained, so an interrupted rotation continues
where it stopped. Comparisons only read the ``.npy`` files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES
from edge_ecg.data import PtbxlDataset
from edge_ecg.metrics import MetricError, bootstrap_auc, macro_auc, paired_bootstrap, per_class_auc
from edge_ecg.runfolder import (
    CV_FIGURES,
    CV_FILE,
    CV_REPORT_JSON,
    REPORT_FILE,
    atomic_write_text,
    cv_fold_dir,
    write_index,
    write_report_json,
)
from edge_ecg.train import RunError, TrainConfig, check_same_config, write_json

FOLDS = tuple(range(1, 11))


def rotation(folds: tuple[int, ...] = FOLDS) -> list[tuple[int, int]]:
    """(test fold, validation fold) pairs: validate on the next fold, 10 wrapping to 1."""
    return [(k, k % 10 + 1) for k in folds]


def fold_dir(cv_dir: Path, test_fold: int) -> Path:
    return cv_fold_dir(cv_dir, test_fold)


def _open_cv(cv_dir: Path, config: TrainConfig) -> None:
    wanted = {"format": 1, "train": asdict(replace(config, test_fold=0, val_fold=0))}
    path = cv_dir / CV_FILE
    if path.is_file():
        saved = json.loads(path.read_text())["train"]
        check_same_config(path, saved, replace(config, test_fold=0, val_fold=0), "use the same options or another folder")
        return
    cv_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, wanted)


def fold_finished(run: Path) -> bool:
    """Whether a fold's run trained to the end and wrote its test predictions (it is then not rerun)."""
    state = run / "state" / "state.json"
    if not ((run / "predictions" / "test_probs.npy").is_file() and state.is_file()):
        return False
    return bool(json.loads(state.read_text()).get("finished"))


def run_fold(run: Path, config: TrainConfig, dataset: PtbxlDataset, *, progress: bool = False, on_epoch_end=None) -> Path:
    """Train one fold of the rotation (``config`` names its test and validation folds) and save its test predictions.

    A module-level function of picklable arguments, so it runs the same serially or as a Ray task.
    """
    from edge_ecg.data import Standardizer
    from edge_ecg.evaluate import save_predictions
    from edge_ecg.train import STANDARDIZATION_FILE, load_run_model, load_split, predict, train

    train(run, config, dataset=dataset, progress=progress, on_epoch_end=on_epoch_end)
    split = load_split(config, dataset)
    model = load_run_model(run)
    x = Standardizer.load(run / STANDARDIZATION_FILE).transform(split.test.signals)
    save_predictions(run, "test", split.test.ecg_ids, predict(model, x), split.test.labels)
    return run


def cross_validate(
    cv_dir: str | os.PathLike,
    config: TrainConfig,
    *,
    dataset: PtbxlDataset | None = None,
    folds: tuple[int, ...] = FOLDS,
    progress: bool = True,
    on_epoch_end=None,
    ray: str | None = None,
) -> dict | None:
    """Train and predict every fold of the rotation (resuming finished folds); return the pooled report.

    With a subset of ``folds`` only those are run and nothing is pooled (None). ``ray``
    ("local" or a cluster address) runs the unfinished folds as Ray tasks, one CPU each
    (:mod:`edge_ecg.scaleout`); ``on_epoch_end`` is then not called.
    """
    from edge_ecg.data import load_ptbxl
    from edge_ecg.progress import console
    from edge_ecg.scaleout import map_calls

    cv_dir = Path(cv_dir)
    dataset = dataset if dataset is not None else load_ptbxl(config.data, config.rate)
    _open_cv(cv_dir, config)
    todo = [(k, v) for k, v in rotation(folds) if not fold_finished(fold_dir(cv_dir, k))]
    if ray is None:
        for test_fold, val_fold in todo:
            if progress:
                console().print(f"[bold]{cv_dir.name}[/]: fold {test_fold} (validate on {val_fold})")
            run_fold(fold_dir(cv_dir, test_fold), replace(config, test_fold=test_fold, val_fold=val_fold), dataset,
                     progress=progress, on_epoch_end=on_epoch_end)
    elif todo:
        if progress:
            console().print(f"[bold]{cv_dir.name}[/]: folds {', '.join(str(k) for k, _ in todo)} as Ray tasks ({ray})")
        map_calls(run_fold, [(fold_dir(cv_dir, k), replace(config, test_fold=k, val_fold=v), dataset) for k, v in todo], ray=ray)
    return pooled_report(cv_dir) if set(folds) == set(FOLDS) else None


def pooled_predictions(
    cv_dir: str | os.PathLike, name: str = "test", folds: tuple[int, ...] = FOLDS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ecg_ids, labels, probabilities, test fold) of every fold (or of ``folds``), pooled and sorted by ecg_id."""
    ids, labels, probs, test_folds = [], [], [], []
    for k in folds:
        folder = fold_dir(Path(cv_dir), k) / "predictions"
        if not (folder / f"{name}_probs.npy").is_file():
            raise RunError(f"{folder}: fold {k} has no predictions yet; run the rotation (`edge-ecg evaluate --cv`) to finish it")
        fold_ids = np.load(folder / f"{name}_ecg_ids.npy")
        ids.append(fold_ids)
        labels.append(np.load(folder / f"{name}_labels.npy"))
        probs.append(np.load(folder / f"{name}_probs.npy"))
        test_folds.append(np.full(len(fold_ids), k))
    ids_all = np.concatenate(ids)
    order = np.argsort(ids_all, kind="stable")
    if len(np.unique(ids_all)) != len(ids_all):
        raise RunError(f"{cv_dir}: a record appears in two test folds; the rotation is corrupt")
    return ids_all[order], np.concatenate(labels)[order], np.concatenate(probs)[order], np.concatenate(test_folds)[order]


def naive_probs(labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """The naive baseline: each record gets the class priors of its training folds (AUC 0.5 by construction)."""
    probs = np.zeros(labels.shape, np.float32)
    for test_fold, val_fold in rotation():
        test, train = folds == test_fold, (folds != test_fold) & (folds != val_fold)
        probs[test] = labels[train].mean(axis=0)
    return probs


FOLD_BOOT = 200
"""Bootstrap resamples of each fold's interval: ten folds at the pooled interval's 1000 would cost ten times as much."""


def fold_aucs(labels: np.ndarray, probs: np.ndarray, folds: np.ndarray, *, n_boot: int = FOLD_BOOT, seed: int = 0) -> dict[str, dict]:
    """Macro AUC per test fold with a 95 % bootstrap interval, over the classes defined in that fold (exclusions listed)."""
    out = {}
    for k in FOLDS:
        sel = folds == k
        aucs = per_class_auc(labels[sel], probs[sel])
        defined = ~np.isnan(aucs)
        ci = list(bootstrap_auc(labels[sel][:, defined], probs[sel][:, defined], n_boot=n_boot, seed=seed)) if defined.any() else None
        out[str(k)] = {
            "records": int(sel.sum()),
            "macro_auc": float(aucs[defined].mean()) if defined.any() else None,
            "macro_auc_ci95": ci,
            "excluded_classes": [CLASSES[c] for c in np.flatnonzero(~defined)],
        }
    return out


def report_predictions(labels: np.ndarray, probs: np.ndarray, folds: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict:
    lo, hi = bootstrap_auc(labels, probs, n_boot=n_boot, seed=seed)
    return {
        "records": int(len(labels)),
        "macro_auc": macro_auc(labels, probs),
        "macro_auc_ci95": [lo, hi],
        "per_class_auc": dict(zip(CLASSES, per_class_auc(labels, probs).tolist())),
        "per_fold": fold_aucs(labels, probs, folds, seed=seed),
    }


def pooled_report(cv_dir: str | os.PathLike) -> dict:
    """pooled.json, and report.md with its figure (per-fold and pooled AUC), linked from the rotation's index.md."""
    ids, labels, probs, folds = pooled_predictions(cv_dir)
    report = {"cv_dir": str(cv_dir), **report_predictions(labels, probs, folds)}
    report = write_report_json(Path(cv_dir) / CV_REPORT_JSON, report)
    write_report(cv_dir, report)
    return report


def write_report(cv_dir: str | os.PathLike, report: dict) -> Path:
    """``CV/report.md`` with the per-fold/pooled AUC figure, from pooled.json's content; refreshes ``CV/index.md``."""
    from edge_ecg import plots

    cv_dir = Path(cv_dir)
    (figure,) = (cv_dir / name for name in CV_FIGURES)
    plots.fold_aucs(report["per_fold"], report, figure, title=f"{cv_dir.name}: macro AUC per test fold and pooled")
    lo, hi = report["macro_auc_ci95"]
    show = lambda v, ci: "n/a" if v is None else f"{v:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")  # noqa: E731
    lines = [
        f"# Rotation `{cv_dir.name}`: ten test folds, pooled out-of-fold predictions",
        "",
        f"- **pooled macro AUC {report['macro_auc']:.4f}** (95 % bootstrap interval {lo:.4f}–{hi:.4f}) over "
        f"{report['records']} records, each tested once by the fold model that never saw it",
        f"- per fold: test fold k, validation fold k+1 (10 → 1), training on the other eight; intervals from "
        f"{FOLD_BOOT} resamples of the fold's records, over the classes the fold has both labels of",
        "",
        "| test fold | records | macro AUC [95 % CI] | classes left out |",
        "| --- | --- | --- | --- |",
        *[f"| {k} | {f['records']} | {show(f['macro_auc'], f.get('macro_auc_ci95'))} | {', '.join(f['excluded_classes']) or '-'} |"
          for k, f in report["per_fold"].items()],
        f"| pooled | {report['records']} | {show(report['macro_auc'], report['macro_auc_ci95'])} | - |",
        "",
        "| class | pooled AUC |",
        "| --- | --- |",
        *[f"| {c} | {show(a, None)} |" for c, a in report["per_class_auc"].items()],
        "",
        f"![macro AUC per test fold and pooled]({figure.name})",
        "",
    ]
    path = cv_dir / REPORT_FILE
    atomic_write_text(path, "\n".join(lines))
    write_index(cv_dir)
    return path


def ensemble(cv_dirs: list[str | os.PathLike], folds: tuple[int, ...] = FOLDS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pooled predictions of several rotations (e.g. seeds) averaged record by record (over ``folds``)."""
    pooled = [pooled_predictions(d, folds=folds) for d in cv_dirs]
    ids, labels, _, folds = pooled[0]
    for other in pooled[1:]:
        if not np.array_equal(other[0], ids):
            raise RunError("ensemble members do not hold predictions for the same records")
    return ids, labels, np.mean([p[2] for p in pooled], axis=0), folds


__all__ = [
    "MetricError",
    "cross_validate",
    "ensemble",
    "naive_probs",
    "paired_bootstrap",
    "pooled_predictions",
    "pooled_report",
    "report_predictions",
    "rotation",
]
