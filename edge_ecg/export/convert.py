"""Keras model -> full-int8 TensorFlow Lite flatbuffer that TFLite Micro can run.

The conversion traces the model with a fixed batch of one record, so the graph has
static shapes throughout: no SHAPE / STRIDED_SLICE / PACK ops computing the batch
size at run time, and the input and output tensors are ``(1, T, L)`` and ``(1, C)``
int8. After conversion the flatbuffer is checked (int8 I/O, static shapes, every
operator registrable by the firmware's ``tflite::MicroMutableOpResolver``); any
problem is an :class:`ExportError` whose message says what is wrong.

The flatbuffer is read with the schema module shipped in the ``tflite_micro``
package, the same schema the firmware's interpreter parses.
"""

from __future__ import annotations

import numpy as np

from edge_ecg.preprocess import output_probabilities  # noqa: F401  (re-exported: export's callers use it from here)


class ExportError(ValueError):
    """The model cannot be exported for the microcontroller; the message says why."""


TFLM_RESOLVER: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack",
    "ZEROS_LIKE": "AddZerosLike",
}
"""TFLite builtin operator name -> the ``tflite::MicroMutableOpResolver`` method that registers it.

Method names as declared in TFLite Micro's ``tensorflow/lite/micro/micro_mutable_op_resolver.h``
(builtin operators only; control flow, resource variables and custom/signal ops are
left out). An operator missing here cannot be registered by the generated
``model_ops.h``, and export refuses the model.
"""


def is_quantization_aware(model) -> bool:
    """Whether the model holds tfmot quantization-aware-training layers."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer, quantize_wrapper

    kinds = (quantize_layer.QuantizeLayer, quantize_wrapper.QuantizeWrapper)
    return any(isinstance(layer, kinds) for layer in model.layers)


def deployable_model(model):
    """(model to convert, output kind): cut a final sigmoid off so the int8 model outputs logits.

    int8 probabilities crowd into a few steps near 0 and 1 and tie records that the
    float model ranks apart (measured: an 8-epoch dscnn lost 0.12 test macro AUC);
    logits spread over the whole int8 range. Models whose last layer is a sigmoid
    ``Activation`` (plain or QAT-wrapped) give ``"logit"``; others, e.g. a Dense with
    a built-in sigmoid, are converted as they are (``"probability"``).
    """
    from edge_ecg.tf import keras

    last = model.layers[-1]
    inner = getattr(last, "layer", last)  # tfmot's QuantizeWrapper holds the real layer
    if isinstance(inner, keras.layers.Activation) and getattr(inner.activation, "__name__", "") == "sigmoid":
        return keras.Model(model.inputs, model.layers[-2].output, name=f"{model.name}_logits"), "logit"
    return model, "probability"


# --------------------------------------------------------------------------- conversion


def check_representative(representative: np.ndarray, input_shape: tuple | None = None) -> np.ndarray:
    """The representative set as float32 (N, T, L); ExportError if empty, misshapen or not finite."""
    rep = np.asarray(representative)
    if rep.ndim != 3 or rep.shape[0] == 0:
        raise ExportError(f"representative data must be records (N, samples, leads) with N >= 1, got shape {rep.shape}")
    if input_shape is not None and tuple(rep.shape[1:]) != tuple(input_shape):
        raise ExportError(
            f"representative records are {rep.shape[1]} x {rep.shape[2]}, the model expects {input_shape[0]} x {input_shape[1]}"
        )
    rep = rep.astype(np.float32, copy=False)
    finite = np.isfinite(rep).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ExportError(
            f"representative data: {len(bad)} of {len(rep)} records contain NaN or inf values "
            f"(first at index {int(bad[0])}); int8 calibration needs finite, standardized records"
        )
    return rep


def to_int8_tflite(model, representative: np.ndarray) -> bytes:
    """Full-integer TFLite flatbuffer of ``model``: int8 ops, int8 input and output, batch fixed at 1.

    ``representative`` holds standardized float records (N, T, L) from the training
    folds; they are fed to the calibrator one at a time (batch 1). Works for float
    models and for tfmot quantization-aware models alike (for the latter the ranges
    learnt during QAT are used). The result is checked with :func:`check_tflite`.
    """
    from edge_ecg.tf import native_stderr_quiet, tf

    input_shape = tuple(model.input_shape[1:])
    if len(input_shape) != 2 or None in input_shape:
        raise ExportError(f"the model's input must be (samples, leads) records with fixed sizes, got {model.input_shape}")
    rep = check_representative(representative, input_shape)

    @tf.function
    def serve(x):
        return model(x, training=False)

    concrete = serve.get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative_dataset():
        for record in rep:
            yield [record[None]]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        with native_stderr_quiet():  # the converter's C++ prints "fully_quantize: 0, ..." on every call
            flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(exc).strip().splitlines()
        raise ExportError(
            "full-int8 TFLite conversion failed (a layer with no int8 TFLite builtin kernel?): "
            + (" | ".join(first[:6]) if first else type(exc).__name__)
        ) from exc
    check_tflite(flatbuffer)
    return bytes(flatbuffer)


# --------------------------------------------------------------------------- flatbuffer inspection


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _root(tflite_bytes: bytes):
    schema = _schema()
    buf = bytearray(tflite_bytes)
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ExportError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    return schema.Model.GetRootAsModel(buf, 0)


def _op_name(model, opcode_index: int) -> str:
    schema = _schema()
    code = model.OperatorCodes(opcode_index)
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _enum_names(schema.BuiltinOperator).get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        return f"CUSTOM:{custom.decode() if custom else '?'}"
    return name


def ops_in_model(tflite_bytes: bytes) -> list[str]:
    """Distinct builtin operator names used by the model's operators (all subgraphs), sorted."""
    model = _root(tflite_bytes)
    names = set()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            names.add(_op_name(model, graph.Operators(o).OpcodeIndex()))
    return sorted(names)


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def weight_zero_fraction(tflite_bytes: bytes) -> float:
    """Fraction of exactly-zero int8 weights over the filters of every conv and dense op.

    What magnitude pruning leaves in the file: the zeros are stored like any other
    value, so they shrink the .tflite only once compressed (gzip), never in flash.
    """
    model = _root(tflite_bytes)
    zeros = total = 0
    seen: set[int] = set()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if _op_name(model, op.OpcodeIndex()) not in WEIGHTED_OPS or op.InputsLength() < 2:
                continue
            tensor = graph.Tensors(op.Inputs(1))
            if tensor.Buffer() in seen:
                continue
            seen.add(tensor.Buffer())
            data = model.Buffers(tensor.Buffer()).DataAsNumpy()
            if isinstance(data, int):  # no data: not a constant filter
                continue
            values = np.frombuffer(data.tobytes(), np.int8)
            zeros += int((values == 0).sum())
            total += values.size
    return zeros / total if total else 0.0


def _tensor_info(graph, index: int) -> dict:
    schema = _schema()
    t = graph.Tensors(index)
    q = t.Quantization()
    scales = [float(v) for v in q.ScaleAsNumpy()] if q is not None and q.ScaleLength() else []
    zero_points = [int(v) for v in q.ZeroPointAsNumpy()] if q is not None and q.ZeroPointLength() else []
    shape = [int(v) for v in t.ShapeAsNumpy()] if t.ShapeLength() else []
    signature = [int(v) for v in t.ShapeSignatureAsNumpy()] if t.ShapeSignatureLength() else list(shape)
    return {
        "name": (t.Name() or b"").decode(),
        "dtype": _enum_names(schema.TensorType).get(t.Type(), str(t.Type())),
        "shape": shape,
        "shape_signature": signature,
        "scale": scales[0] if len(scales) == 1 else scales,
        "zero_point": zero_points[0] if len(zero_points) == 1 else zero_points,
    }


def model_io(tflite_bytes: bytes) -> dict:
    """Input and output tensors of the main subgraph: name, dtype, shape, shape signature, scale, zero point."""
    model = _root(tflite_bytes)
    if model.SubgraphsLength() < 1:
        raise ExportError("the TFLite model has no subgraph")
    graph = model.Subgraphs(0)
    return {
        "inputs": [_tensor_info(graph, int(i)) for i in graph.InputsAsNumpy()],
        "outputs": [_tensor_info(graph, int(i)) for i in graph.OutputsAsNumpy()],
    }


def check_tflite(tflite_bytes: bytes) -> dict:
    """Check the flatbuffer is what the firmware expects; returns :func:`model_io`.

    One int8 input (1, T, L) and one int8 output (1, C), each with one scale and zero
    point, static shapes (no -1 in the shape signature), and only operators the TFLM
    resolver table :data:`TFLM_RESOLVER` can register.
    """
    io = model_io(tflite_bytes)
    for kind, tensors, rank in (("input", io["inputs"], 3), ("output", io["outputs"], 2)):
        if len(tensors) != 1:
            raise ExportError(f"the model has {len(tensors)} {kind}s, the firmware handles exactly one")
        t = tensors[0]
        if t["dtype"] != "INT8":
            raise ExportError(
                f"model {kind} '{t['name']}' is {t['dtype']}, the firmware needs INT8 "
                "(convert with inference_input_type/inference_output_type = tf.int8)"
            )
        if any(d < 0 for d in t["shape_signature"]) or len(t["shape"]) != rank or t["shape"][0] != 1:
            raise ExportError(
                f"model {kind} '{t['name']}' has shape {t['shape']} (signature {t['shape_signature']}); "
                f"the firmware needs a static rank-{rank} shape with batch 1 (convert from a concrete "
                "function with a fixed batch of 1)"
            )
        if not isinstance(t["scale"], float) or not isinstance(t["zero_point"], int):
            raise ExportError(f"model {kind} '{t['name']}' must have one quantization scale and zero point, got {t['scale']!r}")
    unsupported = [op for op in ops_in_model(tflite_bytes) if op not in TFLM_RESOLVER]
    if unsupported:
        raise ExportError(
            f"the model uses operator(s) {', '.join(unsupported)}, which the firmware's TFLite Micro resolver "
            "(tflite::MicroMutableOpResolver) cannot register: no Add* method for it in "
            "edge_ecg.export.convert.TFLM_RESOLVER; replace the layer that produces it"
        )
    return io
