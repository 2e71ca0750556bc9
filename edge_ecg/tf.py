"""The one place edge-ecg imports TensorFlow.

Every module that needs TensorFlow does ``from edge_ecg.tf import tf, keras``, so the
environment is set before TensorFlow's first import, whichever stage comes first.
``keras`` here is ``tf_keras`` (Keras 2), never Keras 3.

Quiet by default: TensorFlow 2.21 writes its C++ start-up lines (oneDNN, CUDA stubs, CPU
features, and ``E0000 ... failed call to cuInit`` on a machine without a GPU, which reads
like a failure) straight to file descriptor 2 before ``absl::InitializeLog()``, so
``TF_CPP_MIN_LOG_LEVEL`` does not reach them. :func:`native_stderr_quiet` holds fd 2 in a
temporary file while TensorFlow starts (and while the TFLite converter runs), and replays
it if that step fails. ``EDGE_ECG_VERBOSE=1`` (the CLI's ``-v``) lets everything through.
"""

import contextlib
import os
import sys
import tempfile

# tensorflow-model-optimization (pruning, QAT) works only with Keras 2: this makes
# TensorFlow's own tf.keras resolve to tf_keras too. It has an effect only if set
# before TensorFlow is first imported, and setdefault leaves a user's choice alone.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Hide TensorFlow's C++ info and warning lines where its logging honours it; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def verbose() -> bool:
    """True when the user asked for TensorFlow's own log lines (``EDGE_ECG_VERBOSE=1``, CLI ``-v``)."""
    return os.environ.get("EDGE_ECG_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def native_stderr_quiet():
    """Send what native code writes to fd 2 into a temporary file; show it only if the block fails."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:  # the lines may say why: never swallow them with an error
                captured.seek(0)
                sys.stderr.write(captured.read().decode("utf-8", "replace"))
                sys.stderr.flush()


with native_stderr_quiet():
    import tensorflow as tf  # noqa: E402  (must follow the environment settings above)
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices()  # CUDA's probe (and its cuInit line) happens here, not mid-stage

if not verbose():
    import logging

    tf.get_logger().setLevel(logging.ERROR)  # "Compiled the loaded model, but ..." and similar Python warnings
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)

__all__ = ["keras", "native_stderr_quiet", "tf", "verbose"]
