"""Few-shot fine-tuning of a trained run on a handful of labelled records from a new site.

``fine_tune_site(run, site, train_ids, out)`` writes a new run folder ``out`` laid out like any
training run (config.json, standardization.json, model.keras), so ``export``, ``evaluate --data``
and ``build`` run on it unchanged:

* the model is the run's ``model.keras`` fine-tuned by :func:`edge_ecg.federate.transfer.fine_tune`
  (``head``: the classifier only; ``all``: every layer) for a fixed number of epochs: a few records
  cannot hold out a validation fold to select an epoch on, so none is selected;
* only the records of ``site`` whose ecg_id is in ``train_ids`` are used (all their windows); ids
  in ``exclude`` (the records the result will be scored on) are refused, and the ids used are written
  to ``out/fine_tune_ecg_ids.npy``;
* ``replay`` (the run's own PTB-XL data) mixes the run's training folds into every epoch, with the
  site's records repeated to make up about ``site_share`` of it, so that a few records do not pull
  the model away from everything it learnt (and the batch-norm statistics, recomputed on the
  training records at the end, are not those of ten records); ``replay_limit`` caps the replayed
  records (evenly spaced) to keep a fine-tune short;
* the standardization is the run's (the firmware's constants do not change; only the weights do).

``config.json`` is the run's training configuration plus a ``fine_tune_site`` block naming the
run, the site's folder, the record ids and the settings.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_ecg.runfolder import CONFIG_FILE, MODEL_FILE, RUN_FORMAT, STANDARDIZATION_FILE, RunError, atomic_write_json

FINE_TUNE_IDS_FILE = "fine_tune_ecg_ids.npy"


def fine_tune_site(
    run: str | os.PathLike,
    site,
    train_ids,
    out: str | os.PathLike,
    *,
    mode: str = "all",
    epochs: int = 10,
    learning_rate: float = 5e-4,
    batch_size: int = 32,
    seed: int = 0,
    replay=None,
    replay_limit: int | None = None,
    site_share: float = 0.25,
    exclude=None,
) -> dict:
    """Fine-tune ``run``'s model on the records of ``site`` listed in ``train_ids``; the new run goes to ``out``.

    ``site`` is a loaded dataset at the run's rate, leads and window (:func:`edge_ecg.data.load_dataset`),
    in millivolts. Returns what was done (also stored in ``out/config.json``).
    """
    from edge_ecg import __version__
    from edge_ecg.data import Standardizer
    from edge_ecg.federate.transfer import fine_tune
    from edge_ecg.tf import keras
    from edge_ecg.train import FitData, FitOptions, TrainConfig, load_run_model, load_split, read_run_config

    run, out = Path(run), Path(out)
    if out.resolve() == run.resolve():
        raise RunError(f"{out}: the fine-tuned run must go to a new folder, not over the run it starts from")
    if not 0 < site_share < 1:
        raise ValueError(f"site_share must be between 0 and 1, got {site_share}")
    ids = np.unique(np.asarray(train_ids, dtype=np.int64))
    if len(ids) == 0:
        raise ValueError("train_ids: no record to fine-tune on")
    unknown = sorted(set(ids.tolist()) - set(site.ecg_ids.tolist()))
    if unknown:
        raise ValueError(f"train_ids: {len(unknown)} id(s) not in the site's records, e.g. {unknown[:5]}")
    leaked = sorted(set(ids.tolist()) & set(np.asarray(exclude if exclude is not None else [], np.int64).tolist()))
    if leaked:
        raise ValueError(f"train_ids: {len(leaked)} record(s) are also test records (exclude), e.g. {leaked[:5]}")

    saved = read_run_config(run)
    config = TrainConfig.from_dict(saved["train"])
    standardizer = Standardizer.load(run / STANDARDIZATION_FILE)
    mine = site.select(np.isin(site.ecg_ids, ids))
    x, y = standardizer.transform(mine.signals), mine.labels.astype(np.float32)
    if replay is not None:
        base = load_split(config, replay).train  # the run's own training folds and leads
        if replay_limit is not None and len(base) > replay_limit:  # evenly spaced: every fold and class kept
            base = base.select(np.linspace(0, len(base) - 1, replay_limit).astype(int))
        repeat = max(1, int(round(site_share * len(base) / ((1 - site_share) * len(x)))))
        x = np.concatenate([np.repeat(x, repeat, axis=0), standardizer.transform(base.signals)])
        y = np.concatenate([np.repeat(y, repeat, axis=0), base.labels.astype(np.float32)])
    empty = np.zeros((0, *x.shape[1:]), np.float32)
    # no validation records: transfer.fine_tune then trains the fixed number of epochs (nothing to select on)
    data = FitData(x_train=x, y_train=y, x_val=empty, y_val=np.zeros((0, y.shape[1]), np.float32), rate=config.rate)
    options = FitOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                         augment=config.augment, augment_site=config.augment_site)  # the run's augmentations, not its teacher

    keras.utils.set_random_seed(seed)
    model = load_run_model(run)
    out.mkdir(parents=True, exist_ok=True)
    done = fine_tune(model, data, out, mode, options)
    info = {"run": str(run), "site": str(site.root), "records": int(len(ids)), "windows": int(len(mine)),
            "replay_records": 0 if replay is None else int(len(x) - len(mine) * repeat),
            "site_repeat": 1 if replay is None else repeat, "epochs": epochs, "learning_rate": learning_rate,
            "seed": seed, **{k: v for k, v in done.items() if k in ("mode", "selection")}}
    atomic_write_json(out / CONFIG_FILE, {"format": RUN_FORMAT, "edge_ecg": __version__, "train": asdict(config),
                                          "fine_tune_site": {**info, "ecg_ids": ids.tolist()}})
    shutil.copyfile(run / STANDARDIZATION_FILE, out / STANDARDIZATION_FILE)
    np.save(out / FINE_TUNE_IDS_FILE, ids)
    tmp = out / f".{MODEL_FILE}.{os.getpid()}.keras"  # Keras wants the suffix; renamed whole into place
    model.save(tmp)
    os.replace(tmp, out / MODEL_FILE)
    return info
