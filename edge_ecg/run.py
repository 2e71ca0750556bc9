"""The whole pipeline on one run folder: data, train, compress, export, firmware, bench on the emulator.

Each stage is the same call the CLI makes for it, and each resumes: rerunning the
command after an interruption continues where it stopped.
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
    progress: bool = True,
) -> dict:
    """Run every stage into ``run``; return each stage's key figures (also in ``run/pipeline.json``)."""
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
    config = TrainConfig(arch=arch, data=str(Path(data).resolve()) if data else None, epochs=p["epochs"], seed=seed)
    stages = {"data": {k: v for k, v in dataset.summary().items() if k in ("records", "labelled", "skipped")}}

    say(f"2/6 train {arch} ({p['epochs']} epochs max)")
    state = train(run, config, dataset=dataset, progress=progress)
    report = evaluate(run, dataset=dataset)
    stages["train"] = {"best_epoch": state["best_epoch"], "val_auc": state["best_auc"], "test_macro_auc": report["test"]["macro_auc"]}

    say("3/6 compress (quantization-aware training)")
    comp = compress(run, prune=p["prune"], qat=True, epochs=p["compress_epochs"], dataset=dataset, progress=progress)
    stages["compress"] = {s["name"]: {"val_auc": s["val_auc"], "sparsity": s["sparsity"]} for s in comp["stages"]}

    say("4/6 export (int8, TFLite Micro check, C sources)")
    exp = export(run, dataset=dataset, progress=progress)
    stages["export"] = {"tflite_bytes": exp["tflite"]["bytes"], "arena_bytes": exp["arena"]["recommended_bytes"], **exp["parity"]}

    say(f"5/6 firmware for {target}")
    fw = build(run, target)
    stages["build"] = {"project_dir": fw["project_dir"], "built": fw["built"], "commands": fw.get("commands")}

    say("6/6 bench on the TFLite Micro host emulator")
    summary = bench(run, emulator="tflm", resume=True, dataset=dataset, progress=progress)
    stages["bench"] = {"records": summary["records"], "identical_to_reference": summary["identical_to_reference"],
                       "macro_auc": summary.get("macro_auc"), "median_latency_us": summary["latency"].get("median_us")}
    write_json(run / "pipeline.json", {"preset": preset, "arch": arch, "stages": stages})
    return stages
