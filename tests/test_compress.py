"""Compression stages on a tiny dscnn trained for one epoch on real records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_ecg.compress import (
    compress,
    kernel_zero_fractions,
    load_model,
    prune_magnitude,
    strip_pruning,
    structured_prune,
)
from edge_ecg.models import dscnn, summary
from edge_ecg.train import TrainConfig, train

TINY = {"filters": [8, 16, 16], "strides": [4, 4, 4], "kernel_size": 5}


@pytest.fixture(scope="module")
def tiny_run(ptbxl, tmp_path_factory):
    run = tmp_path_factory.mktemp("compress") / "run"
    train(run, TrainConfig(arch="dscnn", arch_kwargs=TINY, epochs=1, train_limit=96, seed=5), dataset=ptbxl, progress=False)
    return run


def test_structured_pruning_removes_filters_macs_and_keeps_the_kept_ones(tiny_run):
    from edge_ecg.train import load_run_model

    model = load_run_model(tiny_run)
    small = structured_prune(model, 0.5, "dscnn", TINY)
    big, little = summary(model), summary(small)
    assert [small.get_layer(n).filters for n in ("stem_conv", "block1_pointwise", "block2_pointwise")] == [4, 8, 8]
    assert little["params"] < 0.5 * big["params"] and little["macs"] < 0.6 * big["macs"]
    # every kept stem filter is one of the originals, unchanged
    kept = small.get_layer("stem_conv").get_weights()[0]
    orig = model.get_layer("stem_conv").get_weights()[0]
    for j in range(kept.shape[-1]):
        assert any(np.array_equal(kept[..., j], orig[..., k]) for k in range(orig.shape[-1]))
    x = np.random.default_rng(0).normal(size=(2, 1000, 12)).astype(np.float32)
    assert small(x).shape == (2, 5)


def test_structured_pruning_refuses_other_architectures():
    with pytest.raises(ValueError, match="dscnn architecture only.*'cnn_base'"):
        structured_prune(dscnn(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()}), 0.5, "cnn_base")


def test_strip_pruning_leaves_outputs_unchanged():
    model = dscnn(filters=(8, 16), strides=(4, 4), kernel_size=5)
    pruned, _ = prune_magnitude(model, 0.5, total_steps=10, steps_per_epoch=5)
    x = np.random.default_rng(1).normal(size=(3, 1000, 12)).astype(np.float32)
    np.testing.assert_array_equal(pruned(x, training=False).numpy(), strip_pruning(pruned)(x, training=False).numpy())


def test_magnitude_pruning_reaches_target_and_pqat_keeps_it(tiny_run, ptbxl):
    report = compress(tiny_run, prune=0.5, qat=True, epochs=2, dataset=ptbxl, progress=False)
    assert [s["name"] for s in report["stages"]] == ["prune50", "prune50+pqat"]
    pruned = load_model(tiny_run / "compress/prune50/model.h5")
    qat = load_model(tiny_run / "compress/final.h5")
    for model in (pruned, qat):
        fractions = kernel_zero_fractions(model)
        for layer in ("stem_conv", "block1_pointwise", "block2_pointwise", "classifier"):
            assert fractions[layer] == pytest.approx(0.5, abs=0.01), (layer, fractions)
    assert any("quant" in l.name for l in qat.layers)
    saved = json.loads((tiny_run / "compress/compress.json").read_text())
    assert saved["final"] == "prune50+pqat" and saved["stages"][0]["sparsity"] > 0.3


def test_structured_stage_trains_and_resumes_without_retraining(tiny_run, ptbxl):
    report = compress(tiny_run, structured=0.5, epochs=1, dataset=ptbxl, progress=False)
    stage = report["stages"][0]
    assert stage["name"] == "structured50" and stage["macs"] < summary(load_model(tiny_run / "model.keras"))["macs"]
    mtime = (tiny_run / "compress/structured50/model.h5").stat().st_mtime_ns
    again = compress(tiny_run, structured=0.5, epochs=1, dataset=ptbxl, progress=False)
    assert again["stages"][0]["val_auc"] == stage["val_auc"]
    assert (tiny_run / "compress/structured50/model.h5").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="made with .*epochs"):
        compress(tiny_run, structured=0.5, epochs=2, dataset=ptbxl, progress=False)


def test_bad_fractions_and_empty_requests_are_errors(tiny_run):
    with pytest.raises(ValueError, match=r"--prune must be a fraction in \(0, 1\), got 1.5"):
        compress(tiny_run, prune=1.5)
    with pytest.raises(ValueError, match="nothing to do"):
        compress(tiny_run)


def test_run_without_a_model_names_the_fix(tmp_path):
    from edge_ecg.train import RunError

    with pytest.raises(RunError, match="config.json: not found"):
        compress(tmp_path, qat=True)


def _marker_model(marker):
    from edge_ecg.tf import keras

    inp = keras.Input((4,))
    # the default argument travels with the Lambda's bytecode; calling it writes the marker
    out = keras.layers.Lambda(lambda x, m=str(marker): (open(m, "w").write("ran"), x)[1], name="writes_marker")(inp)
    return keras.Model(inp, out)


def test_h5_model_with_a_lambda_layer_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    model = _marker_model(marker)
    model.save(tmp_path / "m.h5")
    model.save(tmp_path / "m.keras")
    marker.unlink()  # building the model ran the lambda once; loading must not run it again
    with pytest.raises(ValueError, match="Lambda"):  # Keras's safe_mode
        load_model(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"m\.h5: layer 'writes_marker' is a Lambda layer"):
        load_model(tmp_path / "m.h5")
    assert not marker.exists(), "loading ran the Lambda's code"


def test_h5_model_with_an_unknown_custom_class_is_refused(tmp_path):
    import h5py

    from edge_ecg.tf import keras

    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2, name="head")(inp)).save(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "r+") as fh:
        config = fh.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else config
        fh.attrs["model_config"] = config.replace('"class_name": "Dense"', '"class_name": "EvilDense"')
    with pytest.raises(ValueError, match=r"m\.h5: layer 'head': unknown class 'EvilDense'"):
        load_model(tmp_path / "m.h5")


def test_the_compression_report_tabulates_every_stage_and_links_its_figures(tmp_path):
    """compress/report.md from compress.json alone: float row first, deltas against it, figures that exist, an index link."""
    import re

    from edge_ecg.compress.report import write_report

    row = lambda name, auc, params, zeros, macs: {"name": name, "val_auc": auc, "sparsity": zeros / params, "zero_weights": zeros,  # noqa: E731
                                                   "params": params, "macs": macs, "int8_bytes": params + 40, "nonzero_int8_bytes": params + 40 - zeros}
    report = {"run": str(tmp_path), "float": row("float (trained)", 0.91, 1000, 0, 50_000),
              "stages": [row("prune50", 0.905, 1000, 480, 50_000), row("prune50+pqat", 0.9, 1000, 480, 50_000)], "final": "prune50+pqat"}
    (tmp_path / "compress").mkdir()
    path = write_report(tmp_path, report)
    text = path.read_text()
    assert path == tmp_path / "compress" / "report.md"
    assert "| float (trained) | 0.9100 |  | 0.0% | 1,000 | 50,000 | 1,040 | 1,040 |" in text
    assert "| prune50+pqat | 0.9000 | -0.0100 | 48.0% | 1,000 | 50,000 | 1,040 | 560 |" in text
    figures = re.findall(r"\]\(([^)\s]+\.png)\)", text)
    assert len(figures) == 2 and all((tmp_path / "compress" / f).stat().st_size > 0 for f in figures)
    assert "[compress/report.md](compress/report.md)" in (tmp_path / "index.md").read_text()
