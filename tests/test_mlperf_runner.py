"""Files for the MLCommons tiny runner: the dataset holds exactly the bytes `edge-ecg bench` sends.

The run folder is built without training: a config, a standardization fitted on the
training folds and the two export.json entries the preprocessing reads (clipping and
input quantization) are all `test_records` needs.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge_ecg import CLASSES
from edge_ecg import bench
from edge_ecg.bench import BenchError
from edge_ecg.bench.mlperf import DEVICES_FILE, TESTS_FILE, TRUTH_FILE, WINDOWS, runner_files, usb_ids_of_port, window
from edge_ecg.cli import main

LIMIT = 6


@pytest.fixture(scope="module")
def run(ptbxl, ptbxl_dir, tmp_path_factory):
    from edge_ecg.data import Standardizer
    from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, load_split, open_run

    run = tmp_path_factory.mktemp("mlperf") / "run"
    config = TrainConfig(data=str(ptbxl_dir))
    open_run(run, config)
    Standardizer.fit(load_split(config, ptbxl).train.signals).save(run / STANDARDIZATION_FILE)
    (run / "export").mkdir()
    (run / "export" / "export.json").write_text(json.dumps(
        {"calibration": {"clip_sigma": 4.0}, "tflite": {"input": {"scale": 0.03, "zero_point": -5}}}))
    return run


def test_the_dataset_holds_the_bytes_bench_sends_and_a_truth_line_each(run, ptbxl, tmp_path):
    result = runner_files(run, tmp_path, usb_vid=0x10C4, usb_pid=0xEA60, inferences=200, limit=LIMIT, dataset=ptbxl)
    records, labels = bench.test_records(run, limit=LIMIT, dataset=ptbxl)  # what bench() sends, record by record
    folder = tmp_path / "ecg01"
    assert result["dataset_dir"] == str(folder) and result["records"] == LIMIT
    assert sorted(p.name for p in folder.glob("*.bin")) == sorted(f"{i:05d}.bin" for i, _ in records)
    with open(folder / TRUTH_FILE, newline="") as fh:
        rows = list(csv.reader(fh))  # the runner reads it without a header: file, classes, class
    assert [r[0] for r in rows] == [f"{i:05d}.bin" for i, _ in records]
    for (ecg_id, data), (name, n_classes, cls) in zip(records, rows):
        assert (folder / name).read_bytes() == data
        assert len(data) == 1000 * 12 == result["record_bytes"]
        assert int(n_classes) == len(CLASSES)
        assert labels[ecg_id][int(cls)] == 1 and not labels[ecg_id][: int(cls)].any()  # its first superclass
    # the bytes are the standardized, clipped, quantized signal: check one record against numpy directly
    from edge_ecg.data import Standardizer, split_folds

    test = split_folds(ptbxl).test
    z = Standardizer.load(run / "standardization.json").transform(test.signals[:1])[0]
    expected = np.clip(np.round(np.clip(z, -4.0, 4.0) / np.float32(0.03)) - 5, -128, 127).astype(np.int8)
    got = np.frombuffer((folder / f"{int(test.ecg_ids[0]):05d}.bin").read_bytes(), np.int8).reshape(1000, 12)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float32 rounding at a half step at most


def test_the_yaml_files_name_model_ecg01_and_the_boards_usb_ids(run, ptbxl, tmp_path):
    yaml = pytest.importorskip("yaml", reason="PyYAML (the runner's own YAML reader) is not installed")
    runner_files(run, tmp_path, usb_vid=0x1A86, usb_pid=0x7523, baud=115200, inferences=240, limit=2, dataset=ptbxl)
    tests = yaml.safe_load((tmp_path / TESTS_FILE).read_text())
    assert list(tests) == ["ecg01"]
    entry = tests["ecg01"]
    assert entry["model"] == "ecg01" and entry["truth_file"] == TRUTH_FILE
    assert entry["script"] == [{f"loop {WINDOWS}": ["download", "infer 240 5"]}]
    devices = yaml.safe_load((tmp_path / DEVICES_FILE).read_text())
    assert devices == [{"name": "edge-ecg", "type": "dut", "baud": 115200, "usb": {0x1A86: [0x7523]}}]


def test_without_ids_the_common_esp32_bridges_are_listed(run, ptbxl, tmp_path):
    result = runner_files(run, tmp_path, inferences=10, limit=1, dataset=ptbxl)
    text = (tmp_path / DEVICES_FILE).read_text()
    assert result["usb_from"] == "common ESP32 board USB-serial bridges"
    for vid, pid in (("0x10C4", "0xEA60"), ("0x303A", "0x1001"), ("0x1A86", "0x7523")):
        assert f"    {vid}:" in text and f"      - {pid}" in text


def test_windows_are_sized_from_the_latest_serial_bench(run, ptbxl, tmp_path):
    with pytest.raises(BenchError, match="--inferences N"):
        runner_files(run, tmp_path / "none", usb_vid=1, usb_pid=2, limit=1, dataset=ptbxl)
    (run / "bench").mkdir(exist_ok=True)
    (run / "bench" / "serial-ttyUSB0.json").write_text(json.dumps({"latency": {"median_us": 50_000.0}}))
    try:
        result = runner_files(run, tmp_path / "sized", usb_vid=1, usb_pid=2, limit=1, dataset=ptbxl)
    finally:
        (run / "bench" / "serial-ttyUSB0.json").unlink()
    assert (result["inferences"], result["warmups"], result["inferences_from"]) == (240, 5, "serial-ttyUSB0.json")
    assert "- infer 240 5" in (tmp_path / "sized" / TESTS_FILE).read_text()


def test_window_stays_inside_the_runners_10_to_30_seconds():
    for latency_us in (800.0, 52_345.0, 1.9e6, 9e6):
        n, w = window(latency_us)
        assert 10.0 <= n * latency_us / 1e6 and (n + w) * latency_us / 1e6 <= 25.0, latency_us
    with pytest.raises(BenchError, match="cannot hold"):
        window(26e6)


def test_bad_usb_options_are_refused(run, tmp_path, capsys):
    with pytest.raises(BenchError, match="both --usb-vid and --usb-pid"):
        runner_files(run, tmp_path, usb_vid=0x10C4, inferences=1)
    with pytest.raises(BenchError, match="16-bit USB id"):
        runner_files(run, tmp_path, usb_vid=0x10000, usb_pid=1, inferences=1)
    with pytest.raises(BenchError, match="serial.tools.list_ports"):
        usb_ids_of_port(str(tmp_path / "ttyNOPE"))
    with pytest.raises(SystemExit):
        main(["mlperf", "--run", str(run), "--out", str(tmp_path), "--usb-vid", "zz", "--usb-pid", "1"])
    assert "hexadecimal USB id" in capsys.readouterr().err


def test_the_cli_writes_the_files_and_prints_the_runner_command(run, ptbxl_dir, tmp_path, capsys):
    out = tmp_path / "runner"
    argv = ["mlperf", "--run", str(run), "--out", str(out), "--usb-vid", "0x303a", "--usb-pid", "1001",
            "--inferences", "100", "--limit", "3", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["usb"] == {"0x303A": ["0x1001"]} and result["records"] == 3
    assert len(list((out / "ecg01").glob("*.bin"))) == 3
    assert f"--dataset_path={out.resolve()} " in result["command"] and "--mode=p" in result["command"]
