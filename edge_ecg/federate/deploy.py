"""The same ServerApp and ClientApp on a Flower deployment: a SuperLink and one SuperNode per site (flwr 1.42).

In flwr 1.42 a SuperLink serves its Fleet, Control and runtime APIs over HTTP on one port
(``--port``, default 8000). ``federate(..., deployment="HOST:PORT")``:

1. checks that a SuperLink answers at ``HOST:PORT`` (a TCP connection within
   :data:`CONNECT_TIMEOUT_S`), else :class:`DeploymentError` saying how to start one;
2. writes a Flower app folder, ``RUN/flower_app/pyproject.toml``, whose components are
   :mod:`edge_ecg.federate.flower_apps`' ``server_app`` and ``client_app`` and whose run config carries the plan (options
   and the model's fingerprint as JSON: no data path, no sites, no record ids) and the path where the ServerApp writes its results;
3. runs ``flwr run RUN/flower_app edge-ecg --stream`` with a private ``FLWR_HOME`` whose
   ``config.toml`` names the SuperLink (insecure: TLS is the SuperLink's ``--ssl-*`` options);
4. reads the ServerApp's results (``RUN/flower_results.npz`` and ``.json``: the global weights, and
   what each site's client reported after its own baseline and transfer) and writes the report.

Requirements of a deployment: every machine has edge-ecg installed (the app's code is this
package: runtime dependency installation is off), the SuperLink's ``--disable-runtime-dependency-installation``,
each SuperNode's ``--node-config "partition-id=I num-partitions=N data='/path/to/its/data'"`` (I from 0 to N-1,
one each; optional ``site=NAME``, the site it serves in its folder, and ``run-dir=DIR``, where its site's run
folder goes), and the ServerApp's machine (the SuperLink's) can write the run folder, as the results go there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from edge_ecg.runfolder import FEDERATE_APP_DIR as APP_DIR
from edge_ecg.runfolder import FEDERATE_RESULTS as RESULTS
from edge_ecg.runfolder import RunError, atomic_write_text

CONNECT_TIMEOUT_S = 10.0
CONNECTION = "edge-ecg"


class DeploymentError(RunError):
    """The SuperLink cannot be reached, or the run on it did not finish."""


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DeploymentError(f"--deployment {address!r}: expected HOST:PORT of the SuperLink (e.g. 127.0.0.1:8000)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """DeploymentError within ``timeout`` seconds when nothing accepts a connection at ``address``."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise DeploymentError(
            f"cannot reach a Flower SuperLink at {address} within {timeout:g} s ({exc}); start one with "
            f"`flower-superlink --insecure --disable-runtime-dependency-installation --port {port}` and one "
            "`flower-supernode --insecure --superlink HOST:PORT --node-config \"partition-id=I num-partitions=N\"` per site "
            "(see the README)"
        ) from None


# --------------------------------------------------------------------------- the plan as run config


def plan_to_json(plan) -> str:
    return json.dumps({
        "config": asdict(plan.config), "data_root": plan.data_root, "model": plan.model, "fail_at": plan.fail_at,
        "sites": [{"name": s.name, "train": s.train.tolist(), "val": s.val.tolist(), "test": s.test.tolist()} for s in plan.sites],
    }, separators=(",", ":"))


def plan_from_json(text: str):
    from edge_ecg.federate import FederateConfig, Site, _Plan

    d = json.loads(text)
    known = {f.name for f in fields(FederateConfig)}
    config = FederateConfig(**{k: v for k, v in d["config"].items() if k in known})
    config.compare, config.site_data = tuple(config.compare), tuple(config.site_data)
    sites = [Site(s["name"], np.asarray(s["train"], np.int64), np.asarray(s["val"], np.int64), np.asarray(s["test"], np.int64)) for s in d["sites"]]
    return _Plan(config, d["data_root"], sites, model=d["model"], fail_at=tuple(d["fail_at"]) if d["fail_at"] else None)


_PLANS: dict = {}  # per process: the parsed plan of a run config


def plan_of(context):
    """The plan in the run config; a SuperNode's ``data`` node-config entry replaces the data folder."""
    from dataclasses import replace

    text = str(context.run_config["plan"])
    if text not in _PLANS:
        _PLANS[text] = plan_from_json(text)
    plan = _PLANS[text]
    data = context.node_config.get("data")
    return replace(plan, data_root=str(data)) if data else plan


def write_app(folder: Path, plan, results: Path) -> Path:
    """The Flower app folder ``flwr run`` packs: a pyproject.toml naming this module's apps, with the plan as run config."""
    folder.mkdir(parents=True, exist_ok=True)
    text = plan_to_json(plan)
    if "'" in text or "\n" in text:  # a TOML literal string holds anything else verbatim
        raise DeploymentError("the plan cannot be written as a TOML literal string (a quote or newline in an option)")
    atomic_write_text(folder / "pyproject.toml", f"""\
# written by edge-ecg federate --deployment; the apps' code is the installed edge-ecg package
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "edge-ecg-federate"
version = "1.0.0"
description = "edge-ecg federated training (generated)"
license = "MIT"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "edge-ecg"

[tool.flwr.app.components]
serverapp = "edge_ecg.federate.flower_apps:server_app"
clientapp = "edge_ecg.federate.flower_apps:client_app"

[tool.flwr.app.config]
plan = '{text}'
results = '{results}'
""")
    return folder


# --------------------------------------------------------------------------- the apps flwr loads


def _make_server_app():
    from flwr.serverapp import ServerApp

    import edge_ecg.tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow's first import)

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        from edge_ecg.federate import _Recorder, server_main

        plan = plan_from_json(str(context.run_config["plan"]))
        recorder = _Recorder(plan.n_sites)
        try:
            server_main(grid, plan, initial_weights(plan), recorder)
        except Exception as exc:  # the caller reads the reason from the results, not from the SuperLink's log
            recorder.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            write_results(Path(str(context.run_config["results"])), recorder)

    return app


def initial_weights(plan) -> dict[str, np.ndarray]:
    """The seeded initial model's weights (the server needs no data: the shapes are in the plan's fingerprint)."""
    from edge_ecg.federate import _key, _model_of_plan

    return {_key(i): v.numpy() for i, v in enumerate(_model_of_plan(plan).weights)}


def write_results(base: Path, recorder) -> None:
    import io

    from edge_ecg.runfolder import atomic_write_bytes, atomic_write_json

    arrays = {f"global/{k}": v for k, v in (recorder.arrays or {}).items()}
    for site, preds in recorder.predictions.items():
        arrays.update({f"pred/{site}/{k}": v for k, v in preds.items()})
    for site, bn in recorder.site_bn.items():
        arrays.update({f"bn/{site}/{k}": v for k, v in bn.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(base.with_suffix(".npz"), buf.getvalue())
    atomic_write_json(base.with_suffix(".json"), {
        "train": [{str(k): v for k, v in r.items()} for r in recorder.train],
        "evaluate": [{str(k): v for k, v in r.items()} for r in recorder.evaluate],
        "failures": recorder.failures, "node_site": {str(k): v for k, v in recorder.node_site.items()},
        "finished": recorder.arrays is not None, "error": recorder.error,
        "site_names": {str(k): v for k, v in recorder.site_names.items()}, "kept_round": recorder.kept_round,
        "site_reports": {str(k): v for k, v in recorder.site_reports.items()},
    })


def read_results(base: Path, n_sites: int):
    from edge_ecg.federate import _Recorder

    if not base.with_suffix(".json").is_file():
        raise DeploymentError(f"{base.with_suffix('.json')}: the ServerApp wrote no results; see the SuperLink's log")
    meta = json.loads(base.with_suffix(".json").read_text())
    if meta.get("error"):
        raise DeploymentError(f"the ServerApp on the SuperLink failed: {meta['error']}")
    recorder = _Recorder(n_sites)
    recorder.train = [{int(k): v for k, v in r.items()} for r in meta["train"]]
    recorder.evaluate = [{int(k): v for k, v in r.items()} for r in meta["evaluate"]]
    recorder.failures = meta["failures"]
    recorder.node_site = {int(k): v for k, v in meta["node_site"].items()}
    recorder.site_names = {int(k): v for k, v in meta.get("site_names", {}).items()}
    recorder.kept_round = meta.get("kept_round")
    recorder.site_reports = {int(k): v for k, v in meta.get("site_reports", {}).items()}
    with np.load(base.with_suffix(".npz")) as z:
        recorder.arrays = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("global/")} if meta["finished"] else None
        for k in z.files:
            kind, *rest = k.split("/")
            if kind == "pred":
                recorder.predictions.setdefault(int(rest[0]), {})[rest[1]] = z[k]
            elif kind == "bn":
                recorder.site_bn.setdefault(int(rest[0]), {})[rest[1]] = z[k]
    return recorder


def _make_client_app():
    from edge_ecg.federate import _client_app

    import edge_ecg.tf  # noqa: F401

    return _client_app(plan_of=plan_of)


# --------------------------------------------------------------------------- the caller's side


def run_deployment(run: Path, plan, initial: dict[str, np.ndarray], address: str, *, verbose: bool = False,
                   timeout: float = 24 * 3600.0):
    """Run the federation on the SuperLink at ``address``; returns what the ServerApp recorded (as the simulation does)."""
    from edge_ecg.federate import _quiet_flower_environment, check_finished

    check_reachable(address)
    _quiet_flower_environment()
    results = Path(run).resolve() / RESULTS
    for suffix in (".npz", ".json"):
        results.with_suffix(suffix).unlink(missing_ok=True)
    app = write_app(Path(run) / APP_DIR, plan, results)
    flwr = shutil.which("flwr", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if flwr is None:
        raise DeploymentError("the `flwr` command is not installed beside this Python; pip install 'edge-ecg[federate]'")
    with tempfile.TemporaryDirectory(prefix="edge-ecg-flwr-") as home:
        Path(home, "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{address}"\ninsecure = true\n'
        )
        env = {**os.environ, "FLWR_HOME": home}
        command = [flwr, "run", str(app.resolve()), CONNECTION, "--stream"]
        try:
            done = subprocess.run(command, env=env, timeout=timeout, capture_output=not verbose, text=True)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"`{' '.join(command)}` did not finish within {timeout:g} s") from None
    if done.returncode != 0 and results.with_suffix(".json").is_file():
        read_results(results, plan.n_sites)  # raises with the ServerApp's own error where it wrote one
    if done.returncode != 0:
        tail = "\n".join(((done.stdout or "") + (done.stderr or "")).splitlines()[-15:])
        raise DeploymentError(f"`flwr run` on the SuperLink at {address} failed (exit {done.returncode}):\n{tail}")
    recorder = read_results(results, plan.n_sites)
    check_finished(plan, recorder)
    return recorder
