"""Teachers for knowledge distillation: soft labels that never come from the student's test fold.

A teacher is given as one of:

- a run folder (``runs/cnn_base``): usable when the student's test fold is the fold
  that run never trained on (its ``test_fold``);
- a cross-validation folder (``runs/cv/cnn_base``, see :mod:`edge_ecg.cv`): the fold
  run whose test fold is the student's is used, so the rotation never leaks;
- several of the above joined with ``,``: an ensemble, probabilities averaged;
- a predictions file ``.npz`` with ``ecg_ids``, ``probs`` (N, 5) and ``unseen_test_fold``.

The teacher's probabilities must cover every training record of the student.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ecg.data import PtbxlDataset
from edge_ecg.runfolder import CV_FILE, RunFolder, cv_fold_dir


class TeacherError(ValueError):
    """A teacher that cannot be used for this student; the message says why."""


def _run_probs(run: Path, records: PtbxlDataset, test_fold: int) -> np.ndarray:
    from edge_ecg.data import Standardizer
    from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, check_input_shape, load_run_model, predict, read_run_config

    config = TrainConfig.from_dict(read_run_config(run)["train"])
    if config.test_fold != test_fold:
        raise TeacherError(
            f"teacher {run} was trained with fold {test_fold} in its training or validation data (its test fold is "
            f"{config.test_fold}); its soft labels would leak the student's test fold {test_fold}"
        )
    model = load_run_model(run)
    x = Standardizer.load(run / STANDARDIZATION_FILE).transform(records.signals)
    check_input_shape(model, x, f"teacher {run}")
    return predict(model, x)


def _npz_probs(path: Path, records: PtbxlDataset, test_fold: int) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        missing_keys = {"ecg_ids", "probs", "unseen_test_fold"} - set(z.files)
        if missing_keys:
            raise TeacherError(f"{path}: missing array(s) {', '.join(sorted(missing_keys))}")
        ids, probs, unseen = z["ecg_ids"], z["probs"], int(z["unseen_test_fold"])
    if unseen != test_fold:
        raise TeacherError(f"{path}: made by a teacher that saw fold {test_fold} (it kept out fold {unseen}); it would leak the test fold")
    index = {int(i): k for k, i in enumerate(ids)}
    absent = [int(i) for i in records.ecg_ids if int(i) not in index]
    if absent:
        raise TeacherError(f"{path}: no teacher prediction for {len(absent)} training record(s), e.g. ecg_id {absent[:5]}")
    return probs[[index[int(i)] for i in records.ecg_ids]].astype(np.float32)


def teacher_soft_labels(
    teacher: str, records: PtbxlDataset, *, test_fold: int, cache: Path | None = None
) -> np.ndarray:
    """The teacher's probabilities for ``records`` (N, 5), checked for leaks and coverage."""
    if cache is not None and cache.is_file():
        return np.load(cache)
    parts = []
    for source in (t.strip() for t in teacher.split(",") if t.strip()):
        path = Path(source)
        if path.suffix == ".npz":
            parts.append(_npz_probs(path, records, test_fold))
        elif (path / CV_FILE).is_file():
            fold_run = cv_fold_dir(path, test_fold)
            if not RunFolder(fold_run).model.is_file():
                raise TeacherError(f"teacher {path}: fold {test_fold} has no trained model yet ({fold_run})")
            parts.append(_run_probs(fold_run, records, test_fold))
        elif RunFolder(path).config.is_file():
            parts.append(_run_probs(path, records, test_fold))
        else:
            raise TeacherError(f"teacher {source!r}: not a run folder, a CV folder or a .npz of predictions")
    if not parts:
        raise TeacherError("--teacher is empty")
    probs = np.mean(parts, axis=0).astype(np.float32)
    if cache is not None:
        np.save(cache, probs)
    return probs


def write_teacher_npz(path: Path, ecg_ids: np.ndarray, probs: np.ndarray, unseen_test_fold: int) -> None:
    """Save predictions in the form ``--teacher`` reads."""
    np.savez(path, ecg_ids=np.asarray(ecg_ids, np.int64), probs=np.asarray(probs, np.float32), unseen_test_fold=np.int64(unseen_test_fold))


__all__ = ["TeacherError", "teacher_soft_labels", "write_teacher_npz"]
