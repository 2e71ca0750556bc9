"""Structured pruning: remove whole filters and rebuild a smaller dense ``dscnn``.

Magnitude pruning leaves zeros that a .tflite file still stores and computes; removing
channels shrinks flash and multiply-accumulates for real. Importance is the L1 norm of
each output filter (Li et al. 2017, "Pruning Filters for Efficient ConvNets"), taken
on the kernel scaled by its batch normalization (gamma / sqrt(var + eps)), so the
norm measures the filter's contribution after the BN that follows it.
"""

from __future__ import annotations

import math

import numpy as np


def _importance(conv_kernel: np.ndarray, bn) -> np.ndarray:
    gamma, _, _, var = bn.get_weights()
    scale = np.abs(gamma) / np.sqrt(var + bn.epsilon)
    per_filter = np.abs(conv_kernel).reshape(-1, conv_kernel.shape[-1]).sum(axis=0)
    return per_filter * scale


def _keep(importance: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the channels kept, in their original order (at least one)."""
    n_keep = max(1, math.ceil(len(importance) * (1.0 - fraction)))
    return np.sort(np.argsort(-importance, kind="stable")[:n_keep])


def structured_prune(model, fraction: float, arch: str = "dscnn", arch_kwargs: dict | None = None):
    """A ``dscnn`` with ``fraction`` of the filters of every layer removed, weights carried over.

    Only ``dscnn`` is supported: its layer names (``stem_conv``, ``block{i}_pointwise``
    ...) say which channels connect. Residual blocks would tie channel sets together
    and are refused rather than pruned inconsistently.
    """
    from edge_ecg.models import dscnn

    if arch != "dscnn":
        raise ValueError(f"structured pruning supports the dscnn architecture only, this run is {arch!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--structured must be a fraction in (0, 1), got {fraction!r}")
    kwargs = dict(arch_kwargs or {})
    if kwargs.get("residual"):
        raise ValueError("structured pruning of a residual dscnn is not supported (residual adds tie channel sets)")

    layer = model.get_layer
    n_blocks = sum(1 for l in model.layers if l.name.endswith("_pointwise"))
    convs = ["stem_conv"] + [f"block{i}_pointwise" for i in range(1, n_blocks + 1)]
    bns = ["stem_bn"] + [f"block{i}_pointwise_bn" for i in range(1, n_blocks + 1)]
    keeps = [_keep(_importance(layer(c).get_weights()[0], layer(b)), fraction) for c, b in zip(convs, bns)]

    kwargs["filters"] = [len(k) for k in keeps]
    inputs = model.input_shape
    small = dscnn(num_samples=inputs[1], num_leads=inputs[2], num_classes=model.output_shape[-1], **kwargs)

    def copy_bn(name: str, keep: np.ndarray) -> None:
        small.get_layer(name).set_weights([w[keep] for w in layer(name).get_weights()])

    small.get_layer("stem_conv").set_weights([layer("stem_conv").get_weights()[0][..., keeps[0]]])
    copy_bn("stem_bn", keeps[0])
    for i in range(1, n_blocks + 1):
        prev, cur = keeps[i - 1], keeps[i]
        depthwise = layer(f"block{i}_depthwise").get_weights()[0]  # (k, 1, channels, 1)
        small.get_layer(f"block{i}_depthwise").set_weights([depthwise[:, :, prev, :]])
        copy_bn(f"block{i}_depthwise_bn", prev)
        pointwise = layer(f"block{i}_pointwise").get_weights()[0]  # (1, 1, in, out)
        small.get_layer(f"block{i}_pointwise").set_weights([pointwise[:, :, prev, :][..., cur]])
        copy_bn(f"block{i}_pointwise_bn", cur)
    kernel, bias = layer("classifier").get_weights()
    small.get_layer("classifier").set_weights([kernel[keeps[-1]], bias])
    return small
