"""A reduced-lead student distills from a 12-lead teacher: soft labels are per record, each model reads its own leads."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge_ecg.distill import TeacherError, teacher_soft_labels

TINY = dict(arch="dscnn", arch_kwargs={"filters": [4, 8], "strides": [8, 8], "kernel_size": 9},
            epochs=1, train_limit=24, batch_size=24, seed=1)


@pytest.mark.slow
def test_a_three_lead_student_takes_the_soft_labels_the_12_lead_teacher_gives_from_all_twelve(ptbxl, tmp_path):
    from edge_ecg.data import Standardizer
    from edge_ecg.data.leads import select_leads
    from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, load_run_model, load_split, predict, train

    teacher_config = TrainConfig(**TINY)
    train(tmp_path / "teacher", teacher_config, dataset=ptbxl, progress=False)  # 12 leads, test fold 10
    student = replace(teacher_config, leads=["I", "II", "V2"], teacher=str(tmp_path / "teacher"), distill_alpha=0.5)
    train(tmp_path / "student", student, dataset=ptbxl, progress=False)

    records = load_split(teacher_config, ptbxl).train  # the student's training records (same folds, same limit)
    assert np.array_equal(np.load(tmp_path / "student" / "train_ecg_ids.npy"), records.ecg_ids)
    teacher = load_run_model(tmp_path / "teacher")
    expected = predict(teacher, Standardizer.load(tmp_path / "teacher" / STANDARDIZATION_FILE).transform(records.signals))
    np.testing.assert_allclose(np.load(tmp_path / "student" / "teacher_train_probs.npy"), expected, rtol=0, atol=1e-6)
    assert load_run_model(tmp_path / "student").input_shape[1:] == (records.signals.shape[1], 3)

    # records that lack a lead the teacher reads: refused, naming both lead sets
    with pytest.raises(TeacherError, match=r"reads leads I,II,III,aVR,aVL,aVF,V1-?.*hold only I,II,V2"):
        teacher_soft_labels(str(tmp_path / "teacher"), select_leads(records, ("I", "II", "V2")), test_fold=10)
