"""Benchmark the deployed model: latency and accuracy on a board over serial, or on the host emulator.

:mod:`edge_ecg.bench.protocol` speaks the MLPerf Tiny / EEMBC benchmark protocol
(plus the edge-ecg extensions) to firmware built on ``firmware/core``;
:mod:`edge_ecg.bench.session` survives link faults; :mod:`edge_ecg.bench.runner`
appends results to JSONL as they arrive. :func:`bench` ties them to a run folder::

    runs/NAME/bench/
      <backend>.jsonl    header + one line per test-fold record (int8 outputs, device latency, retries)
      <backend>.json     summary: latency median/p90/min/max, macro AUC from the device's outputs,
                         records identical to the TFLite Micro host emulator (mismatches listed),
                         and the parity verdict (``parity_check``)
      <backend>-<folder>.jsonl/.json   the same for the records of another folder (``bench(data=...)``,
                         ``edge-ecg bench --data``), never mixed with the run's own results

A device output that differs from the emulator's fails the benchmark (:class:`ParityError`,
after the summary is written) unless ``allow_mismatch``; so does a benchmark in which no
record completed. Records that failed after their retries are listed and leave the verdict
alone: running the benchmark again runs them again.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge_ecg.bench.runner import BenchError, ParityError, run_records, summarize
from edge_ecg.bench.session import DeviceSession, RecordOutcome
from edge_ecg.runfolder import RunError, RunFolder, locks_run, write_report_json

__all__ = ["BenchError", "DeviceSession", "ParityError", "RecordOutcome", "bench", "parity_check", "test_records"]


EMULATORS = ("tflm", "board", "qemu")


def _export(run: Path) -> dict:
    try:
        return RunFolder(run).read_export()
    except RunError as exc:
        raise BenchError(str(exc)) from None


def test_records(run: str | os.PathLike, *, limit: int | None = None, dataset=None) -> tuple[list[tuple[int, bytes]], dict]:
    """The run's test-fold records as the model's int8 input bytes, and their labels by ecg_id.

    Preprocessing is the export's: the run's standardization, the chosen input
    clipping and the int8 input quantization, exactly what the firmware computes.
    """
    from edge_ecg.train import TrainConfig, load_split, read_run_config

    run = Path(run)
    exported = _export(run)
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    split = load_split(config, dataset)
    test = split.test if limit is None else split.test.select(np.arange(min(limit, len(split.test))))
    q = _int8_inputs(run, exported, test.signals)
    records = [(int(i), q[k].tobytes()) for k, i in enumerate(test.ecg_ids)]
    labels = {int(i): test.labels[k] for k, i in enumerate(test.ecg_ids)}
    return records, labels


def _int8_inputs(run: Path, exported: dict, signals: np.ndarray) -> np.ndarray:
    """mV windows as the firmware's int8 input: the run's standardization, the export's clipping and quantization."""
    from edge_ecg.data import Standardizer
    from edge_ecg.preprocess import int8_input
    from edge_ecg.train import STANDARDIZATION_FILE

    standardizer = Standardizer.load(run / STANDARDIZATION_FILE)
    return int8_input(signals, standardizer.mean, standardizer.std, exported["calibration"]["clip_sigma"],
                      exported["tflite"]["input"]["scale"], exported["tflite"]["input"]["zero_point"], standardizer.highpass)


WINDOW_ID_BASE = 1000
"""Row id of window k (from 0) of external record ecg_id: ``ecg_id * WINDOW_ID_BASE + k``."""


def external_records(run: str | os.PathLike, data: str | os.PathLike, *, limit: int | None = None,
                     dataset=None) -> dict:
    """Every labelled record of another folder (PTB-XL or CinC layout) as bench rows, with their reference outputs.

    Records are read at the run's rate and cut into the model's window as
    :func:`edge_ecg.external_eval.evaluate_external` reads them (a record longer than the
    window gives several windows, :mod:`edge_ecg.data.resample`); each window is one row, its
    id ``ecg_id * 1000 + k`` (``rows`` names it ``source/record window k+1/n``), labelled with its
    record's labels (the folder's own, e.g. the CinC ``#Dx`` codes). ``limit`` keeps the first N
    records (all their windows). The reference is the export's int8 model through the TFLite
    Micro interpreter on exactly the bytes sent. ``dataset``: ``data`` already loaded.
    Returns records, labels, reference, rows (id -> name) and the data's summary facts.
    """
    from edge_ecg.data import load_dataset
    from edge_ecg.export.emulator import tflm_run
    from edge_ecg.train import TrainConfig, read_run_config

    run = Path(run)
    exported = _export(run)
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    shape = exported["tflite"]["input"]["shape"]
    ds = dataset if dataset is not None else load_dataset(data, config.rate, window=int(shape[1]), leads=config.leads)
    if tuple(ds.signals.shape[1:]) != tuple(shape[1:]):
        raise BenchError(f"{data}: records are {tuple(ds.signals.shape[1:])} (samples, leads), the model takes {tuple(shape[1:])}")
    ids = ds.ecg_ids.astype(np.int64)
    keep = list(dict.fromkeys(ids.tolist()))[:limit]
    if not keep:
        skipped = [getattr(i, "reason", str(i)) for i in getattr(ds, "skipped", [])][:5]
        raise BenchError(f"{ds.root}: no labelled record to benchmark ({len(getattr(ds, 'skipped', []))} skipped, "
                         f"{len(getattr(ds, 'unlabelled', []))} without a superclass)" + "".join(f"\n  {r}" for r in skipped))
    rows_of = {i: np.flatnonzero(ids == i) for i in keep}
    if max(len(r) for r in rows_of.values()) > WINDOW_ID_BASE:
        raise BenchError(f"{ds.root}: a record gives more than {WINDOW_ID_BASE} windows; bench ids number at most that many")
    order = np.concatenate(list(rows_of.values()))
    q = _int8_inputs(run, exported, ds.signals[order])
    names = getattr(ds, "names", {})
    row_ids, rows = [], {}
    for i, r in rows_of.items():
        for k in range(len(r)):
            row_ids.append(i * WINDOW_ID_BASE + k)
            rows[row_ids[-1]] = f"{names.get(i, i)} window {k + 1}/{len(r)}"
    tflite = (RunFolder(run).export / exported["tflite"]["file"]).read_bytes()
    reference = tflm_run(tflite, q)  # what the board must reproduce, from the very bytes it is sent
    return {
        "records": [(rid, q[k].tobytes()) for k, rid in enumerate(row_ids)],
        "labels": {rid: ds.labels[order[k]] for k, rid in enumerate(row_ids)},
        "reference": {rid: reference[k].tolist() for k, rid in enumerate(row_ids)},
        "rows": rows,
        "data": str(Path(ds.root).resolve()),
        "format": getattr(ds, "format", "ptbxl"),
        "records_benched": len(keep),
    }


def _tflm_backend(run: Path, exported: dict, warmup: int = 0) -> Callable[[bytes], RecordOutcome]:
    """The TFLite Micro host emulator, in process; latency is the host's time of the timed invoke.

    It follows the serial session's call sequence: ``infer 1 W`` on the first record (W
    warm-ups), ``infer 1 0`` on the others; the input is set before every invoke, as the
    core restores it (TFLM reuses the input tensor's memory, so an invoke without the
    restore would run on overwritten input).
    """
    from edge_ecg.export.emulator import tflm_interpreter

    tflite = (RunFolder(run).export / exported["tflite"]["file"]).read_bytes()
    interpreter = tflm_interpreter(tflite, exported["arena"]["recommended_bytes"])
    shape = exported["tflite"]["input"]["shape"]
    warmed = [False]  # the session warms up on its first record only

    def run_one(data: bytes) -> RecordOutcome:
        x = np.frombuffer(data, np.int8).reshape(shape)
        for _ in range(0 if warmed[0] else warmup):
            interpreter.set_input(x, 0)
            interpreter.invoke()
        warmed[0] = True
        interpreter.set_input(x, 0)
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = (time.perf_counter() - start) * 1e6
        return RecordOutcome(status="ok", int8=interpreter.get_output(0).reshape(-1).tolist(), latency_us=round(elapsed, 3), attempts=1)

    return run_one


def _serial_connect(port: str, baud: int) -> Callable:
    def connect():
        import serial

        try:
            return serial.Serial(port, baud, timeout=0.05, write_timeout=5.0)  # a stuck write becomes a retried fault
        except serial.SerialException as exc:
            raise BenchError(f"{port}: cannot open the serial port ({exc}); is the board attached and no monitor using it?") from None

    return connect


def _init_failure(info: dict, exported: dict) -> str:
    """Why a device's model is not ready, with the arena it has and the one the export measured."""
    arena = exported.get("arena", {})
    has = f"a {info['arena_bytes']}-byte tensor arena" if info.get("arena_bytes") else "no tensor arena"
    return (f"the device's model failed to initialize (info: model_ready false, e-[Model init failed] at boot) with {has}; "
            f"this export needs at least {arena.get('min_bytes')} bytes (export.json arena.min_bytes, the host interpreter's "
            f"minimum) and recommends {arena.get('recommended_bytes')} (ECG_ARENA_BYTES): rebuild with a larger arena, "
            "or check that the firmware registers the model's ops")


def _write_reports(run: Path, rows: list[dict], summary: dict) -> None:
    """bench/<backend>.md with its latency figures, then the run's index (which links it)."""
    from edge_ecg.bench.runner import write_report
    from edge_ecg.runfolder import write_index

    write_report(RunFolder(run).bench_report(summary["backend"]), rows, summary)
    write_index(run)


def parity_check(summary: dict, *, allow_mismatch: bool = False) -> tuple[bool, str]:
    """(passed, verdict) of a summary: every completed record's outputs equal the reference's.

    Mismatches fail unless ``allow_mismatch``; a benchmark with no completed record fails
    (nothing was compared). Failed or missing records are listed in the summary, not judged here.
    """
    mismatches, ok = summary["mismatches"], summary["ok"]
    if ok == 0 and summary["records"] > 0:
        return False, f"failed: none of {summary['records']} records completed, nothing was compared"
    if not mismatches:
        return True, f"passed: {ok}/{ok} completed records identical to the emulator"
    lsbs = [m["max_lsb"] for m in mismatches if m["max_lsb"] is not None]
    first = mismatches[0]
    worst = f"up to {max(lsbs)} LSB" if lsbs else "output length differs"
    detail = f"{len(mismatches)} of {ok} completed records differ from the emulator (first ecg_id {first['ecg_id']}, {worst})"
    if allow_mismatch:
        return True, f"{len(mismatches)} mismatches allowed by --allow-mismatch ({detail})"
    return False, f"failed: {detail}"


@locks_run("bench")
def bench(
    run: str | os.PathLike,
    *,
    port: str | None = None,
    baud: int = 921600,
    emulator: str | None = None,
    connect: Callable | None = None,
    limit: int | None = None,
    resume: bool = True,
    fresh: bool = False,
    retries: int = 3,
    timeout: float = 5.0,
    warmup: int = 3,
    load: str = "binary",
    dataset=None,
    progress: bool = True,
    allow_mismatch: bool = False,
    runtime: str = "aot",
    tflm_src: str | os.PathLike | None = None,
    arena_bytes: int | None = None,
    profile: bool = False,
    data: str | os.PathLike | None = None,
) -> dict:
    """Send the run's test-fold records to a device (``port`` or ``connect``) or the emulator; return the summary.

    ``emulator="tflm"`` runs the records through the TFLite Micro interpreter in
    process; ``"board"`` (the host port with the AOT model, a virtual board) and
    ``"qemu"`` (the mps2-an386 Cortex-M4 firmware in QEMU, timestamps counting
    instructions) take the serial path a real board takes; both need
    ``export --runtime aot``. A device must report the exported model's hash (``info%``), or nothing
    is compared. Results go to ``run/bench/<backend>.jsonl`` as they arrive;
    a second call continues them (the records without an ``ok`` line run); ``fresh`` deletes
    this backend's results and summary first and starts over. ``resume`` is accepted and
    ignored (continuing is the default; it was once required).

    ``emulator="board"`` with ``runtime="tflm"`` runs the ESP32 port's TFLite Micro runner
    (``firmware/esp32/main/tflm_runner.cc``) on the host port instead of the AOT model,
    built against the TFLM source tree ``tflm_src`` (:mod:`edge_ecg.bench.tflm_board`);
    ``arena_bytes`` overrides the export's tensor arena. A device whose model did not
    initialize (``info%`` model_ready false) is a :class:`BenchError` naming its arena and
    the export's measured one.

    ``profile`` (with ``emulator="qemu"``) adds ``profile`` to the summary: instructions, MACs
    and instructions per MAC of each op of the AOT model, for the first record
    (:func:`edge_ecg.aot.cortex_m.profile_on_qemu`).

    ``data`` (another folder, PTB-XL or CinC layout; ``dataset`` then holds it already loaded)
    sends every labelled record of it instead (:func:`external_records`): a record longer than
    the model's window is one row per window (id ``ecg_id * 1000 + k``, named in the summary's
    ``external.rows``), the macro AUC counts windows, with the folder's labels; outputs are
    compared with the export's model run through TFLite Micro on the bytes sent. Results go to
    ``<backend>-<folder name>``, never mixed with the run's own. ``data`` that is the run's own
    folder is the usual test-fold bench.

    The summary is always written; then :class:`ParityError` (a :class:`BenchError`) is
    raised when :func:`parity_check` fails: a device output differs from the emulator's
    (unless ``allow_mismatch``) or no record completed.
    """
    run = Path(run)
    exported = _export(run)
    model_hash = exported["tflite"]["sha256"]
    if sum(x is not None for x in (port, emulator, connect)) != 1:
        raise BenchError("choose one of --port PORT or --emulator")
    if runtime not in ("aot", "tflm"):
        raise BenchError(f"--runtime {runtime!r} is not one of aot, tflm")
    board_tflm = emulator == "board" and runtime == "tflm"
    if (tflm_src is not None or arena_bytes is not None or runtime != "aot") and not board_tflm:
        raise BenchError("--runtime tflm, --tflm-src and --arena-bytes go with --emulator board only (the TFLite Micro board)")
    if board_tflm and tflm_src is None:
        raise BenchError("--emulator board --runtime tflm needs --tflm-src DIR: a tflite-micro checkout with its "
                         "third-party downloads, or the esp-tflite-micro component folder")
    if profile and emulator != "qemu":
        raise BenchError("--profile goes with --emulator qemu (its clock counts instructions, so each op can be timed)")
    external = None
    if data is not None and not RunFolder(run).is_own_data(data):
        external = external_records(run, data, limit=limit, dataset=dataset)
    if external is None:
        records, labels = test_records(run, limit=limit, dataset=dataset)
    else:
        records, labels = external["records"], external["labels"]
    session = board = None
    if emulator is not None and emulator not in EMULATORS:
        raise BenchError(f"--emulator {emulator!r} is not one of {', '.join(EMULATORS)}")
    if board_tflm:
        from edge_ecg.bench import tflm_board

        board = tflm_board.tflm_board_connect(run, RunFolder(run).bench / "board-tflm-build", tflm_src, arena_bytes=arena_bytes)
        connect = board
    elif emulator in ("board", "qemu"):
        from edge_ecg.bench import boards

        workdir = RunFolder(run).bench / f"{emulator}-build"
        board = boards.virtual_board_connect(run, workdir) if emulator == "board" else boards.qemu_connect(run, workdir)
        connect = board
    if emulator == "tflm":
        backend, run_one, info = "emulator-tflm", _tflm_backend(run, exported, warmup), {"target": "host TFLite Micro (tflite_micro)"}
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
        if info.get("model_ready") is False:
            log = board.transport.stderr_tail() if board is not None and board.transport is not None else ""
            session.close()
            if board is not None:
                board.close()
            raise BenchError(_init_failure(info, exported) + (f". Board log: {log}" if log else ""))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", port or info.get("target", "device")).strip("_")
        backend = f"emulator-{emulator}{'-tflm' if board_tflm else ''}" if emulator else f"serial-{name}"
        run_one = session.run
    if external is not None:  # its own results file: the run's test-fold results are never mixed with these
        backend += "-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(external["data"]).name).strip("_") or "data")
    clock = {"tflm": "host perf_counter", "qemu": "QEMU -icount shift=0: 1 us = 1000 guest instructions"}
    header = {"backend": backend, "model_hash": model_hash, "device": info, "records": len(records),
              "latency_clock": clock.get(emulator, "device timestamps (m-lap-us)")}
    if external is not None:
        header["data"] = external["data"]
    folder = RunFolder(run)
    if external is not None:
        from edge_ecg.bench.runner import read_jsonl

        old, _ = read_jsonl(folder.bench_results(backend))
        if old is not None and old.get("data") != external["data"] and not fresh:
            raise BenchError(f"{folder.bench_results(backend)} holds results of {old.get('data')}, not {external['data']}; "
                             "pass --fresh to start again (its results are deleted)")
    if fresh:  # deleted, not kept aside: a benchmark is cheap to repeat and stale files would be mistaken for results
        folder.bench_results(backend).unlink(missing_ok=True)
        folder.bench_summary(backend).unlink(missing_ok=True)
    try:
        rows = run_records(run_one, records, folder.bench_results(backend), header, progress=progress)
    finally:
        if session is not None:
            session.close()
        if board is not None:
            board.close()
    reference = folder.reference_outputs() if external is None else external["reference"]
    out_q = exported["tflite"]["output"]
    summary = summarize(rows, reference=reference, labels=labels, output_scale=out_q["scale"],
                        output_zero_point=out_q["zero_point"], output_kind=exported["tflite"].get("output_kind", "probability"),
                        expected_ids=[i for i, _ in records])
    summary = {"backend": backend, "device": info, "reference": "TFLite Micro host emulator (export/test_int8_outputs.npy)", **summary}
    if external is not None:
        summary["reference"] = "TFLite Micro host emulator (tflite_micro) on the bytes sent, computed by bench"
        summary["external"] = {k: external[k] for k in ("data", "format", "records_benched", "rows")}
    if profile:
        from edge_ecg.aot.cortex_m import profile_on_qemu

        folder = RunFolder(run)
        shape = exported["tflite"]["input"]["shape"]
        summary["profile"] = profile_on_qemu(folder.tflite.read_bytes(), folder.export / "aot",
                                             np.frombuffer(records[0][1], np.int8).reshape(shape[1:]),
                                             folder.bench / "qemu-profile")
        summary["profile_record"] = records[0][0]
    passed, verdict = parity_check(summary, allow_mismatch=allow_mismatch)
    summary["allow_mismatch"], summary["parity_check"] = allow_mismatch, verdict
    path = folder.bench_summary(backend)
    summary = write_report_json(path, summary)  # results are kept whatever the verdict; display floats rounded
    _write_reports(run, rows, summary)
    if not passed:
        fix = "" if summary["ok"] == 0 else "; pass --allow-mismatch (allow_mismatch=True) to accept them"
        raise ParityError(f"{backend}: parity {verdict} (results in {path}){fix}", summary)
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
    if summary.get("parity_check"):
        lines.append(f"parity: {summary['parity_check']}")
    if summary.get("profile"):
        from edge_ecg.aot.cortex_m import format_profile

        lines.append(f"ecg_id {summary['profile_record']}, " + format_profile(summary["profile"]))
    return "\n".join(lines)
