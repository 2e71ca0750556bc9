"""The compression stage's report: ``compress/report.md`` with a size/accuracy figure, linked from ``index.md``.

Made from ``compress.json`` alone (no model is loaded or exported): the trained float model and
each stage of the chain, with validation macro AUC (fold 9, the fold that chose each stage's best
epoch), zero weights, parameters, MACs and the int8 byte estimate. Exporting every variant and
scoring it through TFLite Micro on the test fold is ``benchmarks/compression.py`` (``compression.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_ecg.runfolder import COMPRESS_FIGURES, RunFolder, atomic_write_text, write_index


def write_report(run: str | os.PathLike, report: dict) -> Path:
    """Write ``compress/report.md`` and its figures from compress.json's content; refresh the run's index."""
    from edge_ecg import plots

    folder = RunFolder(run)
    rows = [report["float"], *report["stages"]] if report.get("float") else list(report["stages"])
    # stages finished by an older edge-ecg lack the zero count: shown dense
    rows = [{"nonzero_int8_bytes": r["int8_bytes"], **r} for r in rows]
    tradeoff, sizes = (folder.compress / name for name in COMPRESS_FIGURES)
    plots.compression_tradeoff(rows, tradeoff, title="compression: validation macro AUC against size")
    plots.compression_sizes(rows, sizes, title="int8 size and MACs per stage")
    atomic_write_text(folder.compress_markdown, markdown(report, rows))
    write_index(folder.root)
    return folder.compress_markdown


def _auc(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown(report: dict, rows: list[dict]) -> str:
    tradeoff, sizes = COMPRESS_FIGURES
    base = rows[0]
    lines = [
        f"# Compression of `{Path(report['run']).name}`: {' → '.join(r['name'] for r in rows)}",
        "",
        f"- `compress/final.h5` (what `edge-ecg export` takes) is the last stage, `{report['final']}`.",
        "- validation macro AUC: fold 9, on which each stage kept its best epoch (fold 10 decides nothing here; "
        "the export report scores the int8 model on it).",
        "- zero weights: exactly-zero convolution and dense kernel weights; est. int8 bytes: int8 weights, int32 "
        "biases and float32 per-channel scales (zeros included, as TFLite stores them; the `.tflite` adds the graph "
        "and tensor metadata); without zeros: what a sparse format could save at most. Parameters of a QAT stage "
        "include its quantizer ranges.",
        "",
        "| stage | val macro AUC | Δ vs float | zero weights | parameters | MACs/record | est. int8 bytes | without zero weights |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        delta = "" if r is base or r.get("val_auc") is None or base.get("val_auc") is None else f"{r['val_auc'] - base['val_auc']:+.4f}"
        lines.append(
            f"| {r['name']} | {_auc(r.get('val_auc'))} | {delta} | {r['sparsity']:.1%} | {r['params']:,} "
            f"| {r['macs']:,} | {r['int8_bytes']:,} | {r['nonzero_int8_bytes']:,} |"
        )
    lines += ["", f"![validation AUC against size]({tradeoff})", "", f"![int8 size and MACs per stage]({sizes})", ""]
    return "\n".join(lines)


__all__ = ["write_report"]
