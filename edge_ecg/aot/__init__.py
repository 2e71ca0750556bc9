"""Ahead-of-time C code generation for int8 TFLite models.

TFLite Micro interprets a ``.tflite`` flatbuffer at run time. :func:`generate` reads
the same int8 flatbuffer once and writes plain C99 (``<prefix>.c``, ``<prefix>.h``)
that computes bit-identical outputs to TFLite Micro's reference kernels: weights as
``static const`` arrays, requantization constants computed as TFLM's Prepare step
computes them, one function per op with shapes folded in, and every intermediate
tensor at a fixed offset in one static activation buffer (:func:`memory_plan`; a
convolution along one axis whose input dies with it may write its output over that
input, in ascending order, when the planner proves no unread byte is overwritten).

Supported builtin ops: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, MEAN, REDUCE_MAX,
AVERAGE_POOL_2D, MAX_POOL_2D, ADD and MUL (with broadcasting up to 4-D, either input
may be a constant), PAD and PADV2, CONCATENATION, LOGISTIC, QUANTIZE (int8 to int8),
RESHAPE, EXPAND_DIMS and SQUEEZE. Anything else, and any variant of these TFLM would
reject or that is not reproduced exactly, raises :class:`AotError` at generation time.

Importing this package does not import TensorFlow.
"""

from edge_ecg.aot.codegen import generate, memory_plan
from edge_ecg.aot.graph import AotError
from edge_ecg.aot.host import AotModel, build_shared_library
from edge_ecg.aot.kernels import LOWERINGS
from edge_ecg.aot.planner import Allocation, MemoryPlan, pack

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(LOWERINGS))
"""The TFLite builtin ops the generator implements."""

__all__ = [
    "SUPPORTED_OPS",
    "Allocation",
    "AotError",
    "AotModel",
    "MemoryPlan",
    "build_shared_library",
    "generate",
    "memory_plan",
    "pack",
]
