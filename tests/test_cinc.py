"""CinC reader: SNOMED mapping, headers, resampling, the window policy, bad input, on real and hand-written records."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.signal

from edge_ecg import CLASSES
from edge_ecg.data import DataError, detect_format, load_cinc, load_dataset
from edge_ecg.data.cinc import EXTERNAL_FOLD, parse_header
from edge_ecg.data.ptbxl import LEADS
from edge_ecg.data.resample import WindowError, average_windows, resample, windows
from edge_ecg.data.snomed import load_table, map_codes

REPO = Path(__file__).resolve().parents[1]
CINC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cinc"
CINC_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
REAL = CINC / "georgia" / "E00001.mat"


@pytest.fixture(scope="module")
def cinc_dir() -> Path:
    if not (CINC / "README.md").is_file():
        pytest.skip(f"CinC sample not found at {CINC}")
    return CINC


def write_record(folder: Path, name: str, val: np.ndarray, *, dx: str | None = "426783006", fs: int = 500,
                 gain: str = "1000/mV", leads: tuple[str, ...] = CINC_LEADS, record_line_name: str | None = None) -> Path:
    """A CinC record (MAT v4 'val' int16 + WFDB header with true checksums) written by hand."""
    folder.mkdir(parents=True, exist_ok=True)
    val = np.asarray(val, np.int16)
    scipy.io.savemat(folder / f"{name}.mat", {"val": val}, format="4")
    lines = [f"{record_line_name or name} {len(leads)} {fs} {val.shape[1]}"]
    for lead, row in zip(leads, val):
        checksum = int(row.astype(np.int64).sum()) % 65536
        checksum = checksum - 65536 if checksum >= 32768 else checksum
        lines.append(f"{name}.mat 16+24 {gain} 16 0 {int(row[0])} {checksum} 0 {lead}")
    lines += ["#Age: 50", "#Sex: Female"] + ([f"#Dx: {dx}"] if dx is not None else []) + ["#Rx: Unknown"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.hea"


@pytest.fixture(scope="module")
def real_val(cinc_dir) -> np.ndarray:
    return scipy.io.loadmat(REAL)["val"]


# --------------------------------------------------------------------------- SNOMED table


def test_every_table_row_matches_ptbxl_statements(ptbxl_dir):
    import pandas as pd

    scp = pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0)
    table = load_table()
    assert len(table) == 133
    for row in table.values():
        classes = set()
        for s in row.statements:
            assert s in scp.index, f"{row.code}: {s} is not a PTB-XL statement"
            classes.add(scp.loc[s, "diagnostic_class"] if scp.loc[s, "diagnostic"] == 1 else "")
        assert classes <= {row.superclass}, f"{row.code} ({row.term}): {row.statements} give {classes}, table says {row.superclass!r}"
        assert row.statements or not row.superclass


def test_table_lists_every_official_code(cinc_dir):
    table = load_table()
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        with open(cinc_dir / "snomed" / name) as fh:
            for r in csv.DictReader(fh):
                assert r["SNOMEDCTCode"] in table, r


def test_multi_code_record_gets_every_superclass():
    got = map_codes(["164889003", "59118001", "164934002"])  # AF, RBBB, T-wave abnormal
    assert got.classes == ("STTC", "CD")
    assert got.no_superclass == ("164889003",) and got.unknown == ()


def test_unknown_code_is_listed_not_dropped():
    got = map_codes(["164873001", "999999999"])
    assert got.classes == ("HYP",) and got.unknown == ("999999999",)
    alone = map_codes(["999999999", "426783006"])
    assert not alone.labelled and alone.unknown == ("999999999",)


@pytest.mark.parametrize(
    "codes, sinus, nsr, unlabelled",
    [
        (["426783006"], ("NORM",), ("NORM",), ()),  # sinus rhythm alone
        (["426177001"], ("NORM",), (), ()),  # sinus bradycardia alone
        (["426783006", "39732003"], (), (), ()),  # sinus rhythm + left axis deviation: says nothing normal
        (["164889003"], (), (), ()),  # atrial fibrillation alone
        (["426783006", "164873001"], ("HYP",), ("HYP",), ("HYP",)),  # a superclass code wins over the policy
    ],
)
def test_rhythm_only_policies(codes, sinus, nsr, unlabelled):
    assert map_codes(codes, "sinus").classes == sinus
    assert map_codes(codes, "nsr").classes == nsr
    assert map_codes(codes, "unlabelled").classes == unlabelled


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="rhythm_only must be one of sinus, nsr, unlabelled"):
        map_codes(["426783006"], "normal")


def test_hand_written_headers_through_the_reader(tmp_path, real_val):
    root = tmp_path / "cinc"
    write_record(root / "siteA", "A1", real_val, dx="164889003,59118001,164934002")
    write_record(root / "siteA", "A2", real_val, dx="164873001,999999999")
    write_record(root / "siteA", "A3", real_val, dx="426783006")
    write_record(root / "siteB", "B1", real_val, dx="426177001,426177001")
    ds = load_cinc(root)
    by_name = {ds.names[int(i)]: tuple(c for c, v in zip(CLASSES, y) if v) for i, y in zip(*ds.record_labels())}
    assert by_name == {"siteA/A1": ("STTC", "CD"), "siteA/A2": ("HYP",), "siteA/A3": ("NORM",), "siteB/B1": ("NORM",)}
    a = ds.code_counts["siteA"]
    assert a["unknown_codes"] == {"999999999": 1}
    assert a["codes_without_superclass"] == {"164889003": 1, "426783006": 1}
    assert a["norm_from_rhythm"] == 1 and ds.code_counts["siteB"]["norm_from_rhythm"] == 1
    assert set(ds.folds.tolist()) == {EXTERNAL_FOLD}
    strict = load_cinc(root, rhythm_only="unlabelled")
    assert sorted(strict.names[i] for i in strict.unlabelled) == ["siteA/A3", "siteB/B1"]


# --------------------------------------------------------------------------- real records


def test_real_sample_reads_in_ptbxl_units_and_order(cinc_dir, real_val):
    assert detect_format(cinc_dir) == "cinc"
    ds = load_dataset(cinc_dir, 100)
    assert ds.records_found == 94 and not ds.skipped
    assert ds.signals.shape[1:] == (1000, 12) and ds.signals.dtype == np.float32 and ds.leads == LEADS
    assert {k: v["records"] for k, v in ds.code_counts.items()} == {"georgia": 74, "chapman_shaoxing": 20}
    first = next(i for i, n in ds.names.items() if n == "georgia/E00001")
    row = int(np.flatnonzero(ds.ecg_ids == first)[0])
    expected = resample(real_val.T / 1000.0, 500, 100)  # header: 1000/mV, baseline 0
    np.testing.assert_allclose(ds.signals[row], expected, atol=1e-6)


def test_ptbxl_folder_is_detected(ptbxl_dir):
    assert detect_format(ptbxl_dir) == "ptbxl"


def test_georgia_record_line_quirk_is_read(tmp_path, real_val):
    hea = write_record(tmp_path, "E1", real_val, record_line_name="E1.mat")
    assert parse_header(hea).record == "E1"


def test_wrong_cinc2020_gain_is_reported_suspicious(tmp_path, cinc_dir):
    val = scipy.io.loadmat(cinc_dir / "georgia" / "E00015.mat")["val"]
    write_record(tmp_path / "g", "E00015", val, dx="164873001", gain="4880/mV")
    write_record(tmp_path / "g", "E00016", val, dx="164873001")
    ds = load_cinc(tmp_path / "g")
    assert len(ds) == 2 and len(ds.suspicious) == 1
    reason = ds.suspicious[0].reason
    assert "E00015.mat" in reason and "gain 4880/mV in E00015.hea" in reason and "outside 0.5-5 mV" in reason


def test_implausible_amplitude_alone_is_reported_suspicious(tmp_path, real_val):
    write_record(tmp_path / "a", "TINY", real_val, dx="164873001", gain="20000/mV")  # reads 20 times too small
    ds = load_cinc(tmp_path / "a")
    assert len(ds) == 1 and len(ds.suspicious) == 1
    assert "TINY.mat: largest lead amplitude 0.05 mV" in ds.suspicious[0].reason
    assert "check the gain in the header" in ds.suspicious[0].reason


# --------------------------------------------------------------------------- resampling and windows


def test_resample_500_to_100_keeps_a_sine_and_equals_scipy():
    t = np.arange(5000) / 500.0
    x = np.stack([np.sin(2 * np.pi * 5.0 * t), np.cos(2 * np.pi * 12.0 * t)], axis=1)
    y = resample(x, 500, 100)
    assert y.shape == (1000, 2) and y.dtype == np.float32
    t100 = np.arange(1000) / 100.0
    inner = slice(50, 950)  # the filter's edges see zero padding
    np.testing.assert_allclose(y[inner, 0], np.sin(2 * np.pi * 5.0 * t100)[inner], atol=2e-3)
    np.testing.assert_allclose(y[inner, 1], np.cos(2 * np.pi * 12.0 * t100)[inner], atol=2e-3)
    np.testing.assert_allclose(y, scipy.signal.resample_poly(x, 1, 5, axis=0).astype(np.float32), rtol=0, atol=1e-6)


def test_resample_removes_what_the_new_rate_cannot_hold():
    t = np.arange(5000) / 500.0
    y = resample(np.sin(2 * np.pi * 70.0 * t)[:, None], 500, 100)  # 70 Hz > 50 Hz Nyquist: would alias to 30 Hz
    assert np.abs(y[50:950]).max() < 0.01


def test_a_6_second_record_is_zero_padded_to_one_window():
    x = np.random.default_rng(0).normal(size=(600, 12)).astype(np.float32)
    w = windows(x, 1000, 500)
    assert w.shape == (1, 1000, 12)
    np.testing.assert_array_equal(w[0, :600], x)
    assert not w[0, 600:].any()


def test_a_60_second_record_gives_six_disjoint_windows_averaged_per_record():
    x = np.random.default_rng(1).normal(size=(6000, 12)).astype(np.float32)
    w = windows(x, 1000, 500)
    assert w.shape == (6, 1000, 12)
    np.testing.assert_array_equal(w.reshape(6000, 12), x)
    ids, mean = average_windows(np.array([7] * 6 + [3]), np.arange(7, dtype=np.float32)[:, None])
    assert ids.tolist() == [7, 3] and mean[:, 0].tolist() == [2.5, 6.0]


def test_a_record_below_the_minimum_is_refused():
    with pytest.raises(WindowError, match="400 samples, fewer than the minimum 500"):
        windows(np.zeros((400, 12), np.float32), 1000, 500)


def test_window_policy_through_the_reader(tmp_path, real_val):
    long = np.tile(real_val, (1, 6))  # 60 s at 500 Hz
    write_record(tmp_path / "w", "L60", long)
    write_record(tmp_path / "w", "S6", real_val[:, :3000])  # 6 s
    write_record(tmp_path / "w", "S3", real_val[:, :1500])  # 3 s: refused
    ds = load_cinc(tmp_path / "w")
    per = {ds.names[int(i)]: int((ds.ecg_ids == i).sum()) for i in np.unique(ds.ecg_ids)}
    assert per == {"L60": 6, "S6": 1}
    assert len(ds.skipped) == 1 and "S3.hea: 3.00 s record" in ds.skipped[0].reason


# --------------------------------------------------------------------------- bad input


def test_a_folder_of_neither_layout_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"neither a PTB-XL folder \(no ptbxl_database.csv\) nor a CinC folder"):
        load_dataset(tmp_path)
    shutil.copy(REPO.parent / "shared" / "data" / "ptbxl" / "records100" / "00000" / "00001_lr.hea", tmp_path / "x.hea")
    with pytest.raises(DataError, match=r"1 .hea header\(s\) but none has a #Dx line"):
        load_dataset(tmp_path)


def test_a_header_without_dx_is_skipped_naming_the_file(tmp_path, real_val):
    write_record(tmp_path / "d", "OK", real_val)
    write_record(tmp_path / "d", "NODX", real_val, dx=None)
    ds = load_cinc(tmp_path / "d")
    assert len(ds) == 1 and len(ds.skipped) == 1
    assert ds.skipped[0].reason.startswith(str(tmp_path / "d" / "NODX.hea")) and "no #Dx line" in ds.skipped[0].reason
    with pytest.raises(DataError, match=r"NODX.hea: no #Dx line"):
        load_cinc(tmp_path / "d", strict=True)


def test_a_record_with_fewer_leads_is_skipped_naming_the_file_and_leads(tmp_path, real_val):
    write_record(tmp_path / "l", "SIX", real_val[:6], leads=CINC_LEADS[:6])
    ds = load_cinc(tmp_path / "l")
    assert len(ds) == 0
    reason = ds.skipped[0].reason
    assert "SIX.hea" in reason and "V1,V2,V3,V4,V5,V6 are missing" in reason


def test_a_corrupted_signal_is_skipped(tmp_path, real_val):
    hea = write_record(tmp_path / "c", "BAD", real_val)
    bad = real_val.copy()
    bad[3, 100] += 7
    scipy.io.savemat(hea.with_suffix(".mat"), {"val": bad}, format="4")
    ds = load_cinc(tmp_path / "c")
    assert "BAD.mat: samples do not match the checksum in BAD.hea for lead(s) AVR" in ds.skipped[0].reason
