"""Every stage end to end through the CLI on real records (tiny model, one epoch), and the bench's refusals."""

from __future__ import annotations

import json

import pytest

from edge_ecg.bench import BenchError, bench
from edge_ecg.bench.host import build_host_port
from edge_ecg.bench.protocol import spawn_on_pty
from edge_ecg.cli import main

TINY = ["--arch-arg", "filters=[8,16,16]", "--arch-arg", "strides=[4,4,4]"]


@pytest.fixture(scope="module")
def pipeline_run(ptbxl_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    steps = [
        ["train", "--data", str(ptbxl_dir), "--run", str(run), "--epochs", "1", "--train-limit", "64", *TINY],
        ["compress", "--run", str(run), "--qat", "--epochs", "1"],
        ["export", "--run", str(run), "--clip", "off"],
        ["build", "--run", str(run), "--target", "esp32s3"],
        ["bench", "--run", str(run), "--emulator", "--limit", "12"],
    ]
    for argv in steps:
        assert main(argv) == 0, argv
    return run


def test_each_stage_leaves_its_artifacts(pipeline_run):
    run = pipeline_run
    assert (run / "model.keras").is_file() and (run / "compress" / "final.h5").is_file()
    exported = json.loads((run / "export" / "export.json").read_text())
    assert exported["model"] == "compress/final.h5" and exported["quantization_aware"]
    project = run / "firmware" / "esp32s3"
    assert (project / "main" / "model" / "model_data.cc").read_bytes() == (run / "export" / "model_data.cc").read_bytes()
    summary = json.loads((run / "bench" / "emulator-tflm.json").read_text())
    assert summary["records"] == summary["ok"] == summary["identical_to_reference"] == 12
    assert summary["latency"]["records"] == 12
    lines = (run / "bench" / "emulator-tflm.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["model_hash"] == exported["tflite"]["sha256"] and len(lines) == 13


def test_bench_resumes_and_refuses_to_overwrite(pipeline_run, capsys):
    assert main(["bench", "--run", str(pipeline_run), "--emulator", "--limit", "12"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["bench", "--run", str(pipeline_run), "--emulator", "--resume"]) == 0  # the other 114 records
    summary = json.loads((pipeline_run / "bench" / "emulator-tflm.json").read_text())
    assert summary["ok"] == summary["records"] == 126


def test_a_device_with_another_models_hash_is_refused(pipeline_run, tmp_path):
    exe = build_host_port(tmp_path)  # the checksum runner reports hash "checksum-runner"
    processes = []

    def connect():
        process, transport = spawn_on_pty([str(exe)])
        processes.append(process)
        return transport

    try:
        with pytest.raises(BenchError, match="another model are never compared|outputs of another model"):
            bench(pipeline_run, connect=connect, limit=2, progress=False)
    finally:
        for p in processes:
            p.kill()
            p.wait()
    assert not (pipeline_run / "bench" / "serial-host-checksum.jsonl").exists()


def test_bench_without_an_export_names_the_fix(tmp_path, capsys):
    assert main(["bench", "--run", str(tmp_path), "--emulator"]) == 1
    assert "edge-ecg export --run" in capsys.readouterr().err


def test_a_port_that_does_not_exist_is_a_clear_error(pipeline_run, capsys):
    assert main(["bench", "--run", str(pipeline_run), "--port", "/dev/ttyNOPE"]) == 1
    err = capsys.readouterr().err
    assert "/dev/ttyNOPE: cannot open the serial port" in err and "Traceback" not in err
