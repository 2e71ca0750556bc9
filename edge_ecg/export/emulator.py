"""Run the int8 model on the host as the microcontroller will, and size its tensor arena.

* :func:`tflm_run` uses the real TensorFlow Lite Micro interpreter (the ``tflite_micro``
  package: the TFLM C++ runtime with its reference kernels, built for the host).
* :func:`litert_run` uses LiteRT (TensorFlow Lite) with ``BUILTIN_REF``, its reference
  kernels, which compute the same integer arithmetic: the two agree bit for bit, so
  either is a reference for the other. (``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` would
  run LiteRT's optimized kernels instead, which need not round the same way.)
* :func:`measure_arena` finds the smallest ``tensor_arena`` size with which TFLM
  allocates the model.

Arena alignment: TFLM rounds the arena start up to 16 bytes
(``MicroArenaBufferAlignment()``) and uses what is left, so an arena that is not
16-byte aligned loses up to 15 bytes. The host interpreter allocates its arena with
``new uint8_t[]`` (16-byte aligned on 64-bit glibc), so the measured minimum is the
minimum for a ``alignas(16)`` arena, which is how the firmware should declare it.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

from edge_ecg.export.convert import ExportError, model_io
from edge_ecg.preprocess import dequantize_output, quantize_input  # the one Python twin of ee_preprocess.c
from edge_ecg.progress import track

DEFAULT_ARENA_BYTES = 16 * 1024 * 1024
"""Arena for host runs: generous; TFLM touches only what it plans."""

ARENA_ALIGNMENT = 16
ARENA_MARGIN_BYTES = 1024
ARENA_RULE = (
    "recommended = measured host minimum + 1024 bytes, rounded up to a multiple of 16; "
    "the host (64-bit pointers) needs about 5% more than a 32-bit Cortex-M, so this is "
    "a ceiling for a 32-bit target, plus headroom for the target's kernels' scratch buffers"
)


# --------------------------------------------------------------------------- (de)quantization


def _qparams(tensor: dict) -> tuple[float, int]:
    return float(tensor["scale"]), int(tensor["zero_point"])


def quantize_model_input(tflite_bytes: bytes, x_float: np.ndarray) -> np.ndarray:
    """Standardized float records -> int8 input with the model's input scale and zero point."""
    return quantize_input(x_float, *_qparams(model_io(tflite_bytes)["inputs"][0]))


def dequantize_model_output(tflite_bytes: bytes, q: np.ndarray) -> np.ndarray:
    """int8 outputs -> probabilities with the model's output scale and zero point."""
    return dequantize_output(q, *_qparams(model_io(tflite_bytes)["outputs"][0]))


# --------------------------------------------------------------------------- interpreters


def _check_records(tflite_bytes: bytes, x_int8: np.ndarray) -> tuple[np.ndarray, dict]:
    io = model_io(tflite_bytes)
    shape = tuple(io["inputs"][0]["shape"][1:])
    x = np.asarray(x_int8)
    if x.dtype != np.int8:
        raise ExportError(f"records must be int8 (quantize them with quantize_input), got {x.dtype}")
    if x.ndim != 3 or tuple(x.shape[1:]) != shape:
        raise ExportError(f"records must be (N, {shape[0]}, {shape[1]}) int8, got {x.shape}")
    return np.ascontiguousarray(x), io


def tflm_interpreter(tflite_bytes: bytes, arena_size: int = DEFAULT_ARENA_BYTES):
    """A TFLite Micro interpreter (all builtin kernels registered) with a ``arena_size`` tensor arena."""
    from tflite_micro.python.tflite_micro import runtime

    if arena_size < 1:
        raise ExportError(f"arena_size must be positive, got {arena_size}")
    try:
        return runtime.Interpreter.from_bytes(bytes(tflite_bytes), arena_size=int(arena_size))
    except RuntimeError as exc:
        raise ExportError(f"TFLite Micro cannot allocate the model in a {arena_size}-byte arena ({exc})") from exc


def tflm_run(
    tflite_bytes: bytes,
    x_int8: np.ndarray,
    *,
    arena_size: int = DEFAULT_ARENA_BYTES,
    progress: bool = False,
    description: str = "TFLM",
) -> np.ndarray:
    """int8 outputs (N, C) of the TFLite Micro interpreter, one record (batch 1) at a time."""
    x, io = _check_records(tflite_bytes, x_int8)
    interpreter = tflm_interpreter(tflite_bytes, arena_size)
    out = np.zeros((len(x), io["outputs"][0]["shape"][-1]), np.int8)
    for i in track(range(len(x)), total=len(x), description=description, enabled=progress):
        interpreter.set_input(x[i : i + 1], 0)
        interpreter.invoke()
        out[i] = interpreter.get_output(0).reshape(-1)
    return out


def litert_run(tflite_bytes: bytes, x_int8: np.ndarray, *, progress: bool = False, description: str = "LiteRT") -> np.ndarray:
    """int8 outputs (N, C) of LiteRT with its reference kernels (``BUILTIN_REF``), one record at a time."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x, io = _check_records(tflite_bytes, x_int8)
    interpreter = Interpreter(model_content=bytes(tflite_bytes), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    outp = interpreter.get_output_details()[0]["index"]
    out = np.zeros((len(x), io["outputs"][0]["shape"][-1]), np.int8)
    for i in track(range(len(x)), total=len(x), description=description, enabled=progress):
        interpreter.set_tensor(inp, x[i : i + 1])
        interpreter.invoke()
        out[i] = interpreter.get_tensor(outp).reshape(-1)
    return out


# --------------------------------------------------------------------------- arena


# Probing runs in a child process: TFLM does not check every allocation, and with an
# arena far too small to hold its own bookkeeping (a few KiB) the host interpreter can
# crash the process (SIGSEGV) instead of reporting a failure. A crash counts as "does
# not allocate" and the search carries on in a fresh child.
_PROBE_CHILD = r"""
import os, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime

model = open(sys.argv[1], "rb").read()
lo, hi = int(sys.argv[2]), int(sys.argv[3])

def allocates(n):
    print("probe", n, flush=True)
    try:
        runtime.Interpreter.from_bytes(model, arena_size=n)
        ok = True
    except RuntimeError:
        ok = False
    print("ok" if ok else "fail", n, flush=True)
    return ok

if hi <= 0:  # find an arena that allocates
    hi = max(1 << 16, 2 * lo)
    while not allocates(hi):
        lo = hi
        hi *= 2
        if hi > (1 << 31):
            print("nofit", flush=True)
            sys.exit(3)
while hi - lo > 1:
    mid = (lo + hi) // 2
    if allocates(mid):
        hi = mid
    else:
        lo = mid
print("min", hi, flush=True)
interpreter = runtime.Interpreter.from_bytes(model, arena_size=hi)
details = interpreter.get_input_details(0)
interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
interpreter.invoke()
sys.stderr.flush()
os.write(2, b"\n=== allocations at minimum ===\n")
interpreter.print_allocations()
"""

_ALLOC_TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_ALLOC_PART = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+) ")


def _parse_allocations(text: str) -> dict:
    report: dict = {"parts": {}}
    for line in text.splitlines():
        m = _ALLOC_TOTAL.search(line)
        if m:
            report[f"{m.group(1)}_bytes"] = int(m.group(2))
            continue
        m = _ALLOC_PART.search(line)
        if m:
            report["parts"][m.group(1)] = {"used_bytes": int(m.group(2)), "requested_bytes": int(m.group(3)), "count": int(m.group(4))}
    return report


def recommended_arena(min_bytes: int, margin: int = ARENA_MARGIN_BYTES, alignment: int = ARENA_ALIGNMENT) -> int:
    """``min_bytes + margin`` rounded up to a multiple of ``alignment`` (see :data:`ARENA_RULE`)."""
    return int(math.ceil((min_bytes + margin) / alignment) * alignment)


def measure_arena(tflite_bytes: bytes, *, timeout_s: float = 300.0) -> dict:
    """Smallest tensor arena (bytes) with which TFLite Micro allocates the model, found to the byte.

    Bisection over ``arena_size``: an arena allocates when constructing the interpreter
    (which runs ``AllocateTensors``) raises no error. Success is monotonic in the size,
    and the search ends with ``min_bytes`` allocating and ``min_bytes - 1`` failing.
    Returns ``min_bytes``; ``head_bytes`` (non-persistent: activations and scratch) and
    ``tail_bytes`` (persistent: tensor structs, quantization data, kernel op data) and
    the per-kind ``parts`` from TFLM's RecordingMicroAllocator report at that size;
    ``recommended_bytes`` for a 32-bit target and the rule behind it.
    """
    with tempfile.TemporaryDirectory(prefix="edge-ecg-arena-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as fh:
            fh.write(bytes(tflite_bytes))
        lo, hi, probes, crashes = 0, 0, 0, 0
        result = None
        for _attempt in range(64):
            proc = subprocess.run(
                [sys.executable, "-c", _PROBE_CHILD, path, str(lo), str(hi)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            pending = None
            for line in proc.stdout.splitlines():
                word, _, value = line.partition(" ")
                if word == "probe":
                    pending = int(value)
                    probes += 1
                elif word == "ok":
                    hi, pending = int(value), None
                elif word == "fail":
                    lo, pending = int(value), None
                elif word == "min":
                    result = int(value)
                elif word == "nofit":
                    raise ExportError("TFLite Micro cannot allocate the model even in a 2 GiB arena")
            if proc.returncode == 0 and result is not None:
                break
            if pending is None:  # died outside a probe: not an arena problem
                raise ExportError(f"arena measurement failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
            crashes += 1
            lo = pending  # it crashed in this probe: the arena is too small
        else:
            raise ExportError("arena measurement did not converge")
        report = _parse_allocations(proc.stderr.split("=== allocations at minimum ===", 1)[-1])
    return {
        "min_bytes": result,
        "min_minus_one_fails": lo == result - 1,
        "head_bytes": report.get("head_bytes"),
        "tail_bytes": report.get("tail_bytes"),
        "recorded_total_bytes": report.get("total_bytes"),
        "parts": report["parts"],
        "recommended_bytes": recommended_arena(result),
        "rule": ARENA_RULE,
        "alignment": ARENA_ALIGNMENT,
        "host_pointer_bits": 8 * np.dtype(np.intp).itemsize,
        "probes": probes,
        "probes_crashed": crashes,
        "method": "bisection to the byte over tflite_micro runtime.Interpreter(arena_size=...), "
        "allocation failure = RuntimeError; breakdown from the RecordingMicroAllocator report (print_allocations)",
    }
