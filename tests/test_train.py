"""Training and evaluation on a small slice of the real records."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edge_ecg.cli import main
from edge_ecg.data import DataError
from edge_ecg.train import RunError, TrainConfig, read_history, train

SMALL = dict(arch="dscnn", epochs=3, train_limit=96, batch_size=32, seed=3)


def _weights(run):
    from edge_ecg.tf import tf

    reader = tf.train.load_checkpoint(str(run / "state" / "ckpt"))
    return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(str(run / "state" / "ckpt")) if "model" in n}


@pytest.mark.slow
def test_one_epoch_through_the_cli_writes_model_and_report(ptbxl_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(ptbxl_dir), "--run", str(run), "--epochs", "1", "--train-limit", "64"])
    assert code == 0, capsys.readouterr().err
    for name in ("config.json", "model.keras", "standardization.json", "history.csv", "metrics.json", "report.md",
                 "roc.png", "training.png", "confusion.png", "predictions/test_probs.npy"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["records"] == 126 and metrics["test_fold"] == 10
    ids = np.load(run / "predictions/test_ecg_ids.npy")
    assert len(ids) == 126 and np.load(run / "predictions/test_probs.npy").shape == (126, 5)
    assert "test macro AUC" in capsys.readouterr().out


@pytest.mark.slow
def test_interrupted_run_resumes_at_the_next_epoch_with_the_same_result(ptbxl, tmp_path):
    config = TrainConfig(**SMALL)
    straight = tmp_path / "straight"
    train(straight, config, dataset=ptbxl, progress=False)

    def interrupt(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(resumed, config, dataset=ptbxl, progress=False, on_epoch_end=interrupt)
    assert [r["epoch"] for r in read_history(resumed / "history.csv")] == ["1"]
    epochs_after = []
    train(resumed, config, dataset=ptbxl, progress=False, on_epoch_end=lambda e, r: epochs_after.append(e))
    assert epochs_after == [2, 3]
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert read_history(straight / "history.csv") == [
        {**r, "seconds": s["seconds"]} for r, s in zip(read_history(resumed / "history.csv"), read_history(straight / "history.csv"))
    ]


def test_unknown_architecture_is_refused_before_anything_is_written(ptbxl, tmp_path):
    with pytest.raises(ValueError, match="did you mean 'dscnn'"):
        train(tmp_path / "run", TrainConfig(arch="dsccn"), dataset=ptbxl, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused(ptbxl, tmp_path):
    run = tmp_path / "run"
    train(run, TrainConfig(**{**SMALL, "epochs": 1}), dataset=ptbxl, progress=False)
    before = (run / "config.json").read_text()
    with pytest.raises(RunError, match="other settings .*seed"):
        train(run, TrainConfig(**{**SMALL, "epochs": 1, "seed": 4}), dataset=ptbxl, progress=False)
    assert (run / "config.json").read_text() == before


def test_run_folder_of_another_format_is_refused(ptbxl, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": 99, "edge_ecg": "9.0", "train": {}}))
    assert main(["evaluate", "--run", str(run)]) == 1
    assert "format 99" in capsys.readouterr().err


def test_evaluate_without_a_model_names_the_fix(ptbxl, tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "config.json: not found" in err and "edge-ecg train" in err


@pytest.mark.slow
def test_data_with_other_samples_than_the_model_is_refused(ptbxl, tmp_path):
    from edge_ecg.evaluate import evaluate

    run = tmp_path / "run"
    train(run, TrainConfig(**{**SMALL, "epochs": 1}), dataset=ptbxl, progress=False)
    shorter = replace(ptbxl, signals=ptbxl.signals[:, :500])
    with pytest.raises(RunError, match="500 samples x 12 leads, the model expects 1000 x 12"):
        evaluate(run, dataset=shorter, plots=False)


def test_empty_training_folds_are_an_error(ptbxl, tmp_path):
    only_val_test = ptbxl.select(ptbxl.folds >= 9)
    with pytest.raises(DataError, match="training folds .* hold no labelled record"):
        train(tmp_path / "run", TrainConfig(**SMALL), dataset=only_val_test, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before_state", "after_state"])
def test_interrupted_between_checkpoint_and_state_resumes_exactly(ptbxl, tmp_path, monkeypatch, where):
    """A kill after the epoch's checkpoint is written but before (or just after) its state.json lands."""
    import edge_ecg.train as train_module

    config = TrainConfig(**SMALL)
    straight = tmp_path / "straight"
    train(straight, config, dataset=ptbxl, progress=False)

    real_write_json = train_module.write_json

    def killed_at_epoch_2(path, obj):
        if path.name == "state.json" and obj.get("epoch") == 2:
            if where == "after_state":
                real_write_json(path, obj)  # committed; killed before its files are moved or history appended
            raise KeyboardInterrupt
        real_write_json(path, obj)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(train_module, "write_json", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(resumed, config, dataset=ptbxl, progress=False)
    monkeypatch.setattr(train_module, "write_json", real_write_json)
    epochs_after = []
    train(resumed, config, dataset=ptbxl, progress=False, on_epoch_end=lambda e, r: epochs_after.append(e))
    assert epochs_after == ([2, 3] if where == "before_state" else [3])
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    drop_seconds = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop_seconds(read_history(resumed / "history.csv")) == drop_seconds(read_history(straight / "history.csv"))
    assert not list((resumed / "state").glob("epoch-*"))


def test_non_finite_standardization_is_never_written_or_reused(tmp_path):
    from edge_ecg.data import Standardizer
    from edge_ecg.data.split import NonFiniteStandardization

    signals = np.ones((2, 10, 12), np.float32)
    signals[0, 3, 7] = np.inf
    with pytest.raises(NonFiniteStandardization, match="lead\\(s\\) V2"):
        Standardizer.fit(signals)
    bad = Standardizer(np.full(12, np.nan, np.float32), np.ones(12, np.float32))
    with pytest.raises(NonFiniteStandardization, match="refusing"):
        bad.save(tmp_path / "standardization.json")
    assert not (tmp_path / "standardization.json").exists()
    (tmp_path / "standardization.json").write_text(json.dumps({"mean": [float("nan")] * 12, "std": [1.0] * 12}))
    with pytest.raises(DataError, match="not finite .*edge-ecg train"):
        Standardizer.load(tmp_path / "standardization.json")


@pytest.mark.slow
def test_rerun_after_bad_data_refits_the_standardization(ptbxl, tmp_path):
    from edge_ecg.data import Standardizer
    from edge_ecg.train import load_split

    config = TrainConfig(**{**SMALL, "epochs": 1, "train_limit": 64})
    run = tmp_path / "run"
    bad = replace(ptbxl, signals=ptbxl.signals.copy())
    bad.signals[0, 10, 3] = np.inf  # ecg_id 1, fold 3: a training record
    with pytest.raises(DataError, match="non-finite mean or std for lead\\(s\\) AVR"):
        train(run, config, dataset=bad, progress=False)
    assert not (run / "standardization.json").exists()
    # what an earlier version left behind after such a failure
    (run / "standardization.json").write_text(json.dumps({"mean": [float("nan")] * 12, "std": [float("nan")] * 12}))
    train(run, config, dataset=ptbxl, progress=False)
    fitted = Standardizer.load(run / "standardization.json")
    np.testing.assert_array_equal(fitted.mean, Standardizer.fit(load_split(config, ptbxl).train.signals).mean)


# --------------------------------------------------------------------------- weight averaging (--average-epochs)


def _averaging_fit(out, epochs=4, average_epochs=2, patience=10, interrupt_at=None):
    """A tiny dscnn on random records; returns (model, state, each epoch's trained weights)."""
    from edge_ecg import CLASSES, models
    from edge_ecg.tf import keras
    from edge_ecg.train import FitData, FitOptions, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1000, 12)).astype(np.float32)
    y = (rng.random((64, len(CLASSES))) < 0.4).astype(np.float32)
    data = FitData(x_train=x[:48], y_train=y[:48], x_val=x[48:], y_val=y[48:])
    keras.utils.set_random_seed(0)
    model = models.build("dscnn", num_samples=1000, num_leads=12, num_classes=len(CLASSES), filters=[8, 16, 16], strides=[4, 4, 4])
    trained = {}

    class Capture(keras.callbacks.Callback):  # the weights each epoch's steps left, before any averaging
        def on_epoch_end(self, epoch, logs=None):
            trained[epoch] = [w.numpy().copy() for w in model.trainable_weights]
            if epoch == interrupt_at:
                raise KeyboardInterrupt

    options = FitOptions(epochs=epochs, average_epochs=average_epochs, patience=patience, seed=0)
    state = fit(model, data, out, options, callbacks=(Capture(),), progress=False)
    return model, state, trained


def test_weight_averaging_makes_the_model_the_mean_of_the_last_epochs(tmp_path):
    from edge_ecg.train import BEST_WEIGHTS

    model, state, trained = _averaging_fit(tmp_path / "a", epochs=4, average_epochs=2, patience=1)
    assert state["epoch"] == 4 and state["best_epoch"] == 4 and state["averaged_epochs"] == 2  # patience 1 never stopped it
    final = [w.numpy() for w in model.trainable_weights]
    for got, w3, w4 in zip(final, trained[3], trained[4]):
        np.testing.assert_allclose(got, (w3 + w4) / 2, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(w3, w4) for w3, w4 in zip(trained[3], trained[4]))  # the averaged epochs differ
    model.load_weights(tmp_path / "a" / "state" / BEST_WEIGHTS)  # what train() turns into model.keras
    for got, want in zip(model.trainable_weights, final):
        np.testing.assert_array_equal(got.numpy(), want)


def test_weight_averaging_resumes_its_running_mean(tmp_path):
    straight, _, _ = _averaging_fit(tmp_path / "straight", epochs=4, average_epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _averaging_fit(tmp_path / "resumed", epochs=4, average_epochs=3, interrupt_at=3)  # inside the averaged epochs
    resumed, state, trained = _averaging_fit(tmp_path / "resumed", epochs=4, average_epochs=3)
    assert sorted(trained) == [3, 4] and state["averaged_epochs"] == 3  # epoch 3 again (never committed), then 4
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_average_epochs_is_a_stored_option_checked_against_epochs(tmp_path):
    from edge_ecg.cli import _train_config, build_parser
    from edge_ecg.train import FitOptions

    args = build_parser().parse_args(["train", "--run", "r", "--epochs", "30", "--average-epochs", "10"])
    config = _train_config(args)
    assert config.average_epochs == 10 and FitOptions.from_config(config).average_epochs == 10
    old = {k: v for k, v in config.__dict__.items() if k != "average_epochs"}  # a config.json written before the option
    assert TrainConfig.from_dict(old).average_epochs == 0
    with pytest.raises(RunError, match="average_epochs 30"):
        TrainConfig(epochs=30, average_epochs=30)
    code = main(["train", "--run", str(tmp_path / "r"), "--epochs", "5", "--average-epochs", "5"])
    assert code != 0 and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_train_with_averaging_says_which_epochs_the_model_averages(ptbxl_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(ptbxl_dir), "--run", str(run), "--epochs", "3", "--average-epochs", "2",
                 "--train-limit", "64", "--arch-arg", "filters=[8,16,16]", "--arch-arg", "strides=[4,4,4]"])
    out = capsys.readouterr().out
    assert code == 0 and "of the weights averaged over epochs 2-3" in out
    assert json.loads((run / "config.json").read_text())["train"]["average_epochs"] == 2
