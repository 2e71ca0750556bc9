"""TFLite Micro on the emulated Cortex-M4 (QEMU mps2-an386), reference and CMSIS-NN kernels:
the board of ``benchmarks/runtimes.py --tflm-src DIR`` (``edge_ecg.bench.tflm_qemu``).

Needs a tree: set EDGE_ECG_TFLM_SRC to a tflite-micro checkout with its third-party
downloads (and CMSIS-NN in tensorflow/lite/micro/tools/make/downloads/cmsis_nn for the
CMSIS-NN build); EDGE_ECG_TFLM_CACHE keeps the compiled library between sessions. The
run is test_boards.py's tiny trained and exported dscnn.
"""

from __future__ import annotations

import os
import shutil

import pytest

from edge_ecg.bench.boards import BoardError, qemu_instructions_per_inference
from edge_ecg.bench.tflm_board import find_tflm_tree
from edge_ecg.bench.tflm_qemu import ARM_CXX, build_mps2_tflm_board, cmsis_nn_dir, mps2_tflm_sources, tflm_arena_used
from test_boards import exported, records, run, tflm_outputs  # noqa: F401  (module fixtures: the tiny exported run)

TFLM_SRC = os.environ.get("EDGE_ECG_TFLM_SRC")
# The cross-compiled TFLM objects: the session's isolated cache (a cold build, minutes), or a
# folder that keeps them between sessions (the key names tree, compiler and flags).
TFLM_CACHE = os.environ.get("EDGE_ECG_TFLM_CACHE")
pytestmark = [
    pytest.mark.skipif(not TFLM_SRC, reason="set EDGE_ECG_TFLM_SRC to a tflite-micro checkout with its downloads"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in (ARM_CXX, "qemu-system-arm")),
                       reason="needs arm-none-eabi-g++ and qemu-system-arm"),
]


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["reference", "cmsis_nn"])
def test_tflm_on_qemu_gives_the_reference_outputs(kernels, run, exported, records, tflm_outputs, tmp_path):
    """The firmware core with tflm_runner.cc on mps2-an386: every int8 output equals the
    Python TFLM interpreter's, and the board reports the arena TFLM really uses."""
    tree = find_tflm_tree(TFLM_SRC)
    if kernels == "cmsis_nn":
        try:
            cmsis_nn_dir(tree)
        except BoardError as exc:
            pytest.skip(str(exc).splitlines()[0])
    elf = build_mps2_tflm_board(run, tmp_path, TFLM_SRC, kernels, cache_dir=TFLM_CACHE)
    info = tflm_arena_used(run, tmp_path, elf)
    assert info["target"] == "mps2-an386-tflm" and info["model_hash"] == exported["tflite"]["sha256"]
    assert 0 < info["arena_used_bytes"] <= info["arena_bytes"]
    few = records[:3]
    count = qemu_instructions_per_inference(run, tmp_path, records=[d for _, d in few], iterations=1, warmup=0,
                                            elf=elf, timeout=300.0)
    assert count["outputs_int8"] == [tflm_outputs[i] for i, _ in few]
    assert count["instructions_per_inference"] > 0


def test_cmsis_nn_kernels_replace_their_reference_namesakes():
    """TFLM's specialization: kernels/cmsis_nn/conv.cc replaces kernels/conv.cc, the library is added."""
    tree = find_tflm_tree(TFLM_SRC)
    try:
        cmsis_nn_dir(tree)
    except BoardError as exc:
        pytest.skip(str(exc).splitlines()[0])
    calls = ["AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected", "AddReshape", "AddMean"]
    reference = mps2_tflm_sources(tree, calls, "reference")
    optimized = mps2_tflm_sources(tree, calls, "cmsis_nn")
    kernels = tree.root / "tensorflow/lite/micro/kernels"
    assert kernels / "conv.cc" in reference and kernels / "conv.cc" not in optimized
    assert kernels / "cmsis_nn" / "conv.cc" in optimized and kernels / "conv_common.cc" in optimized
    assert kernels / "reduce.cc" in optimized  # MEAN has no CMSIS-NN kernel: the reference one stays
    assert any(p.name == "arm_convolve_s8.c" for p in optimized)
    assert not any(p.name.endswith("_f32.c") for p in optimized)
    with pytest.raises(BoardError, match="kernels must be one of"):
        mps2_tflm_sources(tree, calls, "esp_nn")
