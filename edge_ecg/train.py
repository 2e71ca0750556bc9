"""Training with early stopping on validation macro AUC, resumable epoch by epoch.

A run folder holds everything a later stage needs::

    runs/NAME/
      config.json            resolved configuration, written first
      standardization.json   per-lead mean/std fitted on the training folds
      model.keras            best model by validation (fold 9) macro AUC
      history.csv            one row per completed epoch
      state/                 last epoch's weights + optimizer (tf.train.Checkpoint), best.weights.h5, state.json

Determinism: each epoch's shuffling, augmentation and dropout are drawn from seeds
derived from (seed, epoch) alone, so a run interrupted after epoch k and resumed
gives the same weights as one that never stopped.

Commit: an epoch's checkpoint and best weights are written into ``state/epoch-K/``;
the atomic rename of ``state.json`` naming epoch K is the one commit point. Only then
are the files moved into ``state/``. A resume rolls a committed epoch's folder forward
and deletes an uncommitted one, so an interruption at any point resumes exactly.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edge_ecg import CLASSES, __version__
from edge_ecg.data import LEADS, PtbxlDataset, Split, Standardizer, load_ptbxl, split_folds
from edge_ecg.data.split import NonFiniteStandardization
from edge_ecg.metrics import MetricError, macro_auc
from edge_ecg.runfolder import (  # the run folder's names and readers live there; re-exported for callers
    CONFIG_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RUN_FORMAT,
    STANDARDIZATION_FILE,
    STATE_DIR,
    TRAIN_IDS_FILE,
    RunError,
    RunFolder,
    RunLock,
    atomic_write_json,
)


@dataclass
class TrainConfig:
    """Everything that determines a training run (``config.json`` holds exactly this)."""

    arch: str = "dscnn"
    arch_kwargs: dict = field(default_factory=dict)
    data: str | None = None
    rate: int = 100
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 2e-3
    patience: int = 10
    seed: int = 0
    class_weighted: bool = False
    # stochastic weight averaging: the model is the mean of the weights after each of the last K epochs, trained
    # at a constant SWA_LR_FRACTION of the peak rate; no early stopping or best-epoch pick (0: off)
    average_epochs: int = 0
    augment: bool = True
    # site-shift augmentation (augment_site below) on top of, or instead of, ``augment``
    augment_site: bool = False
    # zero-phase high-pass cutoff in Hz applied to every window before standardization, in training and on the
    # device (edge_ecg.preprocess.highpass_filter, ECG_HIGHPASS_SOS); 0: none. Removes baseline wander and offsets
    # that differ between sites' acquisition chains.
    highpass_hz: float = 0.0
    train_limit: int | None = None  # use only the first N training records (smoke tests)
    teacher: str | None = None  # run folder(s), CV folder or predictions .npz: see edge_ecg.distill
    distill_alpha: float = 0.5  # weight of the teacher's soft labels in the loss (0: labels only)
    distill_temperature: float = 2.0
    val_fold: int = 9
    test_fold: int = 10
    # the model's input channels, canonical names in order (edge_ecg.data.leads); a preset ("3") or
    # comma list is accepted and stored as names. Configs written before this option mean all twelve.
    leads: list[str] = field(default_factory=lambda: list(LEADS))

    def __post_init__(self) -> None:
        from edge_ecg.data.leads import parse_leads

        self.leads = list(parse_leads(self.leads, "leads"))
        if self.highpass_hz and not 0 < self.highpass_hz < self.rate / 2:
            raise RunError(f"highpass_hz {self.highpass_hz}: a cutoff must lie between 0 and {self.rate / 2} Hz "
                           f"(half the sampling rate {self.rate}), or be 0 for no filter")
        if not 0 <= self.average_epochs < self.epochs:
            raise RunError(f"average_epochs {self.average_epochs}: weights can be averaged over 0 (off) to epochs - 1 = "
                           f"{self.epochs - 1} final epochs; the epochs before them train at the decaying rate")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RunError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


# --------------------------------------------------------------------------- data


def load_split(config: TrainConfig, dataset: PtbxlDataset | None = None) -> Split:
    from edge_ecg.data.leads import select_leads

    ds = dataset if dataset is not None else load_ptbxl(config.data, config.rate)
    ds = select_leads(ds, config.leads)  # the model's channels, by name from the records' headers
    split = split_folds(ds, test_fold=config.test_fold, val_fold=config.val_fold)
    if config.train_limit is not None:
        split.train = split.train.select(np.arange(min(config.train_limit, len(split.train))))
    return split


def augment(x: np.ndarray, rng: np.random.Generator, rate: int = 100) -> np.ndarray:
    """Random time shift, amplitude scaling, Gaussian noise and baseline wander on standardized signals.

    Each transform is applied to a record with probability 1/2; all draws come from ``rng``.
    """
    n, t, leads = x.shape
    out = x.copy()
    for i in range(n):
        if rng.random() < 0.5:  # time shift up to 0.5 s, circular (a 10-s record is quasi-periodic)
            out[i] = np.roll(out[i], int(rng.integers(-rate // 2, rate // 2 + 1)), axis=0)
        if rng.random() < 0.5:
            out[i] *= rng.uniform(0.8, 1.2)
        if rng.random() < 0.5:
            out[i] += rng.normal(0.0, 0.05, (t, leads)).astype(np.float32)
        if rng.random() < 0.5:  # respiration-like wander, 0.05-0.5 Hz, same on every lead
            freq, phase, amp = rng.uniform(0.05, 0.5), rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.3)
            wander = amp * np.sin(2 * np.pi * freq * np.arange(t) / rate + phase)
            out[i] += wander[:, None].astype(np.float32)
    return out


def augment_site(x: np.ndarray, rng: np.random.Generator, rate: int = 100) -> np.ndarray:
    """What differs between acquisition sites, drawn per record on standardized signals (N, T, L).

    Models the differences between PTB-XL and other hospitals' recorders that a model should not
    learn (``--augment-site``; measured in ``benchmarks/site_shift.py``). Each transform is applied
    to a record with probability 1/2, all draws from ``rng``:

    * per-lead gain error, x lognormal(0, 0.15) on each lead independently (calibration, electrode
      impedance; ``augment`` scales all leads alike);
    * per-lead baseline: an offset N(0, 0.3) plus a linear drift and a 0.05-0.7 Hz wander of up to
      0.8 standard deviations, drawn per lead (electrodes wander independently);
    * a noise spectrum: white noise through a random one-pole filter (coefficient -0.9..0.9, from
      high-frequency EMG-like to low-frequency motion-like noise), 0.02-0.15 standard deviations,
      and with probability 1/4 of the records a mains residue (a 35-50 Hz tone: 60 Hz aliases to
      40 Hz at 100 Hz, 50 Hz sits at Nyquist) of up to 0.1;
    * resampling: the time axis stretched by 0.97-1.03 (sample clocks, rate conversion; linear
      interpolation, then cut or edge-padded to T) and a 3-tap low-pass [a, 1-2a, a], a <= 0.25
      (other anti-alias filters / bandwidths).

    (A variant with wider per-lead gains, lognormal(0, 0.25), and the 3-tap filter also sharpening,
    a in [-0.2, 0.25] -- CinC records carry about 1.5 times PTB-XL's share of power at 15-30 Hz --
    did no better on CinC for fold 10: see the README's site-shift table.)

    Lead polarity (electrode reversal) is not modelled: a reversal swaps leads by name, and a
    recorder that reverses electrodes gives a genuinely different ECG, not a site difference.
    """
    n, t, leads = x.shape
    out = x.astype(np.float32, copy=True)
    time = np.arange(t, dtype=np.float64)
    for i in range(n):
        if rng.random() < 0.5:
            out[i] *= np.exp(rng.normal(0.0, 0.15, leads)).astype(np.float32)
        if rng.random() < 0.5:
            offset = rng.normal(0.0, 0.3, leads)
            drift = rng.uniform(-0.3, 0.3, leads)[None, :] * (time[:, None] / max(t - 1, 1) - 0.5)
            freq, phase, amp = rng.uniform(0.05, 0.7, leads), rng.uniform(0, 2 * np.pi, leads), rng.uniform(0.0, 0.8, leads)
            wander = amp * np.sin(2 * np.pi * freq * time[:, None] / rate + phase)
            out[i] += (offset + drift + wander).astype(np.float32)
        if rng.random() < 0.5:
            import scipy.signal

            coef, level = rng.uniform(-0.9, 0.9), rng.uniform(0.02, 0.15)
            noise = scipy.signal.lfilter([1.0], [1.0, -coef], rng.normal(0.0, 1.0, (t, leads)), axis=0)
            noise *= level / max(float(noise.std()), 1e-12)
            if rng.random() < 0.25:
                noise += rng.uniform(0.0, 0.1) * np.sin(2 * np.pi * rng.uniform(35.0, min(50.0, rate / 2)) * time / rate
                                                         + rng.uniform(0, 2 * np.pi))[:, None]
            out[i] += noise.astype(np.float32)
        if rng.random() < 0.5:
            stretch, a = rng.uniform(0.97, 1.03), rng.uniform(0.0, 0.25)
            where = np.clip(time * stretch, 0, t - 1)  # past the end: the last sample repeated
            rec = np.stack([np.interp(where, time, out[i][:, lead]) for lead in range(leads)], axis=1)
            padded = np.concatenate([rec[:1], rec, rec[-1:]])
            out[i] = (a * padded[:-2] + (1 - 2 * a) * padded[1:-1] + a * padded[2:]).astype(np.float32)
    return out


def augment_batch(x: np.ndarray, rng: np.random.Generator, rate: int, options: "FitOptions") -> np.ndarray:
    """A training batch after the augmentations ``options`` asks for (``augment``, then ``augment_site``)."""
    if options.augment:
        x = augment(x, rng, rate)
    if options.augment_site:
        x = augment_site(x, rng, rate)
    return x


def check_input_shape(model, x: np.ndarray, source: str) -> None:
    expected = tuple(model.input_shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise RunError(
            f"{source}: records are {x.shape[1]} samples x {x.shape[2]} leads, the model expects "
            f"{expected[0]} x {expected[1]}; use data of the model's rate and leads"
        )


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities (N, classes) in inference mode."""
    outs = [model(x[i : i + batch_size], training=False).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, len(CLASSES)), np.float32)


# --------------------------------------------------------------------------- run folder


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically: an interrupted write never leaves half a file."""
    atomic_write_json(path, obj)


def open_run(run: Path, config: TrainConfig) -> None:
    """Create the run folder with its config, or check that an existing one matches."""
    cfg_path = run / CONFIG_FILE
    wanted = {"format": RUN_FORMAT, "edge_ecg": __version__, "train": asdict(config)}
    if cfg_path.is_file():
        check_same_config(cfg_path, read_run_config(run)["train"], config, "give the same options to resume it, or a new --run folder")
        return
    run.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, wanted)


def check_same_config(path: Path, saved: dict, config: TrainConfig, fix: str) -> None:
    """RunError naming the options in which ``config`` differs from the one saved in ``path``.

    Options added to TrainConfig after the file was written take their defaults.
    """
    old, new = asdict(TrainConfig.from_dict(saved)), asdict(config)
    if old != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        raise RunError(f"{path}: this was started with other settings ({', '.join(diff)}); {fix}")


def read_run_config(run: Path) -> dict:
    """config.json of a run folder, checked for the layout version (RunError otherwise)."""
    return RunFolder(run).read_config()


def load_run_model(run: Path):
    from edge_ecg.tf import keras

    path = RunFolder(run).model
    if not path.is_file():
        raise RunError(f"{path}: no trained model in this run folder; run `edge-ecg train --run {run}` first")
    return keras.models.load_model(path, compile=False)


# --------------------------------------------------------------------------- training


def _bce(y, p, pos_weight):
    from edge_ecg.tf import tf

    eps = 1e-7
    p = tf.clip_by_value(p, eps, 1 - eps)
    per = -(y * pos_weight * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
    return tf.reduce_mean(per)


@dataclass
class FitData:
    """Standardized arrays for one fit: training (augmented) and validation (selection)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    rate: int = 100
    soft_train: np.ndarray | None = None  # a teacher's probabilities for the training records


@dataclass
class FitOptions:
    epochs: int
    batch_size: int = 32
    learning_rate: float = 2e-3
    patience: int = 10
    seed: int = 0
    augment: bool = True
    augment_site: bool = False
    class_weighted: bool = False
    select_from_epoch: int = 1  # epochs before this one are never "best" (e.g. pruning not yet at target)
    average_epochs: int = 0  # TrainConfig.average_epochs
    distill_alpha: float = 0.0
    distill_temperature: float = 1.0

    @classmethod
    def from_config(cls, config: "TrainConfig", **overrides) -> "FitOptions":
        """The fit options of a run's training configuration, with ``overrides`` (compression's fine-tunes)."""
        options = dict(
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            patience=config.patience,
            seed=config.seed,
            augment=config.augment,
            augment_site=config.augment_site,
            class_weighted=config.class_weighted,
            average_epochs=config.average_epochs,
            distill_alpha=config.distill_alpha if config.teacher else 0.0,
            distill_temperature=config.distill_temperature,
        )
        return cls(**{**options, **overrides})


def train(
    run: str | os.PathLike,
    config: TrainConfig,
    *,
    dataset: PtbxlDataset | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``config.arch`` into ``run``; continue from the last completed epoch if interrupted.

    Returns the final training state (best epoch, best validation AUC, epochs run).
    ``on_epoch_end(epoch, row)`` is called after each epoch is safely on disk.
    """
    from edge_ecg import models
    from edge_ecg.tf import keras

    run = Path(run)
    if config.arch not in models.ARCHITECTURES:
        models.build(config.arch)  # raises the "did you mean" error before anything is written
    dataset = dataset if dataset is not None else load_ptbxl(config.data, config.rate)  # all leads: a teacher reads its own
    split = load_split(config, dataset)
    with RunLock(run, "train", create=True):  # one writer per run folder; taken only once the request is known to be valid
        open_run(run, config)

        std_path = run / STANDARDIZATION_FILE
        standardizer = None
        if std_path.is_file():
            try:
                standardizer = Standardizer.load(std_path)
            except NonFiniteStandardization:  # left by a run on bad data: the fixed data are fitted afresh
                if progress:
                    from edge_ecg.progress import console

                    console().print(f"{std_path}: not finite (left by a failed run); refitting it on the training folds")
        if standardizer is None:
            standardizer = Standardizer.fit(split.train.signals, tuple(config.leads), config.highpass_hz, config.rate)
            standardizer.save(std_path)
        data = fit_data(split, standardizer, config.rate)
        np.save(run / TRAIN_IDS_FILE, split.train.ecg_ids)  # which records this model learned from (audits, leaks)
        if config.teacher:
            from edge_ecg.distill import teacher_soft_labels

            records = load_split(replace(config, leads=list(dataset.leads)), dataset).train  # the same records, every lead
            data.soft_train = teacher_soft_labels(config.teacher, records, test_fold=config.test_fold, cache=run / "teacher_train_probs.npy")

        keras.utils.set_random_seed(config.seed)
        model = models.build(
            config.arch, num_samples=data.x_train.shape[1], num_leads=data.x_train.shape[2], num_classes=len(CLASSES), **config.arch_kwargs
        )
        check_input_shape(model, data.x_train, "training data")
        state = fit(model, data, run, FitOptions.from_config(config), progress=progress, on_epoch_end=on_epoch_end)
        if not (run / MODEL_FILE).is_file() or state.get("model_saved_epoch") != state["best_epoch"]:
            model.load_weights(run / STATE_DIR / BEST_WEIGHTS)
            tmp = run / f".{MODEL_FILE}.{os.getpid()}.keras"  # Keras wants the suffix; renamed whole into place
            model.save(tmp)
            os.replace(tmp, run / MODEL_FILE)
            state["model_saved_epoch"] = state["best_epoch"]
            write_json(run / STATE_DIR / "state.json", state)
        return state


def fit_data(split: Split, standardizer: Standardizer, rate: int) -> FitData:
    return FitData(
        x_train=standardizer.transform(split.train.signals),
        y_train=split.train.labels.astype(np.float32),
        x_val=standardizer.transform(split.val.signals),
        y_val=split.val.labels.astype(np.float32),
        rate=rate,
    )


BEST_WEIGHTS = "best.weights.h5"
AVERAGE_WEIGHTS = "average.weights.npz"  # the running mean of the averaged epochs' weights (resume)
SWA_LR_FRACTION = 0.25
"""Weight averaging's constant learning rate, as a fraction of the peak: high enough that the averaged epochs
differ (an average of near-identical weights is one model), low enough that each is a good model."""


def fit(
    model,
    data: FitData,
    out: Path,
    options: FitOptions,
    *,
    callbacks: tuple = (),
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Fit ``model`` epoch by epoch, resumable, keeping the best weights by validation macro AUC.

    ``out`` receives ``history.csv`` and ``state/`` (last checkpoint, ``best.weights.h5``,
    ``state.json``). An existing state is resumed. ``callbacks`` are Keras callbacks that
    need batch hooks (tfmot's ``UpdatePruningStep``). Training and compression share
    this one loop.
    """
    from edge_ecg.progress import console
    from edge_ecg.tf import keras, tf

    tf.config.experimental.enable_op_determinism()
    steps_per_epoch = math.ceil(len(data.x_train) / options.batch_size)
    averaging = options.average_epochs > 0
    if averaging and not 0 < options.average_epochs < options.epochs:
        raise ValueError(f"average_epochs {options.average_epochs} must lie in 1..epochs - 1 = {options.epochs - 1}")
    first_averaged = options.epochs - options.average_epochs + 1
    # Cosine decay over the epochs before the averaged ones; CosineDecay then holds its floor (alpha).
    schedule = keras.optimizers.schedules.CosineDecay(
        options.learning_rate,
        decay_steps=max(1, (first_averaged - 1) * steps_per_epoch),
        alpha=SWA_LR_FRACTION if averaging else 0.05,
    )
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)  # slots exist before a checkpoint is restored into them
    # Traced once per fit, outside the per-epoch gradient trace: tf_keras keeps about 5 MB for every
    # graph that applies gradients, which grew a ten-fold rotation to ~10 GB.
    apply_gradients = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, model.trainable_variables)))
    pos = data.y_train.sum(0)
    n_classes = data.y_train.shape[1]
    weights = np.where(pos > 0, (len(data.y_train) - pos) / np.maximum(pos, 1), 1.0) if options.class_weighted else np.ones(n_classes)
    pos_weight = tf.constant(weights, tf.float32)

    state_dir = out / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    state = {"epoch": 0, "best_auc": -1.0, "best_epoch": 0, "wait": 0, "finished": False}
    state_path = state_dir / "state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
    _settle_epoch(state_dir, state["epoch"])  # finish a committed epoch's files, drop an uncommitted one's
    if state["epoch"] > 0:
        ckpt.read(str(state_dir / "ckpt")).assert_consumed()
        if progress and not state["finished"]:
            console().print(f"resuming {out} after epoch {state['epoch']} (best val AUC {state['best_auc']:.4f} at epoch {state['best_epoch']})")
    _trim_history(out / HISTORY_FILE, state["epoch"], state.get("last_row"))
    average = None
    if averaging and state["epoch"] >= first_averaged:
        with np.load(state_dir / AVERAGE_WEIGHTS) as stored:
            average = [stored[f"w{i}"] for i in range(len(stored.files))]
    for cb in callbacks:  # after the restore: tfmot initializes its step only on a fresh model
        cb.set_model(model)
        cb.on_train_begin()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console(), disable=not progress, transient=True) as bar:
        while not state["finished"] and state["epoch"] < options.epochs:
            epoch = state["epoch"] + 1
            started = time.perf_counter()
            # Every random draw of this epoch depends on (seed, epoch) only: exact resume.
            rng = np.random.default_rng([options.seed, epoch])
            tf.random.set_seed(options.seed * 100_003 + epoch)
            step = _make_gradient_step(model, pos_weight, options.distill_alpha, options.distill_temperature)
            # (a fresh trace each epoch: dropout draws its seeds from the line above)
            order = rng.permutation(len(data.x_train))
            task = bar.add_task("", total=steps_per_epoch, epoch=f"{epoch}/{options.epochs}", info="")
            losses = []
            for b in range(steps_per_epoch):
                idx = order[b * options.batch_size : (b + 1) * options.batch_size]
                xb = augment_batch(data.x_train[idx], rng, data.rate, options)
                for cb in callbacks:
                    cb.on_train_batch_begin(b)
                soft = data.y_train[idx] if data.soft_train is None else data.soft_train[idx]
                loss, grads = step(tf.constant(xb), tf.constant(data.y_train[idx]), tf.constant(soft))
                apply_gradients(grads)
                losses.append(float(loss))
                bar.update(task, advance=1, info=f"loss {np.mean(losses):.4f}")
            for cb in callbacks:
                cb.on_epoch_end(epoch)
            bar.remove_task(task)
            recompute_batch_norm_statistics(model, data.x_train)
            p_val = predict(model, data.x_val)
            try:
                val_auc = macro_auc(data.y_val, p_val)
            except MetricError as exc:
                raise RunError(f"validation fold: {exc}; it cannot select a model") from exc
            val_loss = float(_bce(tf.constant(data.y_val), tf.constant(p_val), tf.ones(n_classes)))
            row = {
                "epoch": epoch,
                "loss": round(float(np.mean(losses)), 6),
                "val_loss": round(val_loss, 6),
                "val_auc": round(val_auc, 6),
                "lr": float(schedule(optimizer.iterations)),
                "seconds": round(time.perf_counter() - started, 2),
            }
            improved = not averaging and epoch >= options.select_from_epoch and val_auc > state["best_auc"]
            pending = state_dir / f"{_EPOCH_DIR}{epoch}"
            if pending.exists():
                shutil.rmtree(pending)
            pending.mkdir()
            if averaging and epoch >= first_averaged:
                weights = model.get_weights()
                n = epoch - first_averaged + 1
                average = weights if average is None else [a + (w - a) / n for a, w in zip(average, weights)]
                np.savez(pending / AVERAGE_WEIGHTS, **{f"w{i}": a for i, a in enumerate(average)})
                if epoch == options.epochs:  # the average is the model; its batch-norm statistics are its own
                    model.set_weights(average)
                    recompute_batch_norm_statistics(model, data.x_train)
                    average_auc = macro_auc(data.y_val, predict(model, data.x_val))
                    model.save_weights(pending / BEST_WEIGHTS)
                    state.update(best_auc=average_auc, best_epoch=epoch, averaged_epochs=n)
            if improved:
                model.save_weights(pending / BEST_WEIGHTS)
                state.update(best_auc=val_auc, best_epoch=epoch, wait=0)
            elif not averaging and epoch >= options.select_from_epoch:
                state["wait"] += 1
            state["epoch"] = epoch
            state["finished"] = state["wait"] >= options.patience or epoch >= options.epochs
            state["stopped_early"] = state["wait"] >= options.patience
            state["last_row"] = row  # lets a resume restore the history row if it is killed right after the commit
            ckpt.write(str(pending / "ckpt"))
            write_json(state_path, state)  # the commit: the epoch counts as done once this rename happened
            _settle_epoch(state_dir, epoch)
            _append_history(out / HISTORY_FILE, row)
            if progress:
                console().print(
                    f"epoch {epoch:3d}  loss {row['loss']:.4f}  val_loss {row['val_loss']:.4f}  val_auc {val_auc:.4f}"
                    f"{'  *' if improved else ''}  {row['seconds']:.1f}s",
                    highlight=False,
                )
                if averaging and state["finished"]:
                    console().print(f"average of epochs {first_averaged}-{epoch}: val_auc {state['best_auc']:.4f}", highlight=False)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
    return state


BN_STATISTICS_RECORDS = 4096  # PreciseBN-style: a few thousand samples estimate the statistics well


def recompute_batch_norm_statistics(model, x: np.ndarray, batch_size: int = 256) -> int:
    """Set every BatchNormalization layer's moving mean and variance to their averages over ``x``.

    Why: Keras tracks them as exponential averages (momentum 0.99) of *augmented* training
    batches. On a small dataset (about 24 steps per epoch here) they trail the weights by
    several epochs, so each model's inference outputs are shifted by its own amount: on the
    ten-fold rotation this cost dscnn 0.014-0.031 pooled macro AUC although its per-fold AUCs
    matched cnn_base's (no BatchNormalization). Recomputing them on the clean training
    signals after each epoch ("precise BN", Wu & Johnson 2021) removes that. Every other
    variable (weights, pruning steps and masks, quantizer ranges) is left as it was.

    Uses at most :data:`BN_STATISTICS_RECORDS` records, evenly spaced. The mean is the exact
    average over them; the variance is the size-weighted average of batch variances.
    Returns the number of BatchNormalization layers updated (0: nothing to do).
    """
    from edge_ecg.tf import keras

    layers = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    if not layers or len(x) == 0:
        return 0
    if len(x) > BN_STATISTICS_RECORDS:
        x = x[np.linspace(0, len(x) - 1, BN_STATISTICS_RECORDS).astype(int)]
    statistics = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    others = [v for v in model.variables if id(v) not in statistics]
    kept = [v.numpy() for v in others]
    momenta = [layer.momentum for layer in layers]
    try:
        seen = 0
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            for layer in layers:  # a running average weighted by batch size; the first batch replaces the old value
                layer.momentum = seen / (seen + len(batch))
            model(batch, training=True)
            seen += len(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for v, value in zip(others, kept):
            v.assign(value)
    return len(layers)


def _make_gradient_step(model, pos_weight, alpha: float = 0.0, temperature: float = 1.0):
    """Loss and gradients of ``(1 - alpha) * BCE(labels) + alpha * T^2 * BCE(soft teacher, soft student)``.

    Soft targets are the teacher's and the student's sigmoids at temperature T
    (Hinton et al. 2015, per class for multi-label). With alpha = 0 the second term is
    multiplied by zero and the step equals plain training bit for bit.
    """
    from edge_ecg.tf import tf

    def logit(p):
        p = tf.clip_by_value(p, 1e-6, 1 - 1e-6)
        return tf.math.log(p) - tf.math.log1p(-p)

    @tf.function
    def step(x, y, teacher):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            loss = (1.0 - alpha) * _bce(y, p, pos_weight)
            soft_teacher = tf.sigmoid(logit(teacher) / temperature)
            soft_student = tf.sigmoid(logit(p) / temperature)
            loss += alpha * temperature**2 * _bce(soft_teacher, soft_student, tf.ones_like(pos_weight))
            if model.losses:
                loss += tf.add_n(model.losses)
        return loss, tape.gradient(loss, model.trainable_variables)

    return step


HISTORY_FIELDS = ("epoch", "loss", "val_loss", "val_auc", "lr", "seconds")


def _append_history(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, HISTORY_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


_EPOCH_DIR = "epoch-"


def _settle_epoch(state_dir: Path, committed: int) -> None:
    """Move the files of the committed epoch's ``epoch-K/`` folder into ``state_dir``; delete other such folders.

    Idempotent, so a kill half-way through is finished by the next call (a resume).
    """
    for folder in sorted(state_dir.glob(f"{_EPOCH_DIR}*")):
        if folder.name == f"{_EPOCH_DIR}{committed}":
            for f in sorted(folder.iterdir()):
                os.replace(f, state_dir / f.name)
            folder.rmdir()
        else:  # written for an epoch whose state.json never landed: that epoch is trained again
            shutil.rmtree(folder)


def _trim_history(path: Path, last_epoch: int, last_row: dict | None = None) -> None:
    """Make ``history.csv`` hold exactly epochs 1..last_epoch.

    Drops rows of an epoch that was never committed; restores the committed epoch's row
    (``last_row``, kept in state.json) if the run was killed before appending it.
    """
    rows = read_history(path) if path.is_file() else []
    kept = [r for r in rows if int(r["epoch"]) <= last_epoch]
    missing = last_row is not None and int(last_row["epoch"]) == last_epoch and all(int(r["epoch"]) != last_epoch for r in kept)
    if len(kept) != len(rows) or missing:
        path.unlink(missing_ok=True)
        for r in kept + ([last_row] if missing else []):
            _append_history(path, r)


def read_history(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
