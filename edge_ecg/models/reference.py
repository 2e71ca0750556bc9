"""Float reference models we compare the compact network against, reproduced exactly.

These are baselines, not deployment candidates: they use Conv1D/MaxPooling1D freely
and are converted to TensorFlow Lite only as float or post-training int8 models.
Each docstring gives the parameter count the tests pin down.
"""

from __future__ import annotations

from edge_ecg.models.dscnn import _check_positive_int, _check_rate
from edge_ecg.tf import keras


def cnn_base(
    num_samples: int = 1000,
    num_leads: int = 12,
    num_classes: int = 5,
    dropout_rate: float = 0.5,
    name: str = "cnn_base",
) -> keras.Model:
    """Plain six-layer 1-D CNN: 754,805 parameters with 12 leads and 5 classes.

    Conv1D 50 k5 -> MaxPool 2 -> Conv1D 100 k10 -> MaxPool 2 -> Conv1D 100 k5 ->
    MaxPool 2 -> Conv1D 200 k10 -> MaxPool 2 -> Conv1D 150 k5 -> MaxPool 2 ->
    Conv1D 200 k10 -> MaxPool 2 -> GlobalAveragePooling1D -> Dropout -> Dense sigmoid.
    Convolutions are "valid" with ReLU, so 1000 samples shrink to 8 steps.

    Raises:
        ValueError: An argument is out of range, or ``num_samples`` is too short for
            the valid convolutions and poolings.
    """
    _check_common(num_samples, num_leads, num_classes, dropout_rate)
    layout = ((50, 5), (100, 10), (100, 5), (200, 10), (150, 5), (200, 10))
    # Walk back from one output step through each pool (x2) and valid conv (+k-1).
    min_samples = 1
    for _, kernel_size in reversed(layout):
        min_samples = 2 * min_samples + kernel_size - 1
    if num_samples < min_samples:
        raise ValueError(
            f"num_samples must be at least {min_samples} for cnn_base's valid "
            f"convolutions and poolings, got {num_samples}"
        )

    inputs = keras.Input((num_samples, num_leads), name="ecg")
    x = inputs
    for i, (filters, kernel_size) in enumerate(layout, start=1):
        x = keras.layers.Conv1D(filters, kernel_size, activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="global_pool")(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    # Logits and sigmoid as two layers: export cuts at the logits, whose int8 steps rank
    # records far better than int8 probabilities crowded near 0 and 1.
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    outputs = keras.layers.Activation("sigmoid", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=name)


def inception_cnn(
    num_samples: int = 1000,
    num_leads: int = 12,
    num_classes: int = 5,
    dropout_rate: float = 0.5,
    name: str = "inception_cnn",
) -> keras.Model:
    """1-D Inception CNN: 3,785,005 parameters (5,200 non-trainable), 12 leads, 5 classes.

    Conv1D 100 k7 valid ReLU -> MaxPool 2 -> block A -> BN -> MaxPool 2 -> block B ->
    BN -> MaxPool 2 -> block B -> BN -> MaxPool 2 -> block B -> BN ->
    GlobalAveragePooling1D -> Dropout -> Dense sigmoid.

    A block concatenates four branches on its input: Conv1D k1, Conv1D k3, Conv1D k5
    (same padding, ReLU) and a same-padded stride-1 MaxPool 3 followed by Conv1D k1
    (ReLU). Block A has 100/100/200/100 filters (500 channels out), block B
    200/200/200/100 (700 out).

    Parameter count (12 leads, 5 classes)::

        stem conv            12*7*100 + 100                            8,500
        block A on 100 ch    10,100 + 30,100 + 100,200 + 10,100      150,500
        BN 500               4 * 500 (1,000 non-trainable)             2,000
        block B on 500 ch    100,200 + 300,200 + 500,200 + 50,100    950,700
        BN 700               2,800 (1,400 non-trainable)               2,800
        block B on 700 ch    140,200 + 420,200 + 700,200 + 70,100  1,330,700
        BN 700                                                         2,800
        block B on 700 ch                                          1,330,700
        BN 700                                                         2,800
        dense                700*5 + 5                                 3,505
        total                                                      3,785,005
        non-trainable        2 * (500 + 3 * 700)                       5,200

    Raises:
        ValueError: An argument is out of range, or ``num_samples`` is too short.
    """
    _check_common(num_samples, num_leads, num_classes, dropout_rate)
    # Valid k7 stem, then four halvings: at least 7 + 16 - 1 samples leave one step.
    if num_samples < 22:
        raise ValueError(
            f"num_samples must be at least 22 for inception_cnn's stem and poolings, "
            f"got {num_samples}"
        )
    block_a = (100, 100, 200, 100)
    block_b = (200, 200, 200, 100)

    inputs = keras.Input((num_samples, num_leads), name="ecg")
    x = keras.layers.Conv1D(100, 7, activation="relu", name="stem_conv")(inputs)
    x = keras.layers.MaxPooling1D(2, name="stem_pool")(x)
    for i, branch_filters in enumerate((block_a, block_b, block_b, block_b), start=1):
        if i > 1:
            x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
        x = _inception_block(x, branch_filters, name=f"inception{i}")
        x = keras.layers.BatchNormalization(name=f"inception{i}_bn")(x)
    x = keras.layers.GlobalAveragePooling1D(name="global_pool")(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    # Logits and sigmoid as two layers: export cuts at the logits, whose int8 steps rank
    # records far better than int8 probabilities crowded near 0 and 1.
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    outputs = keras.layers.Activation("sigmoid", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=name)


def _inception_block(x, branch_filters: tuple[int, int, int, int], name: str):
    k1_filters, k3_filters, k5_filters, pool_filters = branch_filters
    branches = [
        keras.layers.Conv1D(
            filters, kernel_size, padding="same", activation="relu", name=f"{name}_k{kernel_size}"
        )(x)
        for filters, kernel_size in ((k1_filters, 1), (k3_filters, 3), (k5_filters, 5))
    ]
    pooled = keras.layers.MaxPooling1D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branches.append(
        keras.layers.Conv1D(
            pool_filters, 1, padding="same", activation="relu", name=f"{name}_pool_k1"
        )(pooled)
    )
    return keras.layers.Concatenate(name=f"{name}_concat")(branches)


def resnet1d_wang(
    num_samples: int = 1000,
    num_leads: int = 12,
    num_classes: int = 5,
    filters: int = 128,
    kernel_size: tuple[int, int] = (5, 3),
    stem_kernel_size: int = 7,
    head_units: int = 128,
    dropout_rate: float = 0.5,
    name: str = "resnet1d_wang",
) -> keras.Model:
    """The PTB-XL benchmark's ``resnet1d_wang`` (Strodthoff et al. 2020) in Keras.

    As built by helme/ecg_ptbxl_benchmarking (``models/resnet1d.py`` with the defaults
    of ``models/fastai_model.py``): ResNet1d with BasicBlock1d, layers [1, 1, 1],
    128 channels throughout, block kernels (5, 3), stem Conv 7 with stride 1 and *no*
    stem max-pool; the second and third stages stride 2 with a 1x1 stride-2
    convolution + BN shortcut. Convolutions have no bias. Head (fastai
    ``create_head1d`` with ``lin_ftrs_head=[128]``, ``ps_head=0.5``): concat of
    global max and average pooling (max first) -> BN -> Dropout(0.25) -> Dense 128 ->
    ReLU -> BN -> Dropout(0.5) -> Dense num_classes. The original outputs logits for a
    BCE-with-logits loss; here the last Dense has the sigmoid.

    Padding matches PyTorch's symmetric ``(k - 1) // 2``: "same" for stride 1, and an
    explicit ZeroPadding1D before the strided convolutions (Keras's "same" would pad
    asymmetrically there). BN uses PyTorch's epsilon 1e-5 and momentum 0.1 (0.9 in
    Keras's convention).

    Parameters with 12 leads and 5 classes: 476,421 in Keras, of which 473,349 are
    trainable, exactly the PyTorch model's parameter count (the "about 473 k" the
    benchmark reports). The other 3,072 are the BN moving means and variances
    (1,536 BN channels), which PyTorch keeps as buffers, not parameters.

    Args:
        filters: Channels of the stem and every block (``inplanes``).
        kernel_size: Kernel sizes of each block's first and second convolution.
        stem_kernel_size: Kernel size of the stem convolution.
        head_units: Width of the head's hidden Dense layer (``lin_ftrs_head``).
        dropout_rate: Dropout before the last Dense; the hidden one gets half.

    Raises:
        ValueError: An argument is out of range; the message names it.
    """
    _check_common(num_samples, num_leads, num_classes, dropout_rate)
    _check_positive_int("filters", filters)
    _check_positive_int("stem_kernel_size", stem_kernel_size)
    _check_positive_int("head_units", head_units)
    if (
        not isinstance(kernel_size, (tuple, list))
        or len(kernel_size) != 2
        or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in kernel_size)
    ):
        raise ValueError(
            f"kernel_size must be a pair of positive integers, got {kernel_size!r}"
        )

    inputs = keras.Input((num_samples, num_leads), name="ecg")
    x = _torch_conv1d(inputs, filters, stem_kernel_size, 1, name="stem_conv")
    x = _torch_batch_norm(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, stride in enumerate((1, 2, 2), start=1):
        x = _basic_block(x, filters, kernel_size, stride, name=f"stage{stage}")

    # fastai's AdaptiveConcatPool1d: [max, avg] along channels.
    x = keras.layers.Concatenate(name="head_concat_pool")(
        [
            keras.layers.GlobalMaxPooling1D(name="head_max_pool")(x),
            keras.layers.GlobalAveragePooling1D(name="head_avg_pool")(x),
        ]
    )
    x = _torch_batch_norm(name="head_bn1")(x)
    x = keras.layers.Dropout(dropout_rate / 2, name="head_dropout1")(x)
    x = keras.layers.Dense(head_units, name="head_dense")(x)
    x = keras.layers.ReLU(name="head_relu")(x)
    x = _torch_batch_norm(name="head_bn2")(x)
    x = keras.layers.Dropout(dropout_rate, name="head_dropout2")(x)
    # Logits and sigmoid as two layers: export cuts at the logits, whose int8 steps rank
    # records far better than int8 probabilities crowded near 0 and 1.
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    outputs = keras.layers.Activation("sigmoid", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=name)


def _basic_block(x, filters: int, kernel_size, stride: int, name: str):
    """torchvision-style BasicBlock: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv1D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut_conv"
        )(x)
        shortcut = _torch_batch_norm(name=f"{name}_shortcut_bn")(shortcut)
    y = _torch_conv1d(x, filters, kernel_size[0], stride, name=f"{name}_conv1")
    y = _torch_batch_norm(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _torch_conv1d(y, filters, kernel_size[1], 1, name=f"{name}_conv2")
    y = _torch_batch_norm(name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu2")(y)


def _torch_conv1d(x, filters: int, kernel_size: int, stride: int, name: str):
    """Bias-free Conv1D padded like PyTorch's ``padding=(k - 1) // 2`` on both sides."""
    if stride == 1 and kernel_size % 2 == 1:
        # Symmetric, so identical to Keras's "same" and needs no Pad op.
        return keras.layers.Conv1D(
            filters, kernel_size, padding="same", use_bias=False, name=name
        )(x)
    padding = (kernel_size - 1) // 2
    if padding:
        x = keras.layers.ZeroPadding1D(padding, name=f"{name}_pad")(x)
    return keras.layers.Conv1D(
        filters, kernel_size, strides=stride, use_bias=False, name=name
    )(x)


def _torch_batch_norm(name: str) -> keras.layers.BatchNormalization:
    # PyTorch defaults: eps 1e-5, running stats updated with weight 0.1 per batch.
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _check_common(num_samples: int, num_leads: int, num_classes: int, dropout_rate: float) -> None:
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("num_leads", num_leads)
    _check_positive_int("num_classes", num_classes)
    _check_rate("dropout_rate", dropout_rate)
