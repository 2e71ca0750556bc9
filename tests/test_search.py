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


def test_space_parameters_of_a_shape_sample_back_to_it_and_the_default_shape_is_in_the_default_space():
    optuna = pytest.importorskip("optuna")
    from edge_ecg.search import default_dscnn_kwargs

    shape = {"filters": [16, 64, 32], "strides": [4, 2, 1], "kernel_size": [5, 9, 11], "pool": "max", "decimate": 2,
             "dropout_rate": 0.5}
    space = SearchSpace()
    assert space.sample(optuna.trial.FixedTrial(space.params(shape))) == shape
    assert space.params(default_dscnn_kwargs())["depth"] == 5
    assert space.params({**shape, "filters": [16, 64, 33]}) is None  # 33 is no width of the space
    assert SMALL_SPACE.params(default_dscnn_kwargs()) is None


def test_the_first_trial_of_a_new_study_is_the_default_shape(ptbxl, tmp_path, monkeypatch):
    import edge_ecg.search as search_module
    from edge_ecg.search import default_dscnn_kwargs

    trained = []
    monkeypatch.setattr(search_module, "train_trial", lambda trial_dir, config, folds, *a: trained.append(config) or 0.75)
    settings = SearchSettings(target="esp32s3", constraints=Constraints(flash_kb=64, ram_kb=32, max_macs=5_000_000))
    result = search(tmp_path / "s", TINY, settings, trials=1, dataset=ptbxl, progress=False)
    assert [r["arch_kwargs"] for r in result["trials"]] == [default_dscnn_kwargs()]
    assert trained[0].arch_kwargs == default_dscnn_kwargs()
    # Without the start, the first shape is the sampler's own draw.
    result = search(tmp_path / "t", TINY, replace(settings, start_from_default=False), trials=1, dataset=ptbxl, progress=False)
    assert result["trials"][0]["arch_kwargs"] != default_dscnn_kwargs()


def test_a_shape_the_toolchain_cannot_cost_is_skipped_with_its_reason(ptbxl, tmp_path, monkeypatch):
    import edge_ecg.search as search_module
    from edge_ecg.search import default_dscnn_kwargs

    real_cost = search_module.model_cost

    def model_cost(kwargs, *args, **options):
        if kwargs == default_dscnn_kwargs():
            raise RuntimeError("building the mps2-an386 harness failed:\ngcc ...\nm.c:9:2: error: 'b' defined but not used")
        return real_cost(kwargs, *args, **options)

    monkeypatch.setattr(search_module, "model_cost", model_cost)
    monkeypatch.setattr(search_module, "train_trial", lambda *a: 0.75)
    settings = SearchSettings(target="esp32s3", constraints=Constraints(flash_kb=64, ram_kb=32, max_macs=5_000_000))
    result = search(tmp_path / "s", TINY, settings, trials=1, dataset=ptbxl, progress=False)
    assert result["trained"] == 1 and result["trials"][0]["arch_kwargs"] != default_dscnn_kwargs()
    skipped = [r for r in result["pruned_trials"] if r["trial"] == 0]
    assert skipped and skipped[0]["reason"] == ("not costed: building the mps2-an386 harness failed: "
                                                "m.c:9:2: error: 'b' defined but not used")
    assert "defined but not used" in (tmp_path / "s" / FRONT_MD).read_text()


def test_a_resumed_search_draws_new_shapes(ptbxl, tmp_path, monkeypatch):
    import edge_ecg.search as search_module

    monkeypatch.setattr(search_module, "train_trial", lambda *a: 0.75)
    settings = SearchSettings(target="esp32s3", constraints=Constraints(flash_kb=64, ram_kb=32, max_macs=5_000_000),
                              start_from_default=False)
    first = search(tmp_path / "s", TINY, settings, trials=1, dataset=ptbxl, progress=False)
    again = search(tmp_path / "s", TINY, settings, trials=2, dataset=ptbxl, progress=False)
    shapes = [json.dumps(r["arch_kwargs"], sort_keys=True) for r in again["trials"]]
    assert again["trials"][0]["arch_kwargs"] == first["trials"][0]["arch_kwargs"] and len(set(shapes)) == 2


@pytest.mark.slow
def test_a_two_trial_search_writes_its_front_and_resumes(ptbxl, tmp_path):
    from edge_ecg.train import read_history

    settings = SearchSettings(target="esp32s3", constraints=Constraints(flash_kb=64, ram_kb=32, max_macs=5_000_000),
                              space=SMALL_SPACE, folds=(9, 10))
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
    # a shape's score is the mean of its two search folds' best validation AUCs
    for r in result["trials"]:
        best = [max(float(e["val_auc"]) for e in read_history(f"{r['folder']}/fold{k:02d}/history.csv")) for k in (9, 10)]
        assert r["val_macro_auc"] == pytest.approx(sum(best) / 2, abs=1e-5)
    assert "| trial | val macro AUC | latency (ms)" in (run / FRONT_MD).read_text()

    # Rerunning the same command continues the study: nothing new to train for 2 trials.
    again = search(run, TINY, settings, trials=2, dataset=ptbxl, progress=False)
    assert again["trained"] == 2 and again["chosen"]["trial"] == result["chosen"]["trial"]
    with pytest.raises(Exception, match="other settings"):
        search(run, replace(TINY, epochs=2), settings, trials=2, dataset=ptbxl, progress=False)
