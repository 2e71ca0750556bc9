"""End to end through the installed `edge-ecg` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_ecg.cli import build_parser, main

SUBCOMMANDS = ["data", "train", "evaluate", "compress", "export", "build", "flash", "bench", "mlperf", "run"]


def edge_ecg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_ecg.cli", *args], capture_output=True, text=True, timeout=300)


def test_data_info_json_prints_the_subset_counts(ptbxl_dir):
    out = edge_ecg("data", "info", "--data", str(ptbxl_dir), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["records"] == 987 and info["labelled"] == 975
    assert info["per_fold"] == {"1": 101, "2": 92, "3": 77, "4": 97, "5": 85, "6": 76, "7": 108, "8": 87, "9": 136, "10": 128}
    assert info["per_class"] == {"NORM": 528, "MI": 183, "STTC": 230, "CD": 193, "HYP": 97}
    assert info["skipped"] == []
    assert info["unlabelled"] == 12


def test_data_info_reports_a_skipped_record(small_copy, capsys):
    (small_copy / "records100/00000/00003_lr.dat").unlink()
    assert main(["data", "info", "--data", str(small_copy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["skipped"] == [{"ecg_id": 3, "reason": f"{small_copy}/records100/00000/00003_lr.dat: file not found"}]
    assert main(["data", "info", "--data", str(small_copy), "--strict"]) == 1
    assert "00003_lr.dat: file not found" in capsys.readouterr().err


def test_missing_data_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "info", "--data", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge-ecg: error:") and "absent" in err and "Traceback" not in err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: edge-ecg " + command in capsys.readouterr().out


def test_data_info_on_tables_without_records_summarizes_by_reason_and_fails(small_copy, capsys):
    import shutil

    shutil.rmtree(small_copy / "records100")  # the tables alone, as after copying only the CSV files
    assert main(["data", "info", "--data", str(small_copy)]) == 1
    out, err = capsys.readouterr()
    assert "skipped 10 record(s): *.hea: file not found" in out
    assert out.count("    e.g. ") == 3 and "... and 7 more (--json lists them all)" in out
    assert len(out.splitlines()) < 60  # a summary, not one line per record
    last = err.strip().splitlines()[-1]  # after the loading progress line
    assert last.startswith("edge-ecg: error: ") and "none of the 10 records" in last and "edge-ecg data download" in last
    assert main(["data", "info", "--data", str(small_copy), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["skipped_by_reason"] == [{"reason": "*.hea: file not found", "records": 10,
                                          "examples": [s["reason"] for s in info["skipped"][:3]]}]


def test_skip_reasons_group_by_kind_without_the_file_name():
    from edge_ecg.data.ptbxl import group_skipped, skip_reason_kind

    assert skip_reason_kind("/d/records100/00000/00003_lr.dat: file not found") == "*.dat: file not found"
    assert skip_reason_kind("/d/00005_lr: unreadable WFDB record (ValueError: x)") == "unreadable WFDB record"
    assert skip_reason_kind("SCP code 'FOO' is not in scp_statements.csv") == "SCP code ... is not in scp_statements.csv"
    items = [{"ecg_id": i, "reason": f"/d/{i}_lr.dat: file not found"} for i in range(5)]
    items.insert(2, {"ecg_id": 9, "reason": "/d/9_lr: unreadable WFDB record (EOF)"})
    groups = group_skipped(items, examples=2)
    assert [(g["reason"], g["records"]) for g in groups] == [("*.dat: file not found", 5), ("unreadable WFDB record", 1)]
    assert groups[0]["examples"] == ["/d/0_lr.dat: file not found", "/d/1_lr.dat: file not found"]
