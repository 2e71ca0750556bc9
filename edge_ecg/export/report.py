"""The compression stage report: every variant of a run, side by side, as the firmware would run it.

Rows (those whose model exists): the float model, post-training int8 of it, and each
compressed model the compress stage left under ``run/compress/`` (QAT, magnitude
pruning + PQAT, structured pruning ...), each exported to int8 and evaluated
through TFLite Micro on the test fold. Written to ``run/compression.md`` and
``run/compression.json``; ``benchmarks/compression.py`` prints the same table.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edge_ecg.runfolder import COMPRESSION_REPORT_JSON, COMPRESSION_REPORT_MD, EXPORT_FIGURES, REPORT_FILE, RunFolder, atomic_write_text

COLUMNS = ("variant", "tflite_bytes", "gzip_bytes", "zero_weights", "params", "macs", "arena_bytes", "test_macro_auc", "ci95")


def _float_row(run: Path, dataset, n_boot: int) -> dict:
    from edge_ecg.compress import kernel_sparsity
    from edge_ecg.data import Standardizer
    from edge_ecg.compress import load_model
    from edge_ecg.export.emulator import measure_arena
    from edge_ecg.metrics import bootstrap_auc, macro_auc
    from edge_ecg.models import summary
    from edge_ecg.tf import tf
    from edge_ecg.train import MODEL_FILE, STANDARDIZATION_FILE, TrainConfig, load_split, predict, read_run_config

    config = TrainConfig.from_dict(read_run_config(run)["train"])
    model = load_model(run / MODEL_FILE)
    split = load_split(config, dataset)
    p = predict(model, Standardizer.load(run / STANDARDIZATION_FILE).transform(split.test.signals))
    shape = [1, *model.input_shape[1:]]
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    tflite = converter.convert()
    info = summary(model)
    return {
        "variant": "float (float32 TFLite, Keras evaluation)",
        "model": MODEL_FILE,
        "tflite_bytes": len(tflite),
        "gzip_bytes": len(gzip.compress(tflite, 9, mtime=0)),
        "zero_weights": kernel_sparsity(model),
        "params": info["params"],
        "macs": info["macs"],
        "arena_bytes": measure_arena(tflite)["min_bytes"],
        "test_macro_auc": macro_auc(split.test.labels, p),
        "ci95": list(bootstrap_auc(split.test.labels, p, n_boot=n_boot, seed=config.seed)),
    }


def _int8_row(run: Path, name: str, model_path: Path, dataset, clip_sigma, n_boot: int) -> dict:
    from edge_ecg.export import export
    from edge_ecg.compress import load_model
    from edge_ecg.export.convert import weight_zero_fraction
    from edge_ecg.models import summary

    out = run / "compression" / name.replace(" ", "_").replace("+", "_")
    result = export(run, model_path=model_path, dataset=dataset, out=out, clip_sigma=clip_sigma, progress=False, n_boot=n_boot)
    tflite = (out / result["tflite"]["file"]).read_bytes()
    info = summary(load_model(model_path))
    return {
        "variant": name,
        "model": str(model_path.relative_to(run)),
        "tflite_bytes": len(tflite),
        "gzip_bytes": len(gzip.compress(tflite, 9, mtime=0)),
        "zero_weights": weight_zero_fraction(tflite),
        "params": info["params"],
        "macs": info["macs"],
        "arena_bytes": result["arena"]["min_bytes"],
        "test_macro_auc": result["test"]["macro_auc"],
        "ci95": result["test"]["macro_auc_ci95"],
        "auc_drop_vs_its_float": result["parity"]["auc_drop"],
        "clip_sigma": result["calibration"]["clip_sigma"],
    }


def _highpass_text(result: dict) -> str:
    """'0.5 Hz' for a run trained with --highpass, else 'off' (also for exports written before the field)."""
    hz = result.get("preprocessing", {}).get("highpass_hz", 0.0)
    return f"{hz:g} Hz (ECG_HIGHPASS_SOS)" if hz else "off"


def stage_report(run: str | os.PathLike, *, dataset=None, clip_sigma="auto", n_boot: int = 1000) -> dict:
    """Export every variant of ``run`` and write ``compression.md`` / ``compression.json``."""
    from edge_ecg.train import MODEL_FILE, write_json

    run = Path(run)
    rows = [_float_row(run, dataset, n_boot)]
    rows.append(_int8_row(run, "post-training int8", run / MODEL_FILE, dataset, clip_sigma, n_boot))
    for stage in sorted(RunFolder(run).compress.glob("*/model.h5")):
        name = stage.parent.name
        label = f"{name} int8" if name.endswith(("qat", "pqat")) else f"{name} + post-training int8"
        rows.append(_int8_row(run, label, stage, dataset, clip_sigma, n_boot))
    report = {"run": str(run), "rows": rows}
    write_json(run / COMPRESSION_REPORT_JSON, report)
    (run / COMPRESSION_REPORT_MD).write_text(format_table(rows, markdown=True) + "\n")
    return report


def format_table(rows: list[dict], markdown: bool = False) -> str:
    head = ["variant", ".tflite B", "gzip B", "zero weights", "params", "MACs/record", "arena B", "test macro AUC [95% CI] (TFLM)"]
    body = [
        [
            r["variant"],
            f"{r['tflite_bytes']:,}",
            f"{r['gzip_bytes']:,}",
            f"{r['zero_weights']:.1%}",
            f"{r['params']:,}",
            f"{r['macs']:,}",
            f"{r['arena_bytes']:,}",
            f"{r['test_macro_auc']:.4f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]",
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(row) for row in body])


def export_report(out_dir: str | os.PathLike, result: dict, labels: np.ndarray, p_float: np.ndarray, p_int8: np.ndarray) -> Path:
    """``out_dir/report.md`` with its figures: int8 vs float outputs, per-class AUC, arena and flash.

    ``result`` is export.json's content; ``p_float`` / ``p_int8`` the float model's and the
    dequantized TFLite Micro probabilities on the test fold (rows of ``labels``).
    """
    from edge_ecg import CLASSES
    from edge_ecg import plots
    from edge_ecg.metrics import per_class_auc

    out_dir = Path(out_dir)
    scatter, bars, memory = (out_dir / name for name in EXPORT_FIGURES)
    n = len(labels)
    plots.int8_vs_float(p_float, p_int8, scatter, title=f"test outputs, {n} records: int8 vs float")
    auc_float, auc_int8 = per_class_auc(labels, p_float), per_class_auc(labels, p_int8)
    plots.auc_bars({"float (Keras)": auc_float, "int8 (TFLite Micro)": auc_int8}, bars, title="test AUC per class")
    arena = result["arena"]
    sizes = {f"arena, {t} (recommended)": v["recommended_bytes"] for t, v in arena["targets"].items()}
    sizes["flash: .tflite model"] = result["tflite"]["bytes"]
    if "aot" in result:
        sizes["AOT activations (RAM)"] = result["aot"]["activation_bytes"]
        sizes["AOT constants (flash)"] = result["aot"]["weights_bytes"]
    plots.memory_bars(sizes, memory, title="RAM (tensor arena) and flash (model bytes)")
    par = result["parity"]
    lines = [
        f"# Export: int8 model `{result['model']}`",
        "",
        f"- test macro AUC: float {par['float_test_macro_auc']:.4f}, int8 TFLite Micro {par['int8_tflm_test_macro_auc']:.4f} "
        f"(drop {par['auc_drop']:+.4f}); validation drop {par['val_auc_drop']:+.4f} (allowed {par['max_drop']:g})",
        f"- TFLite Micro = LiteRT reference kernels on {par['tflm_litert_identical_records']}/{par['test_records']} test records",
        f"- input clipping: {result['calibration']['clip_sigma'] or 'off'}; input high-pass: "
        f"{_highpass_text(result)}; `.tflite` {result['tflite']['bytes']:,} B",
        "",
        "| class | float AUC | int8 AUC |",
        "| --- | --- | --- |",
        *[f"| {c} | {f:.4f} | {q:.4f} |" for c, f, q in zip(CLASSES, auc_float, auc_int8)],
        "",
        "| memory | bytes |",
        "| --- | --- |",
        *[f"| {k} | {v:,} |" for k, v in sizes.items()],
        "",
        f"![int8 vs float outputs]({scatter.name})",
        "",
        f"![per-class AUC]({bars.name})",
        "",
        f"![arena and flash]({memory.name})",
        "",
    ]
    path = out_dir / REPORT_FILE
    atomic_write_text(path, "\n".join(lines))
    return path


__all__ = ["export_report", "format_table", "stage_report"]
