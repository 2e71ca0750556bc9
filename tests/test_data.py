"""PTB-XL reading on the real shared subset, and each bad-input case on damaged copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edge_ecg import CLASSES
from edge_ecg.data import DataError, Standardizer, load_ptbxl, split_folds

README_FOLDS = {1: 101, 2: 92, 3: 77, 4: 97, 5: 85, 6: 76, 7: 108, 8: 87, 9: 136, 10: 128}
README_CLASSES = {"NORM": 528, "MI": 183, "STTC": 230, "CD": 193, "HYP": 97}


def test_counts_match_the_subset_readme(ptbxl):
    assert ptbxl.records_found == 987
    assert ptbxl.folds_found == README_FOLDS
    assert {c: int(ptbxl.labels[:, i].sum()) for i, c in enumerate(CLASSES)} == README_CLASSES
    assert len(ptbxl.unlabelled) == 12 and len(ptbxl) == 975
    assert ptbxl.skipped == []
    assert ptbxl.signals.shape == (975, 1000, 12) and ptbxl.signals.dtype == np.float32


def test_unlabelled_records_are_those_without_a_diagnostic_code(ptbxl, ptbxl_dir):
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").set_index("ecg_id")
    assert 18 in ptbxl.unlabelled  # {'AFLT': 100.0}: a rhythm statement only
    assert db.loc[18, "scp_codes"] == "{'AFLT': 100.0}"
    assert set(ptbxl.unlabelled).isdisjoint(ptbxl.ecg_ids.tolist())


@pytest.mark.parametrize(
    "ecg_id, expected",
    [
        (1, {"NORM"}),  # NORM 100, LVOLT/SR are not diagnostic
        (8, {"MI"}),  # IMI at likelihood 35 still counts
        (39, {"MI", "STTC"}),  # IMI, LNGQT, NST_, DIG
        (45, {"CD", "HYP"}),  # IRBBB, RAO/RAE, RVH
        (77, {"MI", "CD"}),  # AMI, IRBBB
    ],
)
def test_labels_checked_by_hand(ptbxl, ecg_id, expected):
    row = int(np.flatnonzero(ptbxl.ecg_ids == ecg_id)[0])
    assert {c for c, v in zip(CLASSES, ptbxl.labels[row]) if v} == expected


def test_signals_are_millivolts_in_ptbxl_lead_order(ptbxl, ptbxl_dir):
    import wfdb

    raw, fields = wfdb.rdsamp(str(ptbxl_dir / "records100/00000/00001_lr"))
    assert fields["sig_name"] == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert fields["units"][0] == "mV"
    np.testing.assert_array_equal(ptbxl.signals[0], raw.astype(np.float32))


def test_cache_round_trip_gives_identical_arrays(ptbxl_dir, tmp_path):
    first = load_ptbxl(ptbxl_dir, cache_dir=tmp_path)
    assert first.cache_file.is_file()
    second = load_ptbxl(ptbxl_dir, cache_dir=tmp_path)
    for name in ("signals", "labels", "folds", "ecg_ids", "patient_ids"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.summary() == second.summary()


def test_cache_key_follows_content(small_copy, tmp_path):
    before = load_ptbxl(small_copy, cache_dir=tmp_path)
    dat = small_copy / "records100/00000/00002_lr.dat"
    raw = bytearray(dat.read_bytes())
    raw[100] ^= 0x01
    dat.write_bytes(bytes(raw))
    after = load_ptbxl(small_copy, cache_dir=tmp_path)
    assert after.cache_file != before.cache_file
    assert not np.array_equal(after.signals, before.signals)


def test_split_is_folds_1_to_8_9_10(ptbxl):
    s = split_folds(ptbxl)
    assert set(s.train.folds.tolist()) == set(range(1, 9))
    assert set(s.val.folds.tolist()) == {9} and set(s.test.folds.tolist()) == {10}
    assert len(s.train) + len(s.val) + len(s.test) == len(ptbxl)
    assert len(s.test) == 126


def test_standardization_is_fitted_on_training_folds_only(ptbxl, tmp_path):
    s = split_folds(ptbxl)
    std = Standardizer.fit(s.train.signals)
    flat = s.train.signals.reshape(-1, 12).astype(np.float64)
    np.testing.assert_allclose(std.mean, flat.mean(0), rtol=1e-6, atol=1e-7)
    everything = Standardizer.fit(ptbxl.signals)
    assert not np.allclose(std.mean, everything.mean)
    z = std.transform(s.train.signals).reshape(-1, 12).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    std.save(tmp_path / "standardization.json")
    again = Standardizer.load(tmp_path / "standardization.json")
    np.testing.assert_array_equal(again.mean, std.mean)
    np.testing.assert_array_equal(again.std, std.std)


# --------------------------------------------------------------------------- bad input


def _reason(ds, ecg_id):
    reasons = [i.reason for i in ds.skipped if i.ecg_id == ecg_id]
    assert reasons, f"ecg_id {ecg_id} was not reported as skipped"
    return reasons[0]


def _edit_header(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _check_skip(small_copy, ecg_id, *fragments):
    ds = load_ptbxl(small_copy, cache=False)
    reason = _reason(ds, ecg_id)
    for fragment in fragments:
        assert fragment in reason
    assert ecg_id not in ds.ecg_ids.tolist() and len(ds.skipped) == 1
    with pytest.raises(DataError, match=f"ecg_id {ecg_id}"):
        load_ptbxl(small_copy, cache=False, strict=True)


def test_missing_dat_is_skipped_and_named(small_copy):
    (small_copy / "records100/00000/00003_lr.dat").unlink()
    _check_skip(small_copy, 3, "00003_lr.dat", "not found")


def test_missing_header_is_skipped_and_named(small_copy):
    (small_copy / "records100/00000/00004_lr.hea").unlink()
    _check_skip(small_copy, 4, "00004_lr.hea", "not found")


def test_truncated_dat_is_skipped(small_copy):
    dat = small_copy / "records100/00000/00005_lr.dat"
    dat.write_bytes(dat.read_bytes()[:5000])
    _check_skip(small_copy, 5, "00005_lr", "unreadable")


def test_garbage_header_is_skipped(small_copy):
    (small_copy / "records100/00000/00006_lr.hea").write_text("this is not a WFDB header\n")
    _check_skip(small_copy, 6, "00006_lr", "unreadable")


def test_wrong_sampling_rate_is_skipped(small_copy):
    _edit_header(small_copy / "records100/00000/00002_lr.hea", "00002_lr 12 100 1000", "00002_lr 12 250 1000")
    _check_skip(small_copy, 2, "00002_lr.hea", "250", "expected 100 Hz")


def test_wrong_length_is_skipped(small_copy):
    _edit_header(small_copy / "records100/00000/00007_lr.hea", "00007_lr 12 100 1000", "00007_lr 12 100 600")
    _check_skip(small_copy, 7, "00007_lr", "600 samples")


def _write_samples(dat, samples):
    """Write format-16 samples and the matching checksums into the header (a consistent record)."""
    samples.tofile(dat)
    hea = dat.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    for lead in range(samples.shape[1]):
        fields = lines[1 + lead].split(" ")
        fields[6] = str(int(samples[:, lead].astype(np.int64).sum()) % 65536)  # WFDB checksum column
        lines[1 + lead] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")


def test_nan_lead_is_skipped(small_copy):
    dat = small_copy / "records100/00000/00008_lr.dat"
    samples = np.fromfile(dat, "<i2").reshape(1000, 12)
    samples[500, 6] = -32768  # WFDB format 16's "no sample" value reads as NaN
    _write_samples(dat, samples)
    _check_skip(small_copy, 8, "00008_lr.dat", "NaN", "V1")


def test_flat_line_lead_is_skipped(small_copy):
    dat = small_copy / "records100/00000/00009_lr.dat"
    samples = np.fromfile(dat, "<i2").reshape(1000, 12)
    samples[:, 9] = 7
    _write_samples(dat, samples)
    _check_skip(small_copy, 9, "00009_lr.dat", "flat-line", "V4")


def test_flipped_bits_in_dat_fail_the_header_checksum(small_copy):
    dat = small_copy / "records100/00000/00002_lr.dat"
    raw = bytearray(dat.read_bytes())
    raw[2 * (12 * 300 + 4)] ^= 0x10  # sample 300 of lead AVL: a plausible value, caught only by the checksum
    dat.write_bytes(bytes(raw))
    _check_skip(small_copy, 2, "00002_lr.dat", "checksum", "00002_lr.hea", "AVL")


def test_infinite_samples_from_a_tiny_gain_are_skipped(small_copy):
    hea = small_copy / "records100/00000/00003_lr.hea"
    lines = hea.read_text().splitlines()
    assert lines[8].endswith(" V2") and "1000.0(0)/mV" in lines[8]
    lines[8] = lines[8].replace("1000.0(0)/mV", "1e-40(0)/mV")  # finite in float64, inf in float32
    hea.write_text("\n".join(lines) + "\n")
    _check_skip(small_copy, 3, "00003_lr.dat", "infinite", "V2", "gain")


def test_non_integer_strat_fold_is_skipped_and_named(small_copy):
    db = pd.read_csv(small_copy / "ptbxl_database.csv")
    db["strat_fold"] = db["strat_fold"].astype(float)
    db.loc[db.ecg_id == 4, "strat_fold"] = 3.5
    db.to_csv(small_copy / "ptbxl_database.csv", index=False)
    _check_skip(small_copy, 4, "strat_fold 3.5", "not an integer")


def test_unknown_scp_code_is_skipped_and_named(small_copy):
    db = pd.read_csv(small_copy / "ptbxl_database.csv")
    db.loc[db.ecg_id == 10, "scp_codes"] = "{'NORM': 100.0, 'XYZZY': 50.0}"
    db.to_csv(small_copy / "ptbxl_database.csv", index=False)
    _check_skip(small_copy, 10, "XYZZY", "scp_statements.csv")


def test_database_missing_a_column_is_an_error_naming_file_and_column(small_copy):
    db = pd.read_csv(small_copy / "ptbxl_database.csv").drop(columns=["strat_fold"])
    db.to_csv(small_copy / "ptbxl_database.csv", index=False)
    with pytest.raises(DataError, match=r"ptbxl_database\.csv: missing column\(s\) strat_fold"):
        load_ptbxl(small_copy, cache=False)


def test_missing_tables_and_folder_are_errors(small_copy, tmp_path):
    with pytest.raises(DataError, match="PTB-XL folder not found"):
        load_ptbxl(tmp_path / "nowhere")
    (small_copy / "scp_statements.csv").unlink()
    with pytest.raises(DataError, match=r"scp_statements\.csv: file not found"):
        load_ptbxl(small_copy)


def test_bad_rate_argument_is_an_error(small_copy):
    with pytest.raises(DataError, match="rate=250"):
        load_ptbxl(small_copy, rate=250)
