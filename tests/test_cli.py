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
