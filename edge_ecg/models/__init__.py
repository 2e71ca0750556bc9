"""Keras (tf_keras) model architectures for 12-lead ECG classification.

Every architecture is a function of keyword arguments returning an uncompiled
Functional model from (num_samples, num_leads) records to num_classes sigmoid
outputs (multi-label). Importing this package imports TensorFlow.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from edge_ecg.models.dscnn import dscnn
from edge_ecg.models.reference import cnn_base, inception_cnn, resnet1d_wang
from edge_ecg.models.summary import summary
from edge_ecg.tf import keras

ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "dscnn": dscnn,
    "cnn_base": cnn_base,
    "inception_cnn": inception_cnn,
    "resnet1d_wang": resnet1d_wang,
}
"""Architecture name -> model function, for the CLI and configuration files."""


def build(name: str, /, **kwargs: Any) -> keras.Model:
    """The architecture called ``name``, built with ``kwargs``.

    ``name`` is positional-only, so ``kwargs`` may hold the model's own ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`ARCHITECTURES` (the message suggests the
            closest names), or an argument is out of range.
    """
    try:
        architecture = ARCHITECTURES[name]
    except KeyError:
        choices = ", ".join(sorted(ARCHITECTURES))
        close = difflib.get_close_matches(str(name), ARCHITECTURES, n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown architecture {name!r}{hint} (choose from: {choices})") from None
    return architecture(**kwargs)


__all__ = [
    "ARCHITECTURES",
    "build",
    "cnn_base",
    "dscnn",
    "inception_cnn",
    "resnet1d_wang",
    "summary",
]
