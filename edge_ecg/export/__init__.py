"""Export stage: a trained run -> int8 TFLite model, firmware C sources, host-emulated check.

``export(run)`` writes into ``run/export/``::

    model_int8.tflite        full-int8 flatbuffer (int8 I/O, batch 1)
    model_data.h/.cc         the flatbuffer as a C array (TFLite Micro convention)
    model_ops.h              op resolver registering exactly the model's operators
    model_config.h           ECG_* macros: I/O quantization, classes, thresholds, arena...
    export.json              everything measured (below)
    test_int8_outputs.npy    int8 TFLM outputs (N, 5) on every test-fold record
    test_ecg_ids.npy         their record ids

and checks the int8 model as the microcontroller will run it: every test-fold record
goes through the TFLite Micro interpreter (and LiteRT's reference kernels, which must
agree bit for bit); metrics on the dequantized outputs are compared with the float
model's (the parity ladder); the tensor arena is measured to the byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_ecg.export.convert import (
    TFLM_RESOLVER,
    ExportError,
    check_tflite,
    deployable_model,
    model_io,
    ops_in_model,
    output_probabilities,
    to_int8_tflite,
)
from edge_ecg.compress import load_model  # one loader for float, pruned and QAT models
from edge_ecg.runfolder import locks_run
from edge_ecg.export.convert import is_quantization_aware
from edge_ecg.export.arena import target_arenas
from edge_ecg.export.csources import SOURCE_FILES, c_sources, sha256, write_c_sources
from edge_ecg.export.emulator import litert_run, measure_arena, tflm_run
from edge_ecg.preprocess import clip_inputs, dequantize_output, quantize_input
from edge_ecg.runfolder import (
    EXPORT_DIR,
    EXPORT_FILE,
    TEST_IDS_FILE,
    TEST_OUTPUTS_FILE,
    TFLITE_FILE,
    RunFolder,
    sha256_file,
    write_report_json,
)

CLIP_CANDIDATES = (3.0, 4.0, 5.0, 6.0, 8.0, None)
"""Clipping levels (standard deviations) tried by ``clip_sigma="auto"``; None: no clipping."""

LITERT_TOLERANCE_LSB = 1
"""Largest TFLite Micro vs LiteRT BUILTIN_REF difference (int8 steps) accepted with a warning."""

MAX_VAL_AUC_DROP = 0.01
"""Largest validation macro AUC the int8 model may lose against the float model (``export(max_drop=...)``)."""

REPRESENTATIVE_RECORDS = 500
"""Training records used to calibrate the int8 ranges (evenly spaced over the training folds)."""

__all__ = [
    "TFLM_RESOLVER",
    "ExportError",
    "calibrate",
    "litert_parity",
    "tflm_test_outputs",
    "MAX_VAL_AUC_DROP",
    "c_sources",
    "check_tflite",
    "choose_clip",
    "clip_inputs",
    "dequantize_output",
    "export",
    "litert_run",
    "load_model",
    "measure_arena",
    "model_io",
    "ops_in_model",
    "quantize_input",
    "tflm_run",
    "to_int8_tflite",
    "write_c_sources",
]


def _model_path(run: Path, model_path: str | os.PathLike | None) -> Path:
    if model_path is not None:
        return Path(model_path)
    return RunFolder(run).deployable_model()  # RunError when there is no trained model


RUNTIMES = ("tflm", "aot")


def _write_reports(run: Path, out_dir: Path, result: dict, labels: np.ndarray, p_float: np.ndarray, p_int8: np.ndarray) -> None:
    """export/report.md with its figures, then the run's index (which links it)."""
    from edge_ecg.export.report import export_report
    from edge_ecg.runfolder import write_index

    export_report(out_dir, result, labels, p_float, p_int8)
    write_index(run)


def export_aot(tflite: bytes, folder: Path, x_int8: np.ndarray, tflm_outputs: np.ndarray) -> dict:
    """Generate the AOT C model into ``folder``, build it on the host and compare with TFLite Micro."""
    import tempfile

    from edge_ecg.aot import AotModel, build_shared_library, generate

    report = generate(tflite, folder)
    with tempfile.TemporaryDirectory() as tmp:
        model = AotModel(build_shared_library(folder, Path(tmp) / "libecg_model.so"))
        got = np.stack([model.invoke(x) for x in x_int8])
    identical = int(np.all(got.reshape(tflm_outputs.shape) == tflm_outputs, axis=1).sum())
    if identical != len(tflm_outputs):
        raise ExportError(f"the AOT C model differs from TFLite Micro on {len(tflm_outputs) - identical} test records: a generator bug")
    return {"activation_bytes": report["activation_bytes"], "weights_bytes": report["weights_bytes"],
            "identical_to_tflm": identical, "records": len(tflm_outputs),
            "files": [str(Path(f).relative_to(folder.parent)) for f in report["files"].values()]}


CHOSEN_BY = "int8 TFLM macro AUC on the validation fold, clipping only where its paired bootstrap gain is above 0 at 95 %"


def choose_clip(labels: np.ndarray, val_probs: dict, *, n_boot: int = 1000, seed: int = 0) -> tuple[float | None, dict]:
    """The clipping level ``clip_sigma="auto"`` takes, from int8 validation probabilities per level (None: no clipping).

    The level with the best validation macro AUC, but only if its paired bootstrap gain over
    no clipping has a 95 % interval above zero; otherwise no clipping. Why: on a validation
    fold of about 100 records the levels differ by noise (a few thousandths), and taking the
    plain maximum clipped on 7 of 10 rotation folds and lost 0.003 pooled test AUC.
    Returns the level and, per clipping level, its gain ``{"difference", "ci95"}``.
    """
    from edge_ecg.metrics import paired_bootstrap

    off = val_probs[None]
    gains = {c: paired_bootstrap(labels, p, off, n_boot=n_boot, seed=seed) for c, p in val_probs.items() if c is not None}
    if not gains:
        return None, {}
    best = max(gains, key=lambda c: gains[c]["difference"])
    return (best if gains[best]["ci95"][0] > 0 else None), gains


def representative_indices(n: int, limit: int = REPRESENTATIVE_RECORDS) -> np.ndarray:
    """``min(n, limit)`` record indices spread evenly over ``range(n)``."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def calibrate(
    deployed,
    output_kind: str,
    representative: np.ndarray,
    x_val: np.ndarray,
    val_labels: np.ndarray,
    p_val_float: np.ndarray,
    *,
    clip_sigma: float | str | None,
    n_boot: int,
    say=lambda text: None,
    name: str = "model",
) -> tuple[float | None, dict]:
    """Convert to int8 at each clipping level and choose one on the validation fold.

    Returns the chosen level and, per level tried (always including None, for the report's
    "without clipping" row), its ``tflite``, ``io``, validation int8 outputs ``y_val_q`` and
    probabilities ``p_val``, and the report ``row``.
    """
    from edge_ecg.metrics import macro_auc

    candidates = CLIP_CANDIDATES if clip_sigma == "auto" else (clip_sigma,)
    if None not in candidates:
        candidates = (*candidates, None)
    trials = {}
    for clip in candidates:
        say(f"converting {name} to int8 TFLite ({len(representative)} representative training records, "
            f"clip {'off' if clip is None else f'±{clip:g} sd'})")
        tflite = to_int8_tflite(deployed, clip_inputs(representative, clip))
        io = check_tflite(tflite)
        in_q, out_q = io["inputs"][0], io["outputs"][0]
        y_val_q = tflm_run(tflite, quantize_input(clip_inputs(x_val, clip), in_q["scale"], in_q["zero_point"]))
        p_val = output_probabilities(y_val_q, out_q["scale"], out_q["zero_point"], output_kind)
        trials[clip] = {
            "tflite": tflite, "io": io, "y_val_q": y_val_q, "p_val": p_val,
            "row": {"clip_sigma": clip, "input_scale": in_q["scale"], "val_int8_macro_auc": macro_auc(val_labels, p_val),
                    "val_mean_abs_diff": float(np.mean(np.abs(p_val - p_val_float)))},
        }
    if clip_sigma != "auto":
        return clip_sigma, trials
    chosen, gains = choose_clip(val_labels, {c: trials[c]["p_val"] for c in CLIP_CANDIDATES}, n_boot=n_boot)
    for clip, gain in gains.items():
        trials[clip]["row"]["val_gain_over_no_clip"] = gain
    return chosen, trials


def tflm_test_outputs(
    trials: dict, chosen: float | None, x_test: np.ndarray, test_labels: np.ndarray, p_test_float: np.ndarray,
    output_kind: str, *, progress: bool = False,
) -> np.ndarray:
    """TFLite Micro on the test fold at every clipping level tried (rows added to each trial); the chosen level's int8 outputs."""
    from edge_ecg.metrics import macro_auc

    y_chosen = None
    for clip, trial in sorted(trials.items(), key=lambda item: item[0] != chosen):  # the chosen level first, with progress
        t_in, t_out = trial["io"]["inputs"][0], trial["io"]["outputs"][0]
        y = tflm_run(trial["tflite"], quantize_input(clip_inputs(x_test, clip), t_in["scale"], t_in["zero_point"]),
                     progress=progress and clip == chosen, description="TFLM test")
        if clip == chosen:
            y_chosen = y
        p = output_probabilities(y, t_out["scale"], t_out["zero_point"], output_kind)
        trial["test_probs"] = p
        trial["row"]["test_int8_macro_auc"] = macro_auc(test_labels, p)
        trial["row"]["test_mean_abs_diff"] = float(np.mean(np.abs(p - p_test_float)))
        trial["row"]["test_max_abs_diff"] = float(np.max(np.abs(p - p_test_float)))
    return y_chosen


def litert_parity(
    tflite: bytes, q_test: np.ndarray, y_tflm: np.ndarray, ecg_ids: np.ndarray, *, allow_mismatch: bool = False,
    progress: bool = False,
) -> dict:
    """TFLite Micro's int8 outputs against LiteRT's reference kernels (BUILTIN_REF) on the same inputs.

    TFLite Micro is what the firmware runs; LiteRT is the cross-check. Measured here: a QAT dscnn
    differed by 1 LSB on 1-2 of 126 records (TFLM and the AOT runtime agree exactly), so up to
    LITERT_TOLERANCE_LSB is listed, more is an :class:`ExportError` unless ``allow_mismatch``.
    """
    y_ref = litert_run(tflite, q_test, progress=progress, description="LiteRT ref test")
    identical = np.all(y_tflm == y_ref, axis=1)
    lsb = np.abs(y_tflm.astype(np.int16) - y_ref.astype(np.int16)).max(axis=1)
    if int(lsb.max(initial=0)) > LITERT_TOLERANCE_LSB and not allow_mismatch:
        bad = np.flatnonzero(lsb > LITERT_TOLERANCE_LSB)
        raise ExportError(
            f"TFLite Micro and LiteRT (BUILTIN_REF) int8 outputs differ by more than {LITERT_TOLERANCE_LSB} LSB on "
            f"{len(bad)} of {len(identical)} test records (first ecg_id {int(ecg_ids[bad[0]])}, "
            f"{int(lsb.max())} LSB); pass allow_mismatch=True to export anyway"
        )
    mismatches = [{"ecg_id": int(ecg_ids[i]), "tflm": y_tflm[i].tolist(), "litert_ref": y_ref[i].tolist(), "max_lsb": int(lsb[i])}
                  for i in np.flatnonzero(~identical)]
    return {"identical": identical, "identical_records": int(identical.sum()), "mismatches": mismatches,
            "max_lsb": int(lsb.max(initial=0))}


@locks_run("export")
def export(
    run: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    dataset=None,
    data: str | None = None,
    progress: bool = True,
    allow_mismatch: bool = False,
    max_drop: float = MAX_VAL_AUC_DROP,
    representative_records: int = REPRESENTATIVE_RECORDS,
    n_boot: int = 1000,
    clip_sigma: float | str | None = "auto",
    out: str | os.PathLike | None = None,
    runtime: str = "tflm",
) -> dict:
    """Export the run's model for the microcontroller into ``run/export/``; returns export.json's content.

    The model is ``model_path`` if given, else the compression stage's
    ``run/compress/final.keras`` or ``run/compress/final.h5`` if present, else
    ``run/model.keras``; float, pruned and QAT (tfmot) models all load. ``dataset`` (a
    loaded PTB-XL) or ``data`` (its folder) overrides the run's data.

    Raises ``RunError`` for a folder that is not a trained run, and :class:`ExportError`
    when the model cannot go to the firmware or when TFLite Micro and LiteRT's
    reference kernels disagree by more than LITERT_TOLERANCE_LSB on a test record
    (unless ``allow_mismatch``); smaller differences are listed in export.json.
    The int8 model's validation (fold 9) macro AUC may fall at most ``max_drop`` below
    the float model's, else :class:`ExportError`; both are checked before anything is
    written, so a failed export leaves a previous export in ``out`` as it was.

    ``clip_sigma`` clips the standardized input at that many standard deviations
    before calibration and in every preprocessing (Python and firmware alike), so a
    few large-amplitude records do not stretch the int8 input step; ``"auto"`` picks
    it from :data:`CLIP_CANDIDATES` by the int8 macro AUC on the validation fold (see
    :func:`choose_clip`; the test fold is never used for the choice), None turns
    clipping off. ``out`` is the folder written (default ``run/export``). ``runtime="aot"`` also writes the
    ahead-of-time C model (:mod:`edge_ecg.aot`) into ``<out>/aot/`` and checks it bit
    for bit against TFLite Micro on every test record.
    """
    from edge_ecg import CLASSES, __version__
    from edge_ecg.data import Standardizer
    from edge_ecg.evaluate import classification_report
    from edge_ecg.metrics import macro_auc
    from edge_ecg.progress import console, status
    from edge_ecg.train import (
        STANDARDIZATION_FILE,
        TrainConfig,
        check_input_shape,
        load_split,
        predict,
        read_run_config,
        write_json,
    )

    if not (clip_sigma is None or clip_sigma == "auto" or (isinstance(clip_sigma, (int, float)) and clip_sigma > 0)):
        raise ExportError(f"clip_sigma must be a positive number of standard deviations, 'auto' or None, got {clip_sigma!r}")
    if runtime not in RUNTIMES:
        raise ExportError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not np.isfinite(max_drop):
        raise ExportError(f"max_drop must be a finite number (validation macro AUC, e.g. 0.01), got {max_drop!r}")
    run = Path(run)
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    if data is not None:
        config.data = data
    path = _model_path(run, model_path)
    model = load_model(path)

    standardizer = Standardizer.load(run / STANDARDIZATION_FILE)
    split = load_split(config, dataset)
    x_test = standardizer.transform(split.test.signals)
    check_input_shape(model, x_test, f"data {config.data}")

    def say(text: str) -> None:
        if progress:
            console().print(text, highlight=False)

    # 1. int8 conversion, calibrated on training records, with the input clipping chosen on fold 9
    rep_idx = representative_indices(len(split.train), representative_records)
    representative = standardizer.transform(split.train.signals[rep_idx])
    x_val = standardizer.transform(split.val.signals)
    p_val_float, p_test_float = predict(model, x_val), predict(model, x_test)
    deployed, output_kind = deployable_model(model)
    chosen, trials = calibrate(deployed, output_kind, representative, x_val, split.val.labels, p_val_float,
                               clip_sigma=clip_sigma, n_boot=n_boot, say=say, name=path.name)
    tflite, io, y_val_q = trials[chosen]["tflite"], trials[chosen]["io"], trials[chosen]["y_val_q"]
    # the parity ladder's first rung, on validation (the test fold decides nothing): checked before any file is written
    val_float_auc, val_int8_auc = macro_auc(split.val.labels, p_val_float), trials[chosen]["row"]["val_int8_macro_auc"]
    if val_float_auc - val_int8_auc > max_drop:
        raise ExportError(
            f"{path}: the int8 model's validation macro AUC {val_int8_auc:.4f} is {val_float_auc - val_int8_auc:.4f} below "
            f"the float model's {val_float_auc:.4f}, more than max_drop {max_drop:g}; nothing was written. Train "
            f"quantization-aware (`edge-ecg compress --qat`), or accept the loss with --max-drop (export(max_drop=...))"
        )
    ops = ops_in_model(tflite)
    in_q, out_q = io["inputs"][0], io["outputs"][0]

    # 2. host emulation: TFLite Micro on the test fold (every clipping level, for comparison), LiteRT's cross-check
    q_test = quantize_input(clip_inputs(x_test, chosen), in_q["scale"], in_q["zero_point"])
    y_test_q = tflm_test_outputs(trials, chosen, x_test, split.test.labels, p_test_float, output_kind, progress=progress)
    litert = litert_parity(tflite, q_test, y_test_q, split.test.ecg_ids, allow_mismatch=allow_mismatch, progress=progress)
    identical, n_identical, litert_mismatches = litert["identical"], litert["identical_records"], litert["mismatches"]
    if litert_mismatches:
        say(f"[yellow]warning[/]: TFLite Micro and LiteRT BUILTIN_REF differ on {len(litert_mismatches)} of "
            f"{len(identical)} test records, by at most {litert['max_lsb']} LSB (listed in export.json)")
    p_val = output_probabilities(y_val_q, out_q["scale"], out_q["zero_point"], output_kind)
    p_test = output_probabilities(y_test_q, out_q["scale"], out_q["zero_point"], output_kind)
    report = classification_report(split.val.labels, p_val, split.test.labels, p_test, n_boot=n_boot, seed=config.seed)
    float_auc = macro_auc(split.test.labels, p_test_float)

    # 3. arena
    with status("measuring the TFLite Micro tensor arena (bisection to the byte, then per firmware target)", enabled=progress):
        arena = measure_arena(tflite)
        arena.update(target_arenas(tflite, arena))  # ESP-NN's scratch and op data on top, per firmware target
    if not arena["replay"]["matches_tflm"]:
        say(f"[yellow]warning[/]: the arena replay plans a {arena['replay']['reference_head_replayed']:,}-byte head, "
            f"TFLite Micro {arena['replay']['reference_head_measured']:,} B: a kernel's scratch request is not modelled "
            "(edge_ecg/export/arena.py); the per-target figures add only the difference")

    # 4. files
    out_dir = Path(out) if out is not None else run / EXPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (TFLITE_FILE + ".tmp")
    tmp.write_bytes(tflite)
    os.replace(tmp, out_dir / TFLITE_FILE)
    thresholds = [report["thresholds_val"][c] for c in CLASSES]
    thresholds_note = (
        f"per class, maximizing F1 on validation fold {config.val_fold}, computed on the int8 TFLite Micro "
        "outputs (dequantized) of this model"
    )
    write_c_sources(
        out_dir,
        tflite,
        class_names=list(CLASSES),
        thresholds=thresholds,
        lead_mean=standardizer.mean.tolist(),
        lead_std=standardizer.std.tolist(),
        highpass=None if standardizer.highpass is None else standardizer.highpass.tolist(),
        highpass_hz=standardizer.highpass_hz,
        lead_names=list(config.leads),  # the run's lead set (edge_ecg.data.leads), the input channels in order
        sample_rate_hz=config.rate,
        arena_bytes=arena["recommended_bytes"],
        arena_min_bytes=arena["min_bytes"],
        arena_targets={t: v["recommended_bytes"] for t, v in arena["targets"].items()},
        input_clip_sigma=0.0 if chosen is None else float(chosen),
        output_kind=output_kind,
        thresholds_note=thresholds_note,
    )
    np.save(out_dir / TEST_OUTPUTS_FILE, y_test_q)
    (out_dir / "calibration").mkdir(exist_ok=True)
    for clip, trial in trials.items():  # each clipping level's test probabilities, for pooled comparisons
        np.save(out_dir / "calibration" / f"test_probs_clip-{'off' if clip is None else f'{clip:g}'}.npy", trial["test_probs"])
    np.save(out_dir / TEST_IDS_FILE, split.test.ecg_ids.astype(np.int64))

    try:
        model_name = str(path.resolve().relative_to(run.resolve()))
    except ValueError:
        model_name = str(path)
    result = {
        "edge_ecg": __version__,
        "model": model_name,
        "model_sha256": sha256_file(path),  # what `edge-ecg run` compares to tell a current export from a stale one
        "quantization_aware": bool(is_quantization_aware(model)),
        "representative": {"records": int(len(rep_idx)), "source": "training folds, evenly spaced, standardized"},
        # the run's input filter (standardization.json; ECG_HIGHPASS_SOS in model_config.h), 0: none
        "preprocessing": {"highpass_hz": standardizer.highpass_hz},
        "tflite": {
            "file": TFLITE_FILE,
            "bytes": len(tflite),
            "sha256": sha256(tflite),
            "ops": ops,
            "resolver": {op: TFLM_RESOLVER[op] for op in ops},
            "input": in_q,
            "output": out_q,
            "output_kind": output_kind,
        },
        "arena": arena,
        "calibration": {
            "clip_sigma": chosen,
            "chosen_by": CHOSEN_BY if clip_sigma == "auto" else "given",
            "trials": [t["row"] for t in trials.values()],
        },
        "parity": {
            "val_float_macro_auc": val_float_auc,
            "val_int8_macro_auc": val_int8_auc,
            "val_auc_drop": val_float_auc - val_int8_auc,
            "max_drop": max_drop,
            "float_test_macro_auc": float_auc,
            "int8_tflm_test_macro_auc": report["macro_auc"],
            "auc_drop": float_auc - report["macro_auc"],
            "test_records": int(len(identical)),
            "tflm_litert_identical_records": n_identical,
            "tflm_litert_tolerance_lsb": LITERT_TOLERANCE_LSB,
            "tflm_litert_mismatches": litert_mismatches,
            "litert_resolver": "BUILTIN_REF",
        },
        "thresholds": {"source": thresholds_note, "values": dict(zip(CLASSES, thresholds))},
        "test": report,
        "files": [TFLITE_FILE, *SOURCE_FILES, TEST_OUTPUTS_FILE, TEST_IDS_FILE, EXPORT_FILE],
    }
    if runtime == "aot":
        with status(f"generating the AOT C model and checking it on {len(q_test)} test records", enabled=progress):
            result["aot"] = export_aot(tflite, out_dir / "aot", q_test, y_test_q)
        result["files"].append("aot/")
        aot = result["aot"]
        say(f"AOT C model: {aot['activation_bytes']:,} B activations (input included), {aot['weights_bytes']:,} B "
            f"constants; identical to TFLite Micro on {aot['identical_to_tflm']}/{aot['records']} test records")
    result = write_report_json(out_dir / EXPORT_FILE, result)  # display floats rounded, quantization parameters exact
    _write_reports(run, out_dir, result, split.test.labels, p_test_float, p_test)
    say(
        f"int8 TFLM test macro AUC {report['macro_auc']:.4f} (float {float_auc:.4f}, drop {float_auc - report['macro_auc']:+.4f}); "
        f"TFLM = LiteRT on {n_identical}/{len(identical)} records; {len(tflite):,} bytes; "
        f"arena min {arena['min_bytes']:,} B, recommended {arena['recommended_bytes']:,} B "
        f"(ESP32 {arena['targets']['esp32']['recommended_bytes']:,} B, ESP32-S3 {arena['targets']['esp32s3']['recommended_bytes']:,} B)"
    )
    return result
