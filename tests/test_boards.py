"""Boards without hardware, running the real model: the virtual board (host port + AOT C
model) and the emulated Cortex-M4 (firmware/mps2-an386 on QEMU's mps2-an386).

A tiny dscnn is trained and exported (runtime "aot") once for the module. Each board
must pass the protocol basics of the firmware core and give, for real test-fold
records sent over its serial link, the very int8 outputs of TFLite Micro.

The QEMU board needs Debian's gcc-arm-none-eabi, libnewlib-arm-none-eabi and
qemu-system-arm (CI installs them); without them its tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from edge_ecg.bench import BenchError, bench
from edge_ecg.bench import test_records as fold_records  # not a test
from edge_ecg.bench.boards import (
    DEBIAN_PACKAGES,
    BoardError,
    build_qemu_board,
    firmware_size,
    qemu_connect,
    qemu_instructions_per_inference,
    virtual_board_connect,
)
from edge_ecg.bench.protocol import EE_MSG_INIT_DONE, EE_MSG_LAP_US, EE_MSG_TIMESTAMP_MODE, EE_PROFILE_STRING, DutClient
from edge_ecg.bench.runner import read_jsonl
from edge_ecg.export import export, tflm_run
from edge_ecg.train import TrainConfig, train

TINY = TrainConfig(arch="dscnn", epochs=1, train_limit=64, arch_kwargs={"filters": [8, 16, 16], "strides": [4, 4, 4]})
N_BOOT = 50
BENCH_RECORDS = 4

HAVE_ARM_TOOLS = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_qemu = pytest.mark.skipif(
    not HAVE_ARM_TOOLS,
    reason="arm-none-eabi-gcc or qemu-system-arm missing: apt-get install --no-install-recommends "
           + " ".join(DEBIAN_PACKAGES) + " (CI installs them)",
)
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def run(ptbxl, tmp_path_factory):
    run = tmp_path_factory.mktemp("boards") / "run"
    train(run, TINY, dataset=ptbxl, progress=False)
    export(run, dataset=ptbxl, progress=False, n_boot=N_BOOT, clip_sigma=None, runtime="aot")
    return run


@pytest.fixture(scope="module")
def exported(run) -> dict:
    return json.loads((run / "export" / "export.json").read_text())


@pytest.fixture(scope="module")
def records(run, ptbxl):
    """Real test-fold records as int8 input bytes, as the bench sends them."""
    recs, _ = fold_records(run, limit=BENCH_RECORDS, dataset=ptbxl)
    return recs


@pytest.fixture(scope="module")
def tflm_outputs(run, records, exported) -> dict[int, list[int]]:
    """TFLite Micro (tflite_micro, in process) on the same records."""
    tflite = (run / "export" / "model_int8.tflite").read_bytes()
    shape = exported["tflite"]["input"]["shape"][1:]
    x = np.stack([np.frombuffer(data, np.int8).reshape(shape) for _, data in records])
    y = tflm_run(tflite, x)
    return {ecg_id: y[k].reshape(-1).tolist() for k, (ecg_id, _) in enumerate(records)}


BOARDS = {
    "virtual": ("host-aot", virtual_board_connect),
    "qemu": ("mps2-an386", qemu_connect),
}


@pytest.fixture(scope="module", params=["virtual", pytest.param("qemu", marks=needs_qemu)])
def board(request, run, tmp_path_factory):
    """(target name, connector); the connector is closed after the module."""
    target, make = BOARDS[request.param]
    with make(run, tmp_path_factory.mktemp(request.param)) as connect:
        yield target, connect


def test_protocol_basics(board, run, exported, records, tflm_outputs):
    target, connect = board
    client = DutClient(connect(), timeout=20.0)
    banner = client.wait_ready()
    assert banner[0] == EE_MSG_TIMESTAMP_MODE and banner[1].startswith(EE_MSG_LAP_US) and banner[2] == EE_MSG_INIT_DONE
    assert client.name() == target
    assert client.profile() == (EE_PROFILE_STRING, "ecg01")
    info = client.info()
    assert info["model_hash"] == exported["tflite"]["sha256"]
    assert info["target"] == target and info["model_ready"] is True
    assert info["input_bytes"] == 12000 and info["output_count"] == 5
    assert info["arena_bytes"] == exported["aot"]["activation_bytes"]
    assert np.float32(info["input_scale"]) == np.float32(exported["tflite"]["input"]["scale"])
    assert info["input_zero_point"] == exported["tflite"]["input"]["zero_point"]
    assert np.float32(info["output_scale"]) == np.float32(exported["tflite"]["output"]["scale"])
    assert info["output_zero_point"] == exported["tflite"]["output"]["zero_point"]

    (first, data_a), (second, data_b) = records[0], records[1]
    client.load_hex(data_a)
    client.infer(1, 0)
    hex_floats, hex_int8 = client.last_results
    assert hex_int8 == tflm_outputs[first]
    client.infer(5, 3)  # repeated inference on one load: the input is restored before every invoke
    assert client.last_results[1] == tflm_outputs[first]
    scale, zp = np.float32(info["output_scale"]), info["output_zero_point"]
    assert [np.float32(v) for v in hex_floats] == [scale * np.float32(q - zp) for q in hex_int8]
    client.load_binary(data_b)
    t0, t1 = client.infer(2, 1)
    assert t1 != t0  # two timed inferences take time on either clock
    assert client.last_results[1] == tflm_outputs[second]
    assert client.results()[1] == tflm_outputs[second]


def test_bench_outputs_identical_to_tflite_micro(board, run, records, tflm_outputs, ptbxl):
    target, connect = board
    summary = bench(run, connect=connect, limit=BENCH_RECORDS, progress=False, timeout=20.0, dataset=ptbxl)
    assert summary["device"]["target"] == target
    assert summary["identical_to_reference"] == summary["ok"] == BENCH_RECORDS, summary["mismatches"]
    _, rows = read_jsonl(run / "bench" / f"serial-{target}.jsonl")
    assert {r["ecg_id"]: r["int8"] for r in rows} == tflm_outputs
    assert all(r["latency_us"] > 0 for r in rows)


def test_bench_on_the_virtual_board_never_imports_tensorflow(run, ptbxl_dir):
    """A serial bench needs numpy and the protocol, not TensorFlow's 10+ s import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edge_ecg.bench import bench\n"
        f"s = bench({str(run)!r}, emulator='board', limit=2, progress=False, timeout=20.0)\n"
        "assert s['ok'] == 2, s\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')))\n"
    )
    env = {**os.environ, "EDGE_ECG_DATA": str(ptbxl_dir)}  # the run reads its records from there
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_reconnect_stops_the_previous_board(run, tmp_path):
    with virtual_board_connect(run, tmp_path) as connect:
        first = connect()
        process = connect.process
        second = connect()
        assert process.poll() is not None, "the first board process still runs"
        client = DutClient(second)
        client.wait_ready()  # the boot banner of the new process
        assert client.name() == "host-aot"
        assert first is not second
    assert connect.process.poll() is not None


# --------------------------------------------------------------------------- QEMU specifics


@needs_qemu
def test_firmware_size_and_instruction_count(run, exported, records, tflm_outputs, tmp_path):
    elf = build_qemu_board(run, tmp_path)
    size = firmware_size(elf)
    s = size["sections"]
    assert size["flash_bytes"] == s[".vectors"] + s[".text"] + s[".rodata"] + s.get(".ARM.exidx", 0) + s.get(".data", 0)
    assert size["ram_bytes"] == s.get(".data", 0) + s[".bss"] + s[".stack"]
    assert s[".rodata"] >= exported["aot"]["weights_bytes"]  # the model's constants live in flash
    assert s[".bss"] >= 12000 + exported["aot"]["activation_bytes"]  # load buffer, activations (input tensor included)

    ecg_id, data = records[0]
    count = qemu_instructions_per_inference(run, tmp_path, records=[data, data], iterations=4, elf=elf)
    assert count["outputs_int8"] == [tflm_outputs[ecg_id]] * 2
    a, b = count["per_record"]
    assert abs(a - b) <= 2 * count["resolution_instructions"], "instruction counts are not deterministic"
    assert 10_000 < count["instructions_per_inference"] < 1e9


@needs_qemu
def test_profile_times_every_op_and_adds_up_to_the_inference(run, exported, ptbxl):
    from edge_ecg.bench import format_summary

    summary = bench(run, emulator="qemu", limit=1, profile=True, fresh=True, progress=False, timeout=20.0, dataset=ptbxl)
    rows = summary["profile"]
    assert rows and all(r["instructions"] > 0 for r in rows)
    assert {r["op"] for r in rows} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    conv = [r for r in rows if r["macs"]]
    assert all(r["instructions_per_mac"] == round(r["instructions"] / r["macs"], 3) for r in conv)
    per_inference = summary["latency"]["median_us"] * 1000  # QEMU icount: 1 us = 1000 instructions
    total = sum(r["instructions"] for r in rows)
    assert 0.9 * per_inference <= total <= 1.02 * per_inference, (total, per_inference)  # the hooks' own cost aside
    assert "Per op on QEMU" in format_summary(summary)
    with pytest.raises(BenchError, match="--profile goes with --emulator qemu"):
        bench(run, emulator="board", limit=1, profile=True, progress=False, dataset=ptbxl)


def _path_without(tmp_path: Path, *tools: str) -> str:
    """A PATH holding links to gcc and python but none of ``tools``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcc", "cc", "size"):
        if shutil.which(name) and name not in tools:
            os.symlink(shutil.which(name), bin_dir / name)
    return str(bin_dir)


def test_missing_cross_compiler_names_the_debian_packages(run, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_without(tmp_path, "arm-none-eabi-gcc", "qemu-system-arm"))
    with pytest.raises(BoardError) as info:
        build_qemu_board(run, tmp_path / "build")
    for package in ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi"):
        assert package in str(info.value)
    with pytest.raises(BoardError, match="qemu-system-arm"):
        qemu_connect(run, tmp_path / "build", elf=tmp_path / "any.elf")


def test_a_silent_emulator_is_stopped_in_bounded_time(run, tmp_path, monkeypatch):
    """A 'QEMU' that never answers and ignores SIGTERM: connect fails and kills it."""
    fake = Path(_path_without(tmp_path, "qemu-system-arm")) / "qemu-system-arm"
    fake.write_text("#!/bin/sh\ntrap '' TERM\nexec sleep 600\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    connect = qemu_connect(run, tmp_path, elf=tmp_path / "unused.elf", boot_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(BoardError, match="no boot banner"):
        connect()
    assert time.monotonic() - start < 8.0
    assert connect.process.poll() is not None, "the silent emulator still runs"


@needs_qemu
def test_a_paused_qemu_is_stopped_in_bounded_time(run, tmp_path):
    """The real QEMU started paused (-S) never prints its banner."""
    connect = qemu_connect(run, tmp_path, extra_args=["-S"], boot_timeout=1.5)
    start = time.monotonic()
    with pytest.raises(BoardError, match="no boot banner"):
        connect()
    assert time.monotonic() - start < 8.0
    assert connect.process.poll() is not None
