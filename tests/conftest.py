"""Shared fixtures: the real PTB-XL subset, read in place, and temporary damaged copies."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PTBXL = Path(os.environ.get("EDGE_ECG_DATA", REPO.parent / "shared" / "data" / "ptbxl")).resolve()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Caches go to a per-session folder: never into the data or the user's home."""
    os.environ["EDGE_ECG_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


def load_benchmark(name: str):
    """The script ``benchmarks/NAME.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    if not (PTBXL / "ptbxl_database.csv").is_file():
        pytest.fail(f"PTB-XL subset not found at {PTBXL}; set EDGE_ECG_DATA")
    return PTBXL


@pytest.fixture(scope="session")
def ptbxl(ptbxl_dir):
    from edge_ecg.data import load_ptbxl

    return load_ptbxl(ptbxl_dir)


def copy_subset(src: Path, dest: Path, ecg_ids: list[int]) -> Path:
    """A PTB-XL folder at ``dest`` holding copies of the given real records only."""
    db = pd.read_csv(src / "ptbxl_database.csv")
    db = db[db.ecg_id.isin(ecg_ids)]
    (dest).mkdir(parents=True, exist_ok=True)
    db.to_csv(dest / "ptbxl_database.csv", index=False)
    shutil.copy(src / "scp_statements.csv", dest / "scp_statements.csv")
    for rel in db.filename_lr:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(src / (rel + ext), dest / (rel + ext))
    return dest


@pytest.fixture
def small_copy(ptbxl_dir, tmp_path):
    """Ten real records (ecg_id 1-10) copied to a temporary folder, free to damage."""
    return copy_subset(ptbxl_dir, tmp_path / "ptbxl", list(range(1, 11)))


# Fixtures that train or export a model: every test using one (directly or through another
# fixture) is `slow`, so `pytest -m "not slow"` stays a quick check of everything else.
TRAINING_FIXTURES = {"trained_run", "exported", "tiny_run", "rotation_dir", "pipeline_run", "exported_run", "dscnn_measured"}
# Fixtures named `run` that train (elsewhere `run` is a hand-written export, which is fast).
TRAINING_RUN_MODULES = {"test_boards", "test_mlperf_runner", "test_tflm_board"}


# scripts/test runs the suite on every core with pytest-xdist (`--dist loadgroup`). Each test file is
# one group, so a module's fixtures are built once; the files that start Ray or Flower (which runs its
# simulation on Ray) share one group, so no two Ray instances run at once and a plain `ray.init()`
# never joins the other test's cluster.
RAY_MODULES = {"test_ray", "test_federate", "test_federate_deploy"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("ray" if module in RAY_MODULES else module))
        names = set(getattr(item, "fixturenames", ()))
        trains = bool(names & TRAINING_FIXTURES) or ("run" in names and module in TRAINING_RUN_MODULES)
        if trains and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
