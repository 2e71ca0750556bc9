"""The whole pipeline on one run folder: data, train, compress, export, firmware, bench on the emulator.

Each stage is the same call the CLI makes for it, and the pipeline follows the one resume
rule: rerunning the command continues where it stopped. Training and compression resume
epoch by epoch and reuse finished stages; evaluation and export are skipped when their
outputs are complete and were made from the current model; bench continues its JSONL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PRESETS = {
    # a few minutes on 2 cores: enough to exercise every stage on real data
    "quick": {"epochs": 8, "compress_epochs": 2, "prune": None},
    # the configuration the benchmarks report
    "full": {"epochs": 40, "compress_epochs": 10, "prune": 0.5},
}


@dataclass
class PipelineResult:
    run: Path
    stages: dict


def run_pipeline(
    run: str | os.PathLike,
    *,
    data: str | None = None,
    arch: str = "dscnn",
    preset: str = "quick",
    target: str = "esp32",
    seed: int = 0,
    leads: str | list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Run every stage into ``run``; return each stage's key figures (also in ``run/pipeline.json``).

    ``leads``: the model's input leads (a preset or names, see :mod:`edge_ecg.data.leads`; default all 12).
    """
    from edge_ecg.bench import bench
    from edge_ecg.compress import compress
    from edge_ecg.data import load_ptbxl
    from edge_ecg.evaluate import evaluate
    from edge_ecg.export import export
    from edge_ecg.firmware import build
    from edge_ecg.progress import console
    from edge_ecg.train import TrainConfig, train, write_json

    if preset not in PRESETS:
        import difflib

        close = difflib.get_close_matches(preset, PRESETS, n=1)
        raise ValueError(f"unknown preset {preset!r}{f'; did you mean {close[0]!r}?' if close else ''} (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    run = Path(run)
    say = (lambda text: console().print(f"[bold]{text}[/]")) if progress else (lambda text: None)

    say("1/6 data")
    dataset = load_ptbxl(data, progress=progress)
    config = TrainConfig(arch=arch, data=str(Path(data).resolve()) if data else None, epochs=p["epochs"], seed=seed,
                         **({} if leads is None else {"leads": leads}))
    stages = {"data": {k: v for k, v in dataset.summary().items() if k in ("records", "labelled", "skipped")}}

    say(f"2/6 train {arch} ({p['epochs']} epochs max)")
    state = train(run, config, dataset=dataset, progress=progress)
    report = current_evaluation(run)
    if report is None:
        report = evaluate(run, dataset=dataset)
    else:
        say("   evaluation is current (metrics.json newer than model.keras): kept")
    stages["train"] = {"best_epoch": state["best_epoch"], "val_auc": state["best_auc"], "test_macro_auc": report["test"]["macro_auc"]}

    say("3/6 compress (quantization-aware training)")
    comp = compress(run, prune=p["prune"], qat=True, epochs=p["compress_epochs"], dataset=dataset, progress=progress)
    stages["compress"] = {s["name"]: {"val_auc": s["val_auc"], "sparsity": s["sparsity"]} for s in comp["stages"]}

    say("4/6 export (int8, TFLite Micro check, C sources)")
    exp = current_export(run)
    if exp is None:
        exp = export(run, dataset=dataset, progress=progress)
    else:
        say(f"   export is current (made from {exp['model']}, sha256 {exp['model_sha256'][:12]}): kept")
    stages["export"] = {"tflite_bytes": exp["tflite"]["bytes"], "arena_bytes": exp["arena"]["recommended_bytes"], **exp["parity"]}

    say(f"5/6 firmware for {target}")
    fw = build(run, target)
    stages["build"] = {"project_dir": fw["project_dir"], "built": fw["built"], "commands": fw.get("commands")}

    say("6/6 bench on the TFLite Micro host emulator")
    from edge_ecg.bench.runner import read_jsonl
    from edge_ecg.runfolder import PIPELINE_FILE, RunFolder, write_report_json

    # continues its results unless they were measured on a model this export replaced
    header, _ = read_jsonl(RunFolder(run).bench_results("emulator-tflm"))
    fresh = header is not None and header.get("model_hash") != exp["tflite"]["sha256"]
    summary = bench(run, emulator="tflm", fresh=fresh, dataset=dataset, progress=progress)
    stages["bench"] = {"records": summary["records"], "identical_to_reference": summary["identical_to_reference"],
                       "macro_auc": summary.get("macro_auc"), "median_latency_us": summary["latency"].get("median_us")}
    return write_report_json(run / PIPELINE_FILE, {"preset": preset, "arch": arch, "stages": stages})["stages"]


def current_evaluation(run: Path) -> dict | None:
    """metrics.json when it was written after the model it scored (training never rewrites a finished model); else None."""
    import json

    from edge_ecg.evaluate import METRICS_FILE
    from edge_ecg.runfolder import RunFolder

    metrics, model = run / METRICS_FILE, RunFolder(run).model
    if not (metrics.is_file() and model.is_file()) or metrics.stat().st_mtime < model.stat().st_mtime:
        return None
    try:
        report = json.loads(metrics.read_text())
    except ValueError:
        return None
    return report if isinstance(report, dict) and "test" in report else None


def current_export(run: Path) -> dict | None:
    """export.json when every file it lists exists and it was made from the run's deployable model; else None."""
    from edge_ecg.runfolder import RunError, RunFolder, sha256_file

    folder = RunFolder(run)
    try:
        exported, model = folder.read_export(), folder.deployable_model()
    except RunError:
        return None
    if exported.get("model_sha256") != sha256_file(model):  # older exports lack it: redone once
        return None
    return exported if all((folder.export / name).exists() for name in exported.get("files", [])) else None
