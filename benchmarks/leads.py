"""Reduced-lead models: lead set vs size, cost and rotation macro AUC, paired against 12 leads.

    python benchmarks/leads.py --data ../shared/data/ptbxl --cv [--epochs 20] [--out runs/bench-leads]
    python benchmarks/leads.py --data ../shared/data/ptbxl            (fold 10 of the rotation only)
    python benchmarks/leads.py --data ../shared/data/ptbxl --cv --sets 1 3 12 I,II,V5 --export 1 3

Each lead set (``--leads`` presets, see edge_ecg.data.leads) trains dscnn through the ten-fold
rotation of edge_ecg.cv (test k, validate k+1), one resumable rotation folder per set under
--out. The table (also --out/leads_table.txt and .json) gives the input leads, parameters,
multiply-accumulates per record, estimated int8 weight bytes (edge_ecg.models.summary), with
--export the int8 .tflite bytes of fold 10's model and of its constant buffers (weights, biases),
the pooled out-of-fold macro AUC with its 95 % bootstrap interval, and the paired bootstrap
difference against the 12-lead rotation on the same records. Without --cv only fold 10 of the rotation runs, and its test records are
the "pooled" set (stated in the table's title).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES

SETS = ("12", "6", "3", "2", "1", "II")  # table order; "1" is lead I
RUN_ORDER = ("1", "3", "12", "II", "2", "6")  # the targets first (1 and 3 leads, and 12 for the paired difference)
WEIGHT_BUDGET = 32 * 1024  # target: a 1-lead and a 3-lead model within 32 KB of int8 weights


def fold_predictions(cv_dir: Path, folds: tuple[int, ...]):
    """(ids, labels, probs, folds) of the listed folds' test predictions, pooled and sorted by ecg_id.

    All ten folds: edge_ecg.cv.pooled_predictions itself. Fewer: the same files, only those folds.
    """
    from edge_ecg import cv

    if set(folds) == set(cv.FOLDS):
        return cv.pooled_predictions(cv_dir)
    parts = []
    for k in folds:
        p = cv.fold_dir(cv_dir, k) / "predictions"
        ids = np.load(p / "test_ecg_ids.npy")
        parts.append((ids, np.load(p / "test_labels.npy"), np.load(p / "test_probs.npy"), np.full(len(ids), k)))
    ids = np.concatenate([q[0] for q in parts])
    order = np.argsort(ids, kind="stable")
    return tuple(np.concatenate([q[i] for q in parts])[order] for i in range(4))


def export_bytes(cv_dir: Path, dataset) -> tuple[int, int]:
    """(.tflite bytes, bytes of its constant buffers: int8 weights + int32 biases) of fold 10's model
    converted to int8 (exported into the fold folder, once)."""
    from edge_ecg.cv import fold_dir
    from edge_ecg.export import export
    from edge_ecg.export.convert import _root

    run = fold_dir(cv_dir, 10)
    out = run / "export"
    path = out / "export.json"
    if not path.is_file():
        # max_drop=1.0: the table reports every set; a fold past export's AUC bar is measured, not refused
        export(run, dataset=dataset, clip_sigma=None, out=out, progress=False, n_boot=200, max_drop=1.0)
    tflite = (out / json.loads(path.read_text())["tflite"]["file"]).read_bytes()
    model = _root(tflite)
    graph = model.Subgraphs(0)
    buffers = {graph.Tensors(t).Buffer() for t in range(graph.TensorsLength())}
    constant = sum(model.Buffers(b).DataLength() for b in buffers if model.Buffers(b) is not None)
    return len(tflite), int(constant)


def table(rows: list[dict], title: str) -> str:
    lines = [title,
             f"{'leads':<6} {'C':>2} {'input leads':<30} {'params':>7} {'MACs/record':>11} {'int8 B est':>10} {'const B':>7} {'tflite B':>8} "
             f"{'macro AUC [95% CI]':>24} " + " ".join(f"{c:>6}" for c in CLASSES) + f" {'vs 12 leads [95% CI]':>26}"]
    for r in rows:
        ci = f"{r['macro_auc']:.4f} [{r['macro_auc_ci95'][0]:.3f},{r['macro_auc_ci95'][1]:.3f}]"
        d = r.get("vs_12")
        dtext = f"{d['difference']:+.4f} [{d['ci95'][0]:+.3f},{d['ci95'][1]:+.3f}]" if d else "-"
        per = " ".join(f"{r['per_class_auc'][c]:>6.3f}" for c in CLASSES)
        tfl = f"{r['tflite_bytes']:,}" if r.get("tflite_bytes") else "-"
        const = f"{r['constant_bytes']:,}" if r.get("constant_bytes") else "-"
        lines.append(f"{r['set']:<6} {r['channels']:>2} {','.join(r['leads']):<30} {r['params']:>7,} {r['macs']:>11,} "
                     f"{r['int8_bytes']:>10,} {const:>7} {tfl:>8} {ci:>24} {per} {dtext:>26}")
    fits = [r["set"] for r in rows if r["int8_bytes"] <= WEIGHT_BUDGET]
    lines.append(f"within {WEIGHT_BUDGET:,} B of int8 weights, estimate (weights + int32 bias + float32 scale per channel): "
                 f"{', '.join(fits) or 'none'}")
    measured = [r for r in rows if r.get("constant_bytes")]
    if measured:
        fits = [r["set"] for r in measured if r["constant_bytes"] <= WEIGHT_BUDGET]
        lines.append(f"within {WEIGHT_BUDGET:,} B, measured constant buffers of fold 10's .tflite (int8 weights + int32 "
                     f"biases; the rest of the file is flatbuffer metadata and quantization parameters): {', '.join(fits) or 'none'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="PTB-XL folder (default: $EDGE_ECG_DATA)")
    parser.add_argument("--cv", action="store_true", help="the whole ten-fold rotation (default: its fold 10 only)")
    parser.add_argument("--folds", help="comma list of the rotation's test folds to run (overrides --cv), e.g. 9,10")
    parser.add_argument("--epochs", type=int, default=20, help="maximum epochs per fold (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=list(RUN_ORDER), metavar="SET",
                        help=f"lead sets to run, in this order: presets or comma lists of names (default: {' '.join(RUN_ORDER)})")
    parser.add_argument("--export", nargs="*", metavar="SET",
                        help="also export fold 10's model to int8 and report its bytes: of the SETs named, or of every set")
    parser.add_argument("--out", default="runs/bench-leads")
    args = parser.parse_args()

    from edge_ecg import cv
    from edge_ecg.data import load_ptbxl
    from edge_ecg.data.leads import display_name, parse_leads
    from edge_ecg.models import build, summary
    from edge_ecg.train import TrainConfig

    folds = tuple(int(k) for k in args.folds.split(",")) if args.folds else (cv.FOLDS if args.cv else (10,))
    sets = args.sets
    data = str(Path(args.data).resolve()) if args.data else None
    dataset = load_ptbxl(data)
    out = Path(args.out)
    done: dict[str, dict] = {}
    for name in sets:
        leads = parse_leads(name, "--sets")
        config = TrainConfig(arch="dscnn", data=data, epochs=args.epochs, seed=args.seed, leads=list(leads))
        folder = out / f"leads-{name.replace(',', '-')}"
        cv.cross_validate(folder, config, dataset=dataset, folds=folds)
        info = summary(build("dscnn", num_leads=len(leads)))
        done[name] = {"set": name, "channels": len(leads), "leads": [display_name(x) for x in leads],
                      "params": info["params"], "macs": info["macs"], "int8_bytes": info["int8_bytes"], "epochs": args.epochs,
                      "folder": str(folder)}
        if args.export is not None and (not args.export or name in args.export):
            done[name]["tflite_bytes"], done[name]["constant_bytes"] = export_bytes(folder, dataset)
        rows, title = _report(done, folds, fold_predictions, cv)
        text = table(rows, title)
        (out / "leads_table.txt").write_text(text + "\n")
        (out / "leads_table.json").write_text(json.dumps({"folds": list(folds), "rows": rows}, indent=1) + "\n")
        print(text, flush=True)


def _report(done: dict[str, dict], folds, fold_predictions, cv) -> tuple[list[dict], str]:
    from edge_ecg.metrics import paired_bootstrap

    pooled = {n: fold_predictions(Path(r["folder"]), folds) for n, r in done.items()}
    ref = pooled.get("12")
    rows = []
    for name in [s for s in SETS if s in done] + [s for s in done if s not in SETS]:
        ids, labels, probs, f = pooled[name]
        rep = cv.report_predictions(labels, probs, f, n_boot=1000)
        row = {**done[name], **{k: rep[k] for k in ("records", "macro_auc", "macro_auc_ci95", "per_class_auc")}}
        if ref is not None and name != "12":
            assert np.array_equal(ref[0], ids), "lead sets must be scored on the same records"
            row["vs_12"] = paired_bootstrap(labels, probs, ref[2], n_boot=1000)
        rows.append(row)
    n = len(next(iter(pooled.values()))[0])
    scope = "ten-fold rotation, pooled out-of-fold" if set(folds) == set(cv.FOLDS) else f"rotation fold(s) {','.join(map(str, folds))} only"
    title = (f"dscnn by input lead set: {scope} test predictions of {n} PTB-XL records, up to {done[next(iter(done))]['epochs']} "
             "epochs; paired bootstrap (1000) difference against the 12-lead rotation on the same records")
    return rows, title


if __name__ == "__main__":
    main()
