"""AOT C generator: bit-exact against the real TFLite Micro interpreter.

Random small architectures (and the project's dscnn, resnet1d_wang and inception_cnn
at full size) are converted to int8 with TensorFlow, turned into C by
:mod:`edge_ecg.aot`, compiled with ``-Werror`` and run through ctypes; every output
byte must equal ``tflite_micro``'s.
Also: the memory plan never overlaps live tensors, unsupported models raise
AotError, and generation is deterministic.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

import numpy as np
import pytest

from edge_ecg.aot import (
    SUPPORTED_OPS,
    AotError,
    AotModel,
    build_shared_library,
    generate,
    memory_plan,
    pack,
)
from edge_ecg.aot.graph import parse, schema

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

NUM_RANDOM_MODELS = 30
INPUTS_PER_MODEL = 4


# --- helpers ----------------------------------------------------------------------------


def to_int8_tflite(model, representative: np.ndarray) -> bytes:
    """The project's export conversion (full int8, int8 I/O, batch fixed at 1)."""
    from edge_ecg.export import to_int8_tflite as export_int8

    return export_int8(model, representative)


def convert_directly(model, representative: np.ndarray, *, int8_io: bool = True) -> bytes:
    """The same full-int8 conversion done here, for models the export stage rejects by
    design (outputs other than (1, classes), float input and output)."""
    from edge_ecg.tf import tf

    shape = [1, *representative.shape[1:]]
    fn = tf.function(lambda x: model(x, training=False))
    cf = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([cf], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def rep():
        for sample in representative:
            yield [sample[None].astype(np.float32)]

    converter.representative_dataset = rep
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


class Tflm:
    """The real TFLite Micro interpreter on one model."""

    def __init__(self, model_bytes: bytes):
        from tflite_micro.python.tflite_micro import runtime

        self._interp = runtime.Interpreter.from_bytes(model_bytes, arena_size=4 << 20)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_input(x, 0)
        self._interp.invoke()
        return np.array(self._interp.get_output(0))


def compile_model(model_bytes: bytes, tmp_path, name: str = "m") -> tuple[AotModel, dict]:
    src = tmp_path / f"{name}_src"
    report = generate(model_bytes, src)
    return AotModel(build_shared_library(src, tmp_path / f"lib{name}.so")), report


def op_names(model_bytes: bytes) -> list[str]:
    return [op.name for op in parse(model_bytes).ops]


def assert_bit_exact(model_bytes: bytes, aot: AotModel, inputs, label: str = "") -> None:
    tflm = Tflm(model_bytes)
    for i, x in enumerate(inputs):
        expected, got = tflm(x), aot.invoke(x)
        assert got.shape == expected.shape
        if not np.array_equal(got, expected):
            diff = np.flatnonzero(got.reshape(-1) != expected.reshape(-1))
            pytest.fail(
                f"{label} input {i}: {diff.size} of {got.size} bytes differ, first at {diff[0]}: "
                f"aot {got.reshape(-1)[diff[:8]]} vs tflm {expected.reshape(-1)[diff[:8]]}; "
                f"ops {op_names(model_bytes)}"
            )


def random_int8_inputs(rng, shape, n):
    return [rng.integers(-128, 128, size=shape, dtype=np.int8) for _ in range(n)]


# --- random architectures ---------------------------------------------------------------


def random_model(seed: int):
    """A small random tf_keras model over (T, C) records, and its (T, C)."""
    from edge_ecg.tf import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    # The ops added later (PAD, REDUCE_MAX, MUL, broadcast ADD) are drawn from their own
    # stream, so the architectures of the original stream stay as they were.
    extra = np.random.default_rng(50_000 + seed)
    steps = int(rng.integers(64, 201))
    leads = int(rng.integers(1, 7))
    two_d = bool(rng.random() < 0.5)  # dscnn style (T, 1, C) vs Conv1D style
    inputs = keras.Input((steps, leads))
    x = L.Reshape((steps, 1, leads))(inputs) if two_d else inputs

    def length(t):
        return t.shape[1]

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def conv(t, filters, kernel, stride, padding, activation, r=rng):
        if padding == "valid" and length(t) < kernel:
            padding = "same"
        use_bias = bool(r.random() < 0.7)
        if two_d:
            t = L.Conv2D(filters, (kernel, 1), strides=(stride, 1), padding=padding, use_bias=use_bias)(t)
        else:
            t = L.Conv1D(filters, kernel, strides=stride, padding=padding, use_bias=use_bias)(t)
        if r.random() < 0.4:
            t = L.BatchNormalization()(t)
        return act(t, activation)

    def act(t, activation):
        if activation == "relu":
            return L.ReLU()(t)
        if activation == "relu6":
            return L.ReLU(max_value=6.0)(t)
        return t

    def depthwise(t, kernel, stride, padding, multiplier, activation):
        if padding == "valid" and length(t) < kernel:
            padding = "same"
        if two_d:
            t = L.DepthwiseConv2D((kernel, 1), strides=(stride, 1), padding=padding, depth_multiplier=multiplier)(t)
        else:
            t = L.DepthwiseConv1D(kernel, strides=stride, padding=padding, depth_multiplier=multiplier)(t)
        return act(t, activation)

    def pool(t, kind, size, stride, padding):
        if padding == "valid" and length(t) < size:
            padding = "same"
        if two_d:
            layer = L.MaxPooling2D if kind == "max" else L.AveragePooling2D
            return layer((size, 1), strides=(stride, 1), padding=padding)(t)
        layer = L.MaxPooling1D if kind == "max" else L.AveragePooling1D
        return layer(size, strides=stride, padding=padding)(t)

    def global_pool(t, kind, keepdims=False):
        if kind == "max":
            layer = L.GlobalMaxPooling2D if two_d else L.GlobalMaxPooling1D
        else:
            layer = L.GlobalAveragePooling2D if two_d else L.GlobalAveragePooling1D
        return layer(keepdims=keepdims)(t)

    def extra_block(t):
        """ZeroPadding before a valid convolution (PAD), a gate (MUL), a per-channel
        squeeze-and-excite scale or shift (broadcast MUL or ADD of two activations)."""
        kind = str(extra.choice(["pad", "gate", "excite"]))
        channels = t.shape[-1]
        if kind == "pad":
            before, after = int(extra.integers(0, 4)), int(extra.integers(1, 4))
            t = (L.ZeroPadding2D(((before, after), (0, 0))) if two_d else L.ZeroPadding1D((before, after)))(t)
            return conv(t, int(extra.integers(2, 9)), int(extra.integers(1, 6)), int(extra.integers(1, 3)),
                        "valid", str(extra.choice(activations)), r=extra)
        if kind == "gate":
            g = L.Activation("sigmoid")(conv(t, channels, 3, 1, "same", "none", r=extra))
            return L.Multiply()([t, g])
        g = global_pool(t, str(extra.choice(["avg", "max"])), keepdims=True)
        if extra.random() < 0.5:
            g = L.Dense(channels, activation="sigmoid")(g)
            return L.Multiply()([t, g])
        return L.Add()([t, g])

    activations = ["relu", "relu6", "none"]
    for _ in range(int(rng.integers(2, 6))):
        kind = pick(["conv", "conv", "depthwise", "pool", "residual", "concat", "sigmoid"])
        channels = x.shape[-1]
        if kind == "conv":
            x = conv(x, int(rng.integers(2, 13)), int(rng.integers(1, 8)), int(rng.integers(1, 4)),
                     pick(["same", "valid"]), pick(activations))
        elif kind == "depthwise":
            x = depthwise(x, int(rng.integers(1, 8)), int(rng.integers(1, 3)), pick(["same", "valid"]),
                          pick([1, 1, 2]), pick(activations))
        elif kind == "pool" and length(x) >= 4:
            size = int(rng.integers(2, 4))
            x = pool(x, pick(["max", "avg"]), size, pick([1, 2, size]), pick(["same", "valid"]))
        elif kind == "residual":
            y = conv(x, channels, pick([1, 3, 5]), 1, "same", pick(activations))
            x = L.Add()([x, y])
            if rng.random() < 0.5:
                x = act(x, pick(["relu", "relu6"]))
        elif kind == "concat":
            a = conv(x, int(rng.integers(2, 9)), pick([1, 3, 5]), 1, "same", pick(activations))
            if rng.random() < 0.5:
                b = pool(x, pick(["max", "avg"]), 3, 1, "same")
            else:
                b = conv(x, int(rng.integers(2, 9)), pick([1, 3]), 1, "same", pick(activations))
            x = L.Concatenate()([a, b])
            if extra.random() < 0.5:  # not folded into a convolution: MUL and ADD
                x = L.BatchNormalization()(x)
        elif kind == "sigmoid":
            x = L.Activation("sigmoid")(x)
        if extra.random() < 0.3:
            x = extra_block(x)

    head = pick(["gap", "gap", "gap_keepdims", "flatten"])
    if extra.random() < 0.3:
        head = str(extra.choice(["max", "max_keepdims", "concat_pool"]))
    if head == "max":
        x = global_pool(x, "max")
    elif head == "max_keepdims":
        x = L.Flatten()(global_pool(x, "max", keepdims=True))
    elif head == "concat_pool":  # resnet1d_wang's head: [max, average]
        x = L.Concatenate()([global_pool(x, "max"), global_pool(x, "avg")])
    elif head == "gap":
        x = (L.GlobalAveragePooling2D() if two_d else L.GlobalAveragePooling1D())(x)
    elif head == "gap_keepdims":
        x = (L.GlobalAveragePooling2D(keepdims=True) if two_d else L.GlobalAveragePooling1D(keepdims=True))(x)
        x = L.Flatten()(x)
    else:
        x = L.Flatten()(x)
    if rng.random() < 0.5:
        x = L.Dense(int(rng.integers(3, 17)), activation=pick(["relu", None]))(x)
    x = L.Dense(int(rng.integers(2, 8)), activation=pick(["sigmoid", "sigmoid", None]))(x)
    model = keras.Model(inputs, x)

    # Non-trivial biases and batch-norm statistics (the initial ones are 0 and 1).
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = weights
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape),
            ])
        elif len(weights) == 2:
            layer.set_weights([weights[0], rng.normal(0, 0.2, weights[1].shape)])
    return model, steps, leads


@cache
def random_case(seed: int) -> tuple[bytes, float]:
    """The int8 model for ``seed`` and the spread of its calibration records."""
    model, steps, leads = random_model(seed)
    rng = np.random.default_rng(1000 + seed)
    sigma = float(rng.uniform(0.5, 2.0))
    representative = rng.normal(0, sigma, (6, steps, leads)).astype(np.float32)
    return to_int8_tflite(model, representative), sigma


def quantized_records(rng, report: dict, sigma: float, n: int) -> list[np.ndarray]:
    """Fresh records like the calibration ones, quantized as the model input expects."""
    shape, scale, zp = report["input"]["shape"], report["input"]["scale"], report["input"]["zero_point"]
    records = rng.normal(0, sigma, (n, *shape))
    return [np.clip(np.round(r / scale) + zp, -128, 127).astype(np.int8) for r in records]


# --- (a) property test: random architectures --------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(NUM_RANDOM_MODELS))
def test_random_architectures_are_bit_exact_with_tflite_micro(seed, tmp_path):
    model_bytes, sigma = random_case(seed)
    aot, report = compile_model(model_bytes, tmp_path)
    assert aot.input_shape == tuple(report["input"]["shape"])
    rng = np.random.default_rng(seed)
    half = INPUTS_PER_MODEL // 2
    inputs = quantized_records(rng, report, sigma, half) + random_int8_inputs(
        rng, aot.input_shape, INPUTS_PER_MODEL - half
    )
    assert_bit_exact(model_bytes, aot, inputs, label=f"seed {seed}")
    plan_is_valid(memory_plan(model_bytes), model_bytes)


@pytest.mark.slow
def test_random_architectures_cover_every_kernel():
    seen = set()
    for seed in range(NUM_RANDOM_MODELS):
        seen.update(op_names(random_case(seed)[0]))
    must = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "AVERAGE_POOL_2D",
            "MAX_POOL_2D", "ADD", "CONCATENATION", "LOGISTIC", "RESHAPE", "PAD", "REDUCE_MAX",
            "MUL"}
    assert must <= seen, f"never generated: {sorted(must - seen)}"
    assert seen <= set(SUPPORTED_OPS)


# Markers of each kernel variant in the generated C (a helper call or a comment).
KERNEL_VARIANTS = {
    "conv along one axis, 2 positions x 2 filters": "aot_dot_2x2(",
    "conv along one axis, last position": "aot_dot_2x1(",
    "conv, odd filter count": "aot_dot(",
    "depthwise along one axis, 4 channels": "aot_dw4(",
    "depthwise along one axis, remaining channels": "for (int t = 0; t <",
    "depthwise, multiplier > 1 (general windows)": "multiplier 2,",
    "requantization by right shift": "aot_out_r(",
    "requantization, general": "aot_out(",
    "border positions (padding)": "const int t0 = s0 < 0 ? -s0 : 0;",
    "conv along one axis, in place (output over its input)": "; in place: the output starts",
}


@pytest.mark.slow
def test_random_architectures_exercise_every_kernel_variant(tmp_path):
    seen = {name: [] for name in KERNEL_VARIANTS}
    for seed in range(NUM_RANDOM_MODELS):
        generate(random_case(seed)[0], tmp_path / str(seed))
        source = (tmp_path / str(seed) / "ecg_model.c").read_text()
        for name, marker in KERNEL_VARIANTS.items():
            if marker in source.split("AOT_OP", 1)[-1]:  # in the op functions, not the helpers
                seen[name].append(seed)
    assert all(seen.values()), f"never generated: {[n for n, s in seen.items() if not s]}"


def _mps2_or_skip() -> None:
    from edge_ecg.aot.cortex_m import tools_missing

    reason = tools_missing()
    if reason:
        pytest.skip(f"Cortex-M DSP path on QEMU mps2-an386: {reason}")


@pytest.mark.slow
def test_random_architectures_are_bit_exact_on_cortex_m4_dsp_path(tmp_path):
    """The same 30 models cross-compiled for the Cortex-M4 (ACLE DSP kernels) and run
    under QEMU: every output byte equals TFLM's."""
    _mps2_or_skip()
    from edge_ecg.aot.cortex_m import run_on_mps2

    for seed in range(NUM_RANDOM_MODELS):
        model_bytes, sigma = random_case(seed)
        src = tmp_path / f"m{seed}"
        report = generate(model_bytes, src)
        rng = np.random.default_rng(seed)
        inputs = quantized_records(rng, report, sigma, 2) + random_int8_inputs(
            rng, tuple(report["input"]["shape"]), 2)
        got = run_on_mps2(src, inputs, tmp_path / f"w{seed}")["outputs"]
        tflm = Tflm(model_bytes)
        for i, (x, y) in enumerate(zip(inputs, got)):
            assert np.array_equal(y.reshape(-1), tflm(x).reshape(-1)), f"seed {seed} input {i}: {op_names(model_bytes)}"


@pytest.mark.slow
def test_dscnn_full_size_is_bit_exact_on_cortex_m4_dsp_path(tmp_path):
    _mps2_or_skip()
    from edge_ecg.aot.cortex_m import run_on_mps2

    model_bytes, _ = dscnn_case()
    src = tmp_path / "dscnn"
    report = generate(model_bytes, src)
    rng = np.random.default_rng(1)
    scale, zp = report["input"]["scale"], report["input"]["zero_point"]
    inputs = [np.clip(np.round(r / scale) + zp, -128, 127).astype(np.int8) for r in rng.normal(0, 1, (3, 1000, 12))]
    inputs += random_int8_inputs(rng, (1000, 12), 2)
    result = run_on_mps2(src, inputs, tmp_path / "w", profile=True)
    tflm = Tflm(model_bytes)
    for x, y in zip(inputs, result["outputs"]):
        assert np.array_equal(y.reshape(-1), tflm(x[None]).reshape(-1))
    # Every compute op is timed, and the ops add up to the whole invoke (within the
    # 40-instruction tick resolution per op and record).
    ops = result["op_instructions"]
    assert set(ops) == {op["index"] for op in report["ops"] if op["function"]}
    total = sum(result["instructions"]) / len(inputs)
    assert abs(sum(ops.values()) - total) <= 40 * (len(ops) + 1)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [0.05, 1.0, 8.0])
def test_logistic_matches_for_every_int8_input(scale, tmp_path):
    """LOGISTIC is a 256-entry table of TFLM's fixed-point method: check all entries."""
    from edge_ecg.tf import keras

    inputs = keras.Input((256, 1))
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(inputs))
    rng = np.random.default_rng(7)
    model_bytes = convert_directly(model, rng.normal(0, scale, (4, 256, 1)).astype(np.float32))
    assert "LOGISTIC" in op_names(model_bytes)
    aot, _ = compile_model(model_bytes, tmp_path)
    every_value = np.arange(-128, 128, dtype=np.int8).reshape(1, 256, 1)
    assert_bit_exact(model_bytes, aot, [every_value])


def _two_dimensional_windows(L, inputs):
    x = L.Reshape((12, 8, 3))(inputs)
    x = L.Conv2D(5, (3, 3), strides=(2, 2), padding="same", activation="relu")(x)
    x = L.DepthwiseConv2D((3, 2), padding="same", depth_multiplier=2)(x)
    x = L.MaxPooling2D((2, 2), padding="same")(x)
    x = L.AveragePooling2D((3, 3), strides=1, padding="same")(x)
    x = L.Conv2D(4, (2, 1), padding="valid")(x)
    return L.Dense(3)(L.GlobalAveragePooling2D()(x))


def _dense_over_time(L, inputs):
    x = L.Dense(5, activation="relu")(inputs)  # FULLY_CONNECTED with 96 rows
    return L.Dense(4)(L.Flatten()(x))


def _every_window_clipped(L, inputs):
    # A sequence shorter than the kernel deep in a net (a searched dscnn shape hit this):
    # no output position has a full window, so the folded bias is never read.
    x = L.Reshape((96, 1, 3))(inputs)
    x = L.Conv2D(6, (24, 1), strides=(24, 1), activation="relu")(x)  # 4 positions
    x = L.DepthwiseConv2D((11, 1), padding="same", activation="relu")(x)
    x = L.Conv2D(5, (11, 1), padding="same")(x)
    return L.Dense(3)(L.GlobalAveragePooling2D()(x))


@pytest.mark.slow
@pytest.mark.parametrize("build", [_two_dimensional_windows, _dense_over_time, _every_window_clipped])
def test_general_windows_and_batched_fully_connected(build, tmp_path):
    """Shapes the ECG models never use but the kernels support: 2-D windows clipped
    on both axes, a FULLY_CONNECTED applied to every time step, and convolutions whose
    every window is clipped (compiled with -Werror: no unused constant)."""
    from edge_ecg.tf import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((96, 3))
    model = keras.Model(inputs, build(keras.layers, inputs))
    rng = np.random.default_rng(3)
    model_bytes = to_int8_tflite(model, rng.normal(0, 1, (6, 96, 3)).astype(np.float32))
    aot, _ = compile_model(model_bytes, tmp_path)
    assert_bit_exact(model_bytes, aot, random_int8_inputs(rng, aot.input_shape, 5))


def _randomize_batch_norms(model, rng) -> None:
    """Non-trivial batch-norm parameters (the initial 1, 0, 0, 1 fold into nothing)."""
    from edge_ecg.tf import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape),
            ])


def _zero_padding_and_global_max_1d(L, inputs):
    """resnet1d_wang's explicit padding before strided convolutions and its head."""
    x = L.ZeroPadding1D((1, 2))(inputs)
    x = L.Conv1D(6, 4, strides=2, activation="relu")(x)
    x = L.ZeroPadding1D(3)(x)
    x = L.Conv1D(8, 3, strides=2)(x)
    x = L.Concatenate()([L.GlobalMaxPooling1D()(x), L.GlobalAveragePooling1D()(x)])
    return L.Dense(4)(x)


def _zero_padding_and_global_max_2d(L, inputs):
    """Padding on both spatial axes (a copy loop, not one block) and REDUCE_MAX over
    two axes with keep_dims."""
    x = L.Reshape((12, 8, 3))(inputs)
    x = L.ZeroPadding2D(((1, 2), (0, 3)))(x)
    x = L.Conv2D(5, (3, 3), activation="relu")(x)
    x = L.GlobalMaxPooling2D(keepdims=True)(x)
    return L.Dense(3)(L.Flatten()(x))


def _batch_norm_after_concatenate(L, inputs):
    """inception_cnn's block ending: MUL and ADD by constant per-channel vectors,
    broadcast over time."""
    a = L.Conv1D(5, 1, padding="same", activation="relu")(inputs)
    b = L.Conv1D(4, 3, padding="same", activation="relu")(inputs)
    c = L.MaxPooling1D(3, strides=1, padding="same")(inputs)
    x = L.BatchNormalization()(L.Concatenate()([a, b, c]))
    x = L.MaxPooling1D(2)(x)
    return L.Dense(3)(L.GlobalAveragePooling1D()(x))


def _multiply_and_broadcast_activations(L, inputs):
    """MUL of two activations, element-wise and broadcast (1, T, C) * (1, 1, C), and
    ADD of a broadcast activation."""
    x = L.Conv1D(6, 3, padding="same")(inputs)
    g = L.Activation("sigmoid")(L.Conv1D(6, 5, padding="same")(inputs))
    x = L.Multiply()([x, g])
    s = L.Dense(6, activation="sigmoid")(L.GlobalAveragePooling1D(keepdims=True)(x))
    x = L.Multiply()([x, s])
    x = L.Add()([x, L.GlobalMaxPooling1D(keepdims=True)(x)])
    x = L.Multiply()([x, x])
    return L.Dense(4)(L.Flatten()(x))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("build", "ops"),
    [
        (_zero_padding_and_global_max_1d, {"PAD", "REDUCE_MAX"}),
        (_zero_padding_and_global_max_2d, {"PAD", "REDUCE_MAX"}),
        (_batch_norm_after_concatenate, {"MUL", "ADD"}),
        (_multiply_and_broadcast_activations, {"MUL", "ADD", "REDUCE_MAX"}),
    ],
    ids=["pad_1d_max", "pad_2d_max_keepdims", "bn_after_concat", "multiply"],
)
def test_pad_reduce_max_mul_and_broadcast_add(build, ops, tmp_path):
    from edge_ecg.tf import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((96, 3))
    model = keras.Model(inputs, build(keras.layers, inputs))
    rng = np.random.default_rng(5)
    _randomize_batch_norms(model, rng)
    model_bytes = to_int8_tflite(model, rng.normal(0, 1, (6, 96, 3)).astype(np.float32))
    assert ops <= set(op_names(model_bytes)), op_names(model_bytes)
    aot, report = compile_model(model_bytes, tmp_path)
    inputs = quantized_records(rng, report, 1.0, 3) + random_int8_inputs(rng, aot.input_shape, 3)
    assert_bit_exact(model_bytes, aot, inputs)
    plan_is_valid(memory_plan(model_bytes), model_bytes)
    if build is _batch_norm_after_concatenate:  # the constant vectors are broadcast
        broadcast = [op for op in report["ops"] if op["op"] in ("MUL", "ADD")]
        assert len(broadcast) == 2 and all(op["inputs"] == [op["output"]] for op in broadcast)


# --- (b) the project's dscnn at full size ------------------------------------------------


def calibrated_dscnn(seed: int = 0):
    """dscnn() defaults with random weights and batch-norm statistics set, layer by
    layer, to the batch statistics of random records (so activations are realistic)."""
    from edge_ecg.models import dscnn
    from edge_ecg.tf import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = dscnn()
    records = rng.normal(0, 1, (16, 1000, 12)).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            features = keras.Model(model.input, layer.input)(records, training=False).numpy()
            axes = tuple(range(features.ndim - 1))
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.5, beta.shape),
                features.mean(axes), features.var(axes) + 1e-3,
            ])
        elif isinstance(layer, keras.layers.Dense):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.3, bias.shape)])
    return model, records


@cache
def dscnn_case() -> tuple[bytes, np.ndarray]:
    model, records = calibrated_dscnn()
    return to_int8_tflite(model, records[:8]), records


@pytest.mark.slow
def test_dscnn_full_size_is_bit_exact_with_tflite_micro(tmp_path):
    model_bytes, records = dscnn_case()
    assert "DEPTHWISE_CONV_2D" in op_names(model_bytes)
    aot, report = compile_model(model_bytes, tmp_path)
    assert aot.input_shape == (1, 1000, 12) and aot.output_shape == (1, 5)
    rng = np.random.default_rng(1)
    # Ten records quantized as the model expects, ten of uniform random bytes.
    scale, zp = report["input"]["scale"], report["input"]["zero_point"]
    quantized = [
        np.clip(np.round(r / scale) + zp, -128, 127).astype(np.int8)[None]
        for r in rng.normal(0, 1, (10, 1000, 12))
    ]
    inputs = quantized + random_int8_inputs(rng, (1, 1000, 12), 10)
    assert_bit_exact(model_bytes, aot, inputs, label="dscnn")
    # The check means something only if the outputs are not stuck at one value.
    outputs = np.stack([aot.invoke(x) for x in inputs])
    assert len(np.unique(outputs)) > 5


@pytest.mark.slow
def test_only_the_double_rounding_variant_matches(tmp_path):
    """The pip tflite-micro build uses double rounding (TFLITE_SINGLE_ROUNDING unset):
    the single-rounding variant differs from it by one LSB somewhere."""
    model_bytes, _ = dscnn_case()
    src = tmp_path / "single"
    generate(model_bytes, src, rounding="single")
    single = AotModel(build_shared_library(src, tmp_path / "libsingle.so"))
    tflm = Tflm(model_bytes)
    inputs = random_int8_inputs(np.random.default_rng(2), (1, 1000, 12), 10)
    differing = [x for x in inputs if not np.array_equal(single.invoke(x), tflm(x))]
    assert differing, "single rounding matched TFLM: the test inputs do not discriminate"
    assert np.abs(single.invoke(differing[0]).astype(int) - tflm(differing[0])).max() <= 2


# --- (b') the project's reference architectures, as built by default ---------------------


@cache
def reference_case(name: str) -> bytes:
    """resnet1d_wang() or inception_cnn() with random weights and batch norms, converted
    as export converts (sigmoid cut, full int8) with a few random records."""
    from edge_ecg.export import to_int8_tflite as export_int8
    from edge_ecg.export.convert import deployable_model
    from edge_ecg.models import inception_cnn, resnet1d_wang
    from edge_ecg.tf import keras

    keras.utils.set_random_seed(11)
    model = {"resnet1d_wang": resnet1d_wang, "inception_cnn": inception_cnn}[name]()
    rng = np.random.default_rng(11)
    _randomize_batch_norms(model, rng)
    deployed, kind = deployable_model(model)
    assert kind == "logit"
    return export_int8(deployed, rng.normal(0, 1, (4, 1000, 12)).astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "ops", "n_inputs"),
    [
        ("resnet1d_wang", {"PAD", "REDUCE_MAX", "MEAN", "ADD", "CONCATENATION"}, 4),
        ("inception_cnn", {"MUL", "ADD", "MAX_POOL_2D", "CONCATENATION"}, 2),
    ],
    ids=["resnet1d_wang", "inception_cnn"],
)
def test_reference_architectures_are_bit_exact_with_tflite_micro(name, ops, n_inputs, tmp_path):
    """The int8 reference models at full size (inception_cnn: 3.8 M weights, 17 MB of
    C, a few seconds of gcc -O2): every op lowered, outputs identical to TFLM's."""
    model_bytes = reference_case(name)
    assert ops <= set(op_names(model_bytes))
    aot, report = compile_model(model_bytes, tmp_path)
    assert aot.input_shape == (1, 1000, 12) and aot.output_shape == (1, 5)
    rng = np.random.default_rng(12)
    half = n_inputs // 2
    inputs = quantized_records(rng, report, 1.0, half) + random_int8_inputs(
        rng, aot.input_shape, n_inputs - half
    )
    assert_bit_exact(model_bytes, aot, inputs, label=name)
    plan_is_valid(memory_plan(model_bytes), model_bytes)


# --- (c) memory plan ----------------------------------------------------------------------


def plan_is_valid(plan, model_bytes: bytes) -> None:
    """No two live allocations share bytes, except an op run in place (its input dying
    there) whose input starts at least its kernel's gap above its output."""
    from edge_ecg.aot import codegen
    from edge_ecg.aot.graph import parse

    steps = codegen._lower_all(parse(model_bytes), "double")
    in_place = {}
    for s in plan.in_place:
        src, dst = plan.location(steps[s].inputs[0]), plan.location(steps[s].output)
        assert src.last == s == dst.first and steps[s].in_place is not None
        assert src.offset - dst.offset >= steps[s].in_place, f"step {s}: input too close above its output"
        in_place[src.tensors, dst.tensors] = s
    arena = plan.arena
    for i, a in enumerate(arena):
        assert a.offset >= 0 and a.offset % plan.alignment == 0
        assert a.offset + a.size <= plan.arena_bytes
        for b in arena[i + 1 :]:
            if a.overlaps_in_time(b) and (a.tensors, b.tensors) not in in_place \
                    and (b.tensors, a.tensors) not in in_place:
                assert not a.overlaps_in_memory(b), f"{a.names} and {b.names} share bytes while live"
    assert plan.arena_bytes <= sum(a.size for a in arena) + plan.alignment * len(arena)
    assert plan.arena_bytes == max((a.offset + a.size for a in arena), default=0)


@pytest.mark.slow
def test_dscnn_memory_plan_never_overlaps_live_tensors():
    model_bytes, _ = dscnn_case()
    plan = memory_plan(model_bytes)
    plan_is_valid(plan, model_bytes)
    assert plan.arena_bytes <= plan.naive_bytes
    # The input lives in the arena (as in TFLM's), the output in the caller's buffer.
    bindings = {a.binding for a in plan.allocations}
    assert {"input", "output"} <= bindings
    assert plan.input in plan.arena and plan.input.first == 0
    # The stem convolution (step 1) runs in place: its output (500x32) grows over its
    # input (1000x12) instead of beside it (28,000 B), so the peak is the first
    # depthwise's input and output (500x32 + 250x32).
    assert plan.in_place == {1}
    assert plan.arena_bytes == 500 * 32 + 250 * 32


def _input_readers_overlap(plan, steps) -> list[int]:
    """Steps up to the input's last reader whose output bytes overlap the input's, but
    for an op run in place whose input starts its kernel's gap or more above its output."""
    tensor_in = plan.input
    return [
        s for s, step in enumerate(steps[: tensor_in.last + 1])
        if step.kind != "alias" and plan.location(step.output).binding != "output"
        and plan.location(step.output).overlaps_in_memory(tensor_in)
        and not (s in plan.in_place and tensor_in.offset - plan.location(step.output).offset >= step.in_place)
    ]


@pytest.mark.slow
def test_input_in_the_plan_is_not_overwritten_before_its_last_reader(tmp_path):
    """The input tensor shares the arena: no op may write over it until every op reading
    it has run. Checked on the plan, and by a plan whose input lifetime is cut short to
    step 0 (the reuse bug this guards against): its C model is then wrong."""
    from edge_ecg.aot import codegen, planner
    from edge_ecg.aot.graph import parse

    model_bytes, _ = dscnn_case()
    graph = parse(model_bytes)
    steps = codegen._lower_all(graph, "double")
    plan = planner.plan(graph, steps)
    assert plan.input.last >= 1  # the stem convolution (step 1) reads it
    assert _input_readers_overlap(plan, steps) == []

    # A planner that forgets the input is read at step 1 puts the stem's output on it.
    real_pack, real_plan = planner.pack, planner.plan

    def short_lived_input(requests, alignment=16, in_place=None):
        root = graph.inputs[0]
        cut = [(k, size, f, 0 if k == root else l) for k, size, f, l in requests]
        return real_pack(cut, alignment, in_place)

    planner.pack = short_lived_input
    try:
        broken = planner.plan(graph, steps)
        assert _input_readers_overlap(broken, steps), "the cut lifetime did not make the stem write over the input"
        planner.plan = lambda g, st, alignment=16: broken  # what generate() uses
        src = tmp_path / "broken"
        generate(model_bytes, src)
    finally:
        planner.pack, planner.plan = real_pack, real_plan
    # gcc itself sees the stem's in and out pointers alias (-Wrestrict): build it anyway.
    subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", "-Wno-restrict", "-o", str(tmp_path / "libbroken.so"),
                    str(src / "ecg_model.c")], check=True, capture_output=True)
    bad = AotModel(tmp_path / "libbroken.so")
    good, _ = compile_model(model_bytes, tmp_path)
    x = random_int8_inputs(np.random.default_rng(4), (1, 1000, 12), 3)
    tflm = Tflm(model_bytes)
    assert all(np.array_equal(good.invoke(v), tflm(v)) for v in x)
    assert not all(np.array_equal(bad.invoke(v), tflm(v)) for v in x)
    # Passing another buffer copies it into the input tensor first: same outputs.
    assert all(np.array_equal(good.invoke(v, in_place=False), tflm(v)) for v in x)


@pytest.mark.slow
def test_in_place_stem_reads_every_input_byte_before_overwriting_it(tmp_path):
    """The stem convolution runs in place (its output over its input): the generated
    function itself, called on one buffer at the plan's offsets and at its kernel's gap,
    gives the bytes it gives on separate buffers; with the input closer above the output
    it overwrites input it has not read yet and gives other bytes (the check can fail)."""
    import ctypes

    from edge_ecg.aot import codegen
    from edge_ecg.aot.graph import parse

    model_bytes, _ = dscnn_case()
    plan = memory_plan(model_bytes)
    steps = codegen._lower_all(parse(model_bytes), "double")
    (s,) = plan.in_place
    src_alloc, dst_alloc = plan.location(steps[s].inputs[0]), plan.location(steps[s].output)
    gap = steps[s].in_place
    assert src_alloc.offset - dst_alloc.offset >= gap
    report = generate(model_bytes, tmp_path / "m")
    fn = next(op["function"] for op in report["ops"] if op.get("in_place"))
    # The op functions are static: reach the stem from a file that includes the model.
    (tmp_path / "stem.c").write_text(
        f'#include "{tmp_path / "m" / "ecg_model.c"}"\n'
        f"void stem(const int8_t *in, int8_t *out) {{ {fn}(in, out); }}\n")
    lib = tmp_path / "libstem.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", f"-I{tmp_path / 'm'}", "-o", str(lib),
                    str(tmp_path / "stem.c")], check=True, capture_output=True, text=True)
    stem = ctypes.CDLL(str(lib)).stem
    n_in, n_out = src_alloc.size, dst_alloc.size
    x = np.random.default_rng(5).integers(-128, 128, n_in, dtype=np.int8)

    def run(displacement: int) -> np.ndarray:
        """The stem's output with its input ``displacement`` bytes above the output's start."""
        buf = np.zeros(max(n_out, displacement + n_in) + 64, np.int8)
        buf[displacement:displacement + n_in] = x
        stem(ctypes.c_void_p(buf.ctypes.data + displacement), ctypes.c_void_p(buf.ctypes.data))
        return buf[:n_out].copy()

    apart = np.zeros(n_out, np.int8)
    stem(ctypes.c_void_p(np.ascontiguousarray(x).ctypes.data), ctypes.c_void_p(apart.ctypes.data))
    assert np.array_equal(run(src_alloc.offset - dst_alloc.offset), apart)  # the plan's layout
    assert np.array_equal(run(gap), apart)  # the least gap the planner may use
    assert np.array_equal(run(n_out), apart)  # no overlap at all
    # Closer than the gap by a few output rows: unread input is overwritten.
    out_row = int(np.prod(report["ops"][steps[s].op.index]["output"][1:-1])) and report["ops"][steps[s].op.index]["output"][-1]
    assert not np.array_equal(run(gap - 4 * out_row), apart)
    assert not np.array_equal(run(0), apart)


def test_pack_lets_an_in_place_pair_overlap_only_at_its_gap():
    # key "in" (size 100, steps 0-1) feeds key "out" (size 120, steps 1-2) in place with gap 40.
    requests = [("in", 100, 0, 1), ("out", 120, 1, 2)]
    offsets, total = pack(requests, alignment=8, in_place={("in", "out"): 40})
    assert offsets["in"] - offsets["out"] >= 40 and offsets["in"] < offsets["out"] + 120
    assert total == offsets["in"] + 100 == 140
    offsets, total = pack(requests, alignment=8)  # no relation: side by side
    assert total == 220
    # The larger is placed first: an input placed at 0 leaves no room below it, so they
    # sit side by side (the relation never allows an input closer than its gap).
    offsets, total = pack([("in", 200, 0, 1), ("out", 120, 1, 2)], alignment=8, in_place={("in", "out"): 44})
    assert offsets == {"in": 0, "out": 200}
    # A third block live at step 1 still never overlaps either.
    offsets, total = pack(requests + [("other", 30, 1, 1)], alignment=8, in_place={("in", "out"): 40})
    for key, size in (("in", 100), ("out", 120)):
        assert offsets["other"] + 30 <= offsets[key] or offsets[key] + size <= offsets["other"]


@pytest.mark.slow
def test_reshape_from_input_to_output_becomes_a_copy(tmp_path):
    """Aliasing would make the caller's input and output one buffer: it is a memcpy."""
    from edge_ecg.tf import keras

    inputs = keras.Input((16, 3))
    model = keras.Model(inputs, keras.layers.Flatten()(inputs))
    model_bytes = convert_directly(model, np.random.default_rng(0).normal(size=(4, 16, 3)))
    assert op_names(model_bytes) == ["RESHAPE"]
    plan = memory_plan(model_bytes)
    assert plan.copies == {0} and plan.arena_bytes == 16 * 3  # the input tensor only
    aot, report = compile_model(model_bytes, tmp_path)
    assert report["activation_bytes"] == 16 * 3
    assert_bit_exact(model_bytes, aot, random_int8_inputs(np.random.default_rng(1), (1, 16, 3), 3))


def test_pack_never_overlaps_random_lifetimes():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 25))
        requests = []
        for key in range(n):
            first = int(rng.integers(0, 30))
            requests.append((key, int(rng.integers(1, 5000)), first, first + int(rng.integers(0, 8))))
        offsets, total = pack(requests, alignment=16)
        assert total <= sum(r[1] for r in requests) + 16 * n
        for i, (ka, sa, fa, la) in enumerate(requests):
            assert offsets[ka] % 16 == 0
            for kb, sb, fb, lb in requests[i + 1 :]:
                if fa <= lb and fb <= la:
                    oa, ob = offsets[ka], offsets[kb]
                    assert oa + sa <= ob or ob + sb <= oa, (trial, ka, kb)


# --- (d) errors ---------------------------------------------------------------------------


@pytest.mark.slow
def test_unsupported_op_raises_naming_the_op(tmp_path):
    from edge_ecg.tf import keras

    inputs = keras.Input((64, 3))
    x = keras.layers.Conv1D(4, 3, padding="same")(inputs)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model_bytes = convert_directly(model, np.random.default_rng(0).normal(size=(4, 64, 3)))
    assert "TANH" in op_names(model_bytes)
    with pytest.raises(AotError, match=r"op #\d+ TANH: .*not supported") as info:
        generate(model_bytes, tmp_path / "out")
    assert info.value.op_name == "TANH"
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow
def test_float_io_model_raises(tmp_path):
    from edge_ecg.tf import keras

    inputs = keras.Input((64, 3))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model_bytes = convert_directly(model, np.random.default_rng(0).normal(size=(4, 64, 3)), int8_io=False)
    with pytest.raises(AotError, match="float32"):
        generate(model_bytes, tmp_path)
    with pytest.raises(AotError, match="float32"):
        memory_plan(model_bytes)


def _edited(model_bytes: bytes, edit) -> bytes:
    """The model re-serialized after ``edit(ModelT)`` (flatbuffer object API)."""
    import flatbuffers

    fb = schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(bytearray(model_bytes), 0))
    edit(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dilationHFactor", 2, "dilation"),
        ("fusedActivationFunction", 4, "fused activation 4"),  # TANH
    ],
)
def test_unsupported_conv_options_raise(field, value, message, tmp_path):
    model_bytes, _ = dscnn_case()
    fb = schema()

    def edit(model):
        for op in model.subgraphs[0].operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == fb.BuiltinOperator.CONV_2D:
                setattr(op.builtinOptions, field, value)
                return

    with pytest.raises(AotError, match=rf"op #1 CONV_2D: .*{message}"):
        generate(_edited(model_bytes, edit), tmp_path)


def _hand_graph(specs, op_name, inputs, options=None):
    """A one-op Graph from ``specs``: (shape, scale, zero point, constant data or None)."""
    from edge_ecg.aot.graph import Graph, Op, Tensor

    tensors = []
    for i, (shape, scale, zp, data) in enumerate(specs):
        dtype = "int8" if data is None else str(np.asarray(data).dtype)
        quant = ((scale,), (zp,)) if scale is not None else ((), ())
        array = None if data is None else np.asarray(data).reshape(shape)
        tensors.append(Tensor(i, f"t{i}", tuple(shape), dtype, *quant, 0, array))
    op = Op(0, op_name, tuple(inputs), (len(specs) - 1,), options)
    return Graph(tensors, [op], (inputs[0],), (len(specs) - 1,)), op


def test_broadcast_loops_are_merged_and_unsupported_patterns_raise():
    from edge_ecg.aot.graph import Op, Tensor
    from edge_ecg.aot.kernels import _broadcast_loops

    op = Op(0, "MUL", (0, 1), (2,))

    def t(*shape):
        return Tensor(0, "t", shape, "int8", (0.1,), (0,))

    assert _broadcast_loops(op, [t(1, 5, 7), t(7)], t(1, 5, 7)) == [(5, (7, 0)), (7, (1, 1))]
    assert _broadcast_loops(op, [t(1, 1, 7), t(1, 5, 7)], t(1, 5, 7)) == [(5, (0, 7)), (7, (1, 1))]
    assert _broadcast_loops(op, [t(1, 5, 1, 7), t(1, 1, 1, 7)], t(1, 5, 1, 7)) == [(5, (7, 0)), (7, (1, 1))]
    assert _broadcast_loops(op, [t(1, 5, 7), t(1, 5, 7)], t(1, 5, 7)) == [(35, (1, 1))]
    assert _broadcast_loops(op, [t(1, 5, 7), t(1)], t(1, 5, 7)) == [(35, (1, 0))]
    assert _broadcast_loops(op, [t(4, 1), t(1, 3)], t(4, 3)) == [(4, (1, 0)), (3, (0, 1))]
    with pytest.raises(AotError, match="do not broadcast"):
        _broadcast_loops(op, [t(2, 3), t(3, 2)], t(2, 3))
    with pytest.raises(AotError, match="do not broadcast"):
        _broadcast_loops(op, [t(1, 5, 7), t(7)], t(5, 7))
    with pytest.raises(AotError, match="5 dimensions"):
        _broadcast_loops(op, [t(1, 2, 3, 4, 5), t(5)], t(1, 2, 3, 4, 5))


def test_unsupported_variants_of_pad_reduce_max_and_mul_raise():
    from edge_ecg.aot.kernels import lower

    fb = schema()
    reducer = fb.ReducerOptionsT()
    mul = fb.MulOptionsT()
    x = ((1, 8, 4), 0.1, 3, None)
    axis = ((1,), None, None, np.array([1], np.int32))
    cases = [
        # REDUCE_MAX does not requantize: TFLM rejects different quantization.
        ([x, axis, ((1, 4), 0.2, 3, None)], "REDUCE_MAX", (0, 1), reducer, "REDUCE_MAX rejects"),
        ([x, ((3, 2), None, None, np.array([0, 0, -1, 2, 0, 0], np.int32)), ((1, 9, 4), 0.1, 3, None)],
         "PAD", (0, 1), None, "negative paddings"),
        ([x, ((3, 2), None, None, np.array([0, 0, 1, 1, 0, 0], np.int64)), ((1, 10, 4), 0.1, 3, None)],
         "PAD", (0, 1), None, "constant int32"),
        # PADV2's value must be quantized as the output.
        ([x, ((3, 2), None, None, np.array([0, 0, 1, 1, 0, 0], np.int32)), ((), 0.1, 4, np.array(7, np.int8)),
          ((1, 10, 4), 0.1, 3, None)], "PADV2", (0, 1, 2), None, "quantized as the output"),
        ([((1, 8, 4), 0.1, 3, np.ones(32, np.int8)), ((4,), 0.1, 3, np.ones(4, np.int8)), ((1, 8, 4), 0.1, 3, None)],
         "MUL", (0, 1), mul, "both inputs are constants"),
        ([x, ((8,), 0.1, 0, np.ones(8, np.int8)), ((1, 8, 4), 0.1, 3, None)],
         "MUL", (0, 1), mul, "do not broadcast"),
    ]
    for specs, name, inputs, options, message in cases:
        graph, op = _hand_graph(specs, name, inputs, options)
        with pytest.raises(AotError, match=message):
            lower(graph, op, "double")


def test_not_a_model_raises(tmp_path):
    with pytest.raises(AotError):
        generate(b"definitely not a flatbuffer", tmp_path)


# --- arithmetic twins -------------------------------------------------------------------


def test_fixed_point_twins_follow_tflite_conventions():
    from edge_ecg.aot import fixedpoint as fp

    assert fp.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fp.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(2.0**-40) == (0, 0)  # flushed to zero like TFLite
    assert fp.quantize_multiplier(2.0**40, "single") == ((1 << 31) - 1, 30)  # saturated
    assert fp.srdhm(fp.INT32_MIN, fp.INT32_MIN) == fp.INT32_MAX
    # Ties: the doubling high multiply rounds up, the shift rounds away from zero.
    assert (fp.srdhm(3, 1 << 30), fp.srdhm(-3, 1 << 30)) == (2, -1)
    assert (fp.rdbpot(3, 1), fp.rdbpot(-3, 1)) == (2, -2)
    assert fp.mbqm(-3, 1 << 30, 0, "double") == -1 and fp.mbqm(-3, 1 << 30, 0, "single") == -1
    assert fp.mbqm(-6, 1 << 30, -1, "double") == -2 and fp.mbqm(-6, 1 << 30, -1, "single") == -1
    assert fp.round_half_away(2.5) == 3 and fp.round_half_away(-2.5) == -3
    assert fp.activation_range(3, 6.0 / 255, -128) == (-128, 127)  # RELU6 fills the range
    assert fp.activation_range(1, 0.1, 5) == (5, 127)
    table = fp.logistic_table(0.1, 0, "double")
    assert (table[0], table[128], table[255]) == (-128, 0, 127)  # inputs -12.8, 0, 12.7
    assert table == sorted(table)


# --- (e) determinism and (f) strict compilation -----------------------------------------


@pytest.mark.slow
def test_generation_is_deterministic(tmp_path):
    model_bytes, _ = dscnn_case()
    first = generate(model_bytes, tmp_path / "a")
    second = generate(model_bytes, tmp_path / "b")
    for kind in ("c", "h"):
        a = (tmp_path / "a" / f"ecg_model.{kind}").read_bytes()
        b = (tmp_path / "b" / f"ecg_model.{kind}").read_bytes()
        assert a == b
    first.pop("files"), second.pop("files")
    assert first == second
    source = (tmp_path / "a" / "ecg_model.c").read_text()
    assert "generated, do not edit" in source
    assert first["model_sha256"] in source
    header = (tmp_path / "a" / "ecg_model.h").read_text()
    assert "#ifndef ECG_MODEL_H_" in header
    assert f"#define ECG_MODEL_ACTIVATION_BYTES {first['activation_bytes']}" in header


@pytest.mark.slow
def test_generated_c_compiles_strictly_and_includes_only_the_c_library(tmp_path):
    model_bytes, _ = dscnn_case()
    report = generate(model_bytes, tmp_path, prefix="ecg_model")
    source = (tmp_path / "ecg_model.c").read_text()
    includes = {line.split()[1] for line in source.splitlines() if line.startswith("#include")}
    # <arm_acle.h> only under __ARM_FEATURE_DSP (the Cortex-M DSP path).
    assert includes == {"<stddef.h>", "<stdint.h>", "<string.h>", '"ecg_model.h"', "<arm_acle.h>"}
    guard = source.index("#if defined(__ARM_FEATURE_DSP)")
    assert guard < source.index("#include <arm_acle.h>") < source.index("#endif", guard)
    assert "malloc" not in source
    flags = ["-std=c99", "-pedantic", "-O2", "-Wall", "-Wextra", "-Werror", "-Wshadow",
             "-Wstrict-prototypes", "-Wmissing-prototypes", "-c"]
    result = subprocess.run(
        ["gcc", *flags, str(tmp_path / "ecg_model.c"), "-o", str(tmp_path / "ecg_model.o")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert report["activation_bytes"] > 0 and report["weights_bytes"] > 0
    assert [op["op"] for op in report["ops"]][-1] == "LOGISTIC"
