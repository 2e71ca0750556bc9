"""External evaluation: a trained, exported tiny run scored on CinC and PTB-XL folders, its own files untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_ecg.cli import main
from edge_ecg.external_eval import ExternalEvalError, evaluate_external

CINC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cinc"
TINY = ["--arch-arg", "filters=[8,16,16]", "--arch-arg", "strides=[4,4,4]"]
N_BOOT = 50


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cinc_small(tmp_path_factory) -> Path:
    """Six Georgia and four Chapman-Shaoxing real records, copied."""
    if not (CINC / "README.md").is_file():
        pytest.skip(f"CinC sample not found at {CINC}")
    root = tmp_path_factory.mktemp("cinc") / "cinc"
    for source, names in (("georgia", ["E00001", "E00002", "E00003", "E00004", "E00005", "E00006"]),
                          ("chapman_shaoxing", ["JS00001", "JS00002", "JS00004", "JS00005"])):
        (root / source).mkdir(parents=True)
        for n in names:
            for ext in (".hea", ".mat"):
                shutil.copy(CINC / source / (n + ext), root / source / (n + ext))
    return root


@pytest.fixture(scope="module")
def exported_run(ptbxl_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("external") / "run"
    for argv in (["train", "--data", str(ptbxl_dir), "--run", str(run), "--epochs", "1", "--train-limit", "64", *TINY],
                 ["export", "--run", str(run), "--clip", "off", "--max-drop", "1"]):
        assert main(argv) == 0, argv
    return run


@pytest.mark.slow
def test_external_evaluation_leaves_the_run_byte_identical(exported_run, cinc_small, tmp_path):
    before = tree_hashes(exported_run)
    for model in ("float", "int8"):
        out = tmp_path / model
        assert main(["evaluate", "--run", str(exported_run), "--data", str(cinc_small), "--out", str(out), "--model", model]) == 0
        report = json.loads((out / "metrics.json").read_text())
        assert report["model"] == model and report["records"]["found"] == 10
        n = report["records"]["evaluated"]
        assert n + report["records"]["unlabelled"] + report["records"]["skipped"] == 10
        assert set(report["per_source"]) == {"georgia", "chapman_shaoxing"}
        assert sum(s["records"] for s in report["per_source"].values()) == n
        assert np.load(out / "predictions" / "external_probs.npy").shape == (n, 5)
        for name in ("report.md", "records.csv", "data.json", "roc.png", "roc_georgia.png", "confusion.png"):
            assert (out / name).is_file(), name
    assert tree_hashes(exported_run) == before


@pytest.mark.slow
def test_int8_path_reproduces_the_exports_tflm_outputs(exported_run, ptbxl_dir, tmp_path):
    """On PTB-XL, the external int8 path gives the export's own TFLite Micro outputs for its test records."""
    from edge_ecg.preprocess import output_probabilities

    report = evaluate_external(exported_run, ptbxl_dir, tmp_path / "o", model="int8", n_boot=N_BOOT, plots=False)
    assert report["format"] == "ptbxl" and report["records"]["evaluated"] > 500  # every fold, not only fold 10
    info = json.loads((exported_run / "export" / "export.json").read_text())
    q = np.load(exported_run / "export" / "test_int8_outputs.npy")
    expected = output_probabilities(q, info["tflite"]["output"]["scale"], info["tflite"]["output"]["zero_point"],
                                    info["tflite"]["output_kind"])
    ids = np.load(tmp_path / "o" / "predictions" / "external_ecg_ids.npy")
    probs = np.load(tmp_path / "o" / "predictions" / "external_probs.npy")
    rows = [int(np.flatnonzero(ids == i)[0]) for i in np.load(exported_run / "export" / "test_ecg_ids.npy")]
    np.testing.assert_array_equal(probs[rows], expected)


@pytest.mark.slow
def test_another_folder_without_out_is_refused_and_nothing_is_written(exported_run, cinc_small, capsys):
    before = tree_hashes(exported_run)
    assert main(["evaluate", "--run", str(exported_run), "--data", str(cinc_small)]) == 1
    assert "is not the data of run" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(exported_run), "--data", str(cinc_small), "--out", str(exported_run)]) == 1
    assert "whose own reports are never written" in capsys.readouterr().err
    assert tree_hashes(exported_run) == before


@pytest.mark.slow
def test_bad_data_is_a_clear_error_and_out_is_not_created(exported_run, tmp_path, capsys):
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "readme.txt").write_text("no records")
    out = tmp_path / "out"
    assert main(["evaluate", "--run", str(exported_run), "--data", str(neither), "--out", str(out)]) == 1
    assert f"{neither}: neither a PTB-XL folder" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_a_folder_with_only_unusable_records_names_them(exported_run, cinc_small, tmp_path):
    import scipy.io

    folder = tmp_path / "six"
    folder.mkdir()
    src = cinc_small / "georgia" / "E00001"
    lines = (src.with_suffix(".hea")).read_text().splitlines()
    (folder / "E00001.hea").write_text("\n".join(["E00001 6 500 5000", *lines[1:7], *[ln for ln in lines if ln.startswith("#")]]) + "\n")
    scipy.io.savemat(folder / "E00001.mat", {"val": scipy.io.loadmat(src.with_suffix(".mat"))["val"][:6]}, format="4")
    with pytest.raises(ExternalEvalError, match=r"no labelled record to evaluate(.|\n)*E00001.hea: leads I,II,III,aVR,aVL,aVF"):
        evaluate_external(exported_run, folder, tmp_path / "out", n_boot=N_BOOT)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bench_data_sends_every_external_record_and_matches_tflm(exported_run, cinc_small, tmp_path):
    """`bench --data`: every labelled CinC window is sent, equals TFLM on the same bytes, the run's bench is untouched.

    The fixture's export is `--runtime tflm`, so the AOT board emulator does not apply; the serial
    path is the same code as the run's own bench (tests/test_boards.py).
    """
    import scipy.io

    from edge_ecg.bench import WINDOW_ID_BASE, external_records
    from edge_ecg.bench.runner import read_jsonl
    from edge_ecg.data import Standardizer, load_dataset
    from edge_ecg.export.emulator import tflm_run
    from edge_ecg.preprocess import int8_input
    from edge_ecg.runfolder import INDEX_FILE, STANDARDIZATION_FILE

    folder = tmp_path / "cinc_long"
    shutil.copytree(cinc_small, folder)
    # a 15-s record (two windows): E00001 followed by the first half of E00002, checksums rewritten
    a, b = (scipy.io.loadmat(cinc_small / "georgia" / f"{n}.mat")["val"] for n in ("E00001", "E00002"))
    val = np.concatenate([a, b[:, :2500]], axis=1)
    lines = (cinc_small / "georgia" / "E00001.hea").read_text().splitlines()
    signal_lines = [" ".join(["X00001.mat", *ln.split()[1:6], str(int(val[i].astype(np.int64).sum()) % 65536), *ln.split()[7:]])
                    for i, ln in enumerate(lines[1:13])]
    (folder / "georgia" / "X00001.hea").write_text("\n".join(["X00001 12 500 7500", *signal_lines,
                                                             *[ln for ln in lines if ln.startswith("#")]]) + "\n")
    scipy.io.savemat(folder / "georgia" / "X00001.mat", {"val": val.astype(np.int16)}, format="4")

    assert main(["bench", "--run", str(exported_run), "--emulator", "tflm", "--limit", "3"]) == 0  # the run's own results
    own = tree_hashes(exported_run)
    assert main(["bench", "--run", str(exported_run), "--emulator", "tflm", "--data", str(folder)]) == 0
    backend = "emulator-tflm-cinc_long"
    added = set(tree_hashes(exported_run)) - set(own)
    assert {f"bench/{backend}.jsonl", f"bench/{backend}.json"} <= added  # (and the report's files, same prefix)
    assert all(name.startswith(f"bench/{backend}") for name in added), added
    after = tree_hashes(exported_run)  # the index lists every result, so it changes; nothing else of the run does
    assert {k: after[k] for k in own if k != INDEX_FILE} == {k: v for k, v in own.items() if k != INDEX_FILE}

    ds = load_dataset(folder, 100, window=1000)
    ids = list(dict.fromkeys(ds.ecg_ids.tolist()))
    assert len(ids) + len(ds.unlabelled) + len(ds.skipped) == 11 and len(ds) == len(ids) + 1  # X00001 gives 2 windows
    summary = json.loads((exported_run / "bench" / f"{backend}.json").read_text())
    assert summary["ok"] == summary["records"] == len(ds) and not summary["failed"] and not summary["missing"]
    assert summary["identical_to_reference"] == len(ds) and summary["mismatches"] == []
    assert summary["external"]["records_benched"] == len(ids)
    long_id = next(i for i, n in ds.names.items() if n.endswith("X00001"))
    assert summary["external"]["rows"][str(long_id * WINDOW_ID_BASE + 1)] == "georgia/X00001 window 2/2"

    # the reference computed here, independently: the run's standardization, the export's quantization, TFLM
    info = json.loads((exported_run / "export" / "export.json").read_text())
    std = Standardizer.load(exported_run / STANDARDIZATION_FILE)
    q = int8_input(ds.signals, std.mean, std.std, info["calibration"]["clip_sigma"],
                   info["tflite"]["input"]["scale"], info["tflite"]["input"]["zero_point"])
    expected = tflm_run((exported_run / "export" / "model_int8.tflite").read_bytes(), q)
    _, rows = read_jsonl(exported_run / "bench" / f"{backend}.jsonl")
    window = {}
    for k, i in enumerate(ds.ecg_ids.tolist()):
        window[i] = window.get(i, -1) + 1
        row = next(r for r in rows if r["ecg_id"] == i * WINDOW_ID_BASE + window[i])
        assert row["int8"] == expected[k].tolist(), row["ecg_id"]

    # labels are the CinC headers' (through the SNOMED table), per window of their record
    ext = external_records(exported_run, folder)
    id_of = {n: i for i, n in ds.names.items()}
    # CLASSES order NORM MI STTC CD HYP; #Dx of JS00001: AF, RBBB (CD), T-wave abnormal (STTC); E00001: sinus rhythm alone
    for name, want in (("chapman_shaoxing/JS00001", [0, 0, 1, 1, 0]), ("georgia/E00001", [1, 0, 0, 0, 0]),
                       ("georgia/E00004", [0, 0, 1, 0, 1])):
        np.testing.assert_array_equal(ext["labels"][id_of[name] * WINDOW_ID_BASE], want, err_msg=name)
    np.testing.assert_array_equal(ext["labels"][long_id * WINDOW_ID_BASE + 1], [1, 0, 0, 0, 0])
