"""The int8 ``.tflite`` flatbuffer as a small graph: tensors, ops and their options.

Parsing uses the flatbuffer schema module shipped with the installed ``tflite-micro``
package (falling back to LiteRT's or TensorFlow's copy), never hand-parsed bytes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class AotError(ValueError):
    """The model uses an op, a type or a quantization scheme the generator does not
    support. Raised at generation time, never turned into wrong code.

    ``op_index`` and ``op_name`` name the offending op when there is one.
    """

    def __init__(self, message: str, *, op_index: int | None = None, op_name: str | None = None):
        if op_name is not None:
            message = f"op #{op_index} {op_name}: {message}"
        super().__init__(message)
        self.op_index = op_index
        self.op_name = op_name


_SCHEMA_MODULES = (
    "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
    "ai_edge_litert.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)


def schema() -> Any:
    """The first importable TFLite flatbuffer schema module."""
    for name in _SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("no TFLite flatbuffer schema module found (install tflite-micro)")


def _enum_names(enum_class: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


# TensorType -> (name, numpy dtype, bytes per element); only those that can appear.
_DTYPES = {
    0: ("float32", np.float32),
    1: ("float16", np.float16),
    2: ("int32", np.int32),
    3: ("uint8", np.uint8),
    4: ("int64", np.int64),
    6: ("bool", np.bool_),
    7: ("int16", np.int16),
    9: ("int8", np.int8),
    10: ("float64", np.float64),
}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...] = ()  # float32 values held exactly as Python floats
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant tensors only, already shaped

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def scale(self) -> float:
        """The per-tensor scale (the first one)."""
        return self.scales[0]

    @property
    def zero_point(self) -> int:
        return self.zero_points[0]

    @property
    def per_tensor(self) -> bool:
        return len(self.scales) == 1 and len(self.zero_points) == 1

    def describe(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.dtype}[{dims}]"


@dataclass
class Op:
    index: int
    name: str  # builtin operator name, e.g. "CONV_2D"
    inputs: tuple[int, ...]  # -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: Any = None  # the schema's *OptionsT object, or None

    def error(self, reason: str) -> AotError:
        return AotError(reason, op_index=self.index, op_name=self.name)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    consumers: dict[int, list[int]] = field(default_factory=dict)  # tensor -> op indices


def parse(model_bytes: bytes) -> Graph:
    """Read the flatbuffer's single subgraph. Raises AotError for what can't be handled
    (several subgraphs, custom ops, sparse or variable tensors, unknown types)."""
    fb = schema()
    buf = bytearray(model_bytes)
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises assorted errors
        raise AotError(f"not a readable .tflite flatbuffer: {exc}") from exc
    if not model.subgraphs:
        raise AotError("model has no subgraph")
    if len(model.subgraphs) != 1:
        raise AotError(f"model has {len(model.subgraphs)} subgraphs; only one is supported")
    sg = model.subgraphs[0]
    op_names = _enum_names(fb.BuiltinOperator)

    tensors = []
    for i, t in enumerate(sg.tensors or []):
        name = t.name.decode() if isinstance(t.name, bytes) else (t.name or f"t{i}")
        if t.type not in _DTYPES:
            raise AotError(f"tensor {i} {name!r} has unsupported type {t.type}")
        dtype, np_dtype = _DTYPES[t.type]
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        if any(d < 0 for d in shape):
            raise AotError(f"tensor {i} {name!r} has a dynamic shape {shape}")
        if t.sparsity is not None:
            raise AotError(f"tensor {i} {name!r} is sparse")
        if t.isVariable:
            raise AotError(f"tensor {i} {name!r} is a variable (stateful models unsupported)")
        scales: tuple[float, ...] = ()
        zero_points: tuple[int, ...] = ()
        qdim = 0
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) > 0:
            scales = tuple(float(np.float32(s)) for s in q.scale)
            zps = q.zeroPoint if q.zeroPoint is not None else [0] * len(scales)
            zero_points = tuple(int(z) for z in zps)
            qdim = int(q.quantizedDimension)
        data = None
        if t.buffer > 0 and model.buffers is not None and t.buffer < len(model.buffers):
            b = model.buffers[t.buffer]
            raw = None
            if b.data is not None and len(b.data) > 0:
                raw = np.asarray(b.data, dtype=np.uint8).tobytes()
            elif b.offset > 1 and b.size > 0:  # large models keep buffers after the flatbuffer
                raw = bytes(model_bytes[b.offset : b.offset + b.size])
            if raw is not None:
                count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                arr = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<"))
                if arr.size != count:
                    raise AotError(
                        f"tensor {i} {name!r}: buffer holds {arr.size} values, shape needs {count}"
                    )
                data = arr.astype(np_dtype).reshape(shape)
        tensors.append(Tensor(i, name, shape, dtype, scales, zero_points, qdim, data))

    ops = []
    for i, o in enumerate(sg.operators or []):
        code = model.operatorCodes[o.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            raise AotError(f"custom op {custom!r} is not supported", op_index=i, op_name=name)
        ops.append(
            Op(
                i,
                name,
                tuple(int(x) for x in (o.inputs if o.inputs is not None else ())),
                tuple(int(x) for x in (o.outputs if o.outputs is not None else ())),
                o.builtinOptions,
            )
        )

    graph = Graph(
        tensors,
        ops,
        tuple(int(x) for x in sg.inputs),
        tuple(int(x) for x in sg.outputs),
    )
    for op in ops:
        for t in op.inputs:
            if t >= 0:
                graph.consumers.setdefault(t, []).append(op.index)
    return graph
