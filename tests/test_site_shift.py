"""Site-shift remedies: the site augmentation (train.augment_site) and few-shot fine-tuning (site_tune)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_ecg.train import FitOptions, TrainConfig, augment, augment_batch, augment_site

TINY_ARCH = {"filters": [8, 16, 16], "strides": [4, 4, 4]}


def _signals(n=16, t=1000, leads=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, t, leads)).astype(np.float32)


def test_site_augmentation_is_deterministic_with_a_seed_and_leaves_its_input_alone():
    x = _signals()
    before = x.copy()
    a, b = augment_site(x, np.random.default_rng(7)), augment_site(x, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.dtype == np.float32 and a.shape == x.shape
    assert np.array_equal(x, before)
    assert not np.array_equal(a, augment_site(x, np.random.default_rng(8)))


def test_site_augmentation_shifts_each_lead_by_its_own_baseline_which_augment_never_does():
    zeros = np.zeros((32, 1000, 12), np.float32)
    # per record, the spread across leads of each lead's mean: a per-lead offset/drift/wander makes it large
    site = augment_site(zeros, np.random.default_rng(0)).mean(axis=1).std(axis=1)
    plain = augment(zeros, np.random.default_rng(0)).mean(axis=1).std(axis=1)
    assert plain.max() < 0.02  # augment's wander is the same on every lead, its noise has zero mean
    assert (site > 0.1).mean() > 0.25  # about half the records get a per-lead baseline


def test_site_augmentation_gain_is_per_lead():
    ones = np.ones((64, 1000, 12), np.float32)
    out = augment_site(ones, np.random.default_rng(3))
    # the median over time removes the noise and most of the wander; a per-lead gain leaves lead medians apart
    medians = np.median(out, axis=1)
    assert (np.ptp(medians, axis=1) > 0.2).any()
    assert np.all(np.isfinite(out))


def test_augment_batch_without_the_site_option_is_the_plain_augmentation_draw_for_draw():
    x = _signals(8)
    plain = augment(x, np.random.default_rng(5))
    assert np.array_equal(augment_batch(x, np.random.default_rng(5), 100, FitOptions(epochs=1)), plain)
    assert np.array_equal(augment_batch(x, np.random.default_rng(5), 100, FitOptions(epochs=1, augment=False)), x)
    both = augment_batch(x, np.random.default_rng(5), 100, FitOptions(epochs=1, augment_site=True))
    assert not np.array_equal(both, plain)
    only_site = augment_batch(x, np.random.default_rng(5), 100, FitOptions(epochs=1, augment=False, augment_site=True))
    assert np.array_equal(only_site, augment_site(x, np.random.default_rng(5)))


def test_augment_site_is_a_stored_training_option_and_a_cli_flag():
    from edge_ecg.cli import _train_config, build_parser

    config = TrainConfig(augment_site=True)
    assert FitOptions.from_config(config).augment_site is True
    saved = json.loads(json.dumps(config.__dict__))
    assert TrainConfig.from_dict(saved).augment_site is True
    old = {k: v for k, v in saved.items() if k != "augment_site"}  # a config.json written before the option
    assert TrainConfig.from_dict(old).augment_site is False
    args = build_parser().parse_args(["train", "--run", "r", "--augment-site"])
    assert _train_config(args).augment_site is True
    assert _train_config(build_parser().parse_args(["train", "--run", "r"])).augment_site is False


# --------------------------------------------------------------------------- few-shot fine-tuning


@pytest.fixture
def untrained_run(tmp_path, ptbxl, ptbxl_dir):
    """A run folder with an untrained tiny dscnn (config, standardization, model): enough to fine-tune."""
    from edge_ecg import CLASSES, models
    from edge_ecg.data import Standardizer
    from edge_ecg.train import open_run

    run = tmp_path / "run"
    config = TrainConfig(arch="dscnn", arch_kwargs=TINY_ARCH, data=str(ptbxl_dir), epochs=1)
    open_run(run, config)
    Standardizer.fit(ptbxl.signals[ptbxl.folds <= 8], tuple(config.leads)).save(run / "standardization.json")
    models.build("dscnn", num_samples=ptbxl.signals.shape[1], num_leads=12, num_classes=len(CLASSES), **TINY_ARCH).save(run / "model.keras")
    return run


def _rows_of(x: np.ndarray, candidates: np.ndarray) -> set[int]:
    """Indices of ``candidates`` whose array equals some row of ``x``."""
    keys = {r.tobytes() for r in x}
    return {i for i, c in enumerate(candidates) if c.tobytes() in keys}


def test_fine_tune_site_sees_only_the_pool_and_the_runs_training_folds(untrained_run, ptbxl, tmp_path, monkeypatch):
    import edge_ecg.federate.transfer as transfer
    from edge_ecg.data import Standardizer
    from edge_ecg.site_tune import FINE_TUNE_IDS_FILE, fine_tune_site

    seen = {}

    def fake(model, data, out, mode, options):  # records what fine_tune_site hands over; trains nothing
        seen.update(data=data, mode=mode, options=options)
        return {"mode": mode, "selection": "none"}

    monkeypatch.setattr(transfer, "fine_tune", fake)
    site = ptbxl.select(ptbxl.folds == 10)  # stands in for a new site's records
    pool, test = site.ecg_ids[:10], site.ecg_ids[10:]
    std = Standardizer.load(untrained_run / "standardization.json")
    x_site = std.transform(site.signals)

    info = fine_tune_site(untrained_run, site, pool, tmp_path / "ft", exclude=test)
    data = seen["data"]
    assert len(data.x_val) == 0  # a few records hold no validation fold: fixed epochs
    assert _rows_of(data.x_train, x_site) == set(range(10))  # exactly the pool, no test record
    assert info["records"] == 10 and np.array_equal(np.load(tmp_path / "ft" / FINE_TUNE_IDS_FILE), np.sort(pool))
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["fine_tune_site"]["ecg_ids"] == sorted(pool.tolist())

    fine_tune_site(untrained_run, site, pool, tmp_path / "ft2", exclude=test, replay=ptbxl)
    data = seen["data"]
    x_all = std.transform(ptbxl.signals)
    used = _rows_of(data.x_train, x_all)
    assert used and set(ptbxl.folds[sorted(used)].tolist()) <= set(range(1, 9)) | {10}  # training folds (and the pool)
    assert {int(ptbxl.ecg_ids[i]) for i in used if ptbxl.folds[i] == 10} == set(pool.tolist())
    site_rows = sum(r.tobytes() in {c.tobytes() for c in x_site[:10]} for r in data.x_train)
    assert 0.15 < site_rows / len(data.x_train) < 0.35  # the pool repeated to about a quarter of each epoch

    info = fine_tune_site(untrained_run, site, pool, tmp_path / "ft3", exclude=test, replay=ptbxl, replay_limit=30)
    assert info["replay_records"] == 30 and len(_rows_of(seen["data"].x_train, x_all[ptbxl.folds <= 8])) == 30
    assert (seen["options"].augment, seen["options"].augment_site) == (True, False)  # the run's own augmentations


def test_fine_tune_site_keeps_the_runs_site_augmentation(untrained_run, ptbxl, tmp_path, monkeypatch):
    import edge_ecg.federate.transfer as transfer
    from edge_ecg.site_tune import fine_tune_site

    config = json.loads((untrained_run / "config.json").read_text())
    config["train"]["augment_site"] = True  # as if trained with --augment-site
    (untrained_run / "config.json").write_text(json.dumps(config))
    seen = {}
    monkeypatch.setattr(transfer, "fine_tune", lambda model, data, out, mode, options: seen.update(options=options) or {"mode": mode})
    site = ptbxl.select(ptbxl.folds == 10)
    fine_tune_site(untrained_run, site, site.ecg_ids[:10], tmp_path / "ft", exclude=site.ecg_ids[10:])
    assert seen["options"].augment_site is True and seen["options"].distill_alpha == 0.0  # augmentations yes, no teacher


def test_fine_tune_site_refuses_test_records_unknown_ids_and_its_own_run(untrained_run, ptbxl, tmp_path):
    from edge_ecg.runfolder import RunError
    from edge_ecg.site_tune import fine_tune_site

    site = ptbxl.select(ptbxl.folds == 10)
    with pytest.raises(ValueError, match="also test records"):
        fine_tune_site(untrained_run, site, site.ecg_ids[:5], tmp_path / "a", exclude=site.ecg_ids[4:])
    with pytest.raises(ValueError, match="not in the site's records"):
        fine_tune_site(untrained_run, site, [-1], tmp_path / "b")
    with pytest.raises(RunError, match="new folder"):
        fine_tune_site(untrained_run, site, site.ecg_ids[:5], untrained_run)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_fine_tune_site_trains_a_run_folder_that_export_can_read(untrained_run, ptbxl, tmp_path):
    from edge_ecg.site_tune import fine_tune_site
    from edge_ecg.train import load_run_model, read_run_config

    site = ptbxl.select(ptbxl.folds == 10)
    out = tmp_path / "ft"
    info = fine_tune_site(untrained_run, site, site.ecg_ids[:8], out, epochs=1, exclude=site.ecg_ids[8:])
    assert info["mode"] == "all" and info["selection"].startswith("none")
    before, after = load_run_model(untrained_run), load_run_model(out)
    assert any(not np.array_equal(a, b) for a, b in zip(before.get_weights(), after.get_weights()))
    assert TrainConfig.from_dict(read_run_config(out)["train"]) == TrainConfig.from_dict(read_run_config(untrained_run)["train"])
    assert (out / "standardization.json").read_bytes() == (untrained_run / "standardization.json").read_bytes()
