"""`edge-ecg cross-fit`: the cross-fitted teacher from the command line (help, errors, JSON, resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_ecg.cli import build_parser, main

TINY = ["--arch", "dscnn", "--arch-arg", "filters=[4,8]", "--arch-arg", "strides=[8,8]", "--arch-arg", "kernel_size=9",
        "--epochs", "1", "--train-limit", "24", "--batch-size", "24", "--seed", "1"]


def test_cross_fit_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["cross-fit", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: edge-ecg cross-fit" in out and "--groups" in out and "--ray" in out


@pytest.mark.parametrize("args, message", [
    (["--teacher", "runs/x"], "drop --teacher"),
    (["--folds", "11"], "test fold(s) 11"),
    (["--groups", "9"], "2 to 8 groups, got 9"),
])
def test_cross_fit_refuses_bad_options_before_writing_anything(tmp_path, capsys, args, message):
    assert main(["cross-fit", "--run", str(tmp_path / "teacher"), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge-ecg: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "teacher").exists()


@pytest.mark.slow
def test_cross_fit_writes_checked_soft_labels_as_json_and_a_rerun_keeps_them(ptbxl_dir, ptbxl, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    command = ["cross-fit", "--data", str(ptbxl_dir), "--run", str(teacher), "--folds", "10", "--groups", "2", "--json", *TINY]
    assert main(command) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["groups"] == 2 and summary["folds_missing"] == list(range(1, 10))
    fold = summary["folds"]["10"]
    training = int(((ptbxl.folds != 10) & (ptbxl.folds != 1)).sum())  # test fold 10 validates on fold 1
    assert fold["records"] == training and len(fold["models"]) == 2
    assert sorted(k for m in fold["models"] for k in m["labels_folds"]) == list(range(2, 10))
    assert all(m["best_epoch"] == 1 for m in fold["models"])
    with np.load(fold["soft_labels"]) as z:
        assert set(z["ecg_ids"].tolist()) == set(ptbxl.ecg_ids[(ptbxl.folds != 10) & (ptbxl.folds != 1)].tolist())
        assert int(z["unseen_test_fold"]) == 10
    stamp = (teacher / "fold10.npz").stat().st_mtime_ns
    assert main(command) == 0  # resumed: fold 10 is done, nothing is retrained
    assert json.loads(capsys.readouterr().out) == summary
    assert (teacher / "fold10.npz").stat().st_mtime_ns == stamp
    # other options for the same folder are refused, naming them
    assert main([*command[:-2], "--seed", "2"]) == 1
    assert "seed" in capsys.readouterr().err
