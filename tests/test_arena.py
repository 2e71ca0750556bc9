"""edge_ecg.export.arena: the tensor arena per firmware target.

The replay of TFLite Micro's planner is held to TFLM's own head on real int8 models (the
project's dscnn and the small random models of test_aot.py); the esp-nn scratch rules to
hand-computed cases; the ESP32-S3 figure to a lower bound that any plan must respect;
the rendered ESP-IDF project to the figure of its chip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from edge_ecg.export import ExportError
from edge_ecg.export.arena import (
    ALIGNMENT,
    ESP_NN_VERSION,
    TARGETS,
    Dims,
    PlannedBuffer,
    esp32s3_conv_scratch,
    esp32s3_depthwise_conv_scratch,
    greedy_plan,
    planned_buffers,
    planned_head,
    scratch_requests,
    target_arenas,
    tflm_padding,
)

REPO = Path(__file__).resolve().parents[1]

# The head TFLM plans does not depend on the arena size: one interpreter with a large arena
# and its RecordingMicroAllocator report (C-level stderr, hence a child process).
_HEAD_CHILD = r"""
import sys
from tflite_micro.python.tflite_micro import runtime
interpreter = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=8 << 20)
interpreter.print_allocations()
"""


def tflm_report(model_bytes: bytes, tmp_path) -> dict:
    from edge_ecg.export.emulator import _parse_allocations

    path = tmp_path / "model.tflite"
    path.write_bytes(model_bytes)
    proc = subprocess.run([sys.executable, "-c", _HEAD_CHILD, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = _parse_allocations(proc.stderr + proc.stdout)
    assert report.get("head_bytes"), proc.stderr[-2000:]
    return report


# --------------------------------------------------------------------------- esp-nn rules by hand


def test_conv_1x1_scratch():
    # 1x1, stride 1, no padding: filter ch8 * out + transpose 2 * 8 * ch8 (>= 8 positions) + 64
    assert esp32s3_conv_scratch(Dims(1, 250, 32), Dims(1, 1, 32), Dims(1, 250, 48), padding=(0, 0), stride=(1, 1)) \
        == 32 * 48 + 2 * 8 * 32 + 64 == 2112
    # channels not a multiple of 8: the input is copied with channels padded to 16
    assert esp32s3_conv_scratch(Dims(1, 100, 12), Dims(1, 1, 12), Dims(1, 100, 16), padding=(0, 0), stride=(1, 1)) \
        == 100 * 16 + 16 * 16 + 2 * 8 * 16 + 64 == 2176
    # fewer than 8 positions: no transpose buffer
    assert esp32s3_conv_scratch(Dims(1, 4, 8), Dims(1, 1, 8), Dims(1, 4, 8), padding=(0, 0), stride=(1, 1)) == 8 * 8 + 64


def test_conv_k_by_1_scratch_with_and_without_padding():
    # row = 1 x 12 < 16 and window = 9 x 12 >= 16: im2col, window rounded up to 112
    assert esp32s3_conv_scratch(Dims(1, 1000, 12), Dims(1, 9, 12), Dims(1, 500, 32), padding=(0, 3), stride=(1, 2)) \
        == 32 * 4 + 16 + 32 * 112 + 16 + 112 + 64 == 3920
    # row = 16: the general path. SAME: padded input (1 x 104 x 16), filter with channels to 16,
    # its aligned copy, the bottom boundary (out * stride + k - 1 - in = 4 rows), 64, 4 per output channel
    same = esp32s3_conv_scratch(Dims(1, 100, 16), Dims(1, 5, 16), Dims(1, 100, 8), padding=(0, 2), stride=(1, 1))
    assert same == 104 * 16 + 5 * 16 * 8 + 16 * 5 * 8 + 104 * 16 + 64 + 8 * 4 == 4704
    # VALID: no padded input, no boundary
    valid = esp32s3_conv_scratch(Dims(1, 100, 16), Dims(1, 5, 16), Dims(1, 96, 8), padding=(0, 0), stride=(1, 1))
    assert valid == 5 * 16 * 8 + 16 * 5 * 8 + 64 + 8 * 4 == 1376
    # width and height are not interchangeable: the first conv with T along the width takes the general path
    assert esp32s3_conv_scratch(Dims(1000, 1, 12), Dims(9, 1, 12), Dims(500, 1, 32), padding=(3, 0), stride=(2, 1)) \
        != 3920


def test_depthwise_scratch_channels_multiple_of_8_and_not():
    # ch % 8 == 0, not 3x3: int16 copies of filter and input, + 32
    assert esp32s3_depthwise_conv_scratch(Dims(1, 500, 32), Dims(1, 9, 32), Dims(1, 250, 32), ch_mult=1,
                                          padding=(0, 3), stride=(1, 2)) == 2 * (9 * 32 + 500 * 32) + 32 == 32608
    # over 48 KiB: tiled, filter plus filter_ht rows of input
    assert esp32s3_depthwise_conv_scratch(Dims(1, 1000, 32), Dims(1, 9, 32), Dims(1, 500, 32), ch_mult=1,
                                          padding=(0, 3), stride=(1, 2)) == 2 * 9 * 32 + 2 * 1 * 9 * 32 + 32
    # ch % 8 != 0 (12 -> 16): filter s16, input s16, output, bias/shift/mult, each start 16-aligned, + 16
    filter_bytes, input_bytes, out_bytes = 9 * 16 * 2, 100 * 16 * 2, 50 * 16
    assert esp32s3_depthwise_conv_scratch(Dims(1, 100, 12), Dims(1, 9, 12), Dims(1, 50, 12), ch_mult=1,
                                          padding=(0, 4), stride=(1, 2)) \
        == filter_bytes + input_bytes + out_bytes + 3 * 16 * 4 + 16 == 4496
    # 3x3, ch % 16 == 0, padded: filter + padded input + 16
    assert esp32s3_depthwise_conv_scratch(Dims(8, 8, 16), Dims(3, 3, 16), Dims(8, 8, 16), ch_mult=1,
                                          padding=(1, 1), stride=(1, 1)) == 9 * 16 + 10 * 10 * 16 + 16
    # three channels, multiplier 1: the fallback
    assert esp32s3_depthwise_conv_scratch(Dims(1, 50, 3), Dims(1, 9, 3), Dims(1, 50, 3), ch_mult=1,
                                          padding=(0, 4), stride=(1, 1)) == 32


def test_tflm_padding():
    assert tflm_padding(2, 1, 1000, 9, 500) == 3  # total 7, floored half
    assert tflm_padding(1, 1, 100, 5, 96) == 0
    assert tflm_padding(1, 1, 1, 1, 1) == 0


# --------------------------------------------------------------------------- planner


def test_greedy_plan_largest_first_ties_to_the_higher_id():
    a = PlannedBuffer("a", 32, 0, 2)
    b = PlannedBuffer("b", 32, 1, 3)
    offsets, total = greedy_plan([a, b])
    assert offsets == [32, 0] and total == 64  # equal sizes: TFLM places the later buffer first
    c = PlannedBuffer("c", 64, 3, 4)  # largest, placed first at 0; overlaps b only
    offsets, total = greedy_plan([a, b, c])
    assert offsets[2] == 0 and offsets[1] == 64 and offsets[0] == 0 and total == 96


def test_greedy_plan_fills_gaps():
    big = PlannedBuffer("big", 96, 0, 1)
    later = PlannedBuffer("later", 96, 2, 3)
    small = PlannedBuffer("small", 16, 1, 2)  # overlaps both in time
    offsets, total = greedy_plan([big, later, small])
    assert offsets == [0, 0, 96] and total == 112


def test_unknown_target_is_refused():
    with pytest.raises(ExportError, match="did you mean 'esp32s3'"):
        scratch_requests(b"", "esp32-s3")


def test_template_pins_the_esp_nn_release_of_the_rules():
    from edge_ecg import firmware as fw

    assert fw.esp_tflite_micro_version("esp-nn") == ESP_NN_VERSION
    manifest = (REPO / "firmware" / "esp32" / "main" / "idf_component.yml").read_text()
    block = manifest.split("# if runtime == tflm", 1)[1].split("# endif runtime", 1)[0]
    assert re.search(rf'^\s+espressif/esp-nn: "=={re.escape(ESP_NN_VERSION)}"$', block, re.M)


# --------------------------------------------------------------------------- real models


@cache
def dscnn_bytes() -> bytes:
    from test_aot import dscnn_case

    return dscnn_case()[0]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 3, 7, 11, 19])
def test_replay_equals_tflm_head_on_small_models(seed, tmp_path):
    from test_aot import random_case

    model_bytes, _ = random_case(seed)
    assert planned_head(model_bytes, "reference") == tflm_report(model_bytes, tmp_path)["head_bytes"]


@pytest.fixture(scope="module")
def dscnn_measured():
    from edge_ecg.export.emulator import measure_arena

    model = dscnn_bytes()
    return model, measure_arena(model)


def _live_lower_bound(model_bytes: bytes) -> int:
    """max over ops of (tensors live at the op + the op's esp32s3 scratch): any plan needs that much head."""
    buffers = planned_buffers(model_bytes)
    scratch = {r.op: r.bytes for r in scratch_requests(model_bytes, "esp32s3") if r.kernel == "esp-nn"}
    assert scratch, "the model has no conv with ESP32-S3 scratch: the bound would test nothing"
    return max(
        sum(b.size for b in buffers if b.first <= op + 1 <= b.last) + -(-n // ALIGNMENT) * ALIGNMENT
        for op, n in scratch.items()
    )


@pytest.mark.slow
def test_dscnn_replay_and_the_three_figures(dscnn_measured):
    model, measured = dscnn_measured
    arenas = target_arenas(model, measured)
    # the replay without ESP-NN scratch is TFLM's own plan
    assert arenas["replay"]["matches_tflm"] is True
    assert arenas["replay"]["reference_head_replayed"] == measured["head_bytes"]
    ref, esp32, s3 = (arenas["targets"][t] for t in TARGETS)
    assert ref["min_bytes"] == measured["min_bytes"] and ref["recommended_bytes"] == measured["recommended_bytes"]
    assert ref["scratch"] == [] and esp32["scratch"] == []
    # ESP32: the reference plan plus ESP-NN's NodeData, 16 B for each conv and depthwise op
    convs = sum(name in ("CONV_2D", "DEPTHWISE_CONV_2D") for name in (r.op_name for r in scratch_requests(model, "esp32s3")))
    assert esp32["min_bytes"] == measured["min_bytes"] + 16 * convs
    # ESP32-S3: at least the reference arena less its head plus what the layers ask for while their tensors live
    bound = measured["min_bytes"] - measured["head_bytes"] + _live_lower_bound(model)
    assert s3["min_bytes"] >= bound > measured["min_bytes"] + 16 * convs
    assert s3["recommended_bytes"] % 16 == 0 and s3["recommended_bytes"] >= s3["min_bytes"] + 1024
    # the default dscnn's largest request, measured independently with esp-nn 1.2.3
    assert max(op["bytes"] for op in s3["scratch"]) == 32608
    assert all(t["esp_nn_version"] == ESP_NN_VERSION and "esp_nn_get_conv_scratch_size_esp32s3" in t["rule"]
               for t in arenas["targets"].values())


@pytest.mark.slow
def test_dropping_the_scratch_term_breaks_the_bound(dscnn_measured, monkeypatch):
    """The bound of the test above is not met by a figure without ESP-NN's scratch."""
    from edge_ecg.export import arena

    model, measured = dscnn_measured
    bound = measured["min_bytes"] - measured["head_bytes"] + _live_lower_bound(model)
    monkeypatch.setattr(arena, "esp32s3_conv_scratch", lambda *a, **k: 0)
    monkeypatch.setattr(arena, "esp32s3_depthwise_conv_scratch", lambda *a, **k: 0)
    assert target_arenas(model, measured)["targets"]["esp32s3"]["min_bytes"] < bound


# --------------------------------------------------------------------------- export files and firmware


def _export_run(run: Path, model: bytes, measured: dict) -> dict:
    """run/export/ as `edge-ecg export` writes it, for the given model and arena measurement."""
    from edge_ecg.export.csources import write_c_sources

    arena = {**measured, **target_arenas(model, measured)}
    export = run / "export"
    export.mkdir(parents=True)
    (export / "model_int8.tflite").write_bytes(model)
    write_c_sources(export, model, class_names=["NORM", "MI", "STTC", "CD", "HYP"], thresholds=[0.5] * 5,
                    lead_mean=[0.0] * 12, lead_std=[1.0] * 12, arena_bytes=arena["recommended_bytes"],
                    arena_min_bytes=arena["min_bytes"],
                    arena_targets={t: v["recommended_bytes"] for t, v in arena["targets"].items()})  # fmt: skip
    (export / "export.json").write_text(json.dumps({"arena": arena}))
    return arena


@pytest.mark.slow
def test_model_config_gets_the_three_figures_and_is_otherwise_unchanged(dscnn_measured):
    from edge_ecg.export.csources import c_sources

    model, measured = dscnn_measured
    arenas = target_arenas(model, measured)["targets"]
    config = dict(class_names=["NORM", "MI", "STTC", "CD", "HYP"], thresholds=[0.5] * 5, lead_mean=[0.0] * 12,
                  lead_std=[1.0] * 12, arena_bytes=measured["recommended_bytes"], arena_min_bytes=measured["min_bytes"])
    plain = c_sources(model, **config)
    with_targets = c_sources(model, **config, arena_targets={t: v["recommended_bytes"] for t, v in arenas.items()})
    assert {k: v for k, v in plain.items() if k != "model_config.h"} == \
        {k: v for k, v in with_targets.items() if k != "model_config.h"}
    added = [line for line in with_targets["model_config.h"].splitlines() if line not in plain["model_config.h"].splitlines()]
    assert [re.match(r"#define (\w+) (\d+)", line).groups() for line in added[1:]] == [
        (f"ECG_ARENA_BYTES_{t.upper()}", str(arenas[t]["recommended_bytes"])) for t in TARGETS
    ]
    assert f"#define ECG_ARENA_BYTES {measured['recommended_bytes']}\n" in with_targets["model_config.h"]
    with pytest.raises(ExportError, match="reference figure"):
        c_sources(model, **config, arena_targets={**{t: 1 for t in TARGETS}})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_rendered_projects_carry_their_chips_figure(dscnn_measured, tmp_path):
    from edge_ecg import firmware as fw

    model, measured = dscnn_measured
    run = tmp_path / "run"
    arena = _export_run(run, model, measured)
    figures = {t: v["recommended_bytes"] for t, v in arena["targets"].items()}
    assert figures["esp32s3"] > figures["esp32"] >= figures["reference"]
    expected = {"esp32s3": figures["esp32s3"], "esp32": figures["esp32"], "esp32c3": figures["esp32"]}
    probe = tmp_path / "probe.c"
    probe.write_text('#include <stdio.h>\n#include "model_config.h"\n'
                     'int main(void) { printf("%s %d\\n", EE_ESP32_ARENA_TARGET, (int)EE_ESP32_ARENA_BYTES); return 0; }\n')
    for target, figure in expected.items():
        record = fw.render(run, target)
        assert record["arena_bytes"] == figure and record["esp_nn"] == ESP_NN_VERSION
        main = Path(record["project_dir"]) / "main"
        # the chip's macro, as ESP-IDF defines it from sdkconfig.h, picks the figure the runner allocates
        binary = tmp_path / f"probe_{target}"
        built = subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", f"-DCONFIG_IDF_TARGET_{target.upper()}=1",
                                f"-I{main / 'config'}", f"-I{main / 'model'}", str(probe), "-o", str(binary)],
                               capture_output=True, text=True)  # fmt: skip
        assert built.returncode == 0, built.stderr
        assert subprocess.run([str(binary)], capture_output=True, text=True).stdout.split() == [target, str(figure)]
    # another chip: no figure, and tflm_runner.cc refuses to build
    runner = (REPO / "firmware" / "esp32" / "main" / "tflm_runner.cc").read_text()
    assert "#if !defined(EE_ESP32_ARENA_BYTES)" in runner and "kArenaBytes = (static_cast<size_t>(EE_ESP32_ARENA_BYTES)" in runner
    assert re.search(r'fail\("AllocateTensors\(\) failed on %s: the export says it needs %u B', runner)
