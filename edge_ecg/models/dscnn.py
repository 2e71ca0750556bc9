"""Our compact depthwise-separable CNN for 12-lead ECG, sized for a microcontroller.

The network is 1-D in spirit but written with 2-D layers on a (time, 1, leads) tensor:
TensorFlow Lite has no 1-D convolution (it rewrites Conv1D into reshapes around a
Conv2D) and tensorflow-model-optimization's quantization-aware training does not
support Conv1D, DepthwiseConv1D or MaxPooling1D. Every layer used here is one that
tfmot's default 8-bit QAT handles: Conv2D and DepthwiseConv2D each followed by
BatchNormalization (folded into the convolution) and ReLU, Add, GlobalAveragePooling2D
or GlobalMaxPooling2D, AveragePooling2D (input decimation), Dropout, Dense and Reshape.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_ecg.tf import keras

# Default widths and strides. filters[0]/strides[0] are the stem convolution's; each
# further entry is one depthwise-separable block. Five halvings take 1000 samples
# (10 s at 100 Hz) down to 32 steps, and with kernel 9 the last block sees about
# 2.5 s of signal (two or more beats) before global pooling.
DEFAULT_FILTERS: tuple[int, ...] = (32, 48, 64, 96, 128)
DEFAULT_STRIDES: tuple[int, ...] = (2, 2, 2, 2, 2)
DEFAULT_KERNEL_SIZE = 9
DEFAULT_DROPOUT_RATE = 0.3
POOLS = ("avg", "max")


def dscnn(
    num_samples: int = 1000,
    num_leads: int = 12,
    num_classes: int = 5,
    filters: Sequence[int] = DEFAULT_FILTERS,
    kernel_size: int | Sequence[int] = DEFAULT_KERNEL_SIZE,
    strides: Sequence[int] = DEFAULT_STRIDES,
    dropout_rate: float = DEFAULT_DROPOUT_RATE,
    residual: bool = False,
    pool: str = "avg",
    decimate: int = 1,
    name: str = "dscnn",
) -> keras.Model:
    """Depthwise-separable CNN: (num_samples, num_leads) -> num_classes sigmoid outputs.

    Layout::

        Input (T, L) -> Reshape (T, 1, L)
        [AveragePooling2D (decimate, 1)         if decimate > 1]
        stem:     Conv2D filters[0], (kernel_size, 1), stride strides[0] -> BN -> ReLU
        block i:  DepthwiseConv2D (kernel_size, 1), stride strides[i] -> BN -> ReLU
                  Conv2D filters[i], 1x1 -> BN -> ReLU        (i = 1 .. len(filters)-1)
                  [+ input of the block, if residual and the shapes match]
        GlobalAveragePooling2D (pool "avg") or GlobalMaxPooling2D ("max")
        -> Dropout(dropout_rate) -> Dense(num_classes, sigmoid)

    Depth is ``len(filters)``; time is reduced only by the strides ("same" padding, so
    each stride s divides the length by s, rounding up). Convolutions have no bias
    because the BatchNormalization after each one supplies it once folded.

    With the defaults (filters (32, 48, 64, 96, 128), kernel_size 9, strides
    (2, 2, 2, 2, 2), dropout 0.3, no residual) the model has 31,733 parameters
    (30,517 trainable; 29,909 once the batch norms are folded), an estimated 34,200
    bytes as int8 weights with int32 biases and per-channel scales, and 3,466,864
    multiply-accumulates per 1000-sample record; see :func:`edge_ecg.models.summary`.

    Args:
        num_samples: Samples per record (1000 = 10 s at 100 Hz).
        num_leads: ECG leads, the input channels.
        num_classes: Outputs, one sigmoid per class (multi-label).
        filters: Output channels of the stem and of each block; its length sets depth.
        kernel_size: Length in samples of the stem and depthwise kernels: one for all,
            or one per entry of ``filters``.
        strides: Time stride of the stem and of each block's depthwise convolution;
            same length as ``filters``.
        dropout_rate: Dropout before the classifier, in [0, 1).
        residual: Add each block's input to its output where the shapes match (stride
            1 and the same number of filters as the block before); at least one block
            must qualify.
        pool: Global pooling before the classifier: "avg" or "max".
        decimate: Average every ``decimate`` input samples first (1: none), a cheap
            anti-aliased downsampling; must divide ``num_samples``.
        name: The model's name.

    Raises:
        ValueError: An argument is out of range; the message names it.
    """
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("num_leads", num_leads)
    _check_positive_int("num_classes", num_classes)
    filters = _check_positive_int_sequence("filters", filters)
    strides = _check_positive_int_sequence("strides", strides)
    if len(strides) != len(filters):
        raise ValueError(
            f"strides must have one entry per entry of filters ({len(filters)}: the stem "
            f"and each block), got {len(strides)}: strides={strides!r}"
        )
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        _check_positive_int("kernel_size", kernel_size)
        kernels = (kernel_size,) * len(filters)
    else:
        kernels = _check_positive_int_sequence("kernel_size", kernel_size)
        if len(kernels) != len(filters):
            raise ValueError(
                f"kernel_size must be one integer or one per entry of filters ({len(filters)}), got {kernel_size!r}"
            )
    if any(s > k for s, k in zip(strides, kernels)):
        # A stride longer than the kernel skips samples outright; TF 2.21's oneDNN CPU
        # convolution also corrupts memory on it (kernel 5, stride 8 crashed here).
        raise ValueError(
            f"every stride must be <= kernel_size ({kernel_size!r}) so no sample is skipped, got strides={strides!r}"
        )
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    _check_positive_int("decimate", decimate)
    if num_samples % decimate:
        raise ValueError(f"decimate ({decimate}) must divide num_samples ({num_samples})")
    _check_rate("dropout_rate", dropout_rate)
    if not isinstance(residual, bool):
        raise ValueError(f"residual must be True or False, got {residual!r}")
    residual_blocks = [
        i for i in range(1, len(filters)) if strides[i] == 1 and filters[i] == filters[i - 1]
    ]
    if residual and not residual_blocks:
        raise ValueError(
            "residual=True needs at least one block with stride 1 and as many filters as "
            f"the layer before it; none in filters={filters!r}, strides={strides!r}"
        )

    inputs = keras.Input((num_samples, num_leads), name="ecg")
    # (T, L) -> (T, 1, L): time becomes the height axis so (k, 1) kernels run along it.
    x = keras.layers.Reshape((num_samples, 1, num_leads), name="to_2d")(inputs)
    if decimate > 1:
        x = keras.layers.AveragePooling2D((decimate, 1), name="decimate")(x)

    x = keras.layers.Conv2D(
        filters[0],
        (kernels[0], 1),
        strides=(strides[0], 1),
        padding="same",
        use_bias=False,
        name="stem_conv",
    )(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)

    for i in range(1, len(filters)):
        block_input = x
        x = keras.layers.DepthwiseConv2D(
            (kernels[i], 1),
            strides=(strides[i], 1),
            padding="same",
            use_bias=False,
            name=f"block{i}_depthwise",
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_depthwise_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_depthwise_relu")(x)
        x = keras.layers.Conv2D(
            filters[i], (1, 1), use_bias=False, name=f"block{i}_pointwise"
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_pointwise_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_pointwise_relu")(x)
        if residual and i in residual_blocks:
            x = keras.layers.Add(name=f"block{i}_add")([block_input, x])

    pooling = keras.layers.GlobalAveragePooling2D if pool == "avg" else keras.layers.GlobalMaxPooling2D
    x = pooling(name="pool")(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    # Logits and sigmoid as two layers: export cuts at the logits, whose int8 steps rank
    # records far better than int8 probabilities crowded near 0 and 1.
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    outputs = keras.layers.Activation("sigmoid", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=name)


# Argument checks shared with edge_ecg.models.reference.


def _check_positive_int(argument: str, value: object) -> None:
    # bool is an int subclass; True as a width is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")


def _check_positive_int_sequence(argument: str, value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(
            f"{argument} must be a non-empty sequence of positive integers, got {value!r}"
        )
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(
                f"{argument} must be a non-empty sequence of positive integers, "
                f"got {value!r}"
            )
    return tuple(value)


def _check_rate(argument: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{argument} must be a number in [0, 1), got {value!r}")
