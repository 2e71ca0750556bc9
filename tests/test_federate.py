"""Federated learning on Flower (edge_ecg.federate): sites, their splits, bad sites, a deterministic simulation."""

from __future__ import annotations

import json

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
     ("batch_norm", "none", "--batch-norm"), ("lr_schedule", "step", "--lr-schedule"), ("server_momentum", 1.0, "--server-momentum"),
     ("num_sites", 0, "--sites"), ("highpass_hz", 50.0, "--highpass: highpass_hz 50.0"), ("highpass_hz", -0.5, "--highpass")],
)
def test_bad_options_are_named(option, value, message):
    with pytest.raises(ValueError, match=message):
        FederateConfig(**{option: value}).check()


def test_lr_schedule_rounds_gives_each_round_its_part_of_one_decay():
    """A client's stint in round r of R (E local epochs, S steps each) reads the one cosine decay from step (r-1)*E*S."""
    from edge_ecg.federate import _Shifted
    from edge_ecg.tf import keras

    cosine = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=25 * 2 * 7, alpha=0.05)
    first_of_round_3 = _Shifted(cosine, 2 * 2 * 7)
    assert float(first_of_round_3(0)) == pytest.approx(float(cosine(28))) and float(first_of_round_3(5)) == pytest.approx(float(cosine(33)))
    assert float(_Shifted(cosine, 24 * 2 * 7)(13)) == pytest.approx(2e-3 * 0.05, rel=0.01)  # the last step of the last round: the floor


@pytest.mark.slow
def test_two_round_simulation_with_a_fixed_seed_gives_the_same_model_twice_and_survives_a_failing_client(
    ptbxl, tmp_path, monkeypatch
):
    """FedProx with FedBN (the path with the most state): two runs, bit-identical global weights.

    CS-12's client raises in round 2 of both runs (the fault drill): the round aggregates the
    other two, the report lists the failure, and the runs stay identical. One pair of
    simulations serves both checks (each simulation costs Flower's and Ray's start-up).
    """
    from edge_ecg.federate import FAIL_ENV, REPORT_JSON, REPORT_MD, ROUNDS_PLOT, WEIGHTS_FILE, federate

    monkeypatch.setenv(FAIL_ENV, "2:CS-12")
    # a cluster address left in the environment (nothing listens there) is not joined: the simulation's Ray is its own
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    config = FederateConfig(
        arch_kwargs=TINY_ARCH, rounds=2, local_epochs=1, site_train_limit=16, strategy="fedprox", proximal_mu=0.1,
        batch_norm="local", compare=(), n_boot=20, fine_tune="none", export_sites="none",
    )
    reports = [federate(tmp_path / f"run{k}", config, dataset=ptbxl) for k in (1, 2)]
    weights = [np.load(tmp_path / f"run{k}" / WEIGHTS_FILE) for k in (1, 2)]
    assert sorted(weights[0].files) == sorted(weights[1].files)
    for key in weights[0].files:
        assert np.array_equal(weights[0][key], weights[1][key]), key
    report = reports[0]
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    # the failing client: round 1 has every site, round 2 aggregated without CS-12, and the report says so
    assert set(report["rounds"][0]["bytes_sent"]) == {"AT-6", "CS-12", "unknown"}
    assert set(report["rounds"][1]["bytes_sent"]) == {"AT-6", "unknown"}
    (failure,) = report["failures"]
    assert (failure["round"], failure["stage"], failure["site"]) == (2, "train", "CS-12")
    assert "injected failure" in failure["error"]
    assert "| 2 | train | CS-12 |" in (tmp_path / "run1" / REPORT_MD).read_text()
    # FedBN: BatchNormalization weights stay on the site, so fewer bytes than the whole model are sent
    from edge_ecg import models
    from edge_ecg.federate import _bn_indices

    model = models.build("dscnn", num_samples=1000, num_leads=12, num_classes=5, **TINY_ARCH)
    full = sum(v.numpy().nbytes for v in model.weights)
    bn = sum(model.weights[i].numpy().nbytes for i in _bn_indices(model))
    assert bn > 0
    for r in report["rounds"]:
        assert all(0 < b < full - bn + 4096 and b < full for b in r["bytes_sent"].values())
    assert len(weights[0].files) == len(model.weights) - len(_bn_indices(model))
    assert report["test_macro_auc"]["pooled"]["federated"]["macro_auc"] is not None  # the run finished
    assert (tmp_path / "run1" / REPORT_JSON).is_file() and (tmp_path / "run1" / ROUNDS_PLOT).stat().st_size > 0


def test_cli_refuses_more_clients_per_round_than_sites(ptbxl_dir, tmp_path, capsys):
    from edge_ecg.cli import main

    rc = main(["federate", "--data", str(ptbxl_dir), "--run", str(tmp_path / "run"), "--clients-per-round", "9", "--compare", "none"])
    assert rc == 1
    assert "--clients-per-round 9: there are only 3 sites (AT-6, CS-12, unknown)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_cli_passes_highpass_and_augment_site_to_the_federation(ptbxl_dir, tmp_path, monkeypatch):
    import edge_ecg.federate
    from edge_ecg.cli import main

    seen = []
    monkeypatch.setattr(edge_ecg.federate, "federate", lambda run, config, **kw: seen.append(config) or
                        {"test_macro_auc": {"pooled": {}}, "paired": {}, "transfer": {}})
    assert main(["federate", "--data", str(ptbxl_dir), "--run", str(tmp_path / "run")]) == 0
    assert main(["federate", "--data", str(ptbxl_dir), "--run", str(tmp_path / "run"), "--highpass", "0.5", "--augment-site"]) == 0
    assert [(c.highpass_hz, c.augment_site) for c in seen] == [(0.0, False), (0.5, True)]


def test_cli_refuses_a_highpass_past_nyquist_before_writing(ptbxl_dir, tmp_path, capsys):
    from edge_ecg.cli import main

    rc = main(["federate", "--data", str(ptbxl_dir), "--run", str(tmp_path / "run"), "--highpass", "60", "--compare", "none"])
    assert rc == 1
    assert "--highpass: highpass_hz 60.0: a cutoff must lie between 0 and 50.0 Hz" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_transfer_fine_tunes_every_site_and_exports_the_chosen_one(ptbxl, tmp_path):
    """FedBN, then a head-only fine-tune per site from the global weights and the site's own batch norm (the rest of
    the network stays the federated one), paired bootstrap vs local, and one site's run folder through the existing
    export and firmware stages. With --highpass 0.5 and --augment-site: the sites' run folders carry both, the export
    the filter."""
    from edge_ecg.federate import WEIGHTS_FILE, federate
    from edge_ecg.federate.transfer import head_layers
    from edge_ecg.runfolder import RunFolder, federate_site_dir
    from edge_ecg.tf import keras

    config = FederateConfig(
        arch_kwargs=TINY_ARCH, rounds=1, local_epochs=1, site_train_limit=16, compare=("local",), n_boot=20,
        fine_tune="head", fine_tune_epochs=1, export_sites="unknown", compress_epochs=0, export_max_drop=1.0,  # barely trained
        batch_norm="local", highpass_hz=0.5, augment_site=True,
    )
    report = federate(tmp_path / "run", config, dataset=ptbxl)
    sites = ["AT-6", "CS-12", "unknown"]
    assert (report["config"]["highpass_hz"], report["config"]["augment_site"]) == (0.5, True)
    assert all("fine-tuned" in report["test_macro_auc"]["per_site"][s] for s in sites)
    assert report["test_macro_auc"]["pooled"]["fine-tuned"]["macro_auc"] is not None
    paired = report["paired"]
    assert paired["model"] == "fine-tuned" and set(paired["vs_local"]) == {*sites, "pooled"}
    assert paired["vs_local"]["CS-12"]["excluded_classes"] == ["HYP"]  # its fold 10 has no HYP record
    assert paired["vs_local"]["AT-6"]["excluded_classes"] == [] and paired["vs_local"]["AT-6"]["ci95"][0] <= paired["vs_local"]["AT-6"]["difference"]

    glob = np.load(tmp_path / "run" / WEIGHTS_FILE)
    model = keras.models.load_model(RunFolder(federate_site_dir(tmp_path / "run", "AT-6")).model, compile=False)
    head = {id(v) for layer in head_layers(model) for v in layer.weights}
    shared = [i for i in range(len(model.weights)) if f"w{i:03d}" in glob.files]  # FedBN: batch norm is the site's own
    assert 0 < len(shared) < len(model.weights)
    changed = [i for i in shared if not np.array_equal(model.weights[i].numpy(), glob[f"w{i:03d}"])]
    assert all(id(model.weights[i]) in head for i in changed), "head-only fine-tune changed another layer"
    kept = report["transfer"]["AT-6"]["fine_tune"]["best_epoch"] == 0  # no epoch beat the federated model on validation
    assert bool(changed) != kept

    assert "error" not in report["transfer"]["unknown"], report["transfer"]["unknown"]
    exported = RunFolder(federate_site_dir(tmp_path / "run", "unknown"))
    assert exported.tflite.stat().st_size > 0 and (exported.firmware("esp32") / "CMakeLists.txt").is_file()
    assert not RunFolder(federate_site_dir(tmp_path / "run", "AT-6")).export.exists()  # not asked for
    assert np.load(exported.predictions / "test_ecg_ids.npy").tolist() == report_test_ids(ptbxl, "unknown")
    # the high-pass travels: each site's training config and standardization, and the exported model_config.h
    for site in sites:
        folder = RunFolder(federate_site_dir(tmp_path / "run", site))
        train = json.loads(folder.config.read_text())["train"]
        assert (train["highpass_hz"], train["augment_site"]) == (0.5, True), site
        assert json.loads(folder.standardization.read_text())["highpass"]["cutoff_hz"] == 0.5, site
    assert "#define ECG_HIGHPASS_SOS" in (exported.export / "model_config.h").read_text()


def report_test_ids(ptbxl, site: str) -> list[int]:
    from edge_ecg.federate import site_of_records

    sites = split_sites(ptbxl, site_of_records(ptbxl.root, "device"), train_limit=16)
    return next(s.test for s in sites if s.name == site).tolist()


def test_fault_injection_spec_is_checked(monkeypatch):
    from edge_ecg.federate import FAIL_ENV, _fail_at_from_env

    monkeypatch.setenv(FAIL_ENV, "2:CS-12")
    assert _fail_at_from_env() == (2, "CS-12")
    monkeypatch.setenv(FAIL_ENV, "CS-12")
    with pytest.raises(ValueError, match="expected ROUND:SITE"):
        _fail_at_from_env()


def test_a_client_whose_model_differs_gets_a_clear_error():
    from edge_ecg import models
    from edge_ecg.federate import _set_weights
    from edge_ecg.runfolder import RunError

    server = models.build("dscnn", num_samples=1000, num_leads=12, num_classes=5, **TINY_ARCH)
    client = models.build("dscnn", num_samples=1000, num_leads=12, num_classes=5, filters=[8, 16, 32], strides=[4, 4, 4])
    arrays = {f"w{i:03d}": v.numpy() for i, v in enumerate(server.weights)}
    with pytest.raises(RunError, match="site CS-12: weight w0.. .* in this client's model but .* from the server; every site must build the same --arch"):
        _set_weights(client, arrays, site="CS-12")
    _set_weights(server, arrays, site="CS-12")  # the same model takes them


def test_export_sites_must_name_sites(ptbxl, ptbxl_dir):
    from edge_ecg.federate import _export_sites

    sites = split_sites(ptbxl, site_of_records(ptbxl_dir, "device"))
    assert _export_sites(FederateConfig(export_sites="all"), sites) == ["AT-6", "CS-12", "unknown"]
    assert _export_sites(FederateConfig(export_sites="none"), sites) == []
    with pytest.raises(ValueError, match="--export-sites: no site 'CS12'; the sites are AT-6, CS-12, unknown"):
        _export_sites(FederateConfig(export_sites="CS12"), sites)


@pytest.mark.slow
def test_fine_tune_selects_on_validation_or_keeps_all_epochs_when_a_class_is_missing(tmp_path):
    from edge_ecg import models
    from edge_ecg.federate.transfer import fine_tune
    from edge_ecg.train import FitData, FitOptions

    rng = np.random.default_rng(0)
    y = np.eye(5, dtype=np.float32)[np.arange(10) % 5]  # every class positive twice, negative eight times
    data = FitData(rng.normal(size=(10, 1000, 12)).astype(np.float32), y, rng.normal(size=(10, 1000, 12)).astype(np.float32), y.copy())
    model = models.build("dscnn", num_samples=1000, num_leads=12, num_classes=5, **TINY_ARCH)
    done = fine_tune(model, data, tmp_path / "a", "all", FitOptions(epochs=2, augment=False))
    assert done["best_epoch"] in (0, 1, 2) and done["val_auc"] >= done["start_val_auc"]  # epoch 0: the starting model
    assert done["selection"] == ("best validation macro AUC" if done["best_epoch"] else "kept the federated model: no epoch beat its validation macro AUC")
    assert (tmp_path / "a" / "history.csv").is_file()
    assert all(layer.trainable for layer in model.layers)  # unfrozen again for compression
    data.y_val[:, 4] = 0  # the site's validation fold has no HYP record: nothing to select on
    done = fine_tune(model, data, tmp_path / "b", "head", FitOptions(epochs=1, augment=False))
    assert done["selection"].startswith("none") and done["best_epoch"] is None
    with pytest.raises(ValueError, match="--fine-tune 'last'"):
        fine_tune(model, data, tmp_path / "c", "last", FitOptions(epochs=1))


def test_cinc_sources_become_sites_beside_the_ptbxl_sites(ptbxl, ptbxl_dir):
    from edge_ecg.federate import SITE_DATA_ID_OFFSET, load_sites_dataset

    cinc = ptbxl_dir.parent / "cinc"
    if not (cinc / "georgia").is_dir():
        pytest.skip(f"no CinC sample at {cinc}")
    config = FederateConfig(site_data=(f"georgia={cinc / 'georgia'}", f"chapman={cinc / 'chapman_shaoxing'}"))
    ds, site_of = load_sites_dataset(config, ptbxl)
    sites = {s.name: s for s in split_sites(ds, site_of)}
    assert set(sites) == {"AT-6", "CS-12", "unknown", "georgia", "chapman"}
    seen: set[int] = set()
    for s in sites.values():
        ids = set(s.ids().tolist())
        assert not seen & ids and len(ids) == len(s.ids())
        seen |= ids
    assert set(sites["georgia"].ids().tolist()) <= set(range(SITE_DATA_ID_OFFSET, 2 * SITE_DATA_ID_OFFSET))
    assert set(sites["chapman"].ids().tolist()) <= set(range(2 * SITE_DATA_ID_OFFSET, 3 * SITE_DATA_ID_OFFSET))
    n = len(sites["georgia"].ids())
    assert len(sites["georgia"].test) in (n // 10, n // 10 + 1) and len(sites["georgia"].train) >= 8 * n // 10 - 1
    assert ds.signals.shape[1:] == ptbxl.signals.shape[1:]  # resampled to the model's rate and window


@pytest.mark.parametrize("items, message", [(("georgia",), "expected NAME=PATH"), (("a=x", "a=y"), "site 'a' is given twice")])
def test_bad_site_data_is_named(items, message):
    with pytest.raises(ValueError, match=message):
        FederateConfig(site_data=items).check()


def test_site_data_may_not_reuse_a_ptbxl_site_name(ptbxl, ptbxl_dir):
    from edge_ecg.federate import load_sites_dataset

    with pytest.raises(ValueError, match="a PTB-XL site is already called 'CS-12'"):
        load_sites_dataset(FederateConfig(site_data=(f"CS-12={ptbxl_dir.parent / 'cinc' / 'georgia'}",)), ptbxl)
