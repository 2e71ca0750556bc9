"""Federated learning on Flower (edge_ecg.federate): sites, their splits, bad sites, a deterministic simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edge_ecg.data import DataError
from edge_ecg.federate import FederateConfig, _score, site_of_records, sites_summary, split_sites

TINY_ARCH = {"filters": [8, 16, 16], "strides": [4, 4, 4]}  # tests/test_export.py's TINY model


def test_device_sites_are_recorder_families_and_blank_is_its_own_site(ptbxl_dir):
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    site_of = site_of_records(ptbxl_dir, "device")
    assert set(site_of.values()) == {"AT-6", "CS-12", "unknown"}
    assert sum(v == "unknown" for v in site_of.values()) == int(db["device"].isna().sum())
    assert site_of[int(db.ecg_id[db.device == "AT-6 C 5.5"].iloc[0])] == "AT-6"
    dropped = site_of_records(ptbxl_dir, "device", blank="drop")
    assert "unknown" not in set(dropped.values())
    assert len(dropped) == len(db) - int(db["device"].isna().sum())


def test_site_column_gives_numbered_sites(ptbxl_dir):
    names = set(site_of_records(ptbxl_dir, "site", blank="drop").values())
    assert names == {"site-0", "site-1", "site-2", "site-3"}


@pytest.mark.parametrize("column", ["device", "site"])
def test_per_site_splits_are_disjoint_and_no_record_is_in_two_sites(ptbxl, ptbxl_dir, column):
    sites = split_sites(ptbxl, site_of_records(ptbxl_dir, column))
    seen: set[int] = set()
    folds = dict(zip(ptbxl.ecg_ids.tolist(), ptbxl.folds.tolist()))
    for s in sites:
        ids = s.ids().tolist()
        assert len(ids) == len(set(ids)), f"site {s.name}: a record in two of its splits"
        assert not seen & set(ids), f"site {s.name} shares records with another site"
        seen |= set(ids)
        assert {folds[i] for i in s.train.tolist()} <= set(range(1, 9))
        assert {folds[i] for i in s.val.tolist()} == {9} and {folds[i] for i in s.test.tolist()} == {10}
    assert seen == set(ptbxl.ecg_ids.tolist())  # blank -> 'unknown': every labelled record has a site


def test_a_site_of_a_single_record_is_refused_naming_it(ptbxl, ptbxl_dir):
    site_of = site_of_records(ptbxl_dir, "device")
    site_of[int(ptbxl.ecg_ids[0])] = "lonely"
    with pytest.raises(DataError, match="site 'lonely' \\(1 record"):
        split_sites(ptbxl, site_of)


def test_a_site_without_some_class_is_reported_not_failed():
    y = np.array([[1, 0], [0, 0], [1, 0]], np.float32)  # class 1 has no positive
    score = _score(y, np.full(y.shape, 0.5, np.float32), n_boot=10, seed=0)
    assert score["macro_auc"] is None and "class index(es) [1]" in score["undefined"]
    y[1, 1] = 1
    assert _score(y, np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]], np.float32), n_boot=10, seed=0)["macro_auc"] == 1.0


def test_sites_summary_counts_every_split(ptbxl, ptbxl_dir):
    sites = split_sites(ptbxl, site_of_records(ptbxl_dir, "device"), train_limit=5)
    summary = sites_summary(ptbxl, sites, "device", "unknown")
    assert all(v["train"]["records"] == 5 for v in summary["sites"].values())
    assert summary["records_without_site"] == len(ptbxl) - sum(len(s.ids()) for s in sites)


@pytest.mark.parametrize(
    "option, value, message",
    [("site_by", "hospital", "--site-by 'hospital'"), ("strategy", "fedsgd", "--strategy"), ("rounds", 0, "--rounds"),
     ("batch_norm", "none", "--batch-norm")],
)
def test_bad_options_are_named(option, value, message):
    with pytest.raises(ValueError, match=message):
        FederateConfig(**{option: value}).check()


@pytest.mark.slow
def test_two_round_simulation_with_a_fixed_seed_gives_the_same_model_twice(ptbxl, tmp_path):
    """FedProx with FedBN (the path with the most state): two runs, bit-identical global weights."""
    from edge_ecg.federate import REPORT_JSON, ROUNDS_PLOT, WEIGHTS_FILE, federate

    config = FederateConfig(
        arch_kwargs=TINY_ARCH, rounds=2, local_epochs=1, site_train_limit=16, strategy="fedprox", proximal_mu=0.1,
        batch_norm="local", compare=(), n_boot=20,
    )
    reports = [federate(tmp_path / f"run{k}", config, dataset=ptbxl) for k in (1, 2)]
    weights = [np.load(tmp_path / f"run{k}" / WEIGHTS_FILE) for k in (1, 2)]
    assert sorted(weights[0].files) == sorted(weights[1].files)
    for key in weights[0].files:
        assert np.array_equal(weights[0][key], weights[1][key]), key
    report = reports[0]
    assert [r["round"] for r in report["rounds"]] == [1, 2] and not report["failures"]
    # FedBN: BatchNormalization weights stay on the site, so fewer bytes than the whole model are sent
    from edge_ecg import models
    from edge_ecg.federate import _bn_indices

    model = models.build("dscnn", num_samples=1000, num_leads=12, num_classes=5, **TINY_ARCH)
    full = sum(v.numpy().nbytes for v in model.weights)
    bn = sum(model.weights[i].numpy().nbytes for i in _bn_indices(model))
    assert bn > 0
    for r in report["rounds"]:
        assert set(r["bytes_sent"]) == {"AT-6", "CS-12", "unknown"}
        assert all(0 < b < full - bn + 4096 and b < full for b in r["bytes_sent"].values())
    assert len(weights[0].files) == len(model.weights) - len(_bn_indices(model))
    assert report["test_macro_auc"]["pooled"]["federated"]["macro_auc"] is not None
    assert (tmp_path / "run1" / REPORT_JSON).is_file() and (tmp_path / "run1" / ROUNDS_PLOT).stat().st_size > 0


def test_cli_refuses_more_clients_per_round_than_sites(ptbxl_dir, tmp_path, capsys):
    from edge_ecg.cli import main

    rc = main(["federate", "--data", str(ptbxl_dir), "--run", str(tmp_path / "run"), "--clients-per-round", "9", "--compare", "none"])
    assert rc == 1
    assert "--clients-per-round 9: there are only 3 sites (AT-6, CS-12, unknown)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything is written
