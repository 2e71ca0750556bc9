"""``federate --deployment``: the same apps on a Flower SuperLink and SuperNodes started by the test on localhost."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_ecg.federate import FederateConfig
from edge_ecg.federate.deploy import DeploymentError, check_reachable, parse_address, plan_from_json, plan_to_json

BIN = Path(sys.executable).parent
TINY_ARCH = {"filters": [8, 16, 16], "strides": [4, 4, 4]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_superlink_is_a_clear_error_not_a_hang():
    port = free_port()  # nothing listens there
    with pytest.raises(DeploymentError, match=f"cannot reach a Flower SuperLink at 127.0.0.1:{port} within 2 s .*flower-superlink"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(DeploymentError, match="expected HOST:PORT"):
        parse_address("localhost")


def test_cli_with_an_unreachable_superlink_fails_before_writing(ptbxl_dir, tmp_path, capsys):
    from edge_ecg.cli import main

    rc = main(["federate", "--data", str(ptbxl_dir), "--run", str(tmp_path / "run"), "--deployment", f"127.0.0.1:{free_port()}"])
    assert rc == 1
    assert "cannot reach a Flower SuperLink" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_plan_survives_the_run_config(ptbxl, ptbxl_dir):
    from edge_ecg.federate import _Plan, site_of_records, split_sites

    sites = split_sites(ptbxl, site_of_records(ptbxl_dir, "device"), train_limit=5)
    plan = _Plan(FederateConfig(arch_kwargs=TINY_ARCH, compare=("local",)), str(ptbxl_dir), sites, model="m", fail_at=(2, "AT-6"))
    back = plan_from_json(plan_to_json(plan))
    assert back.config == plan.config and back.fail_at == (2, "AT-6") and back.model == "m"
    assert [s.name for s in back.sites] == [s.name for s in sites]
    assert all((a.train == b.train).all() and (a.test == b.test).all() for a, b in zip(back.sites, sites))


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # supernodes first, then the superlink
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the SuperLink exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            check_reachable(f"127.0.0.1:{port}", timeout=1)
            return
        except DeploymentError:
            time.sleep(1)
    pytest.fail(f"the SuperLink did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_a_real_deployment_on_localhost_runs_the_app_to_completion(ptbxl, tmp_path):
    """A SuperLink and two SuperNodes (sites AT-6 and CS-12: blank device dropped), one round, stopped by the test."""
    if not (BIN / "flower-superlink").is_file() or not (BIN / "flwr").is_file():
        pytest.skip("flwr's commands are not installed beside this Python (pip install 'edge-ecg[federate]')")
    from edge_ecg.federate import REPORT_JSON, federate

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_HOME": str(tmp_path / "flwr_home")}
    link_port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        link_log = tmp_path / "superlink.log"
        link = _start([str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation", "--port", str(link_port)],
                      link_log, env)
        procs.append(link)
        _wait_listening(link_port, link, link_log)
        for i in range(2):
            procs.insert(0, _start(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link_port}", "--port", str(free_port()),
                 "--node-config", f"partition-id={i} num-partitions=2"], tmp_path / f"supernode{i}.log", env))
        config = FederateConfig(blank="drop", arch_kwargs=TINY_ARCH, rounds=1, local_epochs=1, site_train_limit=16, compare=(),
                                n_boot=20, fine_tune="none", export_sites="none")
        report = federate(tmp_path / "run", config, dataset=ptbxl, deployment=f"127.0.0.1:{link_port}")
    finally:
        _stop(procs)
    assert [r["round"] for r in report["rounds"]] == [1] and not report["failures"]
    assert set(report["rounds"][0]["bytes_sent"]) == {"AT-6", "CS-12"}
    assert report["test_macro_auc"]["pooled"]["federated"]["macro_auc"] is not None
    assert (tmp_path / "run" / REPORT_JSON).is_file()
    assert all(p.poll() is not None for p in procs)  # nothing left running
    shutil.rmtree(tmp_path / "flwr_home", ignore_errors=True)


def test_the_server_stops_waiting_for_missing_clients_with_a_clear_error(ptbxl, ptbxl_dir):
    from edge_ecg.federate import _Plan, site_of_records, split_sites, wait_for_nodes
    from edge_ecg.runfolder import RunError

    class OneNode:  # a Grid where only one SuperNode ever connects
        def get_node_ids(self):
            return [7]

    plan = _Plan(FederateConfig(), str(ptbxl_dir), split_sites(ptbxl, site_of_records(ptbxl_dir, "device")))
    with pytest.raises(RunError, match=r"1 of 3 clients connected within 0 s; .*CS-12: partition-id=1.*num-partitions=3"):
        wait_for_nodes(OneNode(), plan, timeout=0)
