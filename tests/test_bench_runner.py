"""The benchmark's record loop (JSONL results, resume) with a fake device: no firmware, no TensorFlow."""

from __future__ import annotations

import json

from edge_ecg.bench.runner import read_jsonl, run_records, summarize
from edge_ecg.bench.session import RecordOutcome

HEADER = {"backend": "fake", "model_hash": "m1"}
RECORDS = [(ecg_id, bytes([ecg_id]) * 4) for ecg_id in range(1, 21)]


def _device(data: bytes) -> RecordOutcome:
    return RecordOutcome("ok", int8=[data[0], -data[0]], latency_us=100.0 + data[0], attempts=1)


def test_a_torn_last_line_is_cut_on_resume_and_every_record_is_accounted_for(tmp_path):
    out = tmp_path / "bench.jsonl"
    run_records(_device, RECORDS[:12], out, HEADER, progress=False)
    whole = json.dumps({"type": "record", "ecg_id": 13, **_device(RECORDS[12][1]).__dict__})
    with open(out, "a") as fh:
        fh.write(whole[: len(whole) // 2])  # the bench died mid-write of record 13
    assert [r["ecg_id"] for r in read_jsonl(out)[1]] == list(range(1, 13))

    ran = []
    rows = run_records(lambda d: ran.append(d[0]) or _device(d), RECORDS, out, HEADER, progress=False)
    assert ran == list(range(13, 21))
    assert [r["ecg_id"] for r in rows] == list(range(1, 21))
    lines = [json.loads(line) for line in out.read_text().splitlines()]  # every line parses: nothing merged
    assert [line["ecg_id"] for line in lines if line["type"] == "record"] == list(range(1, 21))
    repairs = [line for line in lines if line["type"] == "repair"]
    assert len(repairs) == 1 and repairs[0]["torn_bytes"] == len(whole) // 2
    summary = summarize(read_jsonl(out)[1], expected_ids=[i for i, _ in RECORDS])
    assert summary["records"] == 20 and summary["ok"] == 20 and summary["missing"] == [] and summary["failed"] == []


def test_a_last_line_missing_only_its_newline_is_kept(tmp_path):
    out = tmp_path / "bench.jsonl"
    run_records(_device, RECORDS[:3], out, HEADER, progress=False)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    ran = []
    rows = run_records(lambda d: ran.append(d[0]) or _device(d), RECORDS[:5], out, HEADER, progress=False)
    assert ran == [4, 5] and [r["ecg_id"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(json.loads(line)["type"] != "repair" for line in out.read_text().splitlines())


def test_latency_figures_are_rounded_to_the_nanosecond():
    from edge_ecg.bench.runner import latency_stats

    stats = latency_stats([2696.381500015832, 2700.0004999, 1000.0])
    assert stats["median_us"] == 2696.382 and stats["max_us"] == 2700.0 and stats["min_us"] == 1000.0
    assert all(len(repr(v).split(".")[1]) <= 3 for k, v in stats.items() if k != "records")


def test_the_bench_report_counts_agreement_and_plots_qemu_latency_in_instructions(tmp_path):
    from edge_ecg.bench.runner import write_report

    rows = run_records(_device, RECORDS, tmp_path / "emulator-qemu.jsonl", HEADER, progress=False)
    reference = {i: [d[0], -d[0]] for i, d in RECORDS}
    reference[5] = [0, 0]  # one record the device gets "wrong"
    summary = {"backend": "emulator-qemu", **summarize(rows, reference=reference, expected_ids=[i for i, _ in RECORDS])}
    text = write_report(tmp_path / "emulator-qemu.md", rows, summary).read_text()
    assert "19 identical to the TFLite Micro host emulator, 1 differ" in text
    assert "Cortex-M4 instructions (QEMU icount)" in text and "median 110,500.0" in text  # 1 us = 1000 instructions
    assert (tmp_path / "emulator-qemu_latency_hist.png").stat().st_size > 0
    assert (tmp_path / "emulator-qemu_latency_timeline.png").stat().st_size > 0
