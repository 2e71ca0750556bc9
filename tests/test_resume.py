"""The one resume rule, per stage: interrupt a command, run the same command again, get what an uninterrupted run gives.

Also what the stages write for readers: the reports name the model they scored, and report JSON holds short
floats while quantization parameters stay exact. Training's own resume is tested in test_train.py (epoch by
epoch, bit for bit); the bench's JSONL resume on a faulty serial link in test_bench_faults.py.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from edge_ecg.cli import main

TINY = ["--arch-arg", "filters=[8,16,16]", "--arch-arg", "strides=[4,4,4]"]


@pytest.fixture(scope="module")
def exported_run(ptbxl_dir, tmp_path_factory):
    """A tiny model trained one epoch through the CLI (so evaluated), exported without clipping."""
    run = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", "--data", str(ptbxl_dir), "--run", str(run), "--epochs", "2", "--train-limit", "64", *TINY]) == 0
    assert main(["export", "--run", str(run), "--clip", "off"]) == 0
    return run


def _copy_trained(run, dest):
    """The files a fresh `edge-ecg train` leaves (no compress/, export/ or bench/): what compress and export read."""
    dest.mkdir(parents=True)
    for item in run.iterdir():
        if item.name in ("compress", "export", "bench", "evaluation", ".lock"):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest / item.name)
    return dest


def _interrupt_fit_after_first_epoch(monkeypatch):
    """Every fit (training and compression share it) raises KeyboardInterrupt once its first epoch is on disk."""
    import edge_ecg.train as train_module

    real_fit = train_module.fit

    def fit(*args, on_epoch_end=None, **kwargs):
        def stop(epoch, row):
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            raise KeyboardInterrupt

        return real_fit(*args, on_epoch_end=stop, **kwargs)

    monkeypatch.setattr(train_module, "fit", fit)


def _weights(path):
    from edge_ecg.compress import load_model

    return [w.numpy() for w in load_model(path).weights]


@pytest.mark.slow
def test_compress_interrupted_after_an_epoch_continues_to_the_same_model(exported_run, tmp_path, monkeypatch):
    command = ["compress", "--qat", "--epochs", "2"]
    straight = _copy_trained(exported_run, tmp_path / "straight")
    assert main([*command, "--run", str(straight)]) == 0

    resumed = _copy_trained(exported_run, tmp_path / "resumed")
    with monkeypatch.context() as m:
        _interrupt_fit_after_first_epoch(m)
        assert main([*command, "--run", str(resumed)]) == 130  # interrupted: the CLI says so and keeps the epoch
    stage = resumed / "compress" / "qat"
    assert not (resumed / "compress" / "final.h5").exists() and len((stage / "history.csv").read_text().splitlines()) == 2
    assert main([*command, "--run", str(resumed)]) == 0  # the same command: continues at epoch 2

    rows = [line.split(",")[0] for line in (stage / "history.csv").read_text().splitlines()]
    assert rows == ["epoch", "1", "2"]
    for a, b in zip(_weights(straight / "compress" / "final.h5"), _weights(resumed / "compress" / "final.h5"), strict=True):
        np.testing.assert_array_equal(a, b)
    report = lambda run: {k: v for k, v in json.loads((run / "compress" / "compress.json").read_text()).items() if k != "run"}  # noqa: E731
    assert report(straight) == report(resumed)
    # the compression report: its table and figures, linked from the index
    text = (resumed / "compress" / "report.md").read_text()
    assert "| float (trained) |" in text and "| qat |" in text
    figures = re.findall(r"\]\(([^)\s]+\.png)\)", text)
    assert figures and all((resumed / "compress" / f).stat().st_size > 0 for f in figures)
    assert "[compress/report.md](compress/report.md)" in (resumed / "index.md").read_text()


@pytest.mark.slow
def test_export_interrupted_before_its_sources_redoes_to_identical_files(exported_run, tmp_path, monkeypatch):
    import edge_ecg.export as export_module

    run = _copy_trained(exported_run, tmp_path / "run")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(export_module, "write_c_sources", interrupted)  # after the .tflite is written, before the rest
        assert main(["export", "--run", str(run), "--clip", "off"]) == 130
    assert (run / "export" / "model_int8.tflite").is_file() and not (run / "export" / "export.json").exists()
    assert main(["export", "--run", str(run), "--clip", "off"]) == 0
    for name in ("model_int8.tflite", "model_data.cc", "model_config.h", "test_int8_outputs.npy", "export.json"):
        assert (run / "export" / name).read_bytes() == (exported_run / "export" / name).read_bytes(), name


@pytest.mark.slow
def test_bench_interrupted_after_some_records_continues_to_the_uninterrupted_results(exported_run, tmp_path, monkeypatch):
    import edge_ecg.bench as bench_module

    def bench_copy(name):
        run = tmp_path / name
        shutil.copytree(exported_run / "export", run / "export")
        for f in ("config.json", "standardization.json"):
            shutil.copy(exported_run / f, run / f)
        return run

    command = ["bench", "--emulator", "--limit", "8"]
    straight, resumed = bench_copy("straight"), bench_copy("resumed")
    assert main([*command, "--run", str(straight)]) == 0

    real_run_records, calls = bench_module.run_records, []

    def run_records(run_one, records, *args, **kwargs):
        def stop_at_the_fifth(data):
            calls.append(1)
            if len(calls) == 5:
                raise KeyboardInterrupt
            return run_one(data)

        return real_run_records(stop_at_the_fifth, records, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(bench_module, "run_records", run_records)
        assert main([*command, "--run", str(resumed)]) == 130
    assert len((resumed / "bench" / "emulator-tflm.jsonl").read_text().splitlines()) == 1 + 4
    assert main([*command, "--run", str(resumed)]) == 0

    def results(run):  # latency is measured, so it differs run to run; everything else must not
        lines = [json.loads(line) for line in (run / "bench" / "emulator-tflm.jsonl").read_text().splitlines()]
        return [{k: v for k, v in line.items() if k not in ("latency_us", "time", "started")} for line in lines]

    assert results(straight) == results(resumed) and len(results(resumed)) == 1 + 8
    summary = lambda run: json.loads((run / "bench" / "emulator-tflm.json").read_text())  # noqa: E731
    assert summary(resumed)["identical_to_reference"] == summary(straight)["identical_to_reference"] == 8


@pytest.mark.slow
def test_evaluate_says_which_model_it_scored_and_scores_the_int8_one_on_the_test_fold(exported_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--run", str(exported_run)]) == 0
    assert "model scored: **float**, `model.keras`" in capsys.readouterr().out
    assert json.loads((exported_run / "metrics.json").read_text())["scored"]["model"] == "float"

    assert main(["evaluate", "--run", str(exported_run), "--model", "int8"]) == 0
    out = capsys.readouterr().out
    assert "model scored: **int8**, `export/model_int8.tflite`" in out and "evaluation/int8/report.md" in out
    metrics = json.loads((exported_run / "evaluation" / "int8" / "metrics.json").read_text())
    exported = json.loads((exported_run / "export" / "export.json").read_text())
    # the same int8 outputs as the export's TFLite Micro check, so the same test-fold figures
    assert metrics["scored"]["model"] == "int8" and metrics["test"]["records"] == exported["test"]["records"] == 126
    assert metrics["test"]["macro_auc"] == exported["test"]["macro_auc"]
    assert metrics["test"]["thresholds_val"] == exported["thresholds"]["values"]
    assert json.loads((exported_run / "metrics.json").read_text())["scored"]["model"] == "float"  # the run's own kept
    assert "[evaluation/int8/report.md](evaluation/int8/report.md)" in (exported_run / "index.md").read_text()

    assert main(["evaluate", "--run", str(exported_run), "--model", "compressed"]) == 1
    assert "edge-ecg compress --run" in capsys.readouterr().err


def _long_floats(obj, key=None) -> list:
    """Floats with more than 6 significant digits, outside the keys that stay exact (quantization, standardization)."""
    from edge_ecg.runfolder import EXACT_KEYS

    if isinstance(obj, dict):
        return [f for k, v in obj.items() if k not in EXACT_KEYS for f in _long_floats(v, k)]
    if isinstance(obj, list):
        return [f for v in obj for f in _long_floats(v, key)]
    if isinstance(obj, float):
        digits = repr(obj).split("e")[0].replace("-", "").replace(".", "").lstrip("0")
        return [(key, obj)] if len(digits) > 6 else []
    return []


@pytest.mark.slow
def test_report_json_holds_short_floats_and_exact_quantization_parameters(exported_run):
    from edge_ecg.export.convert import model_io

    assert main(["bench", "--run", str(exported_run), "--emulator", "--limit", "3"]) == 0
    for name in ("metrics.json", "export/export.json", "bench/emulator-tflm.json"):
        data = json.loads((exported_run / name).read_text())
        assert _long_floats(data) == [], name
        assert _long_floats({"auc": 0.7470959595959596}), "the check itself finds a long float"
    exported = json.loads((exported_run / "export" / "export.json").read_text())
    io = model_io((exported_run / "export" / "model_int8.tflite").read_bytes())
    for side, key in (("inputs", "input"), ("outputs", "output")):
        assert exported["tflite"][key]["scale"] == io[side][0]["scale"]  # bit for bit, read back to compute
        assert exported["tflite"][key]["zero_point"] == io[side][0]["zero_point"]


def test_display_floats_rounds_reported_figures_and_keeps_quantization_parameters_exact():
    from edge_ecg.runfolder import display_floats

    scale = float(np.float32(0.0235294122248888))  # a float32 scale as TFLite stores it, 17 significant digits in repr
    shown = display_floats({"latency": {"median_us": 2696.381500015832}, "auc": [0.7470959595959596, None, 3],
                            "input": {"scale": scale, "zero_point": -128}, "name": "x"})
    assert shown == {"latency": {"median_us": 2696.38}, "auc": [0.747096, None, 3],
                     "input": {"scale": scale, "zero_point": -128}, "name": "x"}
    assert shown["input"]["scale"] == scale and display_floats(scale) != scale
