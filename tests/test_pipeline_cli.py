"""Every stage end to end through the CLI on real records (tiny model, one epoch), and the bench's refusals."""

from __future__ import annotations

import json
import shutil

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
    assert summary["parity_check"] == "passed: 12/12 completed records identical to the emulator"
    lines = (run / "bench" / "emulator-tflm.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["model_hash"] == exported["tflite"]["sha256"] and len(lines) == 13


def test_rerunning_bench_continues_and_fresh_starts_over(pipeline_run):
    jsonl = pipeline_run / "bench" / "emulator-tflm.jsonl"
    before = jsonl.read_bytes()
    assert main(["bench", "--run", str(pipeline_run), "--emulator", "--limit", "12"]) == 0  # the same command: nothing to run
    assert jsonl.read_bytes() == before
    assert main(["bench", "--run", str(pipeline_run), "--emulator", "--resume"]) == 0  # the old flag, accepted: the other 114 records
    summary = json.loads((pipeline_run / "bench" / "emulator-tflm.json").read_text())
    assert summary["ok"] == summary["records"] == 126
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 1 + 126 and lines[:13] == before.decode().splitlines()  # the first 12 kept, none repeated
    assert main(["bench", "--run", str(pipeline_run), "--emulator", "--limit", "5", "--fresh"]) == 0
    assert len(jsonl.read_text().splitlines()) == 1 + 5  # deleted and started over
    summary = json.loads((pipeline_run / "bench" / "emulator-tflm.json").read_text())
    assert summary["ok"] == summary["records"] == 5


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (Debian: apt-get install gcc) to build the host port")
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


@pytest.mark.slow
def test_bench_fails_on_an_output_that_differs_from_the_emulator_unless_allowed(pipeline_run, tmp_path, capsys):
    import shutil

    import numpy as np

    from edge_ecg.bench import ParityError

    run = tmp_path / "run"  # a copy of what bench reads, with one reference output moved by 3 LSB
    shutil.copytree(pipeline_run / "export", run / "export")
    for name in ("config.json", "standardization.json"):
        shutil.copy(pipeline_run / name, run / name)
    outputs, ids = np.load(run / "export" / "test_int8_outputs.npy"), np.load(run / "export" / "test_ecg_ids.npy")
    outputs[1, 2] += -3 if outputs[1, 2] > -125 else 3
    np.save(run / "export" / "test_int8_outputs.npy", outputs)

    assert main(["bench", "--run", str(run), "--emulator", "--limit", "4"]) == 1
    out, err = capsys.readouterr()
    assert f"1 of 4 completed records differ from the emulator (first ecg_id {ids[1]}, up to 3 LSB)" in err
    assert "--allow-mismatch" in err and "parity: failed" in out
    summary = json.loads((run / "bench" / "emulator-tflm.json").read_text())  # written before failing
    assert summary["ok"] == 4 and [m["ecg_id"] for m in summary["mismatches"]] == [ids[1]]
    assert summary["parity_check"].startswith("failed") and summary["allow_mismatch"] is False
    with pytest.raises(ParityError) as caught:
        bench(run, emulator="tflm", limit=4, progress=False)
    assert caught.value.summary["identical_to_reference"] == 3

    assert main(["bench", "--run", str(run), "--emulator", "--limit", "4", "--allow-mismatch"]) == 0
    assert "parity: 1 mismatches allowed by --allow-mismatch" in capsys.readouterr().out
    summary = json.loads((run / "bench" / "emulator-tflm.json").read_text())
    assert summary["allow_mismatch"] is True and summary["parity_check"].startswith("1 mismatches allowed by --allow-mismatch")


def test_parity_check_judges_completed_records_only():
    from edge_ecg.bench import parity_check

    mismatch = {"ecg_id": 7, "max_lsb": 2}
    assert parity_check({"records": 3, "ok": 2, "mismatches": []}) == (True, "passed: 2/2 completed records identical to the emulator")
    assert parity_check({"records": 3, "ok": 2, "mismatches": [mismatch]})[0] is False
    assert parity_check({"records": 3, "ok": 2, "mismatches": [mismatch]}, allow_mismatch=True)[0] is True
    assert parity_check({"records": 3, "ok": 0, "mismatches": []}, allow_mismatch=True) == (
        False, "failed: none of 3 records completed, nothing was compared")
    assert "output length differs" in parity_check({"records": 1, "ok": 1, "mismatches": [{"ecg_id": 7, "max_lsb": None}]})[1]


def test_edge_ecg_run_keeps_an_export_made_from_the_current_model_only(pipeline_run, tmp_path):
    import shutil

    from edge_ecg.run import current_export

    exported = current_export(pipeline_run)
    assert exported is not None and exported["model"] == "compress/final.h5"
    run = tmp_path / "run"  # a copy to damage: the export and the model it was made from
    shutil.copytree(pipeline_run / "export", run / "export")
    (run / "compress").mkdir()
    shutil.copy(pipeline_run / "compress" / "final.h5", run / "compress" / "final.h5")
    assert current_export(run) == exported
    (run / "export" / "model_config.h").unlink()  # incomplete: a listed file is missing
    assert current_export(run) is None
    shutil.copy(pipeline_run / "export" / "model_config.h", run / "export" / "model_config.h")
    with open(run / "compress" / "final.h5", "ab") as fh:  # compression made another model since
        fh.write(b"\0")
    assert current_export(run) is None


def test_edge_ecg_run_keeps_an_evaluation_newer_than_the_model_only(tmp_path):
    import os

    from edge_ecg.run import current_evaluation

    (tmp_path / "model.keras").write_bytes(b"model")
    assert current_evaluation(tmp_path) is None  # never evaluated
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"macro_auc": 0.8}}))
    assert current_evaluation(tmp_path) == {"test": {"macro_auc": 0.8}}
    later = (tmp_path / "metrics.json").stat().st_mtime + 10
    os.utime(tmp_path / "model.keras", (later, later))  # retrained after the evaluation
    assert current_evaluation(tmp_path) is None


def test_the_report_says_what_its_int8_bytes_count_and_the_bench_summary_is_rounded(pipeline_run):
    report = (pipeline_run / "report.md").read_text()
    assert "int8 weight bytes (estimate: int8 weights, int32 biases, float32 per-channel scales)" in report
    assert "the exported `.tflite` is larger" in report
    latency = json.loads((pipeline_run / "bench" / "emulator-tflm.json").read_text())["latency"]
    assert all(round(v, 3) == v for k, v in latency.items() if k != "records")
    rows = [json.loads(line) for line in (pipeline_run / "bench" / "emulator-tflm.jsonl").read_text().splitlines()[1:]]
    assert all(round(r["latency_us"], 3) == r["latency_us"] for r in rows)


def _links(markdown: str) -> list[str]:
    import re

    return re.findall(r"\]\(([^)\s]+)\)", markdown)


def test_every_stage_report_links_figures_that_exist_and_the_index_links_them(pipeline_run):
    run = pipeline_run
    for report in (run / "export" / "report.md", run / "bench" / "emulator-tflm.md"):
        text = report.read_text()
        figures = [link for link in _links(text) if link.endswith(".png")]
        assert len(figures) >= 2, (report, text)
        assert all((report.parent / f).is_file() and (report.parent / f).stat().st_size > 0 for f in figures), figures
    assert {"int8_vs_float.png", "auc_per_class.png", "memory.png"} <= set(_links((run / "export" / "report.md").read_text()))
    bench_md = (run / "bench" / "emulator-tflm.md").read_text()
    summary = json.loads((run / "bench" / "emulator-tflm.json").read_text())  # other tests of this module rerun the bench
    assert summary["identical_to_reference"] == summary["ok"] > 0
    assert f"{summary['ok']} identical to the TFLite Micro host emulator, 0 differ" in bench_md and "(µs)" in bench_md
    index = (run / "index.md").read_text()
    links = _links(index)
    assert {"report.md", "export/report.md", "export/export.json", "firmware/esp32s3/build.json", "bench/emulator-tflm.md"} <= set(links)
    assert all((run / link).is_file() for link in links), links
