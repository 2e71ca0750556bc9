"""The record loop of a benchmark: results appended to JSONL as they arrive, resumable, summarized.

The JSONL file's first line is a header (backend, model hash, device info); each
further line is one record. An interrupted benchmark keeps every finished line, and the
next call runs only the records without an ``ok`` line — against the same model hash, or
not at all (starting over is the caller's: it deletes the file, ``bench(fresh=True)``). A line torn by a crash is cut off before anything is appended
(appending after it would merge the next record into an unreadable line) and the cut
is recorded as a ``repair`` line.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge_ecg.bench.session import RecordOutcome


class BenchError(ValueError):
    """A benchmark that cannot run as asked; the message says why and what to do."""


class ParityError(BenchError):
    """A benchmark that ran but whose device outputs differ from the reference; ``summary`` holds the results."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def read_jsonl(path: Path) -> tuple[dict | None, list[dict]]:
    """(header, record lines) of a results file; a torn last line (a crash mid-write) is ignored."""
    header, rows = None, []
    if not path.is_file():
        return header, rows
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("type") == "header":
            header = header or obj
        elif obj.get("type") == "record":
            rows.append(obj)
    return header, rows


def repair_torn_tail(path: Path) -> bytes:
    """Make ``path`` end with a complete line; return the torn fragment cut off (b'' if none).

    A last line without its newline is a write cut short by a crash: it is truncated
    away, unless it is a whole JSON object, which only gets its newline back.
    """
    if not path.is_file():
        return b""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        cut, pos = 0, size
        while pos > 0:  # the last newline, read backwards in blocks
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            i = fh.read(step).rfind(b"\n")
            if i >= 0:
                cut = pos + i + 1
                break
        if cut == size:
            return b""
        fh.seek(cut)
        fragment = fh.read()
        try:
            json.loads(fragment)
            whole = True
        except ValueError:
            whole = False
        if whole:  # complete but for its newline: keep it
            fh.seek(size)
            fh.write(b"\n")
            fragment = b""
        else:
            fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())
    return fragment


def run_records(
    run_one: Callable[[bytes], RecordOutcome],
    records: Sequence[tuple[int, bytes]],
    jsonl: Path,
    header: dict,
    *,
    progress: bool = True,
) -> list[dict]:
    """Run every record not yet done (continuing ``jsonl``), appending one JSON line per record; return all record lines."""
    from edge_ecg.progress import track

    old_header, old_rows = read_jsonl(jsonl)
    if old_header is not None and old_header.get("model_hash") != header.get("model_hash"):
        raise BenchError(
            f"{jsonl} holds results of model {old_header.get('model_hash')}, this run's model is "
            f"{header.get('model_hash')}; results of two models are never mixed: pass --fresh to start again (its results are deleted)"
        )
    done = {r["ecg_id"] for r in old_rows if r["status"] == "ok"}
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    torn = repair_torn_tail(jsonl)  # read_jsonl skipped it: its record is not in `done` and runs again
    with open(jsonl, "a") as fh:
        if old_header is None:
            fh.write(json.dumps({"type": "header", **header}) + "\n")
        if torn:
            from edge_ecg.progress import console

            note = {"type": "repair", "torn_bytes": len(torn), "fragment": torn[:200].decode("utf-8", "replace")}
            fh.write(json.dumps(note) + "\n")
            console().print(f"{jsonl}: cut a torn last line ({len(torn)} bytes, a write cut short); its record runs again")
        todo = [(i, data) for i, data in records if i not in done]
        for ecg_id, data in track(todo, total=len(todo), description="Benchmark", enabled=progress):
            outcome = run_one(data)
            row = {"type": "record", "ecg_id": int(ecg_id), **outcome.__dict__}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # a disconnect or a kill loses nothing already measured
    _, rows = read_jsonl(jsonl)
    latest = {}
    for r in rows:  # a record retried on resume: its last line counts
        latest[r["ecg_id"]] = r
    return [latest[i] for i, _ in records if i in latest]


def latency_stats(values_us: Sequence[float]) -> dict:
    if not values_us:
        return {"records": 0}
    v = np.asarray(values_us, dtype=np.float64)
    # to the nanosecond: boards count whole microseconds, the host's clock resolves ns, more digits are noise
    return {
        "records": int(len(v)),
        "median_us": round(float(np.median(v)), 3),
        "p90_us": round(float(np.percentile(v, 90)), 3),
        "min_us": round(float(v.min()), 3),
        "max_us": round(float(v.max()), 3),
        "mean_us": round(float(statistics.fmean(v)), 3),
    }


def summarize(
    rows: Sequence[dict],
    *,
    reference: dict[int, Sequence[int]] | None = None,
    labels: dict[int, np.ndarray] | None = None,
    output_scale: float = 1.0,
    output_zero_point: int = 0,
    output_kind: str = "probability",
    expected_ids: Sequence[int] = (),
) -> dict:
    """Latency, accuracy from the device's own outputs, and bit-exactness against a reference."""
    ok = [r for r in rows if r["status"] == "ok"]
    summary = {
        "records": len(expected_ids) or len(rows),
        "ok": len(ok),
        "failed": [{"ecg_id": r["ecg_id"], "errors": r["errors"]} for r in rows if r["status"] != "ok"],
        "missing": sorted(set(expected_ids) - {r["ecg_id"] for r in rows}),
        "retried": sum(1 for r in rows if r["attempts"] > 1),
        "resets": sum(r["resets"] for r in rows),
        "latency": latency_stats([r["latency_us"] for r in ok]),
    }
    if reference is not None:
        mismatches = []
        for r in ok:
            ref = np.asarray(reference[r["ecg_id"]], dtype=np.int64)
            got = np.asarray(r["int8"], dtype=np.int64)
            if got.shape != ref.shape or not np.array_equal(got, ref):
                diff = int(np.abs(got - ref).max()) if got.shape == ref.shape else None
                mismatches.append({"ecg_id": r["ecg_id"], "device": r["int8"], "reference": ref.tolist(), "max_lsb": diff})
        summary["identical_to_reference"] = len(ok) - len(mismatches)
        summary["mismatches"] = mismatches
    if labels is not None and ok:
        from edge_ecg.metrics import MetricError, bootstrap_auc, macro_auc, per_class_auc

        y = np.stack([labels[r["ecg_id"]] for r in ok])
        from edge_ecg.preprocess import output_probabilities

        p = output_probabilities(np.asarray([r["int8"] for r in ok]), output_scale, output_zero_point, output_kind)
        try:
            summary["macro_auc"] = macro_auc(y, p)
            summary["macro_auc_ci95"] = list(bootstrap_auc(y, p, n_boot=500))
            summary["per_class_auc"] = per_class_auc(y, p).tolist()
        except MetricError as exc:
            summary["macro_auc"] = None
            summary["auc_note"] = str(exc)
    return summary


def write_report(path: Path, rows: Sequence[dict], summary: dict) -> Path:
    """The benchmark's markdown report at ``path`` (``bench/<backend>.md``) with its latency figures beside it.

    Matplotlib only, no TensorFlow: a serial bench stays light. QEMU's clock counts
    instructions (1 us = 1000 guest instructions), so its figures are in instructions.
    """
    from edge_ecg import plots
    from edge_ecg.runfolder import atomic_write_text

    backend = summary["backend"]
    latency = np.asarray([r["latency_us"] for r in rows if r["status"] == "ok"], dtype=np.float64)
    qemu = backend == "emulator-qemu"
    unit = "Cortex-M4 instructions (QEMU icount)" if qemu else "µs"
    lines = [f"# Bench: {backend}", "",
             f"- records: {summary['ok']}/{summary['records']} ok, {len(summary['failed'])} failed, "
             f"{len(summary.get('missing', []))} missing, {summary['retried']} retried, {summary['resets']} device resets",
             f"- host vs device: {summary.get('identical_to_reference', 0)} identical to the TFLite Micro host emulator, "
             f"{len(summary.get('mismatches', []))} differ; parity {summary.get('parity_check', 'not checked')}"]
    if summary.get("macro_auc") is not None:
        lines.append(f"- macro AUC from the device's outputs: {summary['macro_auc']:.4f}")
    if len(latency):
        values = latency * 1000 if qemu else latency
        hist, timeline = (path.with_name(f"{path.stem}_{kind}.png") for kind in ("latency_hist", "latency_timeline"))
        plots.latency_figures(values, unit, hist, timeline, title=f"{backend}: latency per inference")
        lines += [f"- latency per inference ({unit}): median {np.median(values):,.1f}, p90 {np.percentile(values, 90):,.1f}, "
                  f"min {values.min():,.1f}, max {values.max():,.1f}", "",
                  f"![latency histogram]({hist.name})", "", f"![latency per record]({timeline.name})"]
    else:
        lines.append("- no record completed: no latency figures")
    lines.append("")
    atomic_write_text(path, "\n".join(lines))
    return path
