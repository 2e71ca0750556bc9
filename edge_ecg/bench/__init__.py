"""Benchmark the deployed model: latency and accuracy on a board over serial, or on the host emulator.

:mod:`edge_ecg.bench.protocol` speaks the MLPerf Tiny / EEMBC benchmark protocol
(plus the edge-ecg extensions) to firmware built on ``firmware/core``;
:mod:`edge_ecg.bench.session` survives link faults; :mod:`edge_ecg.bench.runner`
appends results to JSONL as they arrive. :func:`bench` ties them to a run folder::

    runs/NAME/bench/
      <backend>.jsonl    header + one line per test-fold record (int8 outputs, device latency, retries)
      <backend>.json     summary: latency median/p90/min/max, macro AUC from the device's outputs,
                         records identical to the TFLite Micro host emulator (mismatches listed)
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge_ecg.bench.runner import BenchError, run_records, summarize
from edge_ecg.bench.session import DeviceSession, RecordOutcome

__all__ = ["BenchError", "DeviceSession", "RecordOutcome", "bench", "test_records"]


EMULATORS = ("tflm", "board", "qemu")


def _export(run: Path) -> dict:
    path = run / "export" / "export.json"
    if not path.is_file():
        raise BenchError(f"{path} not found: run `edge-ecg export --run {run}` first")
    return json.loads(path.read_text())


def test_records(run: str | os.PathLike, *, limit: int | None = None, dataset=None) -> tuple[list[tuple[int, bytes]], dict]:
    """The run's test-fold records as the model's int8 input bytes, and their labels by ecg_id.

    Preprocessing is the export's: the run's standardization, the chosen input
    clipping and the int8 input quantization, exactly what the firmware computes.
    """
    from edge_ecg.data import Standardizer
    from edge_ecg.export import clip_inputs, quantize_input
    from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, load_split, read_run_config

    run = Path(run)
    exported = _export(run)
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    split = load_split(config, dataset)
    test = split.test if limit is None else split.test.select(np.arange(min(limit, len(split.test))))
    z = clip_inputs(Standardizer.load(run / STANDARDIZATION_FILE).transform(test.signals), exported["calibration"]["clip_sigma"])
    q = quantize_input(z, exported["tflite"]["input"]["scale"], exported["tflite"]["input"]["zero_point"])
    records = [(int(i), q[k].tobytes()) for k, i in enumerate(test.ecg_ids)]
    labels = {int(i): test.labels[k] for k, i in enumerate(test.ecg_ids)}
    return records, labels


def _tflm_backend(run: Path, exported: dict) -> Callable[[bytes], RecordOutcome]:
    """The TFLite Micro host emulator, in process; latency is the host's time per invoke."""
    from edge_ecg.export.emulator import tflm_interpreter

    tflite = (run / "export" / exported["tflite"]["file"]).read_bytes()
    interpreter = tflm_interpreter(tflite, exported["arena"]["recommended_bytes"])
    shape = exported["tflite"]["input"]["shape"]

    def run_one(data: bytes) -> RecordOutcome:
        x = np.frombuffer(data, np.int8).reshape(shape)
        interpreter.set_input(x, 0)
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = (time.perf_counter() - start) * 1e6
        return RecordOutcome(status="ok", int8=interpreter.get_output(0).reshape(-1).tolist(), latency_us=elapsed, attempts=1)

    return run_one


def _serial_connect(port: str, baud: int) -> Callable:
    def connect():
        import serial

        try:
            return serial.Serial(port, baud, timeout=0.05, write_timeout=5.0)  # a stuck write becomes a retried fault
        except serial.SerialException as exc:
            raise BenchError(f"{port}: cannot open the serial port ({exc}); is the board attached and no monitor using it?") from None

    return connect


def bench(
    run: str | os.PathLike,
    *,
    port: str | None = None,
    baud: int = 921600,
    emulator: str | None = None,
    connect: Callable | None = None,
    limit: int | None = None,
    resume: bool = False,
    retries: int = 3,
    timeout: float = 5.0,
    warmup: int = 3,
    load: str = "binary",
    dataset=None,
    progress: bool = True,
) -> dict:
    """Send the run's test-fold records to a device (``port`` or ``connect``) or the emulator; return the summary.

    ``emulator="tflm"`` runs the records through the TFLite Micro interpreter in
    process; ``"board"`` (the host port with the AOT model, a virtual board) and
    ``"qemu"`` (the mps2-an386 Cortex-M4 firmware in QEMU, timestamps counting
    instructions) take the serial path a real board takes; both need
    ``export --runtime aot``. A device must report the exported model's hash (``info%``), or nothing
    is compared. Results go to ``run/bench/<backend>.jsonl`` as they arrive;
    ``resume`` continues an interrupted benchmark.
    """
    run = Path(run)
    exported = _export(run)
    model_hash = exported["tflite"]["sha256"]
    if sum(x is not None for x in (port, emulator, connect)) != 1:
        raise BenchError("choose one of --port PORT or --emulator")
    records, labels = test_records(run, limit=limit, dataset=dataset)
    session = board = None
    if emulator is not None and emulator not in EMULATORS:
        raise BenchError(f"--emulator {emulator!r} is not one of {', '.join(EMULATORS)}")
    if emulator in ("board", "qemu"):
        from edge_ecg.bench import boards

        workdir = run / "bench" / f"{emulator}-build"
        board = boards.virtual_board_connect(run, workdir) if emulator == "board" else boards.qemu_connect(run, workdir)
        connect = board
    if emulator == "tflm":
        backend, run_one, info = "emulator-tflm", _tflm_backend(run, exported), {"target": "host TFLite Micro (tflite_micro)"}
    else:
        session = DeviceSession(connect or _serial_connect(port, baud), timeout=timeout, retries=retries, warmup=warmup, load=load)
        try:
            info = session.open()
        except BaseException:
            if board is not None:
                board.close()
            raise
        if info.get("model_hash") != model_hash:
            session.close()
            if board is not None:
                board.close()
            raise BenchError(
                f"the device runs model {info.get('model_hash')!r}, this run exported {model_hash}; flash this run's "
                "firmware (`edge-ecg build` then `edge-ecg flash`) — outputs of another model are never compared"
            )
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", port or info.get("target", "device")).strip("_")
        backend, run_one = (f"emulator-{emulator}" if emulator else f"serial-{name}"), session.run
    clock = {"tflm": "host perf_counter", "qemu": "QEMU -icount shift=0: 1 us = 1000 guest instructions"}
    header = {"backend": backend, "model_hash": model_hash, "device": info, "records": len(records),
              "latency_clock": clock.get(emulator, "device timestamps (m-lap-us)")}
    out = run / "bench"
    try:
        rows = run_records(run_one, records, out / f"{backend}.jsonl", header, resume=resume, progress=progress)
    finally:
        if session is not None:
            session.close()
        if board is not None:
            board.close()
    reference = dict(zip(np.load(run / "export" / "test_ecg_ids.npy").tolist(), np.load(run / "export" / "test_int8_outputs.npy").tolist()))
    out_q = exported["tflite"]["output"]
    summary = summarize(rows, reference=reference, labels=labels, output_scale=out_q["scale"],
                        output_zero_point=out_q["zero_point"], output_kind=exported["tflite"].get("output_kind", "probability"),
                        expected_ids=[i for i, _ in records])
    summary = {"backend": backend, "device": info, "reference": "TFLite Micro host emulator (export/test_int8_outputs.npy)", **summary}
    (out / f"{backend}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def format_summary(summary: dict) -> str:
    lat = summary["latency"]
    lines = [f"{summary['backend']}: {summary['ok']}/{summary['records']} records ok, {len(summary['failed'])} failed, "
             f"{summary['retried']} retried, {summary['resets']} device resets"]
    if lat.get("records") and summary["backend"] == "emulator-qemu":  # QEMU's clock counts instructions (-icount)
        lines.append(f"Cortex-M4 instructions per inference (QEMU icount): median {lat['median_us'] * 1000:,.0f}, "
                     f"min {lat['min_us'] * 1000:,.0f}, max {lat['max_us'] * 1000:,.0f}")
    elif lat.get("records"):
        lines.append(f"latency per inference: median {lat['median_us'] / 1000:.3f} ms, p90 {lat['p90_us'] / 1000:.3f} ms, "
                     f"min {lat['min_us'] / 1000:.3f} ms, max {lat['max_us'] / 1000:.3f} ms")
    if summary.get("macro_auc") is not None:
        lo, hi = summary["macro_auc_ci95"]
        lines.append(f"macro AUC from the device's outputs {summary['macro_auc']:.4f} [{lo:.4f}, {hi:.4f}]")
    lines.append(f"identical to the TFLite Micro host emulator: {summary['identical_to_reference']}/{summary['ok']}")
    for m in summary["mismatches"][:10]:
        lines.append(f"  mismatch ecg_id {m['ecg_id']}: device {m['device']} vs emulator {m['reference']} (max {m['max_lsb']} LSB)")
    return "\n".join(lines)
