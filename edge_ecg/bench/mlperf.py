"""Files for the MLCommons / EEMBC tiny runner (mlcommons/tiny ``benchmark/runner``) to benchmark a run's model.

``runner_files(run, out)`` writes::

    out/ecg01/<ecg_id>.bin     one test-fold record: the model's int8 input, the bytes `edge-ecg bench` sends
    out/ecg01/y_labels.csv     the runner's truth file: file, number of classes, class (no header)
    out/tests_performance.yaml the runner's test script for model ecg01: 5 windows of `infer N W`
    out/devices_ecg01.yaml     the DUT entry: baud rate and the USB vendor/product ids the runner scans for

The runner finds the board by USB vendor/product id (it never takes a port name) and the
dataset folder by the model id the firmware reports (``m-model-[ecg01]``). Only its
performance mode is meaningful here: its accuracy mode divides each output vector by its
sum and takes the arg-max as a single class, which says nothing about a multi-label
logit model; `edge-ecg bench` reports the macro AUC from the device's own outputs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from edge_ecg.bench.protocol import EE_MODEL_ID
from edge_ecg.bench.runner import BenchError
from edge_ecg.runfolder import RunFolder

TRUTH_FILE = "y_labels.csv"
TESTS_FILE = "tests_performance.yaml"
DEVICES_FILE = f"devices_{EE_MODEL_ID}.yaml"

WINDOWS = 5
"""Performance windows per run: the runner flags any other count as invalid ("error 1")."""
WINDOW_S = 12.0
"""Timed seconds per window aimed at: the runner wants at least 10 s and stops waiting after 30 s."""
REPLY_LIMIT_S = 25.0
"""Warm-ups plus timed inferences of one window stay under this (the runner's reply timeout is 30 s)."""
WARMUPS = 5

COMMON_BRIDGES = {
    0x303A: [0x1001],  # Espressif's built-in USB-Serial/JTAG (ESP32-S3, ESP32-C3)
    0x10C4: [0xEA60],  # Silicon Labs CP210x
    0x1A86: [0x7523, 0x55D4],  # WCH CH340, CH9102
    0x0403: [0x6001],  # FTDI FT232R
}
"""USB-serial bridges of common ESP32 boards, listed when neither a port nor ids are given."""


def usb_ids_of_port(port: str) -> tuple[int, int]:
    """(vendor id, product id) of a USB serial port, as pyserial's ``list_ports`` reports them."""
    from serial.tools import list_ports

    wanted = os.path.realpath(port)
    for info in list_ports.comports():
        if info.device == port or os.path.realpath(info.device) == wanted:
            if info.vid is None or info.pid is None:
                break
            return int(info.vid), int(info.pid)
    raise BenchError(
        f"{port}: not a USB serial port pyserial can see (`python -m serial.tools.list_ports -v` lists them with "
        "VID:PID); attach the board or pass --usb-vid and --usb-pid"
    )


def _serial_latency_us(run: Path) -> tuple[float, str]:
    """Median device latency of the run's newest serial benchmark, and that summary's file name."""
    summaries = sorted(RunFolder(run).bench.glob("serial-*.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(summaries):
        median = json.loads(path.read_text()).get("latency", {}).get("median_us")
        if median:
            return float(median), path.name
    raise BenchError(
        f"{run / 'bench'}: no serial benchmark to size the runner's windows from; run `edge-ecg bench --run {run} "
        "--port PORT` first, or pass --inferences N (N inferences should take 10-30 s on the board)"
    )


def window(latency_us: float) -> tuple[int, int]:
    """(timed inferences, warm-ups) per performance window for a device latency, as the runner needs them."""
    if not latency_us > 0:
        raise BenchError(f"latency must be a positive number of microseconds, got {latency_us!r}")
    n = max(1, math.ceil(WINDOW_S * 1e6 / latency_us))
    if n * latency_us > REPLY_LIMIT_S * 1e6:
        raise BenchError(f"one inference takes {latency_us / 1e6:.1f} s: a runner window (30 s timeout) cannot hold {WINDOW_S:g} s of them")
    warmups = max(0, min(WARMUPS, int((REPLY_LIMIT_S * 1e6 - n * latency_us) // latency_us)))
    return n, warmups


def _usb_yaml(usb: dict[int, list[int]]) -> list[str]:
    lines = ["  usb:"]
    for vid, pids in usb.items():
        lines.append(f"    0x{vid:04X}:")
        lines.extend(f"      - 0x{pid:04X}" for pid in pids)
    return lines


def runner_files(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    port: str | None = None,
    usb_vid: int | None = None,
    usb_pid: int | None = None,
    baud: int = 921600,
    inferences: int | None = None,
    limit: int | None = None,
    dataset=None,
) -> dict:
    """Write the runner's dataset, test script and device entry for ``run`` into ``out``; return what was written.

    USB ids: ``usb_vid`` and ``usb_pid`` if given, else those of ``port`` (looked up with
    pyserial), else the common ESP32 board bridges of :data:`COMMON_BRIDGES`. Each window
    runs ``inferences`` timed inferences, by default enough for about :data:`WINDOW_S`
    seconds at the median latency of the run's newest serial benchmark (``edge-ecg bench --port``).
    """
    from edge_ecg import CLASSES
    from edge_ecg.bench import test_records

    run, out = Path(run), Path(out)
    if (usb_vid is None) != (usb_pid is None):
        raise BenchError("give both --usb-vid and --usb-pid, or neither")
    for name, value in (("usb_vid", usb_vid), ("usb_pid", usb_pid)):
        if value is not None and not 0 <= value <= 0xFFFF:
            raise BenchError(f"{name} must be a 16-bit USB id (0x0000-0xFFFF), got {value:#x}")
    if inferences is not None and inferences < 1:
        raise BenchError(f"inferences must be at least 1, got {inferences}")
    if usb_vid is not None:
        usb, usb_source = {usb_vid: [usb_pid]}, "given"
    elif port is not None:
        vid, pid = usb_ids_of_port(port)
        usb, usb_source = {vid: [pid]}, f"port {port}"
    else:
        usb, usb_source = COMMON_BRIDGES, "common ESP32 board USB-serial bridges"
    if inferences is None:
        latency_us, latency_source = _serial_latency_us(run)
        n, warmups = window(latency_us)
    else:
        n, warmups, latency_source = inferences, WARMUPS, "given"

    records, labels = test_records(run, limit=limit, dataset=dataset)
    folder = out / EE_MODEL_ID
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ecg_id, data in records:
        positive = np.flatnonzero(labels[ecg_id])
        if positive.size == 0:
            raise BenchError(f"test record ecg_id {ecg_id} has no diagnostic superclass; the runner's truth file needs one")
        name = f"{ecg_id:05d}.bin"
        (folder / name).write_bytes(data)
        # one class per line is the runner's format; a multi-label record gets its first superclass
        rows.append(f"{name},{len(CLASSES)},{int(positive[0])}")
    (folder / TRUTH_FILE).write_text("\n".join(rows) + "\n")

    (out / TESTS_FILE).write_text("\n".join([
        f"# mlcommons/tiny runner test script for edge-ecg's model {EE_MODEL_ID} (performance mode only:",
        "# the runner's accuracy mode treats outputs as single-label probabilities; use `edge-ecg bench` for AUC)",
        f"{EE_MODEL_ID}:",
        "  name: ecg_classification",
        f"  model: {EE_MODEL_ID}",
        f"  truth_file: {TRUTH_FILE}",
        "  script:",
        f"    - loop {WINDOWS}:",
        "      - download",
        f"      - infer {n} {warmups}",
        "",
    ]))
    (out / DEVICES_FILE).write_text("\n".join([
        f"# mlcommons/tiny runner device list: a board running edge-ecg firmware (model {EE_MODEL_ID}),",
        f"# found by USB vendor/product id ({usb_source}); `python -m serial.tools.list_ports -v` shows a board's ids",
        "- name: edge-ecg",
        "  type: dut",
        f"  baud: {baud}",
        *_usb_yaml(usb),
        "",
    ]))
    root = out.resolve()  # the runner is started from its own folder
    return {
        "dataset_path": str(out),
        "dataset_dir": str(folder),
        "records": len(records),
        "record_bytes": len(records[0][1]) if records else 0,
        "truth_file": str(folder / TRUTH_FILE),
        "tests_file": str(out / TESTS_FILE),
        "devices_file": str(out / DEVICES_FILE),
        "windows": WINDOWS,
        "inferences": n,
        "warmups": warmups,
        "inferences_from": latency_source,
        "usb": {f"0x{v:04X}": [f"0x{p:04X}" for p in pids] for v, pids in usb.items()},
        "usb_from": usb_source,
        "command": f"python main.py --dataset_path={root} --test_script={root / TESTS_FILE} --device_list={root / DEVICES_FILE} --mode=p",
    }
