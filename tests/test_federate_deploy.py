"""``federate --deployment``: the same apps on a Flower SuperLink and SuperNodes started by the test on localhost."""

from __future__ import annotations

import json
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

    rc = main(["federate", "--sites", "3", "--run", str(tmp_path / "run"), "--deployment", f"127.0.0.1:{free_port()}"])
    assert rc == 1
    assert "cannot reach a Flower SuperLink" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, message", [
    ({}, "give --sites N"),
    ({"num_sites": 2, "compare": ("local", "centralized")}, "--compare centralized under --deployment .* give --data"),
    ({"num_sites": 3, "clients_per_round": 4}, "only 3 sites"),
])
def test_a_deployment_without_what_it_needs_is_refused_before_connecting(options, message, tmp_path, monkeypatch):
    from edge_ecg.federate import federate

    monkeypatch.delenv("EDGE_ECG_DATA", raising=False)
    with pytest.raises(ValueError, match=message):
        federate(tmp_path / "run", FederateConfig(**{"compare": ("local",), **options}),
                 deployment=f"127.0.0.1:{free_port()}")
    assert not (tmp_path / "run").exists()


def test_the_plan_survives_the_run_config(ptbxl, ptbxl_dir):
    from edge_ecg.federate import _Plan, site_of_records, split_sites

    sites = split_sites(ptbxl, site_of_records(ptbxl_dir, "device"), train_limit=5)
    config = FederateConfig(arch_kwargs=TINY_ARCH, compare=("local",), highpass_hz=0.5, augment_site=True)  # what SuperNodes must apply
    plan = _Plan(config, str(ptbxl_dir), sites, model="m", fail_at=(2, "AT-6"))
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
def test_a_real_deployment_on_localhost_runs_the_app_to_completion(ptbxl_dir, tmp_path, monkeypatch):
    """A SuperLink and two SuperNodes (sites AT-6 and CS-12: blank device dropped), one round, stopped by the test.

    The starting process and the ServerApp get no data: reading any here fails the test, and the data folder's path
    appears nowhere in what the server is given. Each SuperNode reads its own copy (node-config ``data``), trains its
    local-only baseline and fine-tunes (and AT-6 exports) into its own ``run-dir``; only their results come back.
    """
    if not (BIN / "flower-superlink").is_file() or not (BIN / "flwr").is_file():
        pytest.skip("flwr's commands are not installed beside this Python (pip install 'edge-ecg[federate]')")
    import edge_ecg.data.ptbxl
    import edge_ecg.federate as fed
    from edge_ecg.federate import REPORT_JSON, SITES_FILE, federate
    from edge_ecg.runfolder import RunFolder, federate_site_dir

    def no_data_here(*args, **kwargs):
        raise AssertionError("the process that starts a deployment read data")

    for module, name in ((fed, "load_sites_dataset"), (fed, "load_ptbxl"), (edge_ecg.data.ptbxl, "load_ptbxl")):
        monkeypatch.setattr(module, name, no_data_here)
    # the SuperLink (and the ServerApp it starts) cannot find data by the default either
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_HOME": str(tmp_path / "flwr_home"), "EDGE_ECG_DATA": str(tmp_path / "no-data-here")}
    link_port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        link_log = tmp_path / "superlink.log"
        link = _start([str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation", "--port", str(link_port)],
                      link_log, {**env, "EDGE_ECG_DATA": str(tmp_path / "no-data-here")})
        procs.append(link)
        _wait_listening(link_port, link, link_log)
        # node 0 serves the first site of its copy (AT-6), node 1 names its site
        for i, site in enumerate(("", ' site="CS-12"')):
            procs.insert(0, _start(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link_port}", "--port", str(free_port()),
                 "--node-config", f'partition-id={i} num-partitions=2 data="{ptbxl_dir}" run-dir="{tmp_path / f"site{i}"}"{site}'],
                tmp_path / f"supernode{i}.log", env))
        config = FederateConfig(blank="drop", arch_kwargs=TINY_ARCH, rounds=1, local_epochs=1, site_train_limit=16, compare=("local",),
                                n_boot=20, fine_tune="head", fine_tune_epochs=1, export_sites="AT-6", compress_epochs=0, export_max_drop=1.0,
                                num_sites=2)
        report = federate(tmp_path / "run", config, deployment=f"127.0.0.1:{link_port}")
    finally:
        _stop(procs)
    assert [r["round"] for r in report["rounds"]] == [1] and not report["failures"]
    assert set(report["rounds"][0]["bytes_sent"]) == {"AT-6", "CS-12"}
    app = (tmp_path / "run" / "flower_app" / "pyproject.toml").read_text()
    assert str(ptbxl_dir) not in app and '"data_root":null' in app and '"sites":[]' in app  # the server is given no data path
    per_site = report["test_macro_auc"]["per_site"]
    assert set(per_site) == {"AT-6", "CS-12"} and all(set(per_site[s]) == {"local", "federated", "fine-tuned"} for s in per_site)
    assert report["test_macro_auc"]["pooled"]["fine-tuned"]["macro_auc"] is not None
    assert report["paired"]["model"] == "fine-tuned" and set(report["paired"]["vs_local"]) == {"AT-6", "CS-12", "pooled"}
    # the sites' artifacts are on the sites (here: their run-dirs), not in the server's run folder
    assert not (tmp_path / "run" / "sites").exists()
    at6, cs12 = RunFolder(federate_site_dir(tmp_path / "site0", "AT-6")), RunFolder(federate_site_dir(tmp_path / "site1", "CS-12"))
    assert at6.model.is_file() and cs12.model.is_file() and not (tmp_path / "site0" / "sites" / "CS-12").exists()
    assert at6.tflite.stat().st_size > 0 and (at6.firmware("esp32") / "CMakeLists.txt").is_file() and not cs12.export.exists()
    transfer = report["transfer"]
    assert Path(transfer["AT-6"]["run"]) == at6.root.resolve() and "export" in transfer["AT-6"] and transfer["CS-12"]["fine_tune"]["mode"] == "head"
    counts = json.loads((tmp_path / "run" / SITES_FILE).read_text())["sites"]
    assert counts["AT-6"]["train"]["records"] == 16 and counts["CS-12"]["test"]["records"] == per_site["CS-12"]["federated"]["records"]
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
