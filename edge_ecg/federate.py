"""Federated learning across sites on Flower (issue 14, first slice): sites, FedAvg/FedProx, FedBN, report.

A *site* is a partition of PTB-XL by a metadata column of ``ptbxl_database.csv`` that never
leaves its client:

- ``--site-by device``: the recorder family, the first word of ``device`` (``"CS-12   E"`` and
  ``"CS-12"`` are site ``CS-12``; ``"AT-6 C 5.5"`` is ``AT-6``): the recorders differ in hardware and
  filtering, the shift federation has to bridge.
- ``--site-by site``: the recording site number (``site-0`` ... ``site-3``).

A blank value (499 of the 987 rows of the shared subset are blank in both columns, the same rows)
means the source is not recorded. ``blank="unknown"`` (default) makes those records one more site,
``unknown``; ``blank="drop"`` leaves them out. The counts are written to ``sites.json``.

Each site keeps its own split by PTB-XL's ``strat_fold`` (folds 1-8 train / 9 validation / 10
test, :func:`edge_ecg.data.split_folds` within the site) and its own standardization fitted on its
own training records. A site whose training, validation or test part is empty (e.g. a site of a
single record) is refused with an error naming the site and its counts. A site where a class has
no positive (or no negative) record is trained as is; its AUC on a split where a class has one label
value is undefined and reported as ``null`` with the reason, and the pooled AUC still counts its records.

Training runs on Flower's Message API: a ClientApp (``@app.train()``, ``@app.evaluate()``) and a
ServerApp (``@app.main()``) driving ``flwr.serverapp.strategy.FedAvg`` or ``FedProx``, run by
``flwr.simulation.run_simulation`` (one Ray actor per client, on this machine).

Local epochs: :func:`edge_ecg.train.fit` cannot serve one round's local epochs. It selects a best
epoch on the validation fold (and refuses a site whose validation fold lacks a class), writes a
resumable checkpoint per epoch, and keeps its state across calls; a federated round needs the last
local weights, no selection and no disk state. :func:`local_fit` is therefore a minimal loop over
``train``'s own pieces (its gradient step, augmentation, per-(seed, epoch) random draws and precise
batch-norm statistics), with a proximal term for FedProx added as a model loss.

Batch normalization: ``batch_norm="global"`` sends and averages every weight, BatchNormalization's
too; ``"local"`` (FedBN, Li et al. 2021) keeps each site's BatchNormalization weights in the
client's ``context.state`` and sends only the others, so they never leave the site.

Determinism: weights are built from ``seed``; each client's draws depend on (seed, round, site,
epoch) only; replies are aggregated in site order (FedAvg's weighted sum is order dependent in
floating point), so the same options give bit-identical weights. With ``clients_per_round`` below
the number of sites, Flower samples node ids with Python's ``random`` (seeded here), but node ids
are assigned by the simulation, so the sampled sites are not guaranteed to repeat.

Run folder files (all written atomically)::

    federate.json            the resolved options
    sites.json               sites, their records per split and class, the blank handling
    federate_report.json     per-site and pooled macro AUC with intervals, bytes per round, AUC per round
    federate_report.md       the same as tables
    federate_auc_rounds.png  validation macro AUC per round, per site
    federate_weights.npz     the final global weights (w000, w001, ... in model.weights order)
    predictions/federate_<model>.npz   per-site test probabilities, labels and ecg_ids
"""

from __future__ import annotations

import io
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES, __version__
from edge_ecg.data import DataError, PtbxlDataset, Standardizer, load_ptbxl, split_folds
from edge_ecg.metrics import MetricError, bootstrap_auc, macro_auc, per_class_auc
from edge_ecg.runfolder import (  # a federated run folder's file names are the run-folder module's
    FEDERATE_CONFIG,
    FEDERATE_REPORT_JSON as REPORT_JSON,
    FEDERATE_REPORT_MD as REPORT_MD,
    FEDERATE_ROUNDS_PLOT as ROUNDS_PLOT,
    FEDERATE_SITES_FILE as SITES_FILE,
    FEDERATE_WEIGHTS_FILE as WEIGHTS_FILE,
    PREDICTIONS_DIR,
    RUN_FORMAT,
    RunError,
    RunLock,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from edge_ecg.train import FitData, FitOptions, fit_data

SITE_COLUMNS = ("device", "site")
BLANK_CHOICES = ("unknown", "drop")
STRATEGIES = ("fedavg", "fedprox")
BATCH_NORM = ("global", "local")
MODELS = ("local", "federated", "centralized")  # what the report compares


@dataclass
class FederateConfig:
    """Everything that determines a federated run (``federate.json`` holds exactly this)."""

    data: str | None = None
    rate: int = 100
    site_by: str = "device"
    blank: str = "unknown"
    arch: str = "dscnn"
    arch_kwargs: dict = field(default_factory=dict)
    rounds: int = 10
    local_epochs: int = 2
    clients_per_round: int | None = None  # None: every site, every round
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    batch_norm: str = "global"
    batch_size: int = 32
    learning_rate: float = 2e-3
    augment: bool = True
    seed: int = 0
    site_train_limit: int | None = None  # first N training records of each site (smoke tests)
    compare: tuple[str, ...] = ("local", "centralized")  # baselines trained besides the federation
    n_boot: int = 1000

    def check(self) -> None:
        """ValueError naming the option, what is allowed and what was given."""
        for name, value, allowed in (
            ("site_by", self.site_by, SITE_COLUMNS),
            ("blank", self.blank, BLANK_CHOICES),
            ("strategy", self.strategy, STRATEGIES),
            ("batch_norm", self.batch_norm, BATCH_NORM),
        ):
            if value not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} {value!r}: choose one of {', '.join(allowed)}")
        for name in ("rounds", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ValueError(f"--clients-per-round must be at least 1, got {self.clients_per_round}")
        if self.proximal_mu < 0:
            raise ValueError(f"--proximal-mu must be >= 0, got {self.proximal_mu}")
        unknown = sorted(set(self.compare) - {"local", "centralized"})
        if unknown:
            raise ValueError(f"compare: unknown baseline(s) {', '.join(unknown)}; choose from local, centralized")


# --------------------------------------------------------------------------- sites


@dataclass
class Site:
    """One site's records (ecg_ids) per split; the ids are all a client needs to find its data."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def ids(self) -> np.ndarray:
        return np.concatenate([self.train, self.val, self.test])


def site_of_records(root: str | os.PathLike, column: str, blank: str = "unknown", rate: int = 100) -> dict[int, str]:
    """ecg_id -> site name from ``ptbxl_database.csv``'s ``column``; blank rows per ``blank`` (see module doc)."""
    from edge_ecg.data.ptbxl import DATABASE_CSV, read_database

    path = Path(root) / DATABASE_CSV
    db = read_database(path, rate)
    if column not in db.columns:
        raise DataError(f"{path}: no column {column!r} to split sites by; PTB-XL has {', '.join(SITE_COLUMNS)}")
    out: dict[int, str] = {}
    for ecg_id, value in db[column].items():
        if value != value or str(value).strip() == "":  # NaN or empty: the source is not recorded
            if blank == "unknown":
                out[int(ecg_id)] = "unknown"
            continue
        if column == "device":
            out[int(ecg_id)] = str(value).split()[0]  # recorder family: "AT-6 C 5.5" -> "AT-6"
        else:
            out[int(ecg_id)] = f"site-{int(float(value))}"
    return out


def split_sites(ds: PtbxlDataset, site_of: dict[int, str], train_limit: int | None = None) -> list[Site]:
    """Each site's folds 1-8 / 9 / 10, sites in name order; DataError naming a site with an empty part."""
    names = np.array([site_of.get(int(i), "") for i in ds.ecg_ids])
    sites = []
    for name in sorted(set(names.tolist()) - {""}):
        part = ds.select(names == name)
        try:
            split = split_folds(part)
        except DataError as exc:
            counts = {k: int((part.folds == f).sum()) for k, f in (("train", None), ("val", 9), ("test", 10)) if f}
            counts["train"] = int(len(part) - sum(counts.values()))
            raise DataError(
                f"site {name!r} ({len(part)} record(s): {counts}) cannot keep its own train/validation/test split ({exc}); "
                "use --blank drop or another --site-by, or remove the site's records"
            ) from exc
        train = split.train.ecg_ids if train_limit is None else split.train.ecg_ids[:train_limit]
        sites.append(Site(name, train.copy(), split.val.ecg_ids.copy(), split.test.ecg_ids.copy()))
    if not sites:
        raise DataError(f"{ds.root}: no record has a site; nothing to federate")
    return sites


def sites_summary(ds: PtbxlDataset, sites: list[Site], column: str, blank: str) -> dict:
    """Counts per site and split (records, positives per class), for ``sites.json``."""
    index = {int(i): k for k, i in enumerate(ds.ecg_ids)}
    out = {"site_by": column, "blank": blank, "labelled_records": len(ds), "sites": {}}
    for s in sites:
        row = {}
        for split in ("train", "val", "test"):
            ids = getattr(s, split)
            labels = ds.labels[[index[int(i)] for i in ids]]
            row[split] = {"records": len(ids), "per_class": {c: int(labels[:, k].sum()) for k, c in enumerate(CLASSES)}}
        out["sites"][s.name] = row
    out["records_without_site"] = len(ds) - sum(len(s.ids()) for s in sites)
    return out


def _site_data(ds: PtbxlDataset, site: Site) -> tuple[FitData, dict]:
    """The site's standardized training/validation arrays (its own standardization) and test arrays."""
    index = {int(i): k for k, i in enumerate(ds.ecg_ids)}

    def part(ids):
        return ds.select(np.array([index[int(i)] for i in ids], dtype=np.int64))

    from edge_ecg.data import Split

    split = Split(train=part(site.train), val=part(site.val), test=part(site.test))
    standardizer = Standardizer.fit(split.train.signals)
    data = fit_data(split, standardizer, ds.rate)
    test = {"x": standardizer.transform(split.test.signals), "y": split.test.labels.astype(np.float32), "ids": split.test.ecg_ids}
    return data, test


# --------------------------------------------------------------------------- local training


def _bn_indices(model) -> list[int]:
    """Indices in ``model.weights`` of BatchNormalization weights (gamma, beta, moving mean and variance)."""
    from edge_ecg.tf import keras

    bn = {id(v) for m in model.submodules if isinstance(m, keras.layers.BatchNormalization) for v in m.weights}
    return [i for i, v in enumerate(model.weights) if id(v) in bn]


def _key(i: int) -> str:
    return f"w{i:03d}"


def local_fit(model, data: FitData, options: FitOptions, *, stream: tuple[int, ...], proximal_mu: float = 0.0) -> float:
    """``options.epochs`` epochs of ``train``'s gradient step on ``data``; returns the last epoch's mean loss.

    Every draw depends on ``(options.seed, *stream, epoch)``; ``stream`` is (round, site) for a
    client. With ``proximal_mu > 0`` the loss gains FedProx's ``mu/2 * ||w - w_start||^2``.
    Batch-norm statistics are recomputed on the clean training records at the end (as ``fit``
    does after every epoch).
    """
    from edge_ecg.tf import keras, tf
    from edge_ecg.train import _make_gradient_step, augment, recompute_batch_norm_statistics

    tf.config.experimental.enable_op_determinism()
    if proximal_mu > 0:
        anchors = [tf.constant(v.numpy()) for v in model.trainable_variables]
        variables = list(model.trainable_variables)
        model.add_loss(lambda: proximal_mu / 2 * tf.add_n([tf.reduce_sum(tf.square(v - a)) for v, a in zip(variables, anchors)]))
    steps = math.ceil(len(data.x_train) / options.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(options.learning_rate, decay_steps=max(1, options.epochs * steps), alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule)
    apply_gradients = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, model.trainable_variables)))
    pos_weight = tf.ones(data.y_train.shape[1], tf.float32)
    loss = float("nan")
    for epoch in range(1, options.epochs + 1):
        rng = np.random.default_rng([options.seed, *stream, epoch])
        tf.random.set_seed(int(rng.integers(2**31)))
        step = _make_gradient_step(model, pos_weight)  # traced after the seed: dropout's draws follow it
        order = rng.permutation(len(data.x_train))
        losses = []
        for b in range(steps):
            idx = order[b * options.batch_size : (b + 1) * options.batch_size]
            xb = augment(data.x_train[idx], rng, data.rate) if options.augment else data.x_train[idx]
            y = tf.constant(data.y_train[idx])
            value, grads = step(tf.constant(xb), y, y)
            apply_gradients(grads)
            losses.append(float(value))
        loss = float(np.mean(losses))
    recompute_batch_norm_statistics(model, data.x_train)
    return loss


def _auc_or_none(y: np.ndarray, p: np.ndarray) -> float | None:
    try:
        return macro_auc(y, p)
    except MetricError:
        return None


# --------------------------------------------------------------------------- Flower apps


@dataclass
class _Plan:
    """What every client needs: small (ids and options), pickled into the Ray actors."""

    config: FederateConfig
    data_root: str | None
    sites: list[Site]


_SITE_CACHE: dict = {}  # per process (one Ray actor): the site's arrays, read once


def _client_site(plan: _Plan, partition: int):
    site = plan.sites[partition]
    # keyed by content, not id(): an actor may outlive one simulation and ids are reused
    key = (plan.data_root, plan.config.rate, site.name, site.ids().tobytes())
    if key not in _SITE_CACHE:
        ds = load_ptbxl(plan.data_root, plan.config.rate, progress=False)
        _SITE_CACHE[key] = _site_data(ds, site)
    return _SITE_CACHE[key]


def _build_model(config: FederateConfig, data: FitData):
    from edge_ecg import models

    return models.build(
        config.arch, num_samples=data.x_train.shape[1], num_leads=data.x_train.shape[2], num_classes=len(CLASSES), **config.arch_kwargs
    )


def _set_weights(model, arrays, local_bn=None) -> None:
    """Global ``arrays`` (by key), then the site's own batch-norm weights over them (FedBN)."""
    for i, v in enumerate(model.weights):
        if _key(i) in arrays:
            v.assign(arrays[_key(i)].numpy())
    if local_bn is not None:
        for key in local_bn.keys():
            model.weights[int(key[1:])].assign(local_bn[key].numpy())


def _array_record(arrays: dict[str, np.ndarray]):
    """A Flower ArrayRecord of named numpy arrays (it takes a dict of ``Array`` only)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _client_app(plan: _Plan):
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from edge_ecg.train import predict

    app = ClientApp()
    config = plan.config

    def prepare(msg, context):
        partition = int(context.node_config["partition-id"])
        data, test = _client_site(plan, partition)
        model = _build_model(config, data)
        local_bn = context.state.array_records.get("bn") if config.batch_norm == "local" else None
        _set_weights(model, msg.content["arrays"], local_bn)
        return partition, data, test, model

    @app.train()
    def train(msg, context):
        partition, data, _, model = prepare(msg, context)
        server_round = int(msg.content["config"]["server-round"])
        mu = float(msg.content["config"].get("proximal-mu", 0.0))
        options = FitOptions(
            epochs=config.local_epochs, batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed, augment=config.augment
        )
        loss = local_fit(model, data, options, stream=(server_round, partition), proximal_mu=mu)
        bn = set(_bn_indices(model))
        if config.batch_norm == "local":  # FedBN: these stay on the site, for the next round and the report
            context.state["bn"] = _array_record({_key(i): model.weights[i].numpy() for i in sorted(bn)})
        sent = {_key(i): v.numpy() for i, v in enumerate(model.weights) if config.batch_norm == "global" or i not in bn}
        arrays = _array_record(sent)
        metrics = MetricRecord(
            {"num-examples": len(data.x_train), "site-index": partition, "train-loss": loss, "bytes-sent": arrays.count_bytes()}
        )
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg, context):
        partition, data, test, model = prepare(msg, context)
        p_val = predict(model, data.x_val)
        if msg.content["config"].get("report", False):  # the last message: this site's predictions for the report
            probs = _array_record({"val": p_val, "test": predict(model, test["x"])})
            metrics = MetricRecord({"num-examples": len(test["x"]), "site-index": partition})
            return Message(RecordDict({"predictions": probs, "metrics": metrics}), reply_to=msg)
        auc = _auc_or_none(data.y_val, p_val)
        metrics = MetricRecord({"num-examples": len(data.x_val), "site-index": partition, "val-auc": float("nan") if auc is None else auc})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


class _Recorder:
    """What the ServerApp saw: per-round, per-site metrics, failures, the final arrays and predictions."""

    def __init__(self, n_sites: int):
        self.train: list[dict] = []  # one dict per round: site index -> metrics
        self.evaluate: list[dict] = []
        self.failures: list[dict] = []
        self.arrays: dict[str, np.ndarray] | None = None
        self.predictions: dict[int, dict[str, np.ndarray]] = {}
        self.n_sites = n_sites


def _ordered_strategy(base, recorder: _Recorder):
    """``base`` (FedAvg or FedProx) aggregating replies in site order and recording them."""

    def site_order(replies):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        for m in replies:
            if m.has_error():
                recorder.failures.append({"node": int(m.metadata.src_node_id), "error": str(m.error.reason)})
        ok.sort(key=lambda m: int(m.content["metrics"]["site-index"]))
        return ok + [m for m in replies if m.has_error()]

    def rows(replies, keys):
        return {
            int(m.content["metrics"]["site-index"]): {k: m.content["metrics"][k] for k in keys}
            for m in replies
            if not m.has_error()
        }

    class Ordered(base):
        def aggregate_train(self, server_round, replies):
            replies = site_order(replies)
            recorder.train.append(rows(replies, ("num-examples", "train-loss", "bytes-sent")))
            return super().aggregate_train(server_round, replies)

        def aggregate_evaluate(self, server_round, replies):
            replies = site_order(replies)
            recorder.evaluate.append(rows(replies, ("num-examples", "val-auc")))
            return super().aggregate_evaluate(server_round, replies)

    return Ordered


def _server_app(plan: _Plan, initial: dict[str, np.ndarray], recorder: _Recorder):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg, FedProx

    config, n = plan.config, len(plan.sites)
    k = config.clients_per_round or n
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        random.seed(config.seed)  # Flower samples the clients of a round with Python's random
        common = dict(fraction_train=k / n, min_train_nodes=k, fraction_evaluate=1.0, min_evaluate_nodes=n, min_available_nodes=n)
        if config.strategy == "fedprox":
            strategy = _ordered_strategy(FedProx, recorder)(proximal_mu=config.proximal_mu, **common)
        else:
            strategy = _ordered_strategy(FedAvg, recorder)(**common)
        result = strategy.start(grid=grid, initial_arrays=_array_record(initial), num_rounds=config.rounds)
        recorder.arrays = {key: result.arrays[key].numpy() for key in result.arrays.keys()}
        # One more message to every site: its predictions with the final model (and its own BN under FedBN).
        content = RecordDict({"arrays": result.arrays, "config": ConfigRecord({"report": True})})
        messages = [Message(content, dst_node_id=node, message_type=MessageType.EVALUATE) for node in grid.get_node_ids()]
        for reply in grid.send_and_receive(messages):
            if reply.has_error():
                recorder.failures.append({"node": int(reply.metadata.src_node_id), "error": str(reply.error.reason), "stage": "report"})
                continue
            site = int(reply.content["metrics"]["site-index"])
            preds = reply.content["predictions"]
            recorder.predictions[site] = {"val": preds["val"].numpy(), "test": preds["test"].numpy()}

    return app


def _quiet_flower_environment() -> None:
    """Offline use: no telemetry, no per-run dependency installation. Set only when federating, never on import."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


def run_federation(plan: _Plan, initial: dict[str, np.ndarray], *, verbose: bool = False) -> _Recorder:
    """The Flower simulation: one client per site, on this machine; returns what the server recorded."""
    _quiet_flower_environment()
    import edge_ecg.tf  # noqa: F401  (TF_USE_LEGACY_KERAS before flwr imports TensorFlow)
    from flwr.simulation import run_simulation

    if not verbose:  # Flower logs every round at INFO; its warnings (run_simulation's deprecation) still show
        import logging

        logging.getLogger("flwr").setLevel(logging.WARNING)
    recorder = _Recorder(len(plan.sites))
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"include_dashboard": False, "log_to_driver": verbose}}
    run_simulation(
        server_app=_server_app(plan, initial, recorder),
        client_app=_client_app(plan),
        num_supernodes=len(plan.sites),
        backend_config=backend,
        verbose_logging=verbose,
    )
    if recorder.arrays is None or len(recorder.predictions) != len(plan.sites):
        missing = sorted(set(range(len(plan.sites))) - set(recorder.predictions))
        raise RunError(
            f"the federation did not finish: no final model or no predictions from site(s) "
            f"{', '.join(plan.sites[i].name for i in missing)}; failures: {recorder.failures or 'none reported'}"
        )
    return recorder


# --------------------------------------------------------------------------- the stage


def _score(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict:
    """Macro AUC with its bootstrap interval, or null and the reason where it is undefined."""
    try:
        auc = macro_auc(y, p)
    except MetricError as exc:
        defined = per_class_auc(y, p) if len(y) else np.full(len(CLASSES), np.nan)
        return {"macro_auc": None, "ci95": None, "records": len(y), "undefined": str(exc), "defined_classes_mean": _nanmean(defined)}
    lo, hi = bootstrap_auc(y, p, n_boot=n_boot, seed=seed)
    return {"macro_auc": auc, "ci95": [lo, hi], "records": len(y)}


def _nanmean(values: np.ndarray) -> float | None:
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def federate(run: str | os.PathLike, config: FederateConfig, *, dataset: PtbxlDataset | None = None, verbose: bool = False) -> dict:
    """Federate ``config.arch`` across sites into ``run`` and write the report; returns the report dict."""
    from edge_ecg import models
    from edge_ecg.tf import keras

    config.check()
    if config.arch not in models.ARCHITECTURES:
        models.build(config.arch)  # the "did you mean" error before anything is written
    run = Path(run)
    ds = dataset if dataset is not None else load_ptbxl(config.data, config.rate, progress=False)
    if ds.root is None:
        raise DataError("the dataset has no root folder; sites are read from its ptbxl_database.csv")
    sites = split_sites(ds, site_of_records(ds.root, config.site_by, config.blank, config.rate), config.site_train_limit)
    if config.clients_per_round is not None and config.clients_per_round > len(sites):
        raise ValueError(f"--clients-per-round {config.clients_per_round}: there are only {len(sites)} sites ({', '.join(s.name for s in sites)})")
    with RunLock(run, "federate", create=True):
        atomic_write_json(run / FEDERATE_CONFIG, {"format": RUN_FORMAT, "edge_ecg": __version__, "federate": asdict(config)})
        summary = sites_summary(ds, sites, config.site_by, config.blank)
        atomic_write_json(run / SITES_FILE, summary)

        site_data = [_site_data(ds, s) for s in sites]
        keras.utils.set_random_seed(config.seed)
        model = _build_model(config, site_data[0][0])
        initial = {_key(i): v.numpy() for i, v in enumerate(model.weights)}

        plan = _Plan(config, str(ds.root), sites)
        recorder = run_federation(plan, initial, verbose=verbose)
        probs = {"federated": {i: recorder.predictions[i]["test"] for i in range(len(sites))}}
        buf = io.BytesIO()
        np.savez(buf, **recorder.arrays)
        atomic_write_bytes(run / WEIGHTS_FILE, buf.getvalue())

        total_epochs = config.rounds * config.local_epochs  # baselines see as many epochs as each client
        options = FitOptions(epochs=total_epochs, batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed, augment=config.augment)
        from edge_ecg.train import predict

        if "local" in config.compare:
            probs["local"] = {}
            for i, (data, test) in enumerate(site_data):
                keras.utils.set_random_seed(config.seed)
                m = _build_model(config, data)
                local_fit(m, data, options, stream=(0, i))
                probs["local"][i] = predict(m, test["x"])
        if "centralized" in config.compare:
            probs["centralized"] = _centralized(ds, sites, config, options)

        report = _report(config, sites, site_data, probs, recorder, summary)
        atomic_write_json(run / REPORT_JSON, report)
        atomic_write_text(run / REPORT_MD, _markdown(report))
        for name, per_site in probs.items():
            buf = io.BytesIO()
            np.savez(
                buf,
                **{f"{sites[i].name}/probs": p for i, p in per_site.items()},
                **{f"{sites[i].name}/labels": site_data[i][1]["y"] for i in per_site},
                **{f"{sites[i].name}/ecg_ids": site_data[i][1]["ids"] for i in per_site},
            )
            (run / PREDICTIONS_DIR).mkdir(exist_ok=True)
            atomic_write_bytes(run / PREDICTIONS_DIR / f"federate_{name}.npz", buf.getvalue())
        _plot_rounds(report, run / ROUNDS_PLOT)
        return report


def _centralized(ds: PtbxlDataset, sites: list[Site], config: FederateConfig, options: FitOptions) -> dict[int, np.ndarray]:
    """The upper bound: one model on every site's training records pooled (one standardization), tested per site."""
    from edge_ecg.data import Split
    from edge_ecg.tf import keras
    from edge_ecg.train import predict

    index = {int(i): k for k, i in enumerate(ds.ecg_ids)}

    def part(ids):
        return ds.select(np.array([index[int(i)] for i in ids], dtype=np.int64))

    pooled = Split(
        train=part(np.concatenate([s.train for s in sites])),
        val=part(np.concatenate([s.val for s in sites])),
        test=part(np.concatenate([s.test for s in sites])),
    )
    standardizer = Standardizer.fit(pooled.train.signals)
    data = fit_data(pooled, standardizer, ds.rate)
    keras.utils.set_random_seed(config.seed)
    model = _build_model(config, data)
    local_fit(model, data, options, stream=(0, len(sites)))
    return {i: predict(model, standardizer.transform(part(s.test).signals)) for i, s in enumerate(sites)}


def _report(config: FederateConfig, sites, site_data, probs: dict, recorder: _Recorder, summary: dict) -> dict:
    per_site = {}
    for i, s in enumerate(sites):
        y = site_data[i][1]["y"]
        per_site[s.name] = {name: _score(y, p[i], config.n_boot, config.seed) for name, p in probs.items()}
    y_all = np.concatenate([site_data[i][1]["y"] for i in range(len(sites))])
    pooled = {name: _score(y_all, np.concatenate([p[i] for i in range(len(sites))]), config.n_boot, config.seed) for name, p in probs.items()}
    rounds = []
    for r, (tr, ev) in enumerate(zip(recorder.train, recorder.evaluate), start=1):
        rounds.append(
            {
                "round": r,
                "bytes_sent": {sites[i].name: int(m["bytes-sent"]) for i, m in sorted(tr.items())},
                "train_loss": {sites[i].name: float(m["train-loss"]) for i, m in sorted(tr.items())},
                "val_auc": {sites[i].name: (None if math.isnan(m["val-auc"]) else float(m["val-auc"])) for i, m in sorted(ev.items())},
            }
        )
    return {
        "config": asdict(config),
        "sites": summary["sites"],
        "test_macro_auc": {"per_site": per_site, "pooled": pooled},
        "rounds": rounds,
        "failures": recorder.failures,
        "note": "test = each site's fold 10; intervals: percentile bootstrap over records (edge_ecg.metrics)",
    }


def format_score(score: dict) -> str:
    """'0.812 [0.780, 0.845]', or 'n/a (N rec.)' where the AUC is undefined."""
    if score["macro_auc"] is None:
        return f"n/a ({score['records']} rec.)"
    lo, hi = score["ci95"]
    return f"{score['macro_auc']:.3f} [{lo:.3f}, {hi:.3f}]"


def _markdown(report: dict) -> str:
    names = list(report["test_macro_auc"]["pooled"])
    lines = ["# Federated run", "", f"strategy {report['config']['strategy']}, batch norm {report['config']['batch_norm']}, "
             f"{report['config']['rounds']} rounds x {report['config']['local_epochs']} local epochs", "",
             "Test macro AUC (fold 10 of each site) [95% bootstrap interval]", "",
             "| site | train | test | " + " | ".join(names) + " |", "| --- | ---: | ---: |" + " --- |" * len(names)]
    for site, scores in report["test_macro_auc"]["per_site"].items():
        counts = report["sites"][site]
        lines.append(f"| {site} | {counts['train']['records']} | {counts['test']['records']} | " + " | ".join(format_score(scores[n]) for n in names) + " |")
    pooled = report["test_macro_auc"]["pooled"]
    lines.append("| **pooled** | | | " + " | ".join(format_score(pooled[n]) for n in names) + " |")
    undefined = [(s, n, sc[n]["undefined"]) for s, sc in report["test_macro_auc"]["per_site"].items() for n in names if sc[n]["macro_auc"] is None]
    if undefined:
        lines += ["", "n/a: " + "; ".join(sorted({f"{s}: {why}" for s, _, why in undefined}))]
    lines += ["", "Bytes each client sent per round", "", "| round | " + " | ".join(report["sites"]) + " |", "| ---: |" + " ---: |" * len(report["sites"])]
    for r in report["rounds"]:
        lines.append(f"| {r['round']} | " + " | ".join(str(r["bytes_sent"].get(s, "-")) for s in report["sites"]) + " |")
    if report["failures"]:
        lines += ["", f"Failures: {report['failures']}"]
    return "\n".join(lines) + "\n"


def _plot_rounds(report: dict, path: Path) -> None:
    """Validation macro AUC of the global model per round, one line per site (gaps where undefined)."""
    from edge_ecg.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    rounds = [r["round"] for r in report["rounds"]]
    for site in report["sites"]:
        values = [np.nan if r["val_auc"].get(site) is None else r["val_auc"][site] for r in report["rounds"]]
        ax.plot(rounds, values, marker="o", label=site)
    ax.set(xlabel="round", ylabel="validation macro AUC", title=f"{report['config']['strategy']}, BN {report['config']['batch_norm']}")
    ax.legend(loc="lower right")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
