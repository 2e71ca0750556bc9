"""Transfer after federation: fine-tune the shared model per site, then the existing compress and export stages.

Each site gets its own run folder, ``RUN/sites/<site>/`` (:func:`edge_ecg.runfolder.federate_site_dir`),
laid out like any training run folder, so ``compress``, ``export`` and ``build`` run on it unchanged:

    config.json            a training configuration naming the PTB-XL folder, plus ``federate_site``
                           (the site, how sites were made, its ecg_ids per split)
    standardization.json   the site's own standardization (fitted on its training records)
    model.keras            the federated model, fine-tuned on the site (or as federated with --fine-tune none)
    history.csv, state/    the fine-tune's epochs (edge_ecg.train.fit)
    predictions/           the site's test predictions
    compress/, export/, firmware/TARGET/   the existing stages' outputs: the site's int8 model and firmware

Fine-tuning (``head``: only the classifier, the last layer with weights; ``all``: every layer) is
``edge_ecg.train.fit`` on the site's training records, keeping the epoch with the best validation
macro AUC on the site's fold 9, or the federated model itself when no epoch beats its validation
macro AUC (the selection counts the starting point as epoch 0). A site whose validation fold lacks a class (its macro AUC is
undefined, so nothing can be selected) is fine-tuned for the fixed number of epochs instead, and the
report says so. Under FedBN the starting model is the global weights with the site's own
batch-norm weights.

The compress and export stages read the site's records through ``dataset``: the site's records are
a subset of PTB-XL, and its folds 1-8/9/10 are the site's split. Rerunning ``edge-ecg export`` on a
site folder from the command line would read the whole PTB-XL folder named in config.json instead;
``federate`` passes the site's records itself.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_ecg import __version__
from edge_ecg.runfolder import (
    CONFIG_FILE,
    RUN_FORMAT,
    STANDARDIZATION_FILE,
    STATE_DIR,
    atomic_write_json,
    federate_site_dir,
)

FINE_TUNE = ("none", "head", "all")


def head_layers(model) -> list:
    """The classifier: the last layer that has weights (dscnn's and the reference models' final Dense)."""
    with_weights = [layer for layer in model.layers if layer.weights]
    if not with_weights:
        raise ValueError(f"model {model.name!r} has no layer with weights to fine-tune")
    return with_weights[-1:]


def validation_defines_every_class(y_val: np.ndarray) -> bool:
    positives = y_val.sum(axis=0)
    return bool(len(y_val) and ((positives > 0) & (positives < len(y_val))).all())


def fine_tune(model, data, out: Path, mode: str, options) -> dict:
    """Fine-tune ``model`` in place on one site's ``data`` (``mode`` head|all); returns what was done.

    Checkpoints and history go to ``out`` (``edge_ecg.train.fit``'s layout). With ``head`` every
    other layer is frozen (its BatchNormalization runs in inference mode); the layers are unfrozen
    again afterwards so the saved model compresses like any other.
    """
    from edge_ecg.federate import local_fit
    from edge_ecg.train import BEST_WEIGHTS, fit

    if mode not in ("head", "all"):
        raise ValueError(f"--fine-tune {mode!r}: choose one of {', '.join(FINE_TUNE)}")
    head = {id(layer) for layer in head_layers(model)}
    flags = [layer.trainable for layer in model.layers]
    if mode == "head":
        for layer in model.layers:
            layer.trainable = id(layer) in head
    try:
        if validation_defines_every_class(data.y_val):
            from edge_ecg.metrics import macro_auc
            from edge_ecg.train import predict

            start_auc = macro_auc(data.y_val, predict(model, data.x_val))
            start = [v.numpy() for v in model.weights]
            state = fit(model, data, out, options, progress=False)
            model.load_weights(out / STATE_DIR / BEST_WEIGHTS)
            done = {"mode": mode, "epochs": state["epoch"], "best_epoch": state["best_epoch"], "val_auc": state["best_auc"],
                    "start_val_auc": start_auc, "selection": "best validation macro AUC"}
            if state["best_auc"] <= start_auc:  # epoch 0 wins: the site keeps the federated model
                for v, value in zip(model.weights, start):
                    v.assign(value)
                done.update(best_epoch=0, val_auc=start_auc, selection="kept the federated model: no epoch beat its validation macro AUC")
        else:  # nothing to select on: a fixed number of epochs (documented in the module doc)
            local_fit(model, data, options, stream=(0, 10_000))
            done = {"mode": mode, "epochs": options.epochs, "best_epoch": None, "val_auc": None,
                    "selection": "none: the site's validation fold lacks a class, all epochs kept"}
    finally:
        for layer, flag in zip(model.layers, flags):
            layer.trainable = flag
    return done


def write_site_run(
    run: Path, site, config, *, data_root: str, standardizer, model, ids: dict[str, np.ndarray], sites_info: dict
) -> Path:
    """Create the site's run folder (config.json, standardization.json, model.keras); returns its path."""
    from edge_ecg.runfolder import MODEL_FILE
    from edge_ecg.train import TrainConfig

    folder = federate_site_dir(run, site)
    folder.mkdir(parents=True, exist_ok=True)
    train_config = TrainConfig(
        arch=config.arch, arch_kwargs=dict(config.arch_kwargs), data=data_root, rate=config.rate, epochs=config.fine_tune_epochs,
        batch_size=config.batch_size, learning_rate=config.fine_tune_lr, patience=config.fine_tune_epochs, seed=config.seed,
        augment=config.augment, augment_site=config.augment_site, highpass_hz=config.highpass_hz, train_limit=config.site_train_limit,
    )
    atomic_write_json(folder / CONFIG_FILE, {
        "format": RUN_FORMAT, "edge_ecg": __version__, "train": asdict(train_config),
        "federate_site": {"site": site, **sites_info, **{k: v.tolist() for k, v in ids.items()}},
    })
    standardizer.save(folder / STANDARDIZATION_FILE)
    tmp = folder / f".{MODEL_FILE}.{os.getpid()}.keras"  # Keras wants the suffix; renamed whole into place
    model.save(tmp)
    os.replace(tmp, folder / MODEL_FILE)
    return folder


def compress_export_build(folder: Path, site_dataset, config) -> dict:
    """The existing stages on one site's run folder: compress (QAT) when asked, export, firmware; their key figures."""
    from edge_ecg.compress import compress
    from edge_ecg.export import export
    from edge_ecg.firmware import build

    out: dict = {}
    if config.compress_epochs > 0:
        comp = compress(folder, qat=True, epochs=config.compress_epochs, dataset=site_dataset, progress=False)
        out["compress"] = {s["name"]: {"val_auc": s["val_auc"]} for s in comp["stages"]}
    exp = export(folder, dataset=site_dataset, progress=False, n_boot=config.n_boot, max_drop=config.export_max_drop)
    out["export"] = {"tflite_bytes": exp["tflite"]["bytes"], "arena_bytes": exp["arena"]["recommended_bytes"]}
    fw = build(folder, config.target)
    out["firmware"] = {"project_dir": str(fw["project_dir"]), "built": fw["built"]}
    return out
