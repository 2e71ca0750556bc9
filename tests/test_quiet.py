"""Quiet by default: the CLI's stderr carries no TensorFlow log line unless -v asks for them."""

from __future__ import annotations

import platform
import re
import subprocess
import sys

import pytest

TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN|cpu_feature_guard", re.M)


def _edge_ecg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_ecg.cli", *args], capture_output=True, text=True, timeout=300)


def test_a_command_that_imports_tensorflow_prints_only_its_own_lines(tmp_path):
    # export imports TensorFlow before it finds that the folder holds no run
    result = _edge_ecg("export", "--run", str(tmp_path / "no-run"))
    assert result.returncode != 0
    assert not TF_LOG_LINE.search(result.stderr), result.stderr
    assert result.stderr.strip().startswith("edge-ecg: error:"), result.stderr


@pytest.mark.skipif(platform.machine() != "x86_64", reason="TensorFlow's oneDNN start-up line is an x86-64 build's")
def test_verbose_shows_tensorflows_lines(tmp_path):
    result = _edge_ecg("-v", "export", "--run", str(tmp_path / "no-run"))
    assert result.returncode != 0
    assert TF_LOG_LINE.search(result.stderr), result.stderr
