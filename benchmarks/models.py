"""Train dscnn and the three reference architectures on the same split and budget; print one table.

    python benchmarks/models.py --data ../shared/data/ptbxl [--epochs 30] [--out runs/bench-models]

Each model is an ordinary run folder under --out, so an interrupted benchmark resumes
where it stopped and finished models are not retrained. The table (also written to
--out/models.json) gives parameters, multiply-accumulates per record, test (fold 10)
macro AUC with its 95 % bootstrap interval, per-class AUC and seconds per epoch on
this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from edge_ecg import CLASSES

ARCHS = ("dscnn", "cnn_base", "resnet1d_wang", "inception_cnn")


def run_one(arch: str, out: Path, data: str | None, epochs: int, seed: int, dataset) -> dict:
    from edge_ecg.evaluate import METRICS_FILE, evaluate, read_metrics
    from edge_ecg.train import HISTORY_FILE, TrainConfig, read_history, train

    run = out / arch
    config = TrainConfig(arch=arch, data=data, epochs=epochs, seed=seed)
    state = train(run, config, dataset=dataset)
    report = read_metrics(run) if (run / METRICS_FILE).is_file() and state["finished"] else evaluate(run, dataset=dataset)
    history = read_history(run / HISTORY_FILE)
    return {
        "arch": arch,
        "params": report["model"]["params"],
        "macs": report["model"]["macs"],
        "int8_bytes": report["model"]["int8_bytes"],
        "macro_auc": report["test"]["macro_auc"],
        "ci95": report["test"]["macro_auc_ci95"],
        "per_class_auc": report["test"]["per_class_auc"],
        "best_epoch": state["best_epoch"],
        "epochs_run": len(history),
        "seconds_per_epoch": statistics.median(float(r["seconds"]) for r in history),
    }


def print_table(rows: list[dict], epochs: int) -> None:
    head = f"{'model':<14} {'params':>10} {'MACs/record':>13} {'test macro AUC [95% CI]':>26} " + " ".join(f"{c:>6}" for c in CLASSES)
    print(f"Test fold 10, same split (train 1-8, select on 9), up to {epochs} epochs, early stopping on fold-9 macro AUC")
    print(head + f" {'epochs':>6} {'s/epoch':>8}")
    for r in rows:
        ci = f"{r['macro_auc']:.4f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        per = " ".join(f"{r['per_class_auc'][c]:>6.3f}" for c in CLASSES)
        print(f"{r['arch']:<14} {r['params']:>10,} {r['macs']:>13,} {ci:>26} {per} {r['epochs_run']:>6} {r['seconds_per_epoch']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="PTB-XL folder (default: $EDGE_ECG_DATA)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-models")
    parser.add_argument("--arch", action="append", choices=ARCHS, help="only these (repeatable; default: all four)")
    args = parser.parse_args()
    from edge_ecg.data import load_ptbxl

    data = str(Path(args.data).resolve()) if args.data else None
    dataset = load_ptbxl(data)
    out = Path(args.out)
    rows = []
    for arch in args.arch or ARCHS:
        rows.append(run_one(arch, out, data, args.epochs, args.seed, dataset))
        (out / "models.json").write_text(json.dumps(rows, indent=1) + "\n")  # incremental: keep what is done
    print_table(rows, args.epochs)


if __name__ == "__main__":
    main()
