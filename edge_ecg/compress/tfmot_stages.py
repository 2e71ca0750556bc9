"""Magnitude pruning and quantization-aware training with tensorflow-model-optimization."""

from __future__ import annotations

import math
import os

import numpy as np

from edge_ecg.tf import keras, tf


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def prune_magnitude(model, sparsity: float, total_steps: int, steps_per_epoch: int):
    """Wrap ``model`` for magnitude pruning to ``sparsity``; returns (model, step at which it is reached).

    ``PolynomialDecay`` is given an explicit frequency of a quarter epoch: its default
    of 100 steps would leave a short fine-tune (tens of steps per epoch) unpruned. The
    end step is a multiple of the frequency so the last update reaches the target, and
    it falls at 60 % of the fine-tune so the remaining epochs recover accuracy.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    tfmot = _tfmot()
    frequency = max(1, steps_per_epoch // 4)
    end_step = max(frequency, frequency * math.ceil(0.6 * total_steps / frequency))
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )
    return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule), end_step


def pruning_callbacks() -> tuple:
    """The batch hooks pruning needs in a training loop (tfmot's ``UpdatePruningStep``)."""
    return (_tfmot().sparsity.keras.UpdatePruningStep(),)


def strip_pruning(model):
    """Remove pruning wrappers; the weights (with their zeros) and outputs stay the same."""
    return _tfmot().sparsity.keras.strip_pruning(model)


def quantize(model, preserve_sparsity: bool = False):
    """Quantization-aware training wrappers (tfmot 8-bit default scheme).

    With ``preserve_sparsity`` the prune-preserving scheme keeps pruned weights at
    zero; plain QAT after pruning lets them grow back and the sparsity is lost.
    """
    tfmot = _tfmot()
    if not preserve_sparsity:
        return tfmot.quantization.keras.quantize_model(model)
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.quantize_apply(annotated, scheme)


def load_model(path: str | os.PathLike):
    """Load a float, pruned or QAT model saved by edge-ecg (QAT layers need tfmot's scope)."""
    with _tfmot().quantization.keras.quantize_scope():
        return keras.models.load_model(path, compile=False)


def kernel_zero_fractions(model) -> dict[str, float]:
    """Fraction of exactly-zero weights of each convolution and dense kernel, by layer name.

    tfmot's magnitude pruning leaves depthwise kernels dense (measured with tfmot
    0.8.1), so their fraction stays near 0.
    """
    out = {}
    for w in model.weights:
        layer, _, leaf = w.name.rpartition("/")
        if leaf in ("kernel:0", "depthwise_kernel:0"):
            out[layer.split("/")[-1].removeprefix("quant_")] = float(np.mean(w.numpy() == 0))
    return out


def kernel_sparsity(model) -> float:
    """Fraction of exactly-zero weights over all convolution and dense kernels together."""
    zeros = total = 0
    for w in model.weights:
        if w.name.rpartition("/")[2] in ("kernel:0", "depthwise_kernel:0"):
            values = w.numpy()
            zeros += int(np.sum(values == 0))
            total += values.size
    return zeros / total if total else 0.0
