"""Hardware-aware search, then the chosen dscnn judged once on the ten-fold rotation, float and int8.

    python benchmarks/search.py --data ../shared/data/ptbxl --out runs/bench-search \\
        [--target cortex-m4 --flash 64 --ram 32 --max-macs 5000000 --trials 24 --search-folds 8 9 10 --search-epochs 20] \\
        [--epochs 20 --seed 0] [--baseline DIR] [--goal 0.895] [--no-int8]

1. ``edge_ecg.search.search`` in --out/search (or --search DIR): the same study `edge-ecg search`
   writes, so a search started from the command line continues here with the same options.
   Selection reads only the search folds' validation folds.
2. The chosen shape (chosen.json) trains through the rotation of edge_ecg.cv (test k, validate
   k+1) in --out/judge with --epochs and --seed; nothing of the search is reused, and its test
   folds are read here for the first time.
3. With int8 (default), every fold's model is exported through TFLite Micro (benchmarks/models.py
   ``int8_rotations``: input clipping chosen on the fold's validation records).
4. The pooled macro AUCs with 95 % bootstrap intervals, the paired bootstrap difference against
   the default dscnn's rotation (--baseline DIR: an existing one with the same epochs and seed;
   else trained in --out/dscnn) and the --goal. Records of the search's validation folds
   steered the choice, so the pooled AUC over the other folds is also given.

The table goes to --out/search_table.txt and .json; every step resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np


def pooled(folder: Path) -> dict:
    from edge_ecg import cv

    ids, labels, probs, folds = cv.pooled_predictions(folder)
    return {"ids": ids, "labels": labels, "probs": probs, "folds": folds}


def check_baseline(folder: Path, judge) -> None:
    """The baseline must be the default dscnn trained like the judged shape (only the shape differs)."""
    from edge_ecg.runfolder import CV_FILE

    saved = json.loads((folder / CV_FILE).read_text())["train"]
    want = {**asdict(judge), "arch_kwargs": {}}
    diff = sorted(k for k in ("arch", "arch_kwargs", "data", "rate", "epochs", "batch_size", "learning_rate", "patience",
                              "seed", "augment", "class_weighted", "train_limit", "teacher", "leads") if saved.get(k) != want[k])
    if diff:
        raise SystemExit(f"--baseline {folder}: not the default dscnn trained like the judged shape (differs in {', '.join(diff)})")


def main() -> None:
    from edge_ecg.data import load_ptbxl
    from edge_ecg.search import CHOSEN_FILE, FRONT_JSON, Constraints, SearchSettings, search
    from edge_ecg.train import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/bench-search")
    p.add_argument("--search", metavar="DIR", help="the search folder (default: OUT/search)")
    p.add_argument("--target", default="cortex-m4", choices=("cortex-m4", "esp32", "esp32s3"))
    p.add_argument("--flash", type=float, default=64.0, metavar="KB")
    p.add_argument("--ram", type=float, default=32.0, metavar="KB")
    p.add_argument("--max-macs", type=int, default=5_000_000)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--search-folds", type=int, nargs="+", default=[8, 9, 10])
    p.add_argument("--search-epochs", type=int, default=20, help="epochs of each search trial (default: 20)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the judged rotation (default: 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", metavar="DIR", help="rotation folder of the default dscnn, same --epochs and --seed")
    p.add_argument("--goal", type=float, default=0.895, help="pooled macro AUC to reach (default: 0.895)")
    p.add_argument("--no-int8", action="store_true", help="judge the float models only")
    args = p.parse_args()

    from edge_ecg import cv
    from edge_ecg.metrics import bootstrap_auc, macro_auc, paired_bootstrap

    data = str(Path(args.data).resolve())
    out = Path(args.out)
    search_dir = Path(args.search) if args.search else out / "search"
    dataset = load_ptbxl(data, 100)
    base = TrainConfig(arch="dscnn", data=data, seed=args.seed)
    settings = SearchSettings(target=args.target, constraints=Constraints(args.flash, args.ram, args.max_macs),
                              folds=tuple(args.search_folds), seed=args.seed)
    front = search(search_dir, replace(base, epochs=args.search_epochs), settings, trials=args.trials, dataset=dataset)
    chosen = json.loads((search_dir / CHOSEN_FILE).read_text())
    print(f"chosen: {' '.join(chosen['arch_args'])} (validation macro AUC {chosen['val_macro_auc']:.4f})", flush=True)

    judge = replace(base, epochs=args.epochs, arch_kwargs=chosen["arch_kwargs"])
    cv.cross_validate(out / "judge", judge, dataset=dataset, progress=False)
    if args.baseline:
        baseline = Path(args.baseline)
        check_baseline(baseline, judge)
    else:
        baseline = out / "dscnn"
        cv.cross_validate(baseline, replace(judge, arch_kwargs={}), dataset=dataset, progress=False)
    rows = {"dscnn (default shape)": pooled(baseline), "searched": pooled(out / "judge")}
    if not args.no_int8:
        from models import int8_rotations  # benchmarks/models.py: this folder is sys.path[0] when run as a script

        rows["searched int8 (TFLM)"] = pooled(int8_rotations(out / "judge", dataset)["int8"])
    ref = rows["dscnn (default shape)"]
    for r in rows.values():
        assert np.array_equal(r["ids"], ref["ids"]), "the rotations must hold the same records"
    labels, folds = ref["labels"], ref["folds"]
    unseen = ~np.isin(folds, [k % 10 + 1 for k in settings.folds])  # folds whose records never scored a trial

    cost = json.loads((search_dir / FRONT_JSON).read_text())["chosen"]
    lines = [f"Search on {args.target} (flash {args.flash:g} KB, RAM {args.ram:g} KB, {args.max_macs:,} MACs): "
             f"{front['trained']} shapes trained ({args.search_epochs} epochs, search folds {' '.join(map(str, settings.folds))}), "
             f"{front['pruned']} pruned before training",
             f"chosen: {' '.join(chosen['arch_args'])}",
             f"  {cost['flash_bytes'] / 1024:.1f} KB flash, {cost['ram_bytes'] / 1024:.1f} KB RAM, {cost['macs']:,} MACs, "
             f"{cost['latency_ms']:.1f} ms ({cost['latency_method']}); validation macro AUC {chosen['val_macro_auc']:.4f}",
             f"Rotation ({args.epochs} epochs, seed {args.seed}), pooled over {len(labels)} records; "
             f"'other folds' = the {int(unseen.sum())} records outside the search's validation folds",
             f"{'model':<24} {'macro AUC [95% CI]':>24} {'vs default [95% CI]':>26} {'other folds':>11} {'goal ' + format(args.goal, 'g'):>10}"]
    table = {"search_dir": str(search_dir), "chosen": chosen, "cost": cost, "goal": args.goal, "rows": {}}
    for name, r in rows.items():
        auc = macro_auc(labels, r["probs"])
        lo, hi = bootstrap_auc(labels, r["probs"], n_boot=1000, seed=0)
        d = paired_bootstrap(labels, r["probs"], ref["probs"], n_boot=1000) if r is not ref else None
        other = macro_auc(labels[unseen], r["probs"][unseen])
        met = "met" if auc >= args.goal else "not met"
        dtext = f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f},{d['ci95'][1]:+.4f}]" if d else "-"
        lines.append(f"{name:<24} {f'{auc:.4f} [{lo:.4f}, {hi:.4f}]':>24} {dtext:>26} {other:>11.4f} {met:>10}")
        table["rows"][name] = {"macro_auc": auc, "ci95": [lo, hi], "vs_default": d, "other_folds_macro_auc": other,
                               "goal_met": auc >= args.goal}
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_table.txt").write_text(text + "\n")
    (out / "search_table.json").write_text(json.dumps(table, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
