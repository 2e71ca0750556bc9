"""Compression: structured (filter) pruning, magnitude pruning, QAT and prune-preserving QAT.

Each function mirrors tfmot's verbs: it takes a model and returns a new one. The
stage driver :func:`compress` chains them on a run folder, each stage fine-tuning
from the one before with the training loop of :mod:`edge_ecg.train` (resumable,
best epoch kept by validation macro AUC)::

    runs/NAME/compress/
      structured50/          model.h5, history.csv, state/, stage.json
      structured50+prune50/  ...
      structured50+prune50+pqat/
      final.h5               copy of the last stage's model (what `export` takes)
      compress.json          the float model and every stage: sparsity, parameters, MACs, validation AUC
      report.md              the same as a table, with a size/accuracy figure (edge_ecg.compress.report)

Stage folders are named after the chain that produced them, so the same request
resumes and a different one never overwrites it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from edge_ecg.compress.structured import structured_prune
from edge_ecg.compress.tfmot_stages import (
    kernel_sparsity,
    kernel_zero_fractions,
    kernel_zeros,
    load_model,
    prune_magnitude,
    pruning_callbacks,
    quantize,
    strip_pruning,
)
from edge_ecg.runfolder import RunFolder, atomic_write_bytes, display_floats, locks_run, write_report_json

__all__ = [
    "compress",
    "kernel_sparsity",
    "kernel_zero_fractions",
    "load_model",
    "prune_magnitude",
    "quantize",
    "strip_pruning",
    "structured_prune",
]

FINAL_MODEL = "final.h5"  # HDF5: tfmot QAT wrappers do not round-trip through .keras


def stage_names(structured: float | None, prune: float | None, qat: bool) -> list[str]:
    """Folder names of the requested chain, e.g. ['structured50', 'structured50+prune50', ...+pqat]."""
    parts = []
    if structured:
        parts.append(f"structured{round(structured * 100)}")
    if prune:
        parts.append(f"prune{round(prune * 100)}")
    if qat:
        parts.append("pqat" if prune else "qat")
    return ["+".join(parts[: i + 1]) for i in range(len(parts))]


def _check_fraction(name: str, value: float | None, upper: float) -> None:
    if value is not None and not (0.0 < value < upper):
        raise ValueError(f"--{name} must be a fraction in (0, {upper:g}), got {value!r}")


@locks_run("compress")
def compress(
    run: str | os.PathLike,
    *,
    prune: float | None = None,
    structured: float | None = None,
    qat: bool = False,
    epochs: int = 10,
    learning_rate: float = 5e-4,
    dataset=None,
    progress: bool = True,
) -> dict:
    """Run the requested chain (structured -> magnitude -> QAT/PQAT) on ``run``'s trained model."""
    from edge_ecg.data import Standardizer
    from edge_ecg.progress import console
    from edge_ecg.train import (
        BEST_WEIGHTS,
        STANDARDIZATION_FILE,
        STATE_DIR,
        FitOptions,
        TrainConfig,
        fit,
        fit_data,
        load_run_model,
        load_split,
        read_run_config,
        write_json,
    )

    _check_fraction("prune", prune, 1.0)
    _check_fraction("structured", structured, 1.0)
    names = stage_names(structured, prune, qat)
    if not names:
        raise ValueError("nothing to do: give --prune SPARSITY, --structured FRACTION and/or --qat")
    run = Path(run)
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    model = load_run_model(run)
    split = load_split(config, dataset)
    data = fit_data(split, Standardizer.load(run / STANDARDIZATION_FILE), config.rate)
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)

    root = RunFolder(run).compress
    root.mkdir(exist_ok=True)
    report = {"run": str(run), "float": _model_entry("float (trained)", model, _trained_val_auc(run)), "stages": []}
    for name in names:
        kind = name.rsplit("+", 1)[-1]
        out = root / name
        request = {"stage": kind, "epochs": epochs, "learning_rate": learning_rate, "batch_size": config.batch_size}
        stage_file = out / "stage.json"
        if stage_file.is_file():
            done = json.loads(stage_file.read_text())
            if done["request"] != request:
                raise ValueError(f"{stage_file}: made with {done['request']}, asked {request}; use another run folder")
            if done.get("finished"):
                model = load_model(out / "model.h5")
                report["stages"].append(done)
                continue
        out.mkdir(exist_ok=True)
        write_json(stage_file, {"request": request, "finished": False})
        if progress:
            console().print(f"[bold]compress[/] {name}")

        select_from, callbacks = 1, ()
        if kind.startswith("structured"):
            model = structured_prune(model, structured, config.arch, config.arch_kwargs)
            # structured pruning is complete at once: warm-up-free fine-tune on the smaller dense model
        elif kind.startswith("prune"):
            model, end_step = prune_magnitude(model, prune, epochs * steps_per_epoch, steps_per_epoch)
            callbacks = pruning_callbacks()
            select_from = math.ceil(end_step / steps_per_epoch)  # only epochs at full target sparsity count
        else:
            model = quantize(model, preserve_sparsity=(kind == "pqat"))
        options = FitOptions.from_config(
            config,
            epochs=epochs,
            learning_rate=learning_rate,
            patience=epochs,  # short fine-tunes run to the end; the best epoch is kept
            select_from_epoch=select_from,
            distill_alpha=0.0,  # fine-tunes learn from the labels
            average_epochs=0,  # a fine-tune keeps its best epoch (averaging would mix sparsity and quantizer states)
        )
        state = fit(model, data, out, options, callbacks=callbacks, progress=progress)
        model.load_weights(out / STATE_DIR / BEST_WEIGHTS)
        if kind.startswith("prune"):
            model = strip_pruning(model)
        with warnings.catch_warnings():  # HDF5 on purpose: QAT wrappers do not reload from .keras
            warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
            model.save(out / "model.h5")
        entry = {"request": request, "finished": True, "best_epoch": state["best_epoch"], **_model_entry(name, model, state["best_auc"])}
        entry = write_report_json(stage_file, entry)  # returned as written: a resumed stage reads back the same
        report["stages"].append(entry)
    atomic_write_bytes(root / FINAL_MODEL, (root / names[-1] / "model.h5").read_bytes())  # export never sees half a copy
    report["final"] = names[-1]
    report = write_report_json(root / "compress.json", report)
    from edge_ecg.compress.report import write_report

    write_report(run, report)
    return report


def _trained_val_auc(run: Path) -> float | None:
    """The trained model's best validation macro AUC (its training state), None when the state is gone."""
    from edge_ecg.train import STATE_DIR

    path = run / STATE_DIR / "state.json"
    return json.loads(path.read_text()).get("best_auc") if path.is_file() else None


def _model_entry(name: str, model, val_auc: float | None) -> dict:
    """One row of compress.json: validation AUC, zero weights, parameters, MACs, int8 byte estimates.

    Parameters count QAT's quantizer ranges too; the byte estimates are what the int8 model stores.
    """
    from edge_ecg.models import summary

    zeros, kernel_weights = kernel_zeros(model)
    info = {k: v for k, v in summary(model).items() if k != "layers"}
    return display_floats({
        "name": name,
        "val_auc": val_auc,
        "sparsity": zeros / kernel_weights if kernel_weights else 0.0,
        "zero_weights": zeros,
        "nonzero_int8_bytes": info["int8_bytes"] - zeros,  # a zero int8 weight, left out, saves its byte
        **info,
    })
