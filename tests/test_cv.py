"""The ten-fold rotation, pooled predictions, paired bootstrap and distillation, on real records."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edge_ecg import cv
from edge_ecg.distill import TeacherError, teacher_soft_labels, write_teacher_npz
from edge_ecg.train import RunError, TrainConfig, train

TINY = TrainConfig(arch="dscnn", arch_kwargs={"filters": [4, 8], "strides": [8, 8], "kernel_size": 9},
                   epochs=2, train_limit=24, batch_size=24, seed=1)


@pytest.fixture(scope="module")
def rotation_dir(ptbxl, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "tiny"
    cv.cross_validate(out, TINY, dataset=ptbxl, progress=False)
    return out


def test_rotation_pairs_each_test_fold_with_the_next_for_validation():
    assert cv.rotation() == [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10), (10, 1)]


def test_every_labelled_record_is_tested_once_by_a_model_that_never_trained_on_it(rotation_dir, ptbxl):
    ids, labels, probs, folds = cv.pooled_predictions(rotation_dir)
    assert sorted(ids.tolist()) == sorted(ptbxl.ecg_ids.tolist())  # all 975, each once
    fold_of = dict(zip(ptbxl.ecg_ids.tolist(), ptbxl.folds.tolist()))
    assert all(fold_of[i] == k for i, k in zip(ids.tolist(), folds.tolist()))
    for k in range(1, 11):
        trained_on = set(np.load(cv.fold_dir(rotation_dir, k) / "train_ecg_ids.npy").tolist())
        tested = set(ids[folds == k].tolist())
        assert trained_on and trained_on.isdisjoint(tested)
    # labels travel with their ids
    row_of = {i: r for r, i in enumerate(ptbxl.ecg_ids.tolist())}
    np.testing.assert_array_equal(labels, ptbxl.labels[[row_of[i] for i in ids.tolist()]])
    report = json.loads((rotation_dir / "pooled.json").read_text())
    assert report["records"] == 975 and set(report["per_fold"]) == {str(k) for k in range(1, 11)}


def test_an_interrupted_rotation_resumes_to_the_same_pooled_result(rotation_dir, ptbxl, tmp_path):
    calls = []

    def interrupt_in_fold_5(epoch, row):
        calls.append(epoch)
        if len(calls) == 9:  # fold 5, first epoch (two epochs per fold)
            raise KeyboardInterrupt

    out = tmp_path / "tiny"
    with pytest.raises(KeyboardInterrupt):
        cv.cross_validate(out, TINY, dataset=ptbxl, progress=False, on_epoch_end=interrupt_in_fold_5)
    assert not (cv.fold_dir(out, 5) / "predictions").exists()
    cv.cross_validate(out, TINY, dataset=ptbxl, progress=False)
    a, b = cv.pooled_predictions(rotation_dir), cv.pooled_predictions(out)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_resuming_a_rotation_with_other_settings_is_refused(rotation_dir, ptbxl):
    with pytest.raises(RunError, match="other settings .*epochs"):
        cv.cross_validate(rotation_dir, replace(TINY, epochs=3), dataset=ptbxl, progress=False)


def test_paired_bootstrap_of_identical_predictions_is_zero(rotation_dir):
    _, labels, probs, _ = cv.pooled_predictions(rotation_dir)
    result = cv.paired_bootstrap(labels, probs, probs, n_boot=200)
    assert result == {"difference": 0.0, "ci95": [0.0, 0.0]}
    naive = cv.naive_probs(labels, cv.pooled_predictions(rotation_dir)[3])
    better = cv.paired_bootstrap(labels, probs, naive, n_boot=200)
    assert better["ci95"][0] <= better["difference"] <= better["ci95"][1]


def test_naive_row_gives_each_record_its_training_priors(ptbxl):
    folds, labels = ptbxl.folds, ptbxl.labels
    probs = cv.naive_probs(labels, folds)
    train = (folds != 10) & (folds != 1)
    np.testing.assert_allclose(probs[folds == 10], np.broadcast_to(labels[train].mean(0), probs[folds == 10].shape))


def test_a_class_with_too_few_records_in_a_fold_is_reported_as_excluded():
    labels = np.zeros((20, 5), int)
    labels[:, 0] = np.arange(20) % 2
    labels[::3, 1:4] = 1
    labels[0, 4] = 1  # HYP: one positive, in fold 1 only
    folds = np.repeat(np.arange(1, 11), 2)
    probs = np.random.default_rng(0).random((20, 5))
    per_fold = cv.fold_aucs(labels, probs, folds)
    # fold 1 holds HYP's one positive and a negative: defined; every other fold has no HYP positive
    assert "HYP" not in per_fold["1"]["excluded_classes"]
    assert all("HYP" in per_fold[str(k)]["excluded_classes"] for k in range(2, 11))
    assert per_fold["2"]["macro_auc"] is not None  # the defined classes still give a figure


@pytest.mark.slow
def test_distillation_with_weight_zero_equals_plain_training(ptbxl, tmp_path):
    from edge_ecg.tf import tf

    teacher = tmp_path / "teacher.npz"
    rng = np.random.default_rng(4)
    write_teacher_npz(teacher, ptbxl.ecg_ids, rng.random((len(ptbxl), 5)), unseen_test_fold=10)
    config = replace(TINY, train_limit=64)
    train(tmp_path / "plain", config, dataset=ptbxl, progress=False)
    train(tmp_path / "kd0", replace(config, teacher=str(teacher), distill_alpha=0.0), dataset=ptbxl, progress=False)
    train(tmp_path / "kd", replace(config, teacher=str(teacher), distill_alpha=0.7), dataset=ptbxl, progress=False)

    def weights(run):
        path = str(run / "state" / "ckpt")
        reader = tf.train.load_checkpoint(path)
        return [reader.get_tensor(n) for n, _ in tf.train.list_variables(path) if "model" in n and "OPTIMIZER" not in n]

    plain, kd0, kd = weights(tmp_path / "plain"), weights(tmp_path / "kd0"), weights(tmp_path / "kd")
    assert all(np.array_equal(a, b) for a, b in zip(plain, kd0))
    assert not all(np.array_equal(a, b) for a, b in zip(plain, kd))  # the teacher does change training


def test_teacher_that_saw_the_test_fold_or_misses_records_is_refused(ptbxl, tmp_path, rotation_dir):
    train_records = ptbxl.select(ptbxl.folds <= 8)
    leaky = tmp_path / "leaky.npz"
    write_teacher_npz(leaky, ptbxl.ecg_ids, np.zeros((len(ptbxl), 5)), unseen_test_fold=3)
    with pytest.raises(TeacherError, match="leak"):
        teacher_soft_labels(str(leaky), train_records, test_fold=10)
    partial = tmp_path / "partial.npz"
    write_teacher_npz(partial, ptbxl.ecg_ids[:100], np.zeros((100, 5)), unseen_test_fold=10)
    with pytest.raises(TeacherError, match="no teacher prediction for"):
        teacher_soft_labels(str(partial), train_records, test_fold=10)
    with pytest.raises(TeacherError, match="leak the student's test fold 4"):
        teacher_soft_labels(str(cv.fold_dir(rotation_dir, 3)), train_records, test_fold=4)
    # a rotation as teacher: fold k's model for student fold k
    probs = teacher_soft_labels(str(rotation_dir), ptbxl.select((ptbxl.folds != 4) & (ptbxl.folds != 5)), test_fold=4)
    assert probs.shape == (int(((ptbxl.folds != 4) & (ptbxl.folds != 5)).sum()), 5)


def test_the_rotation_report_shows_each_fold_and_the_pooled_auc_with_intervals(tmp_path):
    """report.md from pooled.json's content: a row per fold (interval or the classes left out), the figure, an index link."""
    import re

    per_fold = {str(k): {"records": 98, "macro_auc": 0.8 + k / 100, "macro_auc_ci95": [0.7 + k / 100, 0.85 + k / 100],
                         "excluded_classes": []} for k in range(1, 11)}
    per_fold["3"] = {"records": 97, "macro_auc": 0.81, "macro_auc_ci95": [0.7, 0.9], "excluded_classes": ["HYP"]}
    report = {"records": 975, "macro_auc": 0.86, "macro_auc_ci95": [0.84, 0.88],
              "per_class_auc": dict(zip(("NORM", "MI", "STTC", "CD", "HYP"), (0.9, 0.85, 0.88, 0.8, 0.87))), "per_fold": per_fold}
    (tmp_path / "cv.json").write_text("{}")  # a rotation folder
    text = cv.write_report(tmp_path, report).read_text()
    assert "**pooled macro AUC 0.8600** (95 % bootstrap interval 0.8400–0.8800) over 975 records" in text
    assert "| 3 | 97 | 0.8100 [0.7000, 0.9000] | HYP |" in text and "| 10 | 98 | 0.9000 [0.8000, 0.9500] | - |" in text
    assert "| pooled | 975 | 0.8600 [0.8400, 0.8800] | - |" in text
    (figure,) = re.findall(r"\]\(([^)\s]+\.png)\)", text)
    assert (tmp_path / figure).stat().st_size > 0
    assert "[report.md](report.md)" in (tmp_path / "index.md").read_text()


def test_the_pooled_report_gives_every_fold_an_interval_around_its_auc(rotation_dir):
    report = json.loads((rotation_dir / "pooled.json").read_text())
    for k, fold in report["per_fold"].items():
        lo, hi = fold["macro_auc_ci95"]
        assert lo <= fold["macro_auc"] <= hi, (k, fold)
    assert (rotation_dir / "report.md").is_file() and (rotation_dir / "fold_auc.png").stat().st_size > 0
