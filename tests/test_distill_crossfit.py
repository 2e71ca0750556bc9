"""The cross-fitted teacher: no model labels a record it trained on, none sees the student's test fold."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edge_ecg.cv import FOLDS, rotation
from edge_ecg.distill import CROSSFIT_FILE, TeacherError, check_crossfit, crossfit_plan, teacher_soft_labels, write_teacher_npz


@pytest.mark.parametrize("groups", [2, 4, 8])
def test_the_plan_labels_every_training_fold_once_with_models_that_never_saw_it_or_the_test_fold(groups):
    for test_fold, val_fold in rotation():
        plan = crossfit_plan(test_fold, groups)
        assert len(plan) == groups
        labelled = [k for part in plan for k in part["labels_folds"]]
        assert sorted(labelled) == sorted(k for k in FOLDS if k not in (test_fold, val_fold))  # each once
        for part in plan:
            assert not set(part["labels_folds"]) & set(part["train_folds"])
            assert test_fold not in part["train_folds"] and part["val_fold"] == val_fold != test_fold
            assert val_fold not in part["train_folds"]


def _fake_teacher(root, test_fold: int, ids: np.ndarray, folds: np.ndarray, groups: int = 4):
    """The bookkeeping cross_fit writes, for synthetic records (no training)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / CROSSFIT_FILE).write_text(json.dumps({"format": 1, "groups": groups, "train": {}}))
    folder = root / f"fold{test_fold:02d}"
    plan = crossfit_plan(test_fold, groups)
    labelled_all = []
    for part in plan:
        run = folder / f"group{part['group']}"
        run.mkdir(parents=True)
        np.save(run / "train_ecg_ids.npy", ids[np.isin(folds, part["train_folds"])])
        np.save(run / "val_ecg_ids.npy", ids[folds == part["val_fold"]])
        labelled = ids[np.isin(folds, part["labels_folds"])]
        np.save(run / "labelled_ecg_ids.npy", labelled)
        labelled_all.append(labelled)
    np.save(folder / "test_ecg_ids.npy", ids[folds == test_fold])
    (folder / "plan.json").write_text(json.dumps(plan))
    labelled = np.concatenate(labelled_all)
    write_teacher_npz(folder.with_suffix(".npz"), labelled, np.full((len(labelled), 5), 0.25), test_fold)
    return folder


def test_the_bookkeeping_check_passes_a_clean_teacher_and_catches_each_leak(tmp_path):
    ids = np.arange(1, 201)
    folds = ids % 10 + 1
    folder = _fake_teacher(tmp_path / "t", 3, ids, folds)
    check_crossfit(tmp_path / "t", 3)
    student_train = SimpleNamespace(ecg_ids=ids[(folds != 3) & (folds != 4)])
    probs = teacher_soft_labels(str(tmp_path / "t"), student_train, test_fold=3)
    assert probs.shape == (len(student_train.ecg_ids), 5)
    with pytest.raises(TeacherError, match="test fold 5 is not trained yet"):  # only fold 3 has its teacher
        teacher_soft_labels(str(tmp_path / "t"), student_train, test_fold=5)

    group1 = folder / "group1"
    clean = np.load(group1 / "train_ecg_ids.npy")
    labelled = np.load(group1 / "labelled_ecg_ids.npy")
    np.save(group1 / "train_ecg_ids.npy", np.append(clean, labelled[0]))  # a model trained on a record it labels
    with pytest.raises(TeacherError, match=r"group1: trained on 1 record\(s\) it labels"):
        check_crossfit(tmp_path / "t", 3)
    test_record = np.load(folder / "test_ecg_ids.npy")[0]
    np.save(group1 / "train_ecg_ids.npy", np.append(clean, test_record))  # ... or on the student's test fold
    with pytest.raises(TeacherError, match="saw the student's test fold 3"):
        teacher_soft_labels(str(tmp_path / "t"), student_train, test_fold=3)


@pytest.mark.slow
def test_a_student_distills_from_a_cross_fitted_teacher_trained_for_its_fold(ptbxl, tmp_path):
    from dataclasses import replace

    from edge_ecg.distill import cross_fit
    from edge_ecg.train import TrainConfig, train

    tiny = TrainConfig(arch="dscnn", arch_kwargs={"filters": [4, 8], "strides": [8, 8], "kernel_size": 9},
                       epochs=1, train_limit=24, batch_size=24, seed=1)
    cross_fit(tmp_path / "teacher", tiny, dataset=ptbxl, test_folds=(10,), groups=2, progress=False)
    check_crossfit(tmp_path / "teacher", 10)  # from the files the training wrote
    student = replace(tiny, teacher=str(tmp_path / "teacher"), distill_alpha=0.5, test_fold=10, val_fold=1)
    train(tmp_path / "student", student, dataset=ptbxl, progress=False)
    soft = np.load(tmp_path / "student" / "teacher_train_probs.npy")
    assert soft.shape == (24, 5) and np.isfinite(soft).all() and soft.std() > 0
