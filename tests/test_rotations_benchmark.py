"""benchmarks/rotations.py: finished rotations side by side, paired on the same records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import load_benchmark

from edge_ecg.cv import FOLDS, fold_dir
from edge_ecg.evaluate import save_predictions


def _rotation(folder: Path, labels: np.ndarray, probs: np.ndarray, val_auc: float | None) -> Path:
    """A finished rotation's files: each fold's test predictions (and the kept model's validation AUC)."""
    for k, part in zip(FOLDS, np.array_split(np.arange(len(labels)), len(FOLDS))):
        run = fold_dir(folder, k)
        save_predictions(run, "test", 1000 + part, probs[part], labels[part])
        if val_auc is not None:
            (run / "state").mkdir()
            (run / "state" / "state.json").write_text(json.dumps({"best_auc": val_auc + k / 1000}))
    return folder


def test_paired_table_ranks_a_better_rotation_above_and_names_mismatched_records(tmp_path, capsys):
    rot = load_benchmark("rotations")
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 5)) < 0.3).astype(np.uint8)
    noise = rng.normal(size=labels.shape)
    good = _rotation(tmp_path / "good", labels, labels + 0.5 * noise, 0.9)
    poor = _rotation(tmp_path / "poor", labels, labels + 2.0 * noise, None)

    out = tmp_path / "cmp.json"
    assert rot.main(["--reference", f"poor={poor}", f"good={good}", "--n-boot", "50", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    poor_row, good_row = result["rotations"]
    assert result["records"] == 400 and poor_row["name"] == "poor" and "minus_reference" not in poor_row
    diff = good_row["minus_reference"]
    assert diff["difference"] > 0.1 and diff["ci95"][0] > 0  # far better on the same records
    assert abs(good_row["macro_auc"] - poor_row["macro_auc"] - diff["difference"]) < 1e-9
    assert abs(good_row["validation_auc"] - (0.9 + 0.0055)) < 1e-12 and poor_row["validation_auc"] is None
    printed = capsys.readouterr().out
    assert "good" in printed and f"{diff['difference']:+.4f}" in printed

    other = _rotation(tmp_path / "other", labels[:390], labels[:390] + 0.5 * noise[:390], None)
    assert rot.main(["--reference", f"poor={poor}", f"other={other}", "--n-boot", "10"]) == 2
    assert "same records" in capsys.readouterr().err and not list(tmp_path.glob("*.json.*"))
