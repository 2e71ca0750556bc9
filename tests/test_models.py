"""Model architectures: exact sizes, shapes, MAC counting, argument checks. Builds only."""

from __future__ import annotations

import subprocess
import sys
from functools import cache

import numpy as np
import pytest

from edge_ecg.models import ARCHITECTURES, build, dscnn, summary
from edge_ecg.tf import keras

INT8_BUDGET_BYTES = 64 * 1024
MAC_BUDGET = 10_000_000


@cache
def built(name: str) -> keras.Model:
    """Each architecture with its defaults, built once per test session."""
    return build(name)


@pytest.mark.parametrize(
    ("name", "params", "non_trainable"),
    [
        ("cnn_base", 754_805, 0),
        ("inception_cnn", 3_785_005, 5_200),
        # PyTorch's 473,349 parameters are the trainable ones; the BN moving
        # statistics (buffers in PyTorch) are Keras's 3,072 non-trainable weights.
        ("resnet1d_wang", 476_421, 3_072),
        ("dscnn", 31_733, 1_216),
    ],
)
def test_parameter_counts_are_exact(name, params, non_trainable):
    model = built(name)
    sizes = summary(model)
    assert model.count_params() == sizes["params"] == params
    assert sizes["non_trainable_params"] == non_trainable
    assert sizes["trainable_params"] == params - non_trainable


def test_resnet1d_wang_trainable_count_equals_the_pytorch_model():
    # stem 12*7*128, three blocks of 128*128*(5+3), two 1x1 shortcuts, 9 BN(128) at
    # 2 each; head BN(256), Linear 256->128, BN(128), Linear 128->5.
    convs = 12 * 7 * 128 + 3 * 128 * 128 * (5 + 3) + 2 * 128 * 128
    head = 2 * 256 + (256 * 128 + 128) + 2 * 128 + (128 * 5 + 5)
    assert summary(built("resnet1d_wang"))["trainable_params"] == convs + 9 * 2 * 128 + head
    assert convs + 9 * 2 * 128 + head == 473_349


def test_dscnn_defaults_fit_the_microcontroller_budget():
    sizes = summary(built("dscnn"))
    assert sizes["macs"] == 3_466_864
    assert sizes["int8_bytes"] == 34_200
    assert sizes["int8_bytes"] <= INT8_BUDGET_BYTES
    assert sizes["macs"] <= MAC_BUDGET


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_one_record_in_five_probabilities_out(name):
    model = built(name)
    assert model.input_shape == (None, 1000, 12)
    assert model.output_shape == (None, 5)
    record = np.random.default_rng(0).standard_normal((1, 1000, 12), dtype=np.float32)
    probabilities = model(record, training=False).numpy()
    assert probabilities.shape == (1, 5)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_macs_of_a_tiny_model_match_a_hand_count():
    inputs = keras.Input((10, 1, 3))
    x = keras.layers.Conv2D(4, (3, 1), name="conv")(inputs)  # valid: 8 x 1 x 4 out
    x = keras.layers.DepthwiseConv2D((3, 1), strides=(2, 1), padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)  # folded into dw: no MACs, no bytes
    x = keras.layers.Flatten()(x)  # 4 x 1 x 4 = 16 features
    outputs = keras.layers.Dense(2, name="dense")(x)
    sizes = summary(keras.Model(inputs, outputs))

    conv_macs = 8 * 3 * 3 * 4  # out positions x kernel x in channels x filters
    dw_macs = 4 * 3 * 4  # out positions x kernel x channels
    dense_macs = 16 * 2
    macs = {layer["name"]: layer["macs"] for layer in sizes["layers"]}
    assert (macs["conv"], macs["dw"], macs["bn"], macs["dense"]) == (
        conv_macs,
        dw_macs,
        0,
        dense_macs,
    )
    assert sizes["macs"] == conv_macs + dw_macs + dense_macs == 368
    # 1 byte per weight + 8 per output channel (int32 bias + float32 scale).
    assert sizes["int8_bytes"] == (36 + 8 * 4) + (12 + 8 * 4) + (32 + 8 * 2)


def test_macs_of_cnn_base_match_a_hand_count():
    # (output length, kernel, in channels, filters) for each valid Conv1D on 1000 samples.
    convs = [(996, 5, 12, 50), (489, 10, 50, 100), (240, 5, 100, 100),
             (111, 10, 100, 200), (51, 5, 200, 150), (16, 10, 150, 200)]
    expected = sum(length * k * c_in * c_out for length, k, c_in, c_out in convs) + 200 * 5
    assert summary(built("cnn_base"))["macs"] == expected == 74_089_000


def test_unknown_architecture_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'dscnn'"):
        build("dscn")


def test_build_passes_arguments_through():
    model = build("dscnn", num_classes=3, filters=(8, 16), strides=(2, 2), name="tiny")
    assert model.name == "tiny" and model.output_shape == (None, 3)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"filters": ()}, "filters"),
        ({"filters": (32, 0, 64, 96, 128)}, "filters"),
        ({"strides": (2, 2)}, "strides"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_samples": 1000.0}, "num_samples"),
        ({"residual": "yes"}, "residual"),
        ({"residual": True}, "residual"),  # no block of the defaults keeps its shape
    ],
)
def test_dscnn_rejects_bad_arguments_by_name(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}\b") as error:
        dscnn(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(error.value)


def test_dscnn_residual_adds_only_where_shapes_match():
    model = dscnn(filters=(16, 16, 32, 32), strides=(2, 1, 2, 1), residual=True)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)] == [
        "block1_add",
        "block3_add",
    ]


def test_dscnn_uses_only_2d_layers_qat_and_tflite_support():
    one_d = (
        keras.layers.Conv1D,
        keras.layers.DepthwiseConv1D,
        keras.layers.SeparableConv1D,
        keras.layers.MaxPooling1D,
        keras.layers.AveragePooling1D,
        keras.layers.GlobalAveragePooling1D,
        keras.layers.Lambda,
    )
    model = built("dscnn")
    assert not [layer.name for layer in model.layers if isinstance(layer, one_d)]
    assert type(model).__name__ == "Functional"  # no subclassing: tfmot clones it


def test_dscnn_can_be_wrapped_for_quantization_aware_training():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    quantized = tfmot.quantization.keras.quantize_model(dscnn(filters=(8, 16), strides=(2, 2)))
    assert quantized.output_shape == (None, 5)


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, edge_ecg; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"


def test_dscnn_refuses_strides_longer_than_the_kernel():
    with pytest.raises(ValueError, match=r"stride must be <= kernel_size \(5\).*strides=\(8, 8\)"):
        dscnn(filters=(4, 8), strides=(8, 8), kernel_size=5)
