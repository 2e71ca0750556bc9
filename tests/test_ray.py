"""Rotation folds as Ray tasks on a two-node Ray cluster on localhost: the same predictions as a serial run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edge_ecg import cv
from edge_ecg.train import TrainConfig

TINY = TrainConfig(arch="dscnn", arch_kwargs={"filters": [4, 8], "strides": [8, 8], "kernel_size": 9},
                   epochs=2, train_limit=24, batch_size=24, seed=1)
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str]) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground: its process group holds exactly this
    # node's processes, so the test stops what it started and nothing else. Its own
    # --temp-dir keeps other processes' ray.init() from finding this cluster.
    return subprocess.Popen([str(RAY), "start", *args, "--num-cpus=1", "--node-ip-address=127.0.0.1", "--block",
                             "--disable-usage-stats"], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_nodes(address: str, n: int, timeout: float = 120) -> None:
    import ray

    deadline = time.monotonic() + timeout
    while not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    while len([node for node in ray.nodes() if node["Alive"]]) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray cluster at {address} has fewer than {n} nodes after {timeout:.0f} s")
        time.sleep(1)


@pytest.mark.slow
def test_two_folds_on_a_two_node_ray_cluster_match_the_serial_run(ptbxl, tmp_path):
    if not RAY.is_file():
        pytest.skip(f"{RAY} not found (pip install 'ray[default]')")
    import ray

    folds = (3, 4)
    cv.cross_validate(tmp_path / "serial", TINY, dataset=ptbxl, folds=folds, progress=False)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Short: Ray's socket paths live under it and Unix sockets allow about 100 characters.
    temp_dir = Path(tempfile.gettempdir()) / f"edge-ecg-ray-{os.getpid()}"
    nodes = []
    try:
        nodes.append(_start(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}"]))
        _wait_for_nodes(address, 1)
        nodes.append(_start([f"--address={address}"]))
        _wait_for_nodes(address, 2)
        assert ray.cluster_resources().get("CPU") == 2  # two nodes of one CPU: the two folds run on both
        cv.cross_validate(tmp_path / "ray", TINY, dataset=ptbxl, folds=folds, progress=False, ray=address)
    finally:
        ray.shutdown()
        for proc in reversed(nodes):
            _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
    for k in folds:
        a, b = cv.fold_dir(tmp_path / "serial", k) / "predictions", cv.fold_dir(tmp_path / "ray", k) / "predictions"
        np.testing.assert_array_equal(np.load(a / "test_ecg_ids.npy"), np.load(b / "test_ecg_ids.npy"))
        np.testing.assert_array_equal(np.load(a / "test_probs.npy"), np.load(b / "test_probs.npy"))
        assert cv.fold_finished(cv.fold_dir(tmp_path / "ray", k))
    # A rerun finds the folds finished and starts no task (no cluster needed any more).
    cv.cross_validate(tmp_path / "ray", TINY, dataset=ptbxl, folds=folds, progress=False, ray=address)
