"""Batch-norm statistics recomputed on clean training signals (train.recompute_batch_norm_statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, load_run_model, load_split, recompute_batch_norm_statistics, train


def _bn_model(features: int = 8):
    from edge_ecg.tf import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((features,))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    outputs = keras.layers.Dense(3, name="dense")(x)
    return keras.Model(inputs, outputs)


def test_statistics_become_the_averages_over_the_given_records_and_nothing_else_changes():
    model = _bn_model()
    x = np.random.default_rng(0).normal(3.0, 2.0, (1000, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)
    bn = model.get_layer("bn")
    kernel = model.get_layer("dense").kernel.numpy()
    assert np.allclose(bn.moving_mean.numpy(), 0) and np.allclose(bn.moving_variance.numpy(), 1)

    # 1000 records in batches of 300: the last batch is smaller, and the mean must still be the exact average.
    assert recompute_batch_norm_statistics(model, x, batch_size=300) == 1
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(0), rtol=0.02)  # average of batch variances
    assert bn.momentum == 0.99
    np.testing.assert_array_equal(model.get_layer("dense").kernel.numpy(), kernel)
    # Inference now standardizes the records it was computed on.
    hidden = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    assert abs(hidden.mean()) < 1e-4 and abs(hidden.std() - 1) < 0.02


def test_a_model_without_batch_norm_is_left_alone():
    from edge_ecg.tf import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    before = [v.numpy() for v in model.variables]
    assert recompute_batch_norm_statistics(model, np.ones((10, 4), np.float32)) == 0
    for a, v in zip(before, model.variables):
        np.testing.assert_array_equal(a, v.numpy())


def _conv_bn_model():
    from edge_ecg.tf import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 1, 2))
    x = keras.layers.Conv2D(4, (3, 1), use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))


@pytest.mark.slow
def test_pruning_steps_masks_and_quantizer_ranges_are_not_touched():
    # A forward pass in training mode advances tfmot's pruning step and quantizer ranges; only BN may change.
    from edge_ecg.compress.tfmot_stages import prune_magnitude, quantize

    x = np.random.default_rng(1).normal(1.0, 3.0, (64, 16, 1, 2)).astype(np.float32)
    pruned = prune_magnitude(_conv_bn_model(), 0.5, total_steps=10, steps_per_epoch=2)[0]
    for layer in pruned.layers:  # as in the middle of pruning (UpdatePruningStep has counted 4 steps)
        if hasattr(layer, "pruning_step"):
            layer.pruning_step.assign(4)
    for model in (pruned, quantize(_conv_bn_model())):
        bns = [m for m in model.submodules if m.__class__.__name__ == "BatchNormalization"]
        statistics = {id(v) for bn in bns for v in (bn.moving_mean, bn.moving_variance)}
        before = {v.name: v.numpy() for v in model.variables if id(v) not in statistics}
        assert len(before) > 4 and recompute_batch_norm_statistics(model, x, batch_size=16) == 1
        for v in model.variables:
            if id(v) not in statistics:
                np.testing.assert_array_equal(before[v.name], v.numpy(), err_msg=v.name)
        assert not np.allclose(bns[0].moving_mean.numpy(), 0), "the statistics were recomputed"


@pytest.mark.slow
def test_a_trained_model_carries_the_statistics_of_its_clean_training_signals(ptbxl, tmp_path):
    from edge_ecg.data import Standardizer
    from edge_ecg.tf import keras

    run = tmp_path / "run"
    config = TrainConfig(arch="dscnn", epochs=2, train_limit=96, batch_size=32, seed=3)
    train(run, config, dataset=ptbxl, progress=False)
    model = load_run_model(run)
    x = Standardizer.load(run / STANDARDIZATION_FILE).transform(load_split(config, ptbxl).train.signals)
    stem = keras.Model(model.inputs, model.get_layer("stem_conv").output)(x).numpy()
    # The stem's BN sees the stem convolution's outputs: its mean over all training records and time steps.
    np.testing.assert_allclose(model.get_layer("stem_bn").moving_mean.numpy(), stem.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
