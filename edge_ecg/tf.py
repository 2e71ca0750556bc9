"""The one place edge-ecg imports TensorFlow.

Every module that needs TensorFlow does ``from edge_ecg.tf import tf, keras``, so the
environment is set before TensorFlow's first import, whichever stage comes first.
``keras`` here is ``tf_keras`` (Keras 2), never Keras 3.
"""

import os

# tensorflow-model-optimization (pruning, QAT) works only with Keras 2: this makes
# TensorFlow's own tf.keras resolve to tf_keras too. It has an effect only if set
# before TensorFlow is first imported, and setdefault leaves a user's choice alone.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Hide TensorFlow's C++ info and warning lines (oneDNN, CUDA stubs); errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  (must follow the environment settings above)
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
