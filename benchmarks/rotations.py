"""Finished ten-fold rotations side by side: pooled macro AUC, paired differences, and what validation saw.

    python benchmarks/rotations.py --reference inception=runs/bench-cv/inception_cnn_full \\
        dscnn=ROTATION "dscnn int8"=ROTATION-int8 ... [--json FILE] [--n-boot 1000]

Each NAME=FOLDER is a rotation folder of ``edge-ecg evaluate --cv`` (or a pseudo-rotation of int8
test probabilities, such as benchmarks/models.py's ``*-int8``). All must hold the same labelled
records. The table gives each rotation's pooled out-of-fold macro AUC with its 95 % bootstrap
interval, the paired bootstrap difference against the reference on the same records, and the mean
over folds of the validation AUC of the model each fold kept (``state/state.json``'s ``best_auc``;
"-" where the folder holds predictions only). That last column is the only one a choice between
recipes may use: the pooled test AUC judges the chosen one, once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _named(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=FOLDER")
    return name, Path(folder)


def validation_auc(cv_dir: Path) -> float | None:
    """Mean over the ten folds of the kept model's validation AUC, or None if a fold has no training state."""
    from edge_ecg.cv import FOLDS, fold_dir
    from edge_ecg.runfolder import STATE_DIR

    values = []
    for k in FOLDS:
        state = fold_dir(cv_dir, k) / STATE_DIR / "state.json"
        if not state.is_file():
            return None
        values.append(json.loads(state.read_text())["best_auc"])
    return float(np.mean(values))


def compare(reference: tuple[str, Path], others: list[tuple[str, Path]], *, n_boot: int = 1000) -> dict:
    """Pooled AUC [95 % CI], paired difference against ``reference`` and mean validation AUC of every rotation."""
    from edge_ecg.cv import pooled_predictions
    from edge_ecg.metrics import bootstrap_auc, macro_auc, paired_bootstrap
    from edge_ecg.train import RunError

    ref_name, ref_dir = reference
    pooled = [(name, folder, pooled_predictions(folder)) for name, folder in [reference, *others]]  # each read once
    ref_ids, ref_y, ref_p, _ = pooled[0][2]
    for _, folder, (ids, y, _, _) in pooled[1:]:  # every pairing checked before any bootstrap
        if not (np.array_equal(ids, ref_ids) and np.array_equal(y, ref_y)):
            raise RunError(f"{folder}: its {len(ids)} records or labels differ from the reference {ref_dir}'s {len(ref_ids)}; "
                           "a paired comparison needs the same records")
    rows = []
    for i, (name, folder, (_, y, p, _)) in enumerate(pooled):
        lo, hi = bootstrap_auc(y, p, n_boot=n_boot)
        row = {"name": name, "folder": str(folder), "macro_auc": macro_auc(y, p), "ci95": [lo, hi],
               "validation_auc": validation_auc(folder)}
        if i > 0:
            row["minus_reference"] = paired_bootstrap(y, p, ref_p, n_boot=n_boot)
        rows.append(row)
    return {"reference": ref_name, "records": int(len(ref_ids)), "n_boot": n_boot, "rotations": rows}


def table(result: dict) -> str:
    lines = [f"{result['records']} records; paired differences against {result['reference']} ({result['n_boot']} resamples)",
             f"{'rotation':<36} {'pooled macro AUC [95% CI]':>26} {'minus reference [95% CI]':>28} {'mean val AUC':>12}"]
    for r in result["rotations"]:
        diff = r.get("minus_reference")
        shown = "0" if diff is None else f"{diff['difference']:+.4f} [{diff['ci95'][0]:+.4f},{diff['ci95'][1]:+.4f}]"
        val = "-" if r["validation_auc"] is None else f"{r['validation_auc']:.4f}"
        lines.append(f"{r['name']:<36} {r['macro_auc']:>8.4f} [{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}] {shown:>28} {val:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=_named, required=True, metavar="NAME=FOLDER", help="the rotation every other is paired against")
    parser.add_argument("rotations", type=_named, nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args(argv)
    from edge_ecg.runfolder import atomic_write_json
    from edge_ecg.train import RunError

    try:
        result = compare(args.reference, args.rotations, n_boot=args.n_boot)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
