"""Magnitude pruning and quantization-aware training with tensorflow-model-optimization."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from edge_ecg.tf import keras


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


def _tfmot_load_fixes() -> dict:
    """tfmot layer classes whose ``build_from_config`` matches how they were built when saved.

    tf_keras (.keras format) builds each deserialized layer from its saved input shape
    before the functional graph calls it, and then restores variables by position.
    tfmot's ``QuantizeLayer.build`` does not set ``built``, so it is built twice (two
    extra variables), and ``QuantizeWrapper(V2)`` built that way lists its wrapped
    layer's kernel once where the saved model, whose inner layer was already built,
    lists it twice. Either way loading fails with "expected N variables, but received
    M". These subclasses build in the original order, so the variables line up.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer, quantize_wrapper
    from tf_keras.src.utils import tf_utils

    def _shape(config):
        return tf_utils.convert_shapes(config["input_shape"], to_tuples=False)

    def layer_build_from_config(self, config):
        # Built when the functional graph calls it, like the original (inside its name scope).
        return None

    def wrapper_build_from_config(self, config):
        if config.get("input_shape") is None:
            return
        shape = _shape(config)
        if not self.layer.built:
            self.layer.build(shape)
        self.build(shape)

    return {
        "QuantizeLayer": type("QuantizeLayer", (quantize_layer.QuantizeLayer,), {"build_from_config": layer_build_from_config}),
        "QuantizeWrapper": type(
            "QuantizeWrapper", (quantize_wrapper.QuantizeWrapper,), {"build_from_config": wrapper_build_from_config}
        ),
        "QuantizeWrapperV2": type(
            "QuantizeWrapperV2", (quantize_wrapper.QuantizeWrapperV2,), {"build_from_config": wrapper_build_from_config}
        ),
    }


def load_model(path: str | os.PathLike):
    """Load a run's Keras model, float or tfmot-wrapped (QAT / pruning), without compiling it."""
    from edge_ecg.train import RunError

    tfmot = _tfmot()

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: model file not found")
    with (
        tfmot.quantization.keras.quantize_scope(),
        tfmot.sparsity.keras.prune_scope(),
        keras.utils.custom_object_scope(_tfmot_load_fixes()),
    ):
        if path.suffix.lower() in (".h5", ".hdf5"):
            check_h5_model_config(path)  # HDF5 has no safe_mode: refuse code before Keras deserializes anything
        try:
            return keras.models.load_model(path, compile=False)
        except (ValueError, TypeError, OSError) as exc:
            raise ValueError(f"{path}: cannot load the Keras model ({exc})") from exc


_SAFE_MODULES = ("keras", "tf_keras", "tensorflow_model_optimization")
_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})


def check_h5_model_config(path: Path) -> None:
    """Refuse an HDF5 Keras model whose saved config would run code or unknown classes on load.

    Reads the ``model_config`` JSON with h5py, without deserializing it. Refused: any
    ``Lambda`` layer (its Python bytecode runs when Keras rebuilds it; the ``.keras``
    loader refuses it by safe_mode, the HDF5 one would run it), any object naming a
    module outside Keras and tfmot, and any class Keras and tfmot do not know (call it
    inside the scopes :func:`load_model` opens). Raises ValueError naming file and layer.
    """
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
    except OSError as exc:
        raise ValueError(f"{path}: not an HDF5 file ({exc})") from None
    if raw is None:
        raise ValueError(f"{path}: HDF5 file without a model_config; not a Keras model saved with model.save")
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError as exc:
        raise ValueError(f"{path}: model_config is not JSON ({exc})") from None
    for obj, layer in _config_objects(config, "(model)"):
        name, settings, module = obj["class_name"], obj.get("config"), obj.get("module")
        where = f"{path}: layer {layer!r}"
        if name == "Lambda" or (isinstance(settings, dict) and "function_type" in settings):
            raise ValueError(
                f"{where} is a Lambda layer: loading it would run the Python code stored in the file. "
                "Refused (the .keras loader refuses it as well); rebuild the model without Lambda layers"
            )
        if module is not None and str(module).split(".")[0] not in _SAFE_MODULES:
            raise ValueError(f"{where}: {name!r} comes from module {module!r}, not Keras or tfmot; refused (custom code)")
        if not _known_class(name):
            raise ValueError(f"{where}: unknown class {name!r} (a custom object); refused, edge-ecg loads Keras and tfmot classes only")


def _config_objects(node, layer: str):
    """Every serialized object (a dict with 'class_name') in ``node``, with the name of the layer holding it."""
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str):
            settings = node.get("config")
            if isinstance(settings, dict) and isinstance(settings.get("name"), str) and "layers" not in settings:
                layer = settings["name"]
            yield node, layer
        for value in node.values():
            yield from _config_objects(value, layer)
    elif isinstance(node, list):
        for value in node:
            yield from _config_objects(value, layer)


def _known_class(name: str) -> bool:
    if name in _MODEL_CLASSES or keras.utils.get_registered_object(name) is not None:
        return True
    modules = (keras.layers, keras.initializers, keras.regularizers, keras.constraints, keras.optimizers.schedules)
    return any(isinstance(getattr(m, name, None), type) for m in modules)


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


def kernel_zeros(model) -> tuple[int, int]:
    """(exactly-zero weights, all weights) over the convolution and dense kernels together."""
    zeros = total = 0
    for w in model.weights:
        if w.name.rpartition("/")[2] in ("kernel:0", "depthwise_kernel:0"):
            values = w.numpy()
            zeros += int(np.sum(values == 0))
            total += values.size
    return zeros, total


def kernel_sparsity(model) -> float:
    """Fraction of exactly-zero weights over all convolution and dense kernels together."""
    zeros, total = kernel_zeros(model)
    return zeros / total if total else 0.0
