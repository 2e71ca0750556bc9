"""Hardware-aware search: budgets checked before training, a resumable Optuna study, the front and the choice."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from edge_ecg.search import (
    CHOSEN_FILE,
    FRONT_JSON,
    FRONT_MD,
    FRONT_PLOT,
    STUDY_FILE,
    Constraints,
    SearchError,
    SearchSettings,
    SearchSpace,
    arch_args,
    search,
)
from edge_ecg.train import TrainConfig

TINY = TrainConfig(arch="dscnn", epochs=1, train_limit=24, batch_size=24, seed=1, augment=False)
SMALL_SPACE = SearchSpace(depths=(2,), widths=(4, 8), strides=(4,), kernel_sizes=(5,), decimations=(2, 4))


def test_a_budget_no_shape_can_meet_is_an_error_before_anything_is_trained(ptbxl, tmp_path):
    # The int8 input record alone is 12,000 B: no dscnn fits 8 KB of RAM.
    settings = SearchSettings(target="cortex-m4", constraints=Constraints(flash_kb=64, ram_kb=8))
    with pytest.raises(SearchError, match=r"smallest shape .*RAM 1\d\.\d KB > 8 KB"):
        search(tmp_path / "s", TINY, settings, trials=2, dataset=ptbxl, progress=False)
    assert not (tmp_path / "s").exists()  # no study, no trial folder


def test_chosen_arch_args_parse_back_to_the_same_keyword_arguments():
    from edge_ecg.cli import _parse_arch_args

    kwargs = {"filters": [8, 16], "strides": [2, 4], "kernel_size": [5, 7], "pool": "max", "decimate": 2}
    assert _parse_arch_args(arch_args(kwargs)) == kwargs


def test_new_dscnn_arguments_keep_tflite_and_qat_layers_and_change_the_graph():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    from edge_ecg.models import dscnn

    model = dscnn(filters=(8, 16), strides=(2, 2), kernel_size=(5, 7), pool="max", decimate=2)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"AveragePooling2D", "GlobalMaxPooling2D"} <= kinds
    assert model.get_layer("block1_depthwise").kernel_size == (7, 1)
    assert tfmot.quantization.keras.quantize_model(model).output_shape == (None, 5)
    with pytest.raises(ValueError, match="decimate"):
        dscnn(decimate=3)  # 1000 samples are not divisible by 3


@pytest.mark.slow
def test_a_two_trial_search_writes_its_front_and_resumes(ptbxl, tmp_path):
    settings = SearchSettings(target="esp32s3", constraints=Constraints(flash_kb=64, ram_kb=32, max_macs=5_000_000),
                              space=SMALL_SPACE)
    run = tmp_path / "s"
    result = search(run, TINY, settings, trials=2, dataset=ptbxl, progress=False)
    assert result["trained"] == 2 and result["front"]
    for name in (STUDY_FILE, FRONT_MD, FRONT_JSON, FRONT_PLOT, CHOSEN_FILE):
        assert (run / name).is_file(), name
    chosen = json.loads((run / CHOSEN_FILE).read_text())
    assert chosen["val_macro_auc"] == max(r["val_macro_auc"] for r in result["front"])
    for r in result["trials"]:  # every trained shape fits the budgets it was costed against
        assert r["flash_bytes"] <= 64 * 1024 and r["ram_bytes"] <= 32 * 1024 and r["macs"] <= 5_000_000
        assert r["latency_ms"] > 0
    # the trials trained with validation fold 1 (search fold 10) and never on the test fold
    trained = [p for p in (run / "trials").glob("*/fold10/config.json")]
    assert trained and all(json.loads(p.read_text())["train"]["val_fold"] == 1 for p in trained)
    assert "| trial | val macro AUC | latency (ms)" in (run / FRONT_MD).read_text()

    # Rerunning the same command continues the study: nothing new to train for 2 trials.
    again = search(run, TINY, settings, trials=2, dataset=ptbxl, progress=False)
    assert again["trained"] == 2 and again["chosen"]["trial"] == result["chosen"]["trial"]
    with pytest.raises(Exception, match="other settings"):
        search(run, replace(TINY, epochs=2), settings, trials=2, dataset=ptbxl, progress=False)
