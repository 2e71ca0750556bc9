"""The TFLite Micro board: the host port running firmware/esp32/main/tflm_runner.cc itself,
compiled against a real TensorFlow Lite Micro C++ tree.

Needs a tree: set EDGE_ECG_TFLM_SRC to a tflite-micro checkout with its third-party
downloads in tensorflow/lite/micro/tools/make/downloads, or to the esp-tflite-micro
component folder. Without it the board tests skip; the tree checks still run.

The run is test_boards.py's tiny trained and exported dscnn (its fixtures, reused).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_ecg.bench import BenchError, bench
from edge_ecg.bench.boards import BoardError
from edge_ecg.bench.protocol import DutClient
from edge_ecg.bench.runner import read_jsonl
from edge_ecg.bench.tflm_board import (
    TFLM_TARGET,
    build_tflm_library,
    find_tflm_tree,
    host_arena_min,
    model_resolver_calls,
    tflm_board_connect,
)
from edge_ecg.cli import main as cli_main
from test_boards import exported, records, run, tflm_outputs  # noqa: F401  (module fixtures: the tiny exported run)

TFLM_SRC = os.environ.get("EDGE_ECG_TFLM_SRC")
needs_tree = pytest.mark.skipif(
    not TFLM_SRC,
    reason="set EDGE_ECG_TFLM_SRC to a TFLite Micro tree (tflite-micro checkout with downloads, or esp-tflite-micro)",
)
pytestmark = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("gcc") is None, reason="needs gcc and g++")


@pytest.fixture(scope="module")
def board(run, tmp_path_factory):
    """The TFLM board with the exported arena, started per call; closed after the module."""
    with tflm_board_connect(run, tmp_path_factory.mktemp("tflm-board"), TFLM_SRC) as connect:
        yield connect


def _fresh_bench(run: Path) -> None:
    """Forget the TFLM board's previous results: a bench would continue them (bench(fresh=True) does the same)."""
    (run / "bench" / "emulator-board-tflm.jsonl").unlink(missing_ok=True)


def _ready(connect) -> DutClient:
    client = DutClient(connect(), timeout=30.0)
    client.wait_ready()
    return client


# --------------------------------------------------------------------------- with a tree


@needs_tree
@pytest.mark.slow
def test_board_reports_the_runner_and_the_exported_arena(board, exported):
    info = _ready(board).info()
    assert info["target"] == TFLM_TARGET and info["model_ready"] is True
    assert info["model_hash"] == exported["tflite"]["sha256"]
    assert info["input_bytes"] == 12000 and info["output_count"] == 5
    recommended = exported["arena"]["recommended_bytes"]
    assert info["arena_bytes"] == -(-recommended // 16) * 16  # the runner rounds up to 16 bytes
    assert 0 < info["arena_used_bytes"] <= info["arena_bytes"]
    assert np.float32(info["output_scale"]) == np.float32(exported["tflite"]["output"]["scale"])
    assert info["output_zero_point"] == exported["tflite"]["output"]["zero_point"]


@needs_tree
@pytest.mark.slow
def test_every_test_record_is_bit_exact_with_tflite_micro(run, exported, ptbxl):
    """The whole test fold through `bench --emulator board --runtime tflm`, against the Python interpreter."""
    from edge_ecg.bench import test_records as fold_records  # not a test
    from edge_ecg.export import tflm_run

    _fresh_bench(run)
    summary = bench(run, emulator="board", runtime="tflm", tflm_src=TFLM_SRC, progress=False, timeout=30.0,
                    dataset=ptbxl)
    assert summary["device"]["target"] == TFLM_TARGET
    assert summary["ok"] == summary["records"] > 0 and not summary["failed"]
    assert summary["identical_to_reference"] == summary["ok"], summary["mismatches"]

    all_records, _ = fold_records(run, dataset=ptbxl)
    shape = exported["tflite"]["input"]["shape"][1:]
    x = np.stack([np.frombuffer(data, np.int8).reshape(shape) for _, data in all_records])
    expected = tflm_run((run / "export" / "model_int8.tflite").read_bytes(), x)
    _, rows = read_jsonl(run / "bench" / "emulator-board-tflm.jsonl")
    assert len(rows) == len(all_records)
    assert {r["ecg_id"]: r["int8"] for r in rows} == {i: expected[k].reshape(-1).tolist()
                                                      for k, (i, _) in enumerate(all_records)}


@needs_tree
@pytest.mark.slow
def test_repeated_inference_gives_the_same_outputs(board, records, tflm_outputs):
    """`infer N W` runs N + W invokes on one load: TFLM reuses the input tensor's memory,
    so each invoke must start from the loaded input (the core restores it)."""
    client = _ready(board)
    for ecg_id, data in records[:2]:
        client.load_binary(data)
        results = []
        for n, warmup in ((1, 0), (5, 3), (20, 10)):
            client.infer(n, warmup)
            results.append(client.last_results[1])
        assert results == [tflm_outputs[ecg_id]] * 3, f"ecg_id {ecg_id}: infer 1 0 / 5 3 / 20 10 gave {results}"


@needs_tree
@pytest.mark.slow
def test_host_minimum_arena_allocates_and_one_byte_less_fails(run, exported, ptbxl, tmp_path):
    """The export's measured minimum suffices for the C++ runner on the same host; the runner's
    own minimum allocates and one byte less is a BenchError that names the arena sizes."""
    python_min = exported["arena"]["min_bytes"]
    host_min = host_arena_min(run, tmp_path / "probe", TFLM_SRC, lo=python_min // 2, hi=python_min)
    assert host_min <= python_min

    kw = dict(emulator="board", runtime="tflm", tflm_src=TFLM_SRC, limit=2, progress=False, timeout=30.0, dataset=ptbxl)
    _fresh_bench(run)
    summary = bench(run, arena_bytes=host_min, **kw)
    assert summary["ok"] == 2 and summary["identical_to_reference"] == 2
    _fresh_bench(run)
    with pytest.raises(BenchError) as info:
        bench(run, arena_bytes=host_min - 1, **kw)
    message = str(info.value)
    assert "model_ready false" in message
    assert f"a {-(-(host_min - 1) // 16) * 16}-byte tensor arena" in message  # the arena it had (rounded up to 16)
    assert f"at least {python_min} bytes" in message
    assert "AllocateTensors() failed" in message  # the runner's own reason, from the board log


@needs_tree
@pytest.mark.slow
def test_second_build_compiles_no_tflm_source(run, tmp_path):
    tree = find_tflm_tree(TFLM_SRC)
    calls = model_resolver_calls(run / "export")
    build_tflm_library(tree, calls)  # cold or already cached
    lib, facts = build_tflm_library(tree, calls)
    assert facts["compiled"] == 0 and facts["sources"] > 0 and lib.is_file()


@needs_tree
@pytest.mark.slow
def test_cli_bench_runs_the_tflm_board(run, capsys, monkeypatch):
    """`edge-ecg bench --emulator board --runtime tflm --tflm-src DIR`; without --tflm-src it says what is missing."""
    from conftest import PTBXL

    monkeypatch.setenv("EDGE_ECG_DATA", str(PTBXL))  # the run was trained on a dataset object: no data path saved
    assert cli_main(["bench", "--run", str(run), "--emulator", "board", "--runtime", "tflm"]) == 1
    assert "needs --tflm-src DIR" in capsys.readouterr().err
    argv = ["bench", "--run", str(run), "--emulator", "board", "--runtime", "tflm", "--tflm-src", TFLM_SRC,
            "--limit", "3", "--timeout", "30", "--json"]
    _fresh_bench(run)
    assert cli_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["backend"] == "emulator-board-tflm" and summary["device"]["target"] == TFLM_TARGET
    assert summary["ok"] == summary["identical_to_reference"] == 3


# --------------------------------------------------------------------------- without a tree


def _fake_tree(root: Path, *, checkout: bool, headers: tuple[str, ...]) -> Path:
    (root / "tensorflow/lite/micro").mkdir(parents=True)
    (root / "tensorflow/lite/micro/micro_interpreter.h").write_text("")
    if checkout:
        (root / "tensorflow/lite/micro/tools/make").mkdir(parents=True)
        (root / "tensorflow/lite/micro/tools/make/Makefile").write_text("")
    base = root / ("tensorflow/lite/micro/tools/make/downloads" if checkout else "third_party")
    for header in headers:
        (base / header).parent.mkdir(parents=True, exist_ok=True)
        (base / header).write_text("")
    return root


def test_a_folder_that_is_no_tflm_tree_is_named(tmp_path):
    with pytest.raises(BoardError, match=r"micro_interpreter\.h not found"):
        find_tflm_tree(tmp_path)


def test_a_checkout_without_downloads_names_the_first_missing_header_and_where(tmp_path):
    root = _fake_tree(tmp_path / "tflite-micro", checkout=True, headers=("flatbuffers/include/flatbuffers/flatbuffers.h",))
    with pytest.raises(BoardError) as info:
        find_tflm_tree(root)
    message = str(info.value)
    assert "fixedpoint/fixedpoint.h not found" in message
    assert str(root.resolve() / "tensorflow/lite/micro/tools/make/downloads/gemmlowp") in message
    assert "third_party_downloads" in message


def test_a_component_without_ruy_names_it(tmp_path):
    root = _fake_tree(tmp_path / "esp-tflite-micro", checkout=False,
                      headers=("flatbuffers/include/flatbuffers/flatbuffers.h", "gemmlowp/fixedpoint/fixedpoint.h"))
    with pytest.raises(BoardError, match=r"ruy/profiler/instrumentation\.h not found \(looked in .*third_party/ruy, "
                                         r"the esp-tflite-micro component layout\)"):
        find_tflm_tree(root)
    (root / "third_party/ruy/ruy/profiler").mkdir(parents=True)
    (root / "third_party/ruy/ruy/profiler/instrumentation.h").write_text("")
    tree = find_tflm_tree(root)
    assert tree.layout == "esp-tflite-micro component" and tree.include_dirs[0] == root.resolve()


def test_bench_tflm_runtime_options_are_checked(tmp_path):
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    (export / "export.json").write_text(json.dumps({"tflite": {"sha256": "0" * 64}}))
    with pytest.raises(BenchError, match="needs --tflm-src DIR"):
        bench(tmp_path / "run", emulator="board", runtime="tflm")
    with pytest.raises(BenchError, match="go with --emulator board only"):
        bench(tmp_path / "run", emulator="tflm", tflm_src=tmp_path)
    with pytest.raises(BenchError, match="not one of aot, tflm"):
        bench(tmp_path / "run", emulator="board", runtime="cmsis")
