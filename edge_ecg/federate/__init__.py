"""Federated transfer learning across sites on Flower (issue 14): sites, FedAvg/FedProx, FedBN, per-site transfer, report.

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
``flwr.simulation.run_simulation`` (one Ray actor per client, on this machine), or with
``deployment=HOST:PORT`` by ``flwr run`` on a SuperLink and its SuperNodes (:mod:`.deploy`).

After the federation, :mod:`.transfer` fine-tunes the model per site and runs the existing
compress, export and firmware stages on each site's own run folder (``sites/<site>/``): in the
simulation on this machine, under a deployment in each site's ClientApp on its own SuperNode
(:func:`_site_side_report`, answering the ServerApp's last message), whose data never leaves it.

Under a deployment this process and the ServerApp read no data: ``num_sites`` (``--sites``) says
how many SuperNodes to wait for; each client finds its site in its own data folder (node-config
``data``, ``site``), trains its local-only baseline there, and sends back metrics, its counts, its
transfer summary and its test fold's scores and labels (for the pooled report). The centralized
baseline needs every site's records on one machine: under a deployment it is opt-in, with ``--data``.

Learning rate: every client's stint takes its part of one cosine decay across all rounds
(``lr_schedule="rounds"``, default), as the centralized baseline's one decay over its epochs, or
each local stint decays by cosine from ``learning_rate`` (``"restart"``).

Failures: a client that raises during a round is left out of that round's aggregation (Flower's
strategies aggregate the replies without error) and the report lists round, stage, site and error.
``EDGE_ECG_FEDERATE_FAIL=ROUND:SITE`` injects such a failure (:data:`FAIL_ENV`). A client whose
model differs from the server's (:func:`model_fingerprint`: arch, arch kwargs, input shape,
classes) refuses every message with an error naming both.

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
    sites/<site>/            each site's run folder: fine-tuned model, compress/, export/, firmware/ (transfer; a deployment's
                             are on the sites, in their node-config ``run-dir``)
    flower_app/, flower_results.npz|json   with --deployment: the app flwr runs and what its ServerApp wrote
"""

from __future__ import annotations

import io
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_ecg import CLASSES, __version__
from edge_ecg.data import DataError, PtbxlDataset, Standardizer, load_ptbxl, split_folds
from edge_ecg.metrics import MetricError, bootstrap_auc, macro_auc, paired_bootstrap, per_class_auc
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
from edge_ecg.federate.transfer import FINE_TUNE
from edge_ecg.train import FitData, FitOptions, TrainConfig, fit_data

if TYPE_CHECKING:  # Flower is imported only when federating
    from flwr.app import RecordDict

SITE_COLUMNS = ("device", "site")
BLANK_CHOICES = ("unknown", "drop")
STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam")  # fedavgm, fedadam: Flower's server-side optimizers (server_lr, server_momentum)
BATCH_NORM = ("global", "local")
LR_SCHEDULES = ("rounds", "restart")
KEEP_ROUND = ("last", "best-val")
MODELS = ("local", "federated", "fine-tuned", "centralized")  # what the report compares


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
    server_lr: float = 1.0  # fedavgm's server_learning_rate, fedadam's eta (which wants ~1e-2: its steps are normalized)
    server_momentum: float = 0.9  # fedavgm's server_momentum
    batch_norm: str = "global"  # measured against "local" (FedBN) over 25 rounds: ties pooled, better on 2 of 3 sites (README)
    batch_size: int = 32
    learning_rate: float = 2e-3
    keep_round: str = "last"  # best-val: the global model of the round with the best mean validation macro AUC the sites reported
    lr_schedule: str = "rounds"  # one cosine decay across all rounds (as centralized over its epochs); restart: each round's stint decays from learning_rate. rounds: measured, README
    augment: bool = True
    augment_site: bool = False  # site-shift augmentation on top of (or instead of) augment: train's --augment-site
    highpass_hz: float = 0.0  # zero-phase input high-pass (train's --highpass): every site's standardization, baselines and exports; 0: none
    seed: int = 0
    site_train_limit: int | None = None  # first N training records of each site (smoke tests)
    site_data: tuple[str, ...] = ()  # NAME=PATH: another data folder (CinC, ...) as one more site, see load_sites_dataset
    compare: tuple[str, ...] = ("local", "centralized")  # baselines trained besides the federation
    num_sites: int | None = None  # --deployment: how many SuperNodes (sites) the server waits for; it reads no data
    n_boot: int = 1000
    fine_tune: str = "head"  # transfer after federation: none | head | all (edge_ecg.federate.transfer); head: measured, see README
    fine_tune_epochs: int = 10
    fine_tune_lr: float = 5e-4
    export_sites: str = "all"  # sites whose run folder gets compress/export/firmware: all | none | NAME,NAME
    compress_epochs: int = 2  # QAT epochs per exported site (0: export the float fine-tuned model)
    export_max_drop: float = 0.01  # export's limit on the int8 model's validation macro AUC loss (on the site's fold 9)
    target: str = "esp32"

    def fit_options(self, epochs: int, **overrides) -> FitOptions:
        """train's fit options for ``epochs`` of the federation's training settings: the clients' stints, both
        baselines and the fine-tunes take them from here, so an option reaches every one of them."""
        settings = dict(batch_size=self.batch_size, learning_rate=self.learning_rate, seed=self.seed, augment=self.augment,
                        augment_site=self.augment_site)
        return FitOptions(epochs=epochs, **{**settings, **overrides})

    def check(self) -> None:
        """ValueError naming the option, what is allowed and what was given."""
        for name, value, allowed in (
            ("site_by", self.site_by, SITE_COLUMNS),
            ("blank", self.blank, BLANK_CHOICES),
            ("strategy", self.strategy, STRATEGIES),
            ("batch_norm", self.batch_norm, BATCH_NORM),
            ("fine_tune", self.fine_tune, FINE_TUNE),
            ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
            ("keep_round", self.keep_round, KEEP_ROUND),
        ):
            if value not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} {value!r}: choose one of {', '.join(allowed)}")
        for name in ("rounds", "local_epochs", "batch_size", "fine_tune_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.num_sites is not None and self.num_sites < 1:
            raise ValueError(f"--sites must be at least 1, got {self.num_sites}")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ValueError(f"--clients-per-round must be at least 1, got {self.clients_per_round}")
        if self.compress_epochs < 0:
            raise ValueError(f"--compress-epochs must be >= 0, got {self.compress_epochs}")
        if self.proximal_mu < 0:
            raise ValueError(f"--proximal-mu must be >= 0, got {self.proximal_mu}")
        if self.server_lr <= 0 or not 0 <= self.server_momentum < 1:
            raise ValueError(f"--server-lr must be > 0 and --server-momentum in [0, 1), got {self.server_lr} and {self.server_momentum}")
        if self.keep_round == "best-val" and self.batch_norm == "local":
            raise ValueError("--keep-round best-val needs --batch-norm global: under FedBN each site keeps its last round's batch norm")
        try:  # train's rule for the cutoff, so both commands accept the same values
            TrainConfig(rate=self.rate, highpass_hz=self.highpass_hz)
        except RunError as exc:
            raise ValueError(f"--highpass: {exc}") from None
        parse_site_data(self.site_data)
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


SITE_DATA_ID_OFFSET = 1_000_000
"""The k-th ``--site-data`` folder's records get ecg_id ``SITE_DATA_ID_OFFSET * k + `` their reader's id (k from 1),
so they never collide with PTB-XL's (below 22,000) or another folder's."""


def parse_site_data(items) -> list[tuple[str, str]]:
    """``NAME=PATH`` items as (name, path); ValueError naming a malformed or repeated one."""
    out: list[tuple[str, str]] = []
    for item in items:
        name, sep, path = str(item).partition("=")
        name = name.strip()
        if not sep or not name or not path.strip() or "/" in name:
            raise ValueError(f"--site-data {item!r}: expected NAME=PATH (e.g. georgia=../shared/data/cinc/georgia)")
        if name in {n for n, _ in out}:
            raise ValueError(f"--site-data: site {name!r} is given twice")
        out.append((name, path.strip()))
    return out


def _assign_folds(ecg_ids: np.ndarray) -> np.ndarray:
    """Folds 1..10 for a folder without PTB-XL's: records in id order take folds 1, 2, ..., 10, 1, ... (windows of one record share it)."""
    unique = np.unique(ecg_ids)
    fold_of = {int(i): k % 10 + 1 for k, i in enumerate(unique)}
    return np.array([fold_of[int(i)] for i in ecg_ids], dtype=np.int64)


def load_sites_dataset(config: FederateConfig, dataset: PtbxlDataset | None = None) -> tuple[PtbxlDataset, dict[int, str]]:
    """PTB-XL (``config.data``, split by ``--site-by``) plus every ``--site-data`` folder as one site each; returns (records, ecg_id -> site).

    A ``--site-data`` folder is read by :func:`edge_ecg.data.formats.load_dataset` (PTB-XL or CinC,
    detected) at the model's rate and window. CinC folders have no folds of PTB-XL's kind (their
    records are fold 0): their records are dealt round-robin into folds 1..10 in ecg_id order, so
    the site's split is 8/1/1 by record, like PTB-XL's. Their ecg_ids are offset (:data:`SITE_DATA_ID_OFFSET`).
    """
    from dataclasses import replace

    from edge_ecg.data.cinc import EXTERNAL_FOLD
    from edge_ecg.data.formats import load_dataset

    ds = dataset if dataset is not None else load_ptbxl(config.data, config.rate, progress=False)
    if ds.root is None:
        raise DataError("the dataset has no root folder; sites are read from its ptbxl_database.csv")
    site_of = site_of_records(ds.root, config.site_by, config.blank, config.rate)
    extra = parse_site_data(config.site_data)
    if not extra:
        return ds, site_of
    taken = set(site_of.values())
    parts = [ds]
    for k, (name, path) in enumerate(extra, start=1):
        if name in taken:
            raise ValueError(f"--site-data {name}={path}: a PTB-XL site is already called {name!r}; choose another name")
        part = load_dataset(path, ds.rate, window=ds.signals.shape[1], progress=False)
        if len(part) == 0:
            raise DataError(f"--site-data {name}={path}: no labelled record to train on")
        ids = part.ecg_ids.astype(np.int64) + SITE_DATA_ID_OFFSET * k
        folds = _assign_folds(ids) if (part.folds == EXTERNAL_FOLD).all() else part.folds
        parts.append(replace(ds, signals=part.signals, labels=part.labels.astype(ds.labels.dtype), folds=folds, ecg_ids=ids,
                             patient_ids=part.patient_ids))
        site_of.update({int(i): name for i in ids})
    combined = replace(
        ds, **{f: np.concatenate([getattr(p, f) for p in parts]) for f in ("signals", "labels", "folds", "ecg_ids", "patient_ids")}
    )
    return combined, site_of


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


def _site_data(ds: PtbxlDataset, site: Site, highpass_hz: float = 0.0) -> tuple[FitData, dict]:
    """The site's standardized training/validation arrays (its own standardization, after a ``highpass_hz`` high-pass
    when > 0) and test arrays."""
    index = {int(i): k for k, i in enumerate(ds.ecg_ids)}

    def part(ids):
        return ds.select(np.array([index[int(i)] for i in ids], dtype=np.int64))

    from edge_ecg.data import Split

    split = Split(train=part(site.train), val=part(site.val), test=part(site.test))
    standardizer = Standardizer.fit(split.train.signals, None, highpass_hz, ds.rate)
    data = fit_data(split, standardizer, ds.rate)
    test = {"x": standardizer.transform(split.test.signals), "y": split.test.labels.astype(np.float32), "ids": split.test.ecg_ids,
            "standardizer": standardizer}
    return data, test


# --------------------------------------------------------------------------- local training


def _bn_indices(model) -> list[int]:
    """Indices in ``model.weights`` of BatchNormalization weights (gamma, beta, moving mean and variance)."""
    from edge_ecg.tf import keras

    bn = {id(v) for m in model.submodules if isinstance(m, keras.layers.BatchNormalization) for v in m.weights}
    return [i for i, v in enumerate(model.weights) if id(v) in bn]


def _key(i: int) -> str:
    return f"w{i:03d}"


def local_fit(model, data: FitData, options: FitOptions, *, stream: tuple[int, ...], proximal_mu: float = 0.0,
              window: tuple[int, int] | None = None) -> float:
    """``options.epochs`` epochs of ``train``'s gradient step on ``data``; returns the last epoch's mean loss.

    Every draw depends on ``(options.seed, *stream, epoch)``; ``stream`` is (round, site) for a
    client. With ``proximal_mu > 0`` the loss gains FedProx's ``mu/2 * ||w - w_start||^2``.
    The learning rate decays by cosine from ``options.learning_rate`` over these epochs, or, with
    ``window=(k, n)`` (epochs), follows epochs k+1..k+options.epochs of one cosine decay over n
    epochs: a client's round r of R with E local epochs is ``((r-1)*E, R*E)`` (``--lr-schedule rounds``).
    Batch-norm statistics are recomputed on the clean training records at the end (as ``fit``
    does after every epoch).
    """
    from edge_ecg.tf import keras, tf
    from edge_ecg.train import _make_gradient_step, augment_batch, recompute_batch_norm_statistics

    tf.config.experimental.enable_op_determinism()
    if proximal_mu > 0:
        anchors = [tf.constant(v.numpy()) for v in model.trainable_variables]
        variables = list(model.trainable_variables)
        model.add_loss(lambda: proximal_mu / 2 * tf.add_n([tf.reduce_sum(tf.square(v - a)) for v, a in zip(variables, anchors)]))
    steps = math.ceil(len(data.x_train) / options.batch_size)
    first, total = window if window is not None else (0, options.epochs)
    cosine = keras.optimizers.schedules.CosineDecay(options.learning_rate, decay_steps=max(1, total * steps), alpha=0.05)
    optimizer = keras.optimizers.Adam(_Shifted(cosine, first * steps) if first else cosine)
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
            xb = augment_batch(data.x_train[idx], rng, data.rate, options)  # the same draws as train.fit
            y = tf.constant(data.y_train[idx])
            value, grads = step(tf.constant(xb), y, y)
            apply_gradients(grads)
            losses.append(float(value))
        loss = float(np.mean(losses))
    recompute_batch_norm_statistics(model, data.x_train)
    return loss


def _Shifted(schedule, offset: int):
    """``schedule`` read ``offset`` steps later (a client's stint within one decay across rounds)."""
    from edge_ecg.tf import keras

    class Shifted(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return schedule(step + offset)

        def get_config(self) -> dict:
            return {"schedule": schedule.get_config(), "offset": offset}

    return Shifted()


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
    model: str = ""  # model_fingerprint of the server's model; a client whose own differs refuses the message
    fail_at: tuple[int, str] | None = None  # fault injection: (round, site) whose training raises; see FAIL_ENV

    @property
    def site_side(self) -> bool:
        """A deployment's plan: no sites (the server read no data); each client finds its own site and reports it."""
        return not self.sites

    @property
    def n_sites(self) -> int:
        return len(self.sites) or int(self.config.num_sites or 0)

    def site_names(self, recorder: _Recorder | None = None) -> list[str]:
        names = recorder.site_names if recorder is not None else {}
        return [s.name for s in self.sites] or [names.get(i, f"partition-{i}") for i in range(self.n_sites)]


FAIL_ENV = "EDGE_ECG_FEDERATE_FAIL"
"""Fault injection for tests and drills: ``ROUND:SITE`` (e.g. ``2:CS-12``) makes that site's client raise
during that round's training. The round goes on with the other sites and the report lists the failure."""


def _fail_at_from_env() -> tuple[int, str] | None:
    value = os.environ.get(FAIL_ENV, "").strip()
    if not value:
        return None
    round_text, _, site = value.partition(":")
    if not round_text.isdigit() or not site:
        raise ValueError(f"{FAIL_ENV}={value!r}: expected ROUND:SITE, e.g. 2:CS-12")
    return int(round_text), site


def model_fingerprint(config: FederateConfig, data: FitData | None = None) -> str:
    """What must be equal on the server and every client for their weights to fit each other.

    Without ``data`` (a deployment's server, which reads no records) the input is PTB-XL's: 10 s at
    ``config.rate``, 12 leads (every site's records, ``--site-data`` too, are read at that window).
    """
    import json

    from edge_ecg.data import LEADS

    samples, leads = (data.x_train.shape[1], data.x_train.shape[2]) if data is not None else (config.rate * 10, len(LEADS))
    kwargs = json.dumps(config.arch_kwargs, sort_keys=True)
    return f"{config.arch} {kwargs} input {samples}x{leads} classes {len(CLASSES)}"


_SITE_CACHE: dict = {}  # per process (one Ray actor): the site's arrays, read once


@dataclass
class _ClientSite:
    site: Site
    data: FitData
    test: dict
    dataset: PtbxlDataset  # the site's own records (compress and export read them)


def _client_site(plan: _Plan, partition: int, node_config=None) -> _ClientSite:
    """The client's site and its arrays: by ``partition`` in the plan's sites, or (a deployment) found in the SuperNode's own data.

    A deployment's client reads the folder in its ``data`` node-config entry, splits it into sites by
    the plan's ``--site-by``/``--blank`` and serves the site named by its ``site`` entry; without one,
    the only site of its folder, else (a shared copy, as on localhost) the ``partition-id``-th in name order.
    """
    from dataclasses import replace

    node_config = node_config or {}
    wanted = str(node_config.get("site", "")) or None
    # keyed by content, not id(): an actor may outlive one simulation and ids are reused
    key = (plan.data_root, plan.config.rate, plan.config.site_by, plan.config.blank, plan.config.site_train_limit, plan.config.highpass_hz,
           partition, wanted, plan.sites[partition].ids().tobytes() if plan.sites else b"")
    if key not in _SITE_CACHE:
        if plan.data_root is None:
            raise RunError(f"partition-id {partition}: this SuperNode has no data folder; start it with "
                           f"--node-config \"partition-id={partition} num-partitions={plan.n_sites} data='/path/to/ptbxl'\"")
        ds, site_of = load_sites_dataset(replace(plan.config, data=plan.data_root))
        if plan.sites:
            site = plan.sites[partition]
        else:
            own = split_sites(ds, site_of, plan.config.site_train_limit)
            names = [s.name for s in own]
            if wanted is not None and wanted not in names:
                raise RunError(f"site={wanted!r}: {plan.data_root} has no such site by --site-by {plan.config.site_by}; it has {', '.join(names)}")
            if wanted is None and len(own) > 1 and partition >= len(own):
                raise RunError(f"partition-id {partition}: {plan.data_root} has {len(own)} sites ({', '.join(names)}); "
                               "name this SuperNode's site with site=NAME in --node-config")
            site = own[names.index(wanted)] if wanted is not None else own[0] if len(own) == 1 else own[partition]
        data, test = _site_data(ds, site, plan.config.highpass_hz)
        _SITE_CACHE[key] = _ClientSite(site, data, test, ds.select(np.isin(ds.ecg_ids, site.ids())))
    return _SITE_CACHE[key]


def _build_model(config: FederateConfig, data: FitData):
    from edge_ecg import models

    return models.build(
        config.arch, num_samples=data.x_train.shape[1], num_leads=data.x_train.shape[2], num_classes=len(CLASSES), **config.arch_kwargs
    )


def _model_of_plan(plan: _Plan):
    """The seeded initial model, built from the shapes in the plan's fingerprint (the server needs no data)."""
    from edge_ecg import models
    from edge_ecg.tf import keras

    shape = plan.model.split(" input ")[1].split(" ")[0]
    samples, leads = (int(v) for v in shape.split("x"))
    keras.utils.set_random_seed(plan.config.seed)
    return models.build(plan.config.arch, num_samples=samples, num_leads=leads, num_classes=len(CLASSES), **plan.config.arch_kwargs)


def _statistics_keys(plan: _Plan) -> set[str]:
    """Keys of the weights no gradient moves (BatchNormalization's moving mean and variance)."""
    return {_key(i) for i, v in enumerate(_model_of_plan(plan).weights) if not v.trainable}


def _set_weights(model, arrays, local_bn=None, *, site: str = "") -> None:
    """Global ``arrays`` (by key), then the site's own batch-norm weights over them (FedBN).

    RunError naming the first weight whose shape differs (clients built another model).
    """
    keys = set(arrays.keys())
    if not keys <= {_key(i) for i in range(len(model.weights))}:
        raise RunError(
            f"site {site}: the server sent {len(keys)} weight arrays up to {max(keys)}, this client's model has "
            f"{len(model.weights)}; every site must build the same --arch with the same --arch-arg and --rate"
        )
    for source, where in ((arrays, "from the server"), (local_bn or {}, "in the site's own batch-norm weights")):
        for i, v in enumerate(model.weights):
            if _key(i) not in source:
                continue
            value = _as_numpy(source[_key(i)])  # a Flower Array, or numpy (the recorder's copies)
            if tuple(value.shape) != tuple(v.shape):
                raise RunError(
                    f"site {site}: weight {_key(i)} ({v.name}) is {tuple(v.shape)} in this client's model but "
                    f"{tuple(value.shape)} {where}; every site must build the same --arch with the same --arch-arg and --rate"
                )
            v.assign(value)


def _as_numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _array_record(arrays: dict[str, np.ndarray]):
    """A Flower ArrayRecord of named numpy arrays (it takes a dict of ``Array`` only)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _client_app(plan: _Plan | None = None, plan_of=None):
    """The ClientApp: one site's client. ``plan`` (simulation), or ``plan_of(context)`` (a deployment reads it from the run config)."""
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from edge_ecg.train import predict

    app = ClientApp()
    if plan_of is None:
        plan_of = lambda context: plan  # noqa: E731

    def prepare(msg, context):
        plan = plan_of(context)
        config = plan.config
        partition = int(context.node_config["partition-id"])
        if not 0 <= partition < plan.n_sites:
            raise RunError(f"partition-id {partition}: there are {plan.n_sites} sites ({', '.join(plan.site_names())}), ids 0-{plan.n_sites - 1}")
        cs = _client_site(plan, partition, context.node_config)
        data, test, site = cs.data, cs.test, cs.site.name
        ours, theirs = model_fingerprint(config, data), msg.content["config"].get("model")
        if theirs is not None and theirs != ours:
            raise RunError(f"site {site}: model configuration differs from the server's (server: {theirs}; this client: {ours}); "
                           "start every client with the same --arch, --arch-arg and --rate")
        model = _build_model(config, data)
        local_bn = context.state.array_records.get("bn") if config.batch_norm == "local" else None
        _set_weights(model, msg.content["arrays"], local_bn, site=site)
        return partition, cs, model

    @app.train()
    def train(msg, context):
        plan = plan_of(context)
        config = plan.config
        partition, cs, model = prepare(msg, context)
        data = cs.data
        server_round = int(msg.content["config"]["server-round"])
        if plan.fail_at == (server_round, cs.site.name):
            raise RuntimeError(f"injected failure ({FAIL_ENV}) of site {cs.site.name} in round {server_round}")
        mu = float(msg.content["config"].get("proximal-mu", 0.0))
        options = config.fit_options(config.local_epochs)
        window = ((server_round - 1) * config.local_epochs, config.rounds * config.local_epochs) if config.lr_schedule == "rounds" else None
        loss = local_fit(model, data, options, stream=(server_round, partition), proximal_mu=mu, window=window)
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
        plan = plan_of(context)
        config = plan.config
        partition, cs, model = prepare(msg, context)
        data, test = cs.data, cs.test
        if msg.content["config"].get("report", False) and plan.site_side:  # a deployment's last message: the site's own transfer
            return Message(_site_side_report(plan, partition, cs, model, context.node_config), reply_to=msg)
        p_val = predict(model, data.x_val)
        if msg.content["config"].get("report", False):  # the last message: this site's predictions for the report
            probs = _array_record({"val": p_val, "test": predict(model, test["x"])})
            metrics = MetricRecord({"num-examples": len(test["x"]), "site-index": partition})
            content = {"predictions": probs, "metrics": metrics}
            if config.batch_norm == "local":  # the site's own model for its fine-tune: global weights + these
                content["bn"] = _array_record({_key(i): model.weights[i].numpy() for i in _bn_indices(model)})
            return Message(RecordDict(content), reply_to=msg)
        auc = _auc_or_none(data.y_val, p_val)
        metrics = MetricRecord({"num-examples": len(data.x_val), "site-index": partition, "val-auc": float("nan") if auc is None else auc})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


SITE_RUN_DIR = "edge-ecg-federate"
"""A deployment's SuperNode writes its site's run folder to ``RUN_DIR/sites/<site>``: its ``run-dir`` node-config entry, else this
folder in the SuperNode's working directory."""


def _site_side_report(plan: _Plan, partition: int, cs: _ClientSite, model, node_config) -> RecordDict:
    """A deployment's last message, answered on the site: its local-only baseline, fine-tune, compress, export and firmware.

    The site's run folder (model, int8 model, firmware) stays on the site; what goes back is its
    test-fold scores and labels (for the pooled report), the counts per split and class, the
    per-site macro AUCs as metrics and the transfer's key figures.
    """
    import json

    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    from edge_ecg.train import predict

    config, site, data, test = plan.config, cs.site, cs.data, cs.test
    probs = {"federated": predict(model, test["x"])}
    if "local" in config.compare:
        probs["local"] = _local_only(config, data, test, partition)
    run_dir = Path(str(node_config.get("run-dir", SITE_RUN_DIR))).resolve()
    row, tuned = {}, None
    if config.fine_tune != "none" or config.export_sites != "none":  # as the simulation: nothing asked, no site folder
        row, tuned = _transfer_site(run_dir, site, cs, model, config, data_root=str(plan.data_root), export=_exports(config, site.name))
    if tuned is not None:
        probs["fine-tuned"] = tuned
    metrics = {"site-index": partition, "num-examples": len(test["x"])}
    for name, p in probs.items():
        auc = _auc_or_none(test["y"], p)
        metrics[f"test-auc-{name}"] = float("nan") if auc is None else auc
    summary = sites_summary(cs.dataset, [site], plan.config.site_by, plan.config.blank)["sites"][site.name]
    return RecordDict({
        "predictions": _array_record({**{f"test-{k}": v for k, v in probs.items()}, "labels": test["y"], "ids": test["ids"]}),
        "metrics": MetricRecord(metrics),
        "site": ConfigRecord({"name": site.name, "summary": json.dumps(summary), "transfer": json.dumps(row, default=str)}),
    })


def _exports(config: FederateConfig, site: str) -> bool:
    """Whether ``--export-sites`` asks for this site (a deployment's client checks its own name)."""
    return config.export_sites == "all" or (config.export_sites != "none" and site in [n.strip() for n in config.export_sites.split(",")])


def _local_only(config: FederateConfig, data: FitData, test: dict, index: int) -> np.ndarray:
    """The local-only baseline of one site: as many epochs as its client trained in the federation; its test probabilities."""
    from edge_ecg.tf import keras
    from edge_ecg.train import predict

    options = config.fit_options(config.rounds * config.local_epochs)
    keras.utils.set_random_seed(config.seed)
    model = _build_model(config, data)
    local_fit(model, data, options, stream=(0, index))
    return predict(model, test["x"])


class _Recorder:
    """What the ServerApp saw: per-round, per-site metrics, failures, the final arrays and predictions."""

    def __init__(self, n_sites: int):
        self.train: list[dict] = []  # one dict per round: site index -> metrics
        self.evaluate: list[dict] = []
        self.failures: list[dict] = []  # round, stage, node, error (the site is filled in from node_site)
        self.node_site: dict[int, int] = {}  # node id -> site index, learnt from the replies that succeeded
        self.arrays: dict[str, np.ndarray] | None = None
        self.predictions: dict[int, dict[str, np.ndarray]] = {}
        self.site_bn: dict[int, dict[str, np.ndarray]] = {}  # FedBN: each site's own batch-norm weights at the end
        self.error: str | None = None  # a deployment's ServerApp: why it stopped
        self.latest: dict[str, np.ndarray] | None = None  # the global weights the current round evaluates
        self.best: tuple[int, float, dict[str, np.ndarray]] | None = None  # (round, mean validation AUC, weights), best so far
        self.kept_round: int | None = None
        self.site_names: dict[int, str] = {}  # a deployment: site index -> the name its client found
        self.site_reports: dict[int, dict] = {}  # a deployment: each client's summary, transfer and metrics (_site_side_report)
        self.n_sites = n_sites

    def failures_by_site(self, names: list[str]) -> list[dict]:
        """The failures with the site's name where a reply from the same node ever said which site it is."""
        return [{**f, "site": names[self.node_site[f["node"]]] if f["node"] in self.node_site else None} for f in self.failures]


def _ordered_strategy(base, recorder: _Recorder, statistics: set[str] = frozenset()):
    """``base`` (one of Flower's strategies) aggregating replies in site order and recording them.

    ``statistics``: keys of weights no gradient moves (BatchNormalization's moving mean and
    variance); a server-side optimizer would step them like weights (a variance could turn
    negative), so they take the plain weighted average of the replies instead.
    """
    from flwr.app import Array
    from flwr.serverapp.strategy import FedAvg

    def site_order(replies, server_round, stage):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        for m in ok:
            recorder.node_site[int(m.metadata.src_node_id)] = int(m.content["metrics"]["site-index"])
        served = [int(m.content["metrics"]["site-index"]) for m in ok]
        if len(set(served)) != len(served):  # two SuperNodes started with the same partition-id
            twice = sorted({i for i in served if served.count(i) > 1})
            raise RunError(f"round {server_round}: more than one client serves partition-id {twice}; give each SuperNode its own partition-id")
        for m in replies:
            if m.has_error():
                recorder.failures.append(
                    {"round": server_round, "stage": stage, "node": int(m.metadata.src_node_id), "error": str(m.error.reason)}
                )
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
            replies = site_order(replies, server_round, "train")
            recorder.train.append(rows(replies, ("num-examples", "train-loss", "bytes-sent")))
            arrays, metrics = super().aggregate_train(server_round, replies)
            if arrays is not None and statistics:
                plain, _ = FedAvg.aggregate_train(self, server_round, replies)
                for key in statistics & set(arrays.keys()):
                    arrays[key] = Array(plain[key].numpy())
            if arrays is not None:
                recorder.latest = {key: arrays[key].numpy() for key in arrays.keys()}
            return arrays, metrics

        def aggregate_evaluate(self, server_round, replies):
            replies = site_order(replies, server_round, "evaluate")
            recorder.evaluate.append(rows(replies, ("num-examples", "val-auc")))
            # the mean validation macro AUC over the sites where it is defined, weighted by their records
            scored = [(m["num-examples"], m["val-auc"]) for m in recorder.evaluate[-1].values() if not math.isnan(m["val-auc"])]
            if scored and recorder.latest is not None:
                mean = sum(n * a for n, a in scored) / sum(n for n, _ in scored)
                if recorder.best is None or mean > recorder.best[1]:
                    recorder.best = (server_round, mean, recorder.latest)
            return super().aggregate_evaluate(server_round, replies)

    return Ordered


def _server_app(plan: _Plan, initial: dict[str, np.ndarray], recorder: _Recorder):
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        server_main(grid, plan, initial, recorder)

    return app


NODE_WAIT_S = 600.0
"""How long the ServerApp waits for one client per site before giving up (Flower's strategies wait forever)."""


def wait_for_nodes(grid, plan: _Plan, timeout: float | None = None) -> None:
    """RunError when fewer clients than sites are connected after ``timeout`` s (default :data:`NODE_WAIT_S`)."""
    import time

    n = plan.n_sites
    deadline = time.monotonic() + (NODE_WAIT_S if timeout is None else timeout)
    while (connected := len(list(grid.get_node_ids()))) < n:
        if time.monotonic() >= deadline:
            raise RunError(
                f"{connected} of {n} clients connected within {NODE_WAIT_S if timeout is None else timeout:g} s; start one SuperNode per site "
                f"({', '.join(f'{s}: partition-id={i}' for i, s in enumerate(plan.site_names()))}, num-partitions={n})"
            )
        time.sleep(1)


def server_main(grid, plan: _Plan, initial: dict[str, np.ndarray], recorder: _Recorder) -> None:
    """The ServerApp's work: the strategy's rounds, then one message to every site for its report predictions."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx

    config, n = plan.config, plan.n_sites
    k = config.clients_per_round or n
    wait_for_nodes(grid, plan)
    random.seed(config.seed)  # Flower samples the clients of a round with Python's random
    common = dict(fraction_train=k / n, min_train_nodes=k, fraction_evaluate=1.0, min_evaluate_nodes=n, min_available_nodes=n)
    if config.strategy == "fedprox":
        strategy = _ordered_strategy(FedProx, recorder)(proximal_mu=config.proximal_mu, **common)
    elif config.strategy == "fedavgm":
        strategy = _ordered_strategy(FedAvgM, recorder, _statistics_keys(plan))(
            server_learning_rate=config.server_lr, server_momentum=config.server_momentum, **common)
    elif config.strategy == "fedadam":
        strategy = _ordered_strategy(FedAdam, recorder, _statistics_keys(plan))(eta=config.server_lr, eta_l=config.learning_rate, **common)
    else:
        strategy = _ordered_strategy(FedAvg, recorder)(**common)
    model = ConfigRecord({"model": plan.model})
    result = strategy.start(
        grid=grid, initial_arrays=_array_record(initial), num_rounds=config.rounds, train_config=model, evaluate_config=model
    )
    recorder.arrays = {key: result.arrays[key].numpy() for key in result.arrays.keys()}
    recorder.kept_round = config.rounds
    if config.keep_round == "best-val" and recorder.best is not None:
        recorder.kept_round, _, recorder.arrays = recorder.best
    # One more message to every site: its predictions with the kept model (and its own BN under FedBN).
    # A deployment's sites also train their baselines and transfer there (_site_side_report).
    content = RecordDict({"arrays": _array_record(recorder.arrays), "config": ConfigRecord({"report": True, "model": plan.model})})
    messages = [Message(content, dst_node_id=node, message_type=MessageType.EVALUATE) for node in grid.get_node_ids()]
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            recorder.failures.append(
                {"round": None, "stage": "report", "node": int(reply.metadata.src_node_id), "error": str(reply.error.reason)}
            )
            continue
        site = int(reply.content["metrics"]["site-index"])
        recorder.node_site[int(reply.metadata.src_node_id)] = site
        preds = reply.content["predictions"]
        if plan.site_side:
            import json

            info = reply.content["site"]
            recorder.site_names[site] = str(info["name"])
            recorder.site_reports[site] = {"summary": json.loads(str(info["summary"])), "transfer": json.loads(str(info["transfer"])),
                                           "metrics": {k: float(v) for k, v in reply.content["metrics"].items()}}
            recorder.predictions[site] = {k: preds[k].numpy() for k in preds.keys()}
            recorder.predictions[site]["test"] = recorder.predictions[site]["test-federated"]
            continue
        recorder.predictions[site] = {"val": preds["val"].numpy(), "test": preds["test"].numpy()}
        if "bn" in reply.content.array_records:
            bn = reply.content["bn"]
            recorder.site_bn[site] = {key: bn[key].numpy() for key in bn.keys()}


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
    # address "local": a Ray instance of its own, never a cluster already running on the machine (Flower's plain
    # ray.init() would join one, e.g. a `ray start --head` left for `evaluate --cv --ray`, whose nodes lack the data)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"address": "local", "include_dashboard": False, "log_to_driver": verbose}}
    run_simulation(
        server_app=_server_app(plan, initial, recorder),
        client_app=_client_app(plan),
        num_supernodes=len(plan.sites),
        backend_config=backend,
        verbose_logging=verbose,
    )
    check_finished(plan, recorder)
    return recorder


def check_finished(plan: _Plan, recorder: _Recorder) -> None:
    """RunError naming the sites without predictions (and the failures) when the federation did not finish."""
    if recorder.arrays is None or len(recorder.predictions) != plan.n_sites:
        names = plan.site_names(recorder)
        missing = sorted(set(range(plan.n_sites)) - set(recorder.predictions))
        raise RunError(
            f"the federation did not finish: no final model or no predictions from site(s) "
            f"{', '.join(names[i] for i in missing)}; failures: {recorder.failures_by_site(names) or 'none reported'}"
        )


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


def federate(
    run: str | os.PathLike, config: FederateConfig, *, dataset: PtbxlDataset | None = None, verbose: bool = False,
    deployment: str | None = None,
) -> dict:
    """Federate ``config.arch`` across sites into ``run`` and write the report; returns the report dict.

    ``deployment`` (a SuperLink's Control API address, ``HOST:PORT``) runs the same apps on a Flower
    deployment (:mod:`edge_ecg.federate.deploy`) instead of the simulation: this process then reads
    no data (``config.num_sites`` says how many sites to wait for), each SuperNode finds its site in
    its own data and trains its local-only baseline, fine-tune, compress, export and firmware there
    (:func:`_site_side_report`); ``dataset``/``config.data`` serve only the opt-in centralized baseline.
    """
    from edge_ecg import models
    from edge_ecg.tf import keras

    config.check()
    if config.arch not in models.ARCHITECTURES:
        models.build(config.arch)  # the "did you mean" error before anything is written
    run = Path(run)
    if deployment:
        return _federate_deployment(run, config, dataset, deployment, verbose=verbose)
    if config.num_sites is not None:
        raise ValueError("--sites is for --deployment (a server without data); the simulation counts the sites in --data")
    ds, site_of = load_sites_dataset(config, dataset)
    sites = split_sites(ds, site_of, config.site_train_limit)
    if config.clients_per_round is not None and config.clients_per_round > len(sites):
        raise ValueError(f"--clients-per-round {config.clients_per_round}: there are only {len(sites)} sites ({', '.join(s.name for s in sites)})")
    export_sites = _export_sites(config, sites)
    fail_at = _fail_at_from_env()
    if fail_at is not None and fail_at[1] not in {s.name for s in sites}:
        raise ValueError(f"{FAIL_ENV}: no site {fail_at[1]!r}; the sites are {', '.join(s.name for s in sites)}")
    with RunLock(run, "federate", create=True):
        atomic_write_json(run / FEDERATE_CONFIG, {"format": RUN_FORMAT, "edge_ecg": __version__, "federate": asdict(config)})
        summary = sites_summary(ds, sites, config.site_by, config.blank)
        atomic_write_json(run / SITES_FILE, summary)

        site_data = [_site_data(ds, s, config.highpass_hz) for s in sites]
        keras.utils.set_random_seed(config.seed)
        model = _build_model(config, site_data[0][0])
        initial = {_key(i): v.numpy() for i, v in enumerate(model.weights)}

        plan = _Plan(config, str(ds.root), sites, model=model_fingerprint(config, site_data[0][0]), fail_at=fail_at)
        recorder = run_federation(plan, initial, verbose=verbose)
        probs = {"federated": {i: recorder.predictions[i]["test"] for i in range(len(sites))}}
        if "local" in config.compare:
            probs["local"] = {i: _local_only(config, data, test, i) for i, (data, test) in enumerate(site_data)}
        if "centralized" in config.compare:
            probs["centralized"] = _centralized(ds, sites, config)
        transfer = _transfer(run, ds, sites, site_data, config, recorder, probs, export_sites)
        return _write_outputs(run, config, sites, site_data, probs, recorder, summary, transfer)


def _federate_deployment(run: Path, config: FederateConfig, dataset: PtbxlDataset | None, deployment: str, *, verbose: bool) -> dict:
    """:func:`federate` on a SuperLink: this process reads no data; the sites report their own results (see :func:`federate`)."""
    from edge_ecg.federate.deploy import check_reachable, initial_weights, run_deployment

    if config.num_sites is None:
        raise ValueError("--deployment: give --sites N, the number of sites (one SuperNode each); the server reads no data to count them")
    if config.clients_per_round is not None and config.clients_per_round > config.num_sites:
        raise ValueError(f"--clients-per-round {config.clients_per_round}: there are only {config.num_sites} sites (--sites)")
    if "centralized" in config.compare and config.data is None and dataset is None:
        raise ValueError("--compare centralized under --deployment trains on every site's records pooled on this machine: give --data "
                         "(a pooled copy, for a benchmark), or --compare local (each site trains its own baseline) or none")
    if config.export_sites not in ("all", "none") and not [n for n in config.export_sites.split(",") if n.strip()]:
        raise ValueError(f"--export-sites {config.export_sites!r}: give all, none or site names")
    fail_at = _fail_at_from_env()  # the site's name is checked by its client: the server does not know the names yet
    check_reachable(deployment)  # before anything is written: an unreachable SuperLink is a clear error within seconds
    with RunLock(run, "federate", create=True):
        atomic_write_json(run / FEDERATE_CONFIG, {"format": RUN_FORMAT, "edge_ecg": __version__, "federate": asdict(config)})
        plan = _Plan(config, None, [], model=model_fingerprint(config), fail_at=fail_at)
        recorder = run_deployment(run, plan, initial_weights(plan), deployment, verbose=verbose)
        n, names = plan.n_sites, plan.site_names(recorder)
        if len(set(names)) != n:
            raise RunError(f"the SuperNodes serve the sites {names}: a site twice; give each SuperNode its own site=NAME in --node-config")
        empty = np.zeros(0, np.int64)
        preds = [recorder.predictions[i] for i in range(n)]
        sites = [Site(names[i], empty, empty, preds[i]["ids"].astype(np.int64)) for i in range(n)]
        site_data = [(None, {"y": preds[i]["labels"], "ids": preds[i]["ids"].astype(np.int64)}) for i in range(n)]
        summary = {"site_by": config.site_by, "blank": config.blank, "counted_by": "each site's client (the server reads no data)",
                   "sites": {names[i]: recorder.site_reports[i]["summary"] for i in range(n)}}
        atomic_write_json(run / SITES_FILE, summary)
        probs = {name: {i: p[f"test-{name}"] for i, p in enumerate(preds)} for name in ("federated", "local", "fine-tuned")
                 if all(f"test-{name}" in p for p in preds)}
        if "centralized" in config.compare:
            probs["centralized"] = _pooled_centralized(config, dataset, sites)
        transfer = {names[i]: recorder.site_reports[i]["transfer"] for i in range(n) if recorder.site_reports[i]["transfer"]}
        return _write_outputs(run, config, sites, site_data, probs, recorder, summary, transfer)


def _pooled_centralized(config: FederateConfig, dataset: PtbxlDataset | None, reported: list[Site]) -> dict[int, np.ndarray]:
    """A deployment's opt-in centralized baseline, on a pooled copy here; RunError when its sites' test records differ from the clients'."""
    ds, site_of = load_sites_dataset(config, dataset)
    by_name = {s.name: s for s in split_sites(ds, site_of, config.site_train_limit)}
    for s in reported:
        if s.name not in by_name or sorted(by_name[s.name].test.tolist()) != sorted(s.test.tolist()):
            raise RunError(f"--compare centralized: site {s.name!r}'s test records in {ds.root} are not the ones its client reported; "
                           "the pooled copy must hold the same records as the sites")
    return _centralized(ds, [by_name[s.name] for s in reported], config)


def _write_outputs(run: Path, config: FederateConfig, sites, site_data, probs: dict, recorder: _Recorder, summary: dict, transfer: dict) -> dict:
    """The report (json, md), the final weights, predictions per model and the plot; returns the report."""
    buf = io.BytesIO()
    np.savez(buf, **recorder.arrays)
    atomic_write_bytes(run / WEIGHTS_FILE, buf.getvalue())
    report = _report(config, sites, site_data, probs, recorder, summary)
    report["transfer"] = transfer
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


def _centralized(ds: PtbxlDataset, sites: list[Site], config: FederateConfig) -> dict[int, np.ndarray]:
    """The upper bound: one model on every site's training records pooled (one standardization), tested per site.

    As many epochs as each client trained in the federation (``rounds * local_epochs``).
    """
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
    standardizer = Standardizer.fit(pooled.train.signals, None, config.highpass_hz, ds.rate)
    data = fit_data(pooled, standardizer, ds.rate)
    options = config.fit_options(config.rounds * config.local_epochs)
    keras.utils.set_random_seed(config.seed)
    model = _build_model(config, data)
    local_fit(model, data, options, stream=(0, len(sites)))
    return {i: predict(model, standardizer.transform(part(s.test).signals)) for i, s in enumerate(sites)}


def _report(config: FederateConfig, sites, site_data, probs: dict, recorder: _Recorder, summary: dict) -> dict:
    ordered = [name for name in MODELS if name in probs]  # report columns: local, federated, fine-tuned, centralized
    per_site = {}
    for i, s in enumerate(sites):
        y = site_data[i][1]["y"]
        per_site[s.name] = {name: _score(y, probs[name][i], config.n_boot, config.seed) for name in ordered}
    y_all = np.concatenate([site_data[i][1]["y"] for i in range(len(sites))])
    pooled = {name: _score(y_all, np.concatenate([probs[name][i] for i in range(len(sites))]), config.n_boot, config.seed) for name in ordered}
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
        "failures": recorder.failures_by_site([s.name for s in sites]),
        "kept_round": recorder.kept_round,
        "paired": _paired(config, sites, site_data, probs),
        "note": "test = each site's fold 10; intervals: percentile bootstrap over records (edge_ecg.metrics); "
                "paired: macro AUC difference with a paired bootstrap interval over the classes the records define",
    }


def _paired(config: FederateConfig, sites, site_data, probs: dict) -> dict:
    """The adapted model (fine-tuned, else federated) minus local-only per site and pooled, and pooled minus centralized.

    ``edge_ecg.metrics.paired_bootstrap`` over the classes defined on those records (a site's fold 10
    may lack a class: CS-12 has no HYP record); the excluded classes are named.
    """
    ours = "fine-tuned" if "fine-tuned" in probs else "federated"
    out: dict = {"model": ours}
    y_all = np.concatenate([site_data[i][1]["y"] for i in range(len(sites))])

    def compare(y, a, b):
        defined = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
        if not defined:
            return {"difference": None, "ci95": None, "excluded_classes": list(CLASSES)}
        row = paired_bootstrap(y[:, defined], a[:, defined], b[:, defined], n_boot=config.n_boot, seed=config.seed)
        return {**row, "excluded_classes": [CLASSES[c] for c in range(y.shape[1]) if c not in defined]}

    def pooled(name):
        return np.concatenate([probs[name][i] for i in range(len(sites))])

    if "local" in probs:
        out["vs_local"] = {s.name: compare(site_data[i][1]["y"], probs[ours][i], probs["local"][i]) for i, s in enumerate(sites)}
        out["vs_local"]["pooled"] = compare(y_all, pooled(ours), pooled("local"))
    if "centralized" in probs:
        out["vs_centralized_pooled"] = compare(y_all, pooled(ours), pooled("centralized"))
    return out


def _export_sites(config: FederateConfig, sites: list[Site]) -> list[str]:
    """The sites to compress/export (``--export-sites``: all, none or names); ValueError naming an unknown site."""
    names = [s.name for s in sites]
    if config.export_sites == "all":
        return names
    if config.export_sites == "none":
        return []
    wanted = [n.strip() for n in config.export_sites.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"--export-sites: no site {', '.join(map(repr, unknown))}; the sites are {', '.join(names)}")
    return wanted


def _transfer(run: Path, ds: PtbxlDataset, sites, site_data, config: FederateConfig, recorder: _Recorder, probs: dict, export_sites) -> dict:
    """The simulation's transfer, on this machine: :func:`_transfer_site` for every site from the federated model (its own BN under FedBN).

    Adds the fine-tuned test probabilities to ``probs["fine-tuned"]``.
    """
    from edge_ecg.tf import keras

    out: dict = {}
    if config.fine_tune == "none" and not export_sites:
        return out
    if config.fine_tune != "none":
        probs["fine-tuned"] = {}
    for i, site in enumerate(sites):
        data, test = site_data[i]
        keras.utils.set_random_seed(config.seed)
        model = _build_model(config, data)
        _set_weights(model, recorder.arrays, recorder.site_bn.get(i), site=site.name)
        cs = _ClientSite(site, data, test, ds.select(np.isin(ds.ecg_ids, site.ids())))
        out[site.name], tuned = _transfer_site(run, site, cs, model, config, data_root=str(ds.root), export=site.name in export_sites)
        if tuned is not None:
            probs["fine-tuned"][i] = tuned
    return out


def _transfer_site(run: Path, site: Site, cs: _ClientSite, model, config: FederateConfig, *, data_root: str, export: bool):
    """One site's transfer into ``RUN/sites/<site>``: fine-tune ``model`` (in place), write the site's run folder, then compress/export/build.

    Returns (the site's report row, its fine-tuned test probabilities or None). Runs on the
    simulation's machine, or on the site's own SuperNode in a deployment (:func:`_site_side_report`).
    A site whose compress or export fails (e.g. the int8 model loses too much validation AUC on
    its small fold 9) is reported with the error; the other sites go on.
    """
    import shutil

    from edge_ecg.evaluate import save_predictions
    from edge_ecg.federate import transfer as tr
    from edge_ecg.runfolder import federate_site_dir
    from edge_ecg.train import predict

    data, test = cs.data, cs.test
    folder = federate_site_dir(run, site.name)
    if folder.exists():  # a previous federation's site folder: its fine-tune state belongs to another model
        shutil.rmtree(folder)
    row: dict = {"run": str(folder)}
    folder.mkdir(parents=True)
    tuned = None
    if config.fine_tune != "none":
        options = config.fit_options(config.fine_tune_epochs, learning_rate=config.fine_tune_lr, patience=config.fine_tune_epochs)
        row["fine_tune"] = tr.fine_tune(model, data, folder, config.fine_tune, options)
        tuned = predict(model, test["x"])
    tr.write_site_run(
        run, site.name, config, data_root=data_root, standardizer=test["standardizer"], model=model,
        ids={"train": site.train, "val": site.val, "test": site.test},
        sites_info={"site_by": config.site_by, "blank": config.blank, "data": dict(parse_site_data(config.site_data)).get(site.name, data_root)},
    )
    save_predictions(folder, "test", test["ids"], predict(model, test["x"]) if tuned is None else tuned, test["y"])
    if export:
        try:
            row.update(tr.compress_export_build(folder, cs.dataset, config))
        except Exception as exc:  # noqa: BLE001 - one site's failed export is reported; the other sites go on
            row["error"] = f"{type(exc).__name__}: {exc}"
    return row, tuned


def format_score(score: dict) -> str:
    """'0.812 [0.780, 0.845]', or 'n/a (N rec.)' where the AUC is undefined."""
    if score["macro_auc"] is None:
        return f"n/a ({score['records']} rec.)"
    lo, hi = score["ci95"]
    return f"{score['macro_auc']:.3f} [{lo:.3f}, {hi:.3f}]"


def _markdown(report: dict) -> str:
    names = list(report["test_macro_auc"]["pooled"])
    lines = ["# Federated run", "", f"strategy {report['config']['strategy']}, batch norm {report['config']['batch_norm']}, "
             f"{report['config']['rounds']} rounds x {report['config']['local_epochs']} local epochs"
             + (f", input high-pass {report['config']['highpass_hz']:g} Hz" if report['config'].get('highpass_hz') else "")
             + (", site-shift augmentation" if report['config'].get('augment_site') else "")
             + (f", kept round {report['kept_round']} (best mean validation macro AUC)" if report.get("kept_round") not in (None, report['config']['rounds']) else ""), "",
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
    rows: list[list] = []  # consecutive rounds with the same bytes share a row
    for r in report["rounds"]:
        cells = [str(r["bytes_sent"].get(s, "-")) for s in report["sites"]]
        if rows and rows[-1][2] == cells:
            rows[-1][1] = r["round"]
        else:
            rows.append([r["round"], r["round"], cells])
    for first, last, cells in rows:
        lines.append(f"| {first if first == last else f'{first}-{last}'} | " + " | ".join(cells) + " |")
    paired = report.get("paired", {})
    if "vs_local" in paired or "vs_centralized_pooled" in paired:
        lines += ["", f"Paired bootstrap, {paired['model']} minus baseline: macro AUC difference [95% interval]", "",
                  "| records | baseline | difference | excluded classes |", "| --- | --- | --- | --- |"]
        rows = [(site, "local", row) for site, row in paired.get("vs_local", {}).items()]
        if "vs_centralized_pooled" in paired:
            rows.append(("pooled", "centralized", paired["vs_centralized_pooled"]))
        for site, base, row in rows:
            diff = "n/a" if row["difference"] is None else f"{row['difference']:+.3f} [{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}]"
            lines.append(f"| {site} | {base} | {diff} | {', '.join(row['excluded_classes']) or '-'} |")
    if report.get("transfer"):
        lines += ["", "Per-site transfer (run folders under sites/)", "", "| site | fine-tune | int8 model | firmware | error |",
                  "| --- | --- | --- | --- | --- |"]
        for site, row in report["transfer"].items():
            ft = row.get("fine_tune")
            ft_text = "-" if ft is None else f"{ft['mode']}, {ft['epochs']} epochs" + (
                ", no selection" if ft["best_epoch"] is None else ", kept federated" if ft["best_epoch"] == 0 else f", best {ft['best_epoch']}")
            int8 = f"{row['export']['tflite_bytes']:,} B, arena {row['export']['arena_bytes']:,} B" if "export" in row else "-"
            fw = row["firmware"]["project_dir"] if "firmware" in row else "-"
            lines.append(f"| {site} | {ft_text} | {int8} | {fw} | {row.get('error', '')} |")
    if report["failures"]:
        lines += ["", "Failures (the round went on without the failed client)", "", "| round | stage | site | node | error |",
                  "| --- | --- | --- | --- | --- |"]
        for f in report["failures"]:
            lines.append(f"| {f['round'] if f['round'] is not None else '-'} | {f['stage']} | {f['site'] or '?'} | {f['node']} | "
                         f"{str(f['error']).splitlines()[0][:200] if f['error'] else ''} |")
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
