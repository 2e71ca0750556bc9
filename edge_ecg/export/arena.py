"""The tensor arena each firmware target needs, from the int8 ``.tflite``.

:func:`edge_ecg.export.emulator.measure_arena` measures the arena with TFLite Micro's
reference kernels (the host build of ``tflite_micro``). esp-tflite-micro's ESP-NN kernels
differ in two ways that change the arena:

* **Scratch buffers** (head, planned with the tensors): on ESP32-S3 the conv and
  depthwise-conv kernels call ``RequestScratchBufferInArena`` in Prepare with the sizes of
  esp-nn's ``esp_nn_get_conv_scratch_size_esp32s3`` / ``..._depthwise_conv_...``; softmax
  asks for ``4 * width`` on every ESP-NN build. ESP32 and ESP32-C3 use esp-nn's generic
  ("opt") conv functions, which ask for none.
* **Persistent data** (tail): their ``NodeData`` adds an ``int buffer_idx`` to the
  reference op data, and each scratch request adds a ``ScratchBufferHandle``.

Method: replay TFLM's memory planning in Python (which buffers, with which lifetimes,
packed exactly as ``GreedyMemoryPlanner`` packs them), once with the reference kernels'
scratch requests and once with the target's, then

    arena(target) = measured reference minimum + max(0, head(target) - head(reference))
                    + persistent extra(target)

The replay of the reference head is checked against TFLM's own report
(``replay.matches_tflm`` in the result); where they agree the formula is "measured minimum - measured
head + replayed target head". Sources read (facts, no code copied): TFLM
``micro_allocation_info.cc``, ``greedy_memory_planner.cc``, ``micro_allocator.cc``,
``kernels/reduce_common.cc``; esp-tflite-micro ``kernels/esp_nn/{conv,depthwise_conv,
softmax}.cc``; esp-nn :data:`ESP_NN_VERSION` ``src/convolution/esp_nn_conv_esp32s3.c``,
``esp_nn_depthwise_conv_s8_esp32s3.c``, ``src/softmax/*``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from edge_ecg.export.convert import ExportError

ESP_NN_VERSION = "1.2.3"
"""The esp-nn release whose scratch-size rules are transcribed below; the firmware
template pins it (``firmware/esp32/main/idf_component.yml``): another release asks for
other sizes (the default dscnn: 16,840 B with 1.2.0, 32,608 B with 1.2.3)."""

TARGETS = ("reference", "esp32", "esp32s3")
"""Arena figures export writes: TFLM reference kernels (host, Cortex-M), esp-tflite-micro
with ESP-NN and no conv scratch (ESP32; ESP32-C3 too: esp-tflite-micro builds its ESP-NN
kernels, with the generic esp-nn functions, for every chip), ESP-NN on ESP32-S3."""

TARGET_KERNELS = {
    "reference": "TFLite Micro reference kernels (host, Cortex-M)",
    "esp32": f"esp-tflite-micro ESP-NN kernels, esp-nn {ESP_NN_VERSION} generic functions: no conv scratch (ESP32, ESP32-C3)",
    "esp32s3": f"esp-tflite-micro ESP-NN kernels, esp-nn {ESP_NN_VERSION} ESP32-S3 functions: conv and depthwise-conv scratch",
}

ALIGNMENT = 16
"""MicroArenaBufferAlignment(): planned buffer sizes and persistent buffers are aligned to it."""

NODE_DATA_EXTRA_BYTES = ALIGNMENT
"""Tail bytes an ESP-NN conv/depthwise/softmax op adds: its NodeData is the reference op data
plus ``int buffer_idx`` (OpDataConv: 56 -> 60 bytes on a 32-bit target), allocated with
AllocatePersistentBuffer at 16-byte alignment, so the block grows by 0 or 16 bytes
depending on the tail's position at that moment: counted as 16 (an upper bound)."""

SCRATCH_HANDLE_BYTES = 4
"""sizeof(ScratchBufferHandle) on a 32-bit target (one ``uint8_t*``); all handles are one
persistent block, counted as ``ceil(4 * requests / 16) * 16`` (it shifts the tail by that
much at most, whatever the later allocations' alignment)."""

PERSISTENT_RULE = (
    f"persistent extra = {NODE_DATA_EXTRA_BYTES} B per ESP-NN conv, depthwise-conv and softmax op "
    "(NodeData's int buffer_idx, 16-byte aligned: upper bound) + the target's scratch requests x "
    f"{SCRATCH_HANDLE_BYTES} B (ScratchBufferHandle, 32-bit) rounded up to 16"
)
ARENA_TARGET_RULE = (
    "arena(target) = measured reference minimum + max(0, replayed head(target) - replayed head(reference)) "
    "+ persistent extra(target); head = TFLM's GreedyMemoryPlanner replayed over every non-constant tensor "
    "(producer op to last reader, inputs from the start, outputs to the end, sizes aligned to 16) plus each "
    f"scratch request [op, op]; ESP32-S3 scratch from esp-nn {ESP_NN_VERSION} "
    "esp_nn_get_conv_scratch_size_esp32s3 / esp_nn_get_depthwise_conv_scratch_size_esp32s3; " + PERSISTENT_RULE
)

# TfLiteType byte sizes of the dtypes edge_ecg.aot.graph.parse accepts.
_ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2, "int8": 1, "float64": 8}


def _align(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


# --------------------------------------------------------------------------- esp-nn rules


@dataclass(frozen=True)
class Dims:
    """esp-nn's ``data_dims_t`` as esp-tflite-micro fills it: width = dims[2], height = dims[1],
    channels = dims[3] of the NHWC tensor (for a filter, dims[3] too). Our (k, 1) kernels on
    (T, 1, C) tensors have height T (or k) and width 1."""

    width: int
    height: int
    channels: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.channels}"


def _u16(x: int) -> int:
    # esp-nn reads every dimension into a uint16_t.
    return int(x) & 0xFFFF


def esp32s3_conv_scratch(
    input: Dims, filter: Dims, output: Dims, *, padding: tuple[int, int], stride: tuple[int, int]
) -> int:
    """Bytes esp-nn's ``esp_nn_get_conv_scratch_size_esp32s3`` asks for.

    ``padding`` and ``stride`` are (width, height); padding is TFLM's OpDataConv padding
    (:func:`tflm_padding`). Transcribed from esp-nn :data:`ESP_NN_VERSION`.
    """
    in_wd, in_ht, in_ch = _u16(input.width), _u16(input.height), _u16(input.channels)
    f_wd, f_ht = _u16(filter.width), _u16(filter.height)
    out_ch = _u16(output.channels)
    pad_wd, pad_ht = _u16(padding[0]), _u16(padding[1])
    stride_wd, stride_ht = _u16(stride[0]), _u16(stride[1])

    align_buf = 64  # 16 alignment + 48 assembly margin
    if f_wd == 1 and f_ht == 1 and pad_wd == 0 and pad_ht == 0 and stride_wd == 1 and stride_ht == 1:
        ch8 = (in_ch + 7) & ~7
        transpose = 0 if in_wd * in_ht < 8 else 2 * (8 * ch8)
        input_scratch = in_wd * in_ht * ch8 if in_ch % 8 else 0
        return input_scratch + ch8 * out_ch + transpose + align_buf
    row = f_wd * in_ch
    window = f_wd * f_ht * in_ch
    if row < 16 and window >= 16:  # im2col path
        window16 = (window + 15) & ~15
        return out_ch * 4 + 16 + out_ch * window16 + 16 + window16 + align_buf
    ch16 = (in_ch + 15) & ~15
    input_scratch = 0 if pad_wd == 0 and pad_ht == 0 else (in_wd + 2 * pad_wd) * (in_ht + 2 * pad_ht) * in_ch
    filter_scratch = f_wd * f_ht * ch16 * out_ch
    filter_alignment = (row + 15) // 16 * 16 * f_ht * out_ch
    pad_right = max(0, (output.width * stride_wd + f_wd - 1) - in_wd)
    pad_bottom = max(0, (output.height * stride_ht + f_ht - 1) - in_ht)
    boundary = (in_wd + pad_right) * (in_ht + pad_bottom) * in_ch if pad_right > 0 or pad_bottom > 0 else 0
    return input_scratch + filter_scratch + filter_alignment + boundary + align_buf + out_ch * 4


def esp32s3_depthwise_conv_scratch(
    input: Dims, filter: Dims, output: Dims, *, ch_mult: int, padding: tuple[int, int], stride: tuple[int, int]
) -> int:
    """Bytes esp-nn's ``esp_nn_get_depthwise_conv_scratch_size_esp32s3`` asks for.

    ``input.channels`` is the input depth; ``padding``/``stride`` are (width, height).
    Transcribed from esp-nn :data:`ESP_NN_VERSION`.
    """
    in_wd, in_ht, ch = _u16(input.width), _u16(input.height), _u16(input.channels)
    f_wd, f_ht = _u16(filter.width), _u16(filter.height)
    mult = _u16(ch_mult)
    out_wd, out_ht = _u16(output.width), _u16(output.height)
    pad_wd, pad_ht = _u16(padding[0]), _u16(padding[1])
    stride_wd, stride_ht = _u16(stride[0]), _u16(stride[1])

    filter_size = f_wd * f_ht * ch * mult
    if mult == 1 and ch % 8 == 0:
        if f_wd == 3 and f_ht == 3:
            if ch % 16 == 0:
                if pad_wd or pad_ht:
                    pad_w, pad_h = pad_wd * 2, pad_ht * 2
                else:
                    pad_w = (out_wd * stride_wd + f_wd - 1) - in_wd
                    pad_h = (out_ht * stride_ht + f_ht - 1) - in_ht
                if pad_w or pad_h:
                    full_input = (in_wd + pad_w) * (in_ht + pad_h) * ch
                    if full_input <= 40 * 1024:
                        return filter_size + full_input + 16
                    return filter_size + (in_wd + pad_w) * f_ht * ch + 16  # tiled: filter_ht rows
                return filter_size + 16
            if ch >= 12:
                ch16 = (ch + 15) & ~15
                total_pad_wd = pad_wd * 2 + max(0, (out_wd * stride_wd + 2) - in_wd)
                total_pad_ht = pad_ht * 2 + max(0, (out_ht * stride_ht + 2) - in_ht)
                new_input = (in_wd + total_pad_wd) * (in_ht + total_pad_ht) * ch16
                return 9 * ch16 + new_input + out_wd * out_ht * ch16 + 64
            return 2 * (filter_size + in_wd * in_ht * ch) + 32
        total_s16 = 2 * (filter_size + in_wd * in_ht * ch)
        if total_s16 <= 48 * 1024:
            return total_s16 + 32
        return 2 * filter_size + 2 * in_wd * f_ht * ch + 32  # tiled: filter_ht rows of input
    if mult == 1 and ch > 3:
        ch8 = (ch + 7) & ~7
        filter_bytes = f_wd * f_ht * ch8 * 2
        input_start = _align(filter_bytes)
        out_start = _align(input_start + in_wd * in_ht * ch8 * 2)
        bias_start = _align(out_start + out_wd * out_ht * ch8)
        return bias_start + 3 * ch8 * 4 + 16
    if mult % 4 == 0:
        return 2 * (filter_size + in_wd * in_ht * ch) + 32
    return 32


def esp_nn_softmax_scratch(width: int) -> int:
    """Bytes esp-nn's softmax asks for on ESP32-S3 and with the generic functions: 4 * width
    (``width`` = input dims[1], as esp-tflite-micro passes it)."""
    return 4 * int(width)


def tflm_padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    """TFLM's ComputePadding (the OpDataConv padding ESP-NN is given): half the total, floored."""
    total = (out_size - 1) * stride + (filter_size - 1) * dilation + 1 - in_size
    return max(total, 0) // 2


# --------------------------------------------------------------------------- scratch requests


@dataclass(frozen=True)
class ScratchRequest:
    op: int  # operator index (the request's node)
    op_name: str
    bytes: int
    kernel: str  # whose request: "reference" (both builds) or "esp-nn"
    what: str


def _conv_dims(graph, op) -> tuple[Dims, Dims, Dims, tuple[int, int], tuple[int, int]]:
    inp, flt, out = (graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]])
    if len(inp.shape) != 4 or len(flt.shape) != 4 or len(out.shape) != 4:
        raise ExportError(f"op #{op.index} {op.name}: expected 4-D tensors, got {inp.shape}, {flt.shape}, {out.shape}")
    o = op.options
    stride = (int(o.strideW), int(o.strideH))
    dilation = (int(o.dilationWFactor or 1), int(o.dilationHFactor or 1))
    padding = (
        tflm_padding(stride[0], dilation[0], inp.shape[2], flt.shape[2], out.shape[2]),
        tflm_padding(stride[1], dilation[1], inp.shape[1], flt.shape[1], out.shape[1]),
    )
    dims = lambda s: Dims(width=int(s[2]), height=int(s[1]), channels=int(s[3]))  # noqa: E731
    return dims(inp.shape), dims(flt.shape), dims(out.shape), padding, stride


def scratch_requests(tflite_bytes_or_graph, target: str) -> list[ScratchRequest]:
    """Every ``RequestScratchBufferInArena`` of the model's kernels on ``target``, in Prepare order.

    Reference kernels (every target): MEAN/SUM (int8/int16: an int32 accumulator per output,
    then input-rank and axis-count ints) and REDUCE_MAX/MIN (the last two), as TFLM's
    ``reduce_common.cc``. ESP-NN (esp32, esp32s3): int8 SOFTMAX ``4 * dims[1]``; on esp32s3
    int8 CONV_2D and DEPTHWISE_CONV_2D the esp-nn sizes (a size of 0 requests nothing).
    """
    target = check_arena_target(target)
    graph = _graph(tflite_bytes_or_graph)
    requests: list[ScratchRequest] = []
    for op in graph.ops:
        t_in = graph.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None

        def add(n: int, kernel: str, what: str) -> None:
            requests.append(ScratchRequest(op.index, op.name, int(n), kernel, what))

        if op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"):
            axis = graph.tensors[op.inputs[1]]
            if op.name in ("MEAN", "SUM") and t_in.dtype in ("int8", "int16"):
                add(4 * graph.tensors[op.outputs[0]].size, "reference", "int32 accumulator per output")
            add(4 * len(t_in.shape), "reference", "input iterator (int per input dimension)")
            add(4 * axis.size, "reference", "resolved axes (int per axis)")
        if target == "reference" or t_in is None or t_in.dtype != "int8":
            continue
        if op.name == "SOFTMAX" and graph.tensors[op.outputs[0]].dtype == "int8":
            n = esp_nn_softmax_scratch(t_in.shape[1])
            if n > 0:
                add(n, "esp-nn", "softmax 4 * dims[1]")
        elif op.name == "CONV_2D" and target == "esp32s3":
            i, f, o, padding, stride = _conv_dims(graph, op)
            n = esp32s3_conv_scratch(i, f, o, padding=padding, stride=stride)
            if n > 0:
                add(n, "esp-nn", f"esp_nn_get_conv_scratch_size_esp32s3, w x h x c: in {i} filter {f} out {o}, "
                    f"pad {padding} stride {stride} (w, h)")  # fmt: skip
        elif op.name == "DEPTHWISE_CONV_2D" and target == "esp32s3":
            i, f, o, padding, stride = _conv_dims(graph, op)
            mult = int(op.options.depthMultiplier) or 1
            n = esp32s3_depthwise_conv_scratch(i, f, o, ch_mult=mult, padding=padding, stride=stride)
            if n > 0:
                add(n, "esp-nn", f"esp_nn_get_depthwise_conv_scratch_size_esp32s3, w x h x c: in {i} filter {f} "
                    f"out {o}, mult {mult} pad {padding} stride {stride} (w, h)")  # fmt: skip
    return requests


# --------------------------------------------------------------------------- TFLM's planner


@dataclass(frozen=True)
class PlannedBuffer:
    name: str
    size: int  # aligned to 16
    first: int  # allocation scope: 0 = before the first op, op i = i + 1
    last: int


def planned_buffers(tflite_bytes_or_graph, requests: list[ScratchRequest] = ()) -> list[PlannedBuffer]:
    """The buffers TFLM's CreatePlan hands the planner, in its order: tensors by index, then scratch requests.

    As ``AllocationInfoBuilder``: a tensor is planned when it has no constant data and a
    non-zero size; model inputs are created and used at scope 0, op i is scope i + 1 (its
    outputs are created there, its inputs and outputs used there), model outputs are used
    until the last scope; a scratch request lives in its op's scope only.
    """
    graph = _graph(tflite_bytes_or_graph)
    first = [-1] * len(graph.tensors)
    last = [-1] * len(graph.tensors)
    for t in graph.inputs:
        first[t] = 0 if first[t] == -1 else first[t]
        last[t] = 0
    scope = 0
    for op in graph.ops:
        scope += 1
        for t in op.outputs:
            if first[t] == -1:
                first[t] = scope
        for t in (*op.inputs, *op.outputs):
            if t >= 0:
                last[t] = scope
    for t in graph.outputs:
        if first[t] == -1:
            first[t] = scope
        last[t] = scope
    buffers = []
    for t in graph.tensors:
        nbytes = t.size * _ITEMSIZE[t.dtype]
        if not t.is_const and nbytes:
            buffers.append(PlannedBuffer(t.name, _align(nbytes), first[t.index], last[t.index]))
    for r in requests:
        buffers.append(PlannedBuffer(f"scratch op #{r.op} {r.op_name}", _align(r.bytes), r.op + 1, r.op + 1))
    return buffers


def greedy_plan(buffers: list[PlannedBuffer]) -> tuple[list[int], int]:
    """Offsets and total size as TFLM's GreedyMemoryPlanner computes them (all online-planned).

    Buffers are taken largest first (a stable bubble sort over the ids in reverse order, so
    ties go to the higher id); each goes at the lowest offset, walking the already placed
    buffers that overlap it in time in offset order, where the gap before the next one fits it.
    """
    n = len(buffers)
    if n == 0:
        return [], 0
    order = sorted(reversed(range(n)), key=lambda i: -buffers[i].size)  # stable, as ReverseSortInPlace
    offsets = [-1] * n
    placed: list[tuple[int, int]] = []  # (offset, id) in the planner's linked-list order
    for k, i in enumerate(order):
        want = buffers[i]
        candidate = 0
        if k > 0:
            active = [(o, j) for o, j in placed if not (buffers[j].first > want.last or want.first > buffers[j].last)]
            prior = None
            pos = 0
            while True:
                nxt = active[pos] if pos < len(active) else None
                if prior is not None:
                    candidate = max(candidate, prior[0] + buffers[prior[1]].size)
                if nxt is None or nxt[0] - candidate >= want.size:
                    break
                prior, pos = nxt, pos + 1
        offsets[i] = candidate
        # inserted after every entry whose offset is <= the candidate
        keys = [o for o, _ in placed]
        placed.insert(bisect.bisect_right(keys, candidate), (candidate, i))
    return offsets, max(offsets[i] + buffers[i].size for i in range(n))


def planned_head(tflite_bytes_or_graph, target: str = "reference") -> int:
    """The arena head (non-persistent bytes) TFLM plans for the model with ``target``'s kernels."""
    graph = _graph(tflite_bytes_or_graph)
    return greedy_plan(planned_buffers(graph, scratch_requests(graph, target)))[1]


# --------------------------------------------------------------------------- per target


def check_arena_target(target: str) -> str:
    if target not in TARGETS:
        import difflib

        close = difflib.get_close_matches(str(target), TARGETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ExportError(f"arena target must be one of {', '.join(TARGETS)}, got {target!r}{hint}")
    return target


def persistent_extra(tflite_bytes_or_graph, target: str) -> int:
    """Tail bytes ``target``'s kernels add to the reference kernels' (see :data:`PERSISTENT_RULE`)."""
    target = check_arena_target(target)
    if target == "reference":
        return 0
    graph = _graph(tflite_bytes_or_graph)
    node_data_ops = sum(op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX") for op in graph.ops)
    esp_requests = sum(r.kernel == "esp-nn" for r in scratch_requests(graph, target))
    # One handle per request, in one block: the reference kernels' handles are in the measured
    # figure already (8 bytes each on the 64-bit host, 4 on the chip), ESP-NN's are new.
    handles = _align(SCRATCH_HANDLE_BYTES * esp_requests)
    return NODE_DATA_EXTRA_BYTES * node_data_ops + handles


def target_arenas(tflite_bytes: bytes, measured: dict, *, recommend=None) -> dict:
    """Per target: ``min_bytes``, ``recommended_bytes`` and how they were derived.

    ``measured`` is :func:`edge_ecg.export.emulator.measure_arena`'s result (reference
    kernels); ``recommend`` maps a minimum to the recommended size (default: the emulator's
    ``recommended_arena``, the same rule as the reference figure).
    """
    from edge_ecg.export.emulator import recommended_arena

    recommend = recommend or recommended_arena
    graph = _graph(tflite_bytes)
    ref_head = planned_head(graph, "reference")
    measured_head = measured.get("head_bytes")
    targets = {}
    for target in TARGETS:
        requests = scratch_requests(graph, target)
        head = greedy_plan(planned_buffers(graph, requests))[1]
        extra = persistent_extra(graph, target)
        min_bytes = int(measured["min_bytes"]) + max(0, head - ref_head) + extra
        targets[target] = {
            "kernels": TARGET_KERNELS[target],
            "min_bytes": min_bytes,
            "recommended_bytes": int(recommend(min_bytes)),
            "head_bytes_replayed": head,
            "persistent_extra_bytes": extra,
            "scratch": [
                {"op": r.op, "op_name": r.op_name, "bytes": r.bytes, "what": r.what}
                for r in requests if r.kernel == "esp-nn"
            ],
            "scratch_bytes_total": sum(r.bytes for r in requests if r.kernel == "esp-nn"),
            "rule": ARENA_TARGET_RULE,
            "esp_nn_version": ESP_NN_VERSION,
        }
    return {
        "targets": targets,
        "replay": {
            "reference_head_replayed": ref_head,
            "reference_head_measured": measured_head,
            "matches_tflm": measured_head == ref_head,
        },
    }


def _graph(tflite_bytes_or_graph):
    from edge_ecg.aot.graph import AotError, Graph, parse

    if isinstance(tflite_bytes_or_graph, Graph):
        return tflite_bytes_or_graph
    try:
        return parse(bytes(tflite_bytes_or_graph))
    except AotError as exc:
        raise ExportError(f"cannot replay TFLite Micro's arena plan: {exc}") from exc


__all__ = [
    "ALIGNMENT", "ARENA_TARGET_RULE", "Dims", "ESP_NN_VERSION", "PlannedBuffer", "ScratchRequest", "TARGETS",
    "check_arena_target", "esp32s3_conv_scratch", "esp32s3_depthwise_conv_scratch", "esp_nn_softmax_scratch",
    "greedy_plan", "persistent_extra", "planned_buffers", "planned_head", "scratch_requests", "target_arenas",
    "tflm_padding",
]  # fmt: skip
