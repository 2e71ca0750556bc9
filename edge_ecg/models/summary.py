"""Size and cost of a Keras model: parameters, multiply-accumulates, int8 weight bytes."""

from __future__ import annotations

import math
from typing import Any

from edge_ecg.tf import keras

# Transposed convolutions subclass the plain ones, so they are told apart first.
_TRANSPOSED_CONVS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_SEPARABLE_CONVS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DEPTHWISE_CONVS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_FOLDS_BATCH_NORM = _CONVS + _DEPTHWISE_CONVS + _SEPARABLE_CONVS + (keras.layers.Dense,)

BIAS_BYTES = 4
"""An int32 bias per output channel (the folded batch norm's shift, if no bias)."""
SCALE_BYTES = 4
"""A float32 quantization scale per output channel (per-channel int8 weights)."""
UNFOLDED_BN_BYTES = 2
"""A batch norm not right after a conv/dense becomes int8 Mul and Add constants."""


def summary(model: keras.Model) -> dict[str, Any]:
    """Parameters, multiply-accumulates (MACs) and int8 weight bytes of ``model``.

    Returns a dict with:

    - ``params``, ``trainable_params``, ``non_trainable_params``: as Keras counts them
      (batch-norm moving statistics are non-trainable).
    - ``macs``: multiply-accumulates for one input record (batch size 1), summed over
      Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, the transposed
      convolutions and Dense. A convolution or Dense costs (output positions) x
      (kernel weights), e.g. out_length * k * in_channels * filters for Conv1D and
      out_length * k * channels for a depthwise one (transposed: input positions x
      kernel weights). Pooling, batch norm, activations, Add and Concatenate are not
      counted: they are not MACs (a batch norm is folded into the layer before it, or
      is an elementwise scale and shift).
    - ``int8_bytes``: estimated weight memory once converted to int8 TensorFlow Lite::

          sum over conv/dense layers of  kernel weights * 1
                                        + output channels * (4 + 4)
        + sum over batch norms not directly after a conv/dense of  channels * 2

      i.e. one byte per int8 weight, an int32 bias (BIAS_BYTES) and a float32
      per-channel scale (SCALE_BYTES) per output channel, with batch norms after a
      conv or dense folded into them (no bytes of their own) and the others kept as
      int8 multiply and add constants. Flatbuffer overhead (zero points, tensor
      metadata, graph) is not included; the real file is somewhat larger.
    - ``layers``: one dict per layer, in model order, with ``name``, ``type``,
      ``macs``, ``params`` and ``int8_bytes`` (nested models are walked into;
      wrappers such as tfmot's quantize or prune wrappers are read through).

    The model must be built with a fixed input shape (every dimension but the batch).
    """
    layers = [_layer_summary(layer) for layer in _leaf_layers(model)]
    trainable = _count_weights(model.trainable_weights)
    non_trainable = _count_weights(model.non_trainable_weights)
    return {
        "params": trainable + non_trainable,
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
        "macs": sum(layer["macs"] for layer in layers),
        "int8_bytes": sum(layer["int8_bytes"] for layer in layers),
        "layers": layers,
    }


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(_leaf_layers(layer))
        else:
            leaves.append(layer)
    return leaves


def _layer_summary(layer: keras.layers.Layer) -> dict[str, Any]:
    # Shapes come from the outer layer; the kind of computation from the wrapped one.
    inner = layer.layer if isinstance(layer, keras.layers.Wrapper) else layer
    macs, weight_bytes = _macs_and_int8_bytes(layer, inner)
    return {
        "name": layer.name,
        "type": type(inner).__name__,
        "macs": macs,
        "params": layer.count_params(),
        "int8_bytes": weight_bytes,
    }


def _macs_and_int8_bytes(
    layer: keras.layers.Layer, inner: keras.layers.Layer
) -> tuple[int, int]:
    per_channel_bytes = BIAS_BYTES + SCALE_BYTES
    if isinstance(inner, _TRANSPOSED_CONVS):
        kernel = _size(inner.kernel)
        positions = _positions(layer.input_shape, inner.data_format)
        return positions * kernel, kernel + per_channel_bytes * inner.filters
    if isinstance(inner, _SEPARABLE_CONVS):
        depthwise, pointwise = _size(inner.depthwise_kernel), _size(inner.pointwise_kernel)
        positions = _positions(layer.output_shape, inner.data_format)
        # TFLite runs it as a depthwise then a 1x1 convolution, each with its channels.
        depthwise_channels = inner.depthwise_kernel.shape[-2] * inner.depthwise_kernel.shape[-1]
        weight_bytes = (
            depthwise + pointwise + per_channel_bytes * (depthwise_channels + inner.filters)
        )
        return positions * (depthwise + pointwise), weight_bytes
    if isinstance(inner, _DEPTHWISE_CONVS):
        kernel = _size(inner.depthwise_kernel)
        channels = inner.depthwise_kernel.shape[-2] * inner.depthwise_kernel.shape[-1]
        positions = _positions(layer.output_shape, inner.data_format)
        return positions * kernel, kernel + per_channel_bytes * channels
    if isinstance(inner, _CONVS):
        kernel = _size(inner.kernel)
        positions = _positions(layer.output_shape, inner.data_format)
        return positions * kernel, kernel + per_channel_bytes * inner.filters
    if isinstance(inner, keras.layers.Dense):
        kernel = _size(inner.kernel)
        # A Dense on a sequence applies its kernel at every position but the last axis.
        positions = math.prod(layer.output_shape[1:-1])
        return positions * kernel, kernel + per_channel_bytes * inner.units
    if isinstance(inner, keras.layers.BatchNormalization):
        if _follows_conv_or_dense(layer):
            return 0, 0
        return 0, UNFOLDED_BN_BYTES * _size(inner.gamma if inner.scale else inner.moving_mean)
    return 0, 0


def _positions(shape: tuple, data_format: str) -> int:
    """Spatial positions of a (batch, ..., channels) or (batch, channels, ...) shape."""
    spatial = shape[2:] if data_format == "channels_first" else shape[1:-1]
    if any(dim is None for dim in spatial):
        raise ValueError(
            f"summary needs a fixed input shape to count MACs, got a layer shape {shape}"
        )
    return math.prod(spatial)


def _follows_conv_or_dense(layer: keras.layers.Layer) -> bool:
    # A batch norm whose input is a conv/dense output is folded into that layer's
    # weights and bias by the TFLite converter.
    for node in layer.inbound_nodes:
        producers = node.inbound_layers
        producers = producers if isinstance(producers, list) else [producers]
        if len(producers) == 1:
            producer = producers[0]
            producer = producer.layer if isinstance(producer, keras.layers.Wrapper) else producer
            if isinstance(producer, _FOLDS_BATCH_NORM):
                return True
    return False


def _size(variable) -> int:
    return math.prod(int(dim) for dim in variable.shape)


def _count_weights(weights) -> int:
    # A weight shared by two layers counts once.
    unique = {id(weight): weight for weight in weights}
    return sum(_size(weight) for weight in unique.values())
