"""Site shift: a PTB-XL-trained model's int8 export (TFLite Micro) on each CinC source, baseline vs remedies.

    python benchmarks/site_shift.py --run RUN --cinc ../shared/data/cinc --ptbxl ../shared/data/ptbxl \
        [--out runs/site-shift]

RUN is a trained run (e.g. fold 10 of a rotation, ``runs/bench-leads/leads-12/fold10``). It is copied
to --out/run (the original is only read) and exported to int8 there once (clipping chosen on its
validation fold). Each remedy is a test-time input transform in millivolts that a device can apply
to its 10-s window before the firmware's standardization, applied alike to every record of every
site:

* ``none``: the records as read (the baseline);
* ``highpass``: 0.5 Hz second-order Butterworth high-pass, zero phase (sosfiltfilt over the window):
  removes the baseline wander and offsets that differ between sites' acquisition chains;
* ``record-gain``: per record and lead, the window's median removed and its standard deviation
  scaled to the training folds' (the run's standardization): removes gain differences between sites,
  and with them the absolute voltage (a cost on HYP is expected).

Every remedy is scored by :func:`edge_ecg.external_eval.evaluate_external` (int8, thresholds from the
run's export) on every labelled CinC record, per source, and on the run's own PTB-XL test fold (the
in-distribution cost). Each row gives the macro AUC with its 95 % bootstrap interval and the paired
bootstrap difference to the baseline on the same records (edge_ecg.metrics.paired_bootstrap), over the
classes with both label values in that subset.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES

REMEDIES = ("none", "highpass", "record-gain")


def transform(name: str, x_mv: np.ndarray, rate: int, train_std: np.ndarray) -> np.ndarray:
    """Records (N, T, L) in mV after remedy ``name``."""
    import scipy.signal

    x = np.asarray(x_mv, np.float32)
    if name == "none":
        return x
    if name == "highpass":
        sos = scipy.signal.butter(2, 0.5, btype="highpass", fs=rate, output="sos")
        return scipy.signal.sosfiltfilt(sos, x, axis=1).astype(np.float32)
    if name == "record-gain":
        centred = x - np.median(x, axis=1, keepdims=True)
        sd = centred.std(axis=1, keepdims=True)
        sd[sd < 1e-3] = 1.0  # a flat (or zero-padded) lead is left alone, not blown up
        return (centred * (np.asarray(train_std, np.float32) / sd)).astype(np.float32)
    raise ValueError(f"unknown remedy {name!r}; use one of {', '.join(REMEDIES)}")


def scored(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, probs, source per record) written by evaluate_external into ``out``."""
    import csv

    p = out / "predictions"
    ids = np.load(p / "external_ecg_ids.npy")
    with open(out / "records.csv", newline="") as fh:
        source_of = {int(r["ecg_id"]): r["source"] for r in csv.DictReader(fh)}
    sources = np.asarray([source_of[int(i)] for i in ids])
    return ids, np.load(p / "external_labels.npy"), np.load(p / "external_probs.npy"), sources


def compare(labels, probs, base_probs, n_boot: int) -> dict:
    from edge_ecg.metrics import bootstrap_auc, macro_auc, paired_bootstrap

    pos = labels.sum(axis=0)
    defined = [c for c in range(len(CLASSES)) if 0 < pos[c] < len(labels)]
    y, p, b = labels[:, defined], probs[:, defined], base_probs[:, defined]
    return {"records": int(len(labels)), "classes": [CLASSES[c] for c in defined], "macro_auc": macro_auc(y, p),
            "ci95": list(bootstrap_auc(y, p, n_boot=n_boot)), "vs_none": paired_bootstrap(y, p, b, n_boot=n_boot)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained 12-lead (or any) run folder; only read")
    parser.add_argument("--cinc", required=True, help="CinC folder (e.g. ../shared/data/cinc)")
    parser.add_argument("--ptbxl", help="PTB-XL folder for the in-distribution cost (default: the run's data)")
    parser.add_argument("--out", default="runs/site-shift")
    parser.add_argument("--remedies", nargs="+", default=list(REMEDIES), choices=REMEDIES)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()

    from edge_ecg.data import Standardizer, load_dataset, load_ptbxl
    from edge_ecg.data.leads import select_leads
    from edge_ecg.export import export
    from edge_ecg.external_eval import evaluate_external
    from edge_ecg.runfolder import RunFolder
    from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, read_run_config

    out = Path(args.out)
    run = out / "run"
    if not run.is_dir():
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("export", "bench", "external", "firmware"))
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    ptbxl = load_ptbxl(args.ptbxl or RunFolder(run).data_dir())
    if not RunFolder(run).export_report.is_file():
        # max_drop=1.0: the int8 model is what is measured here, whatever its loss against the float one
        export(run, dataset=ptbxl, progress=False, n_boot=200, max_drop=1.0)
    std = Standardizer.load(run / STANDARDIZATION_FILE).std
    window = int(json.loads(RunFolder(run).export_report.read_text())["tflite"]["input"]["shape"][1])
    cinc = load_dataset(args.cinc, config.rate, window=window, leads=config.leads)
    own = select_leads(ptbxl, config.leads)
    own = replace(own.select(own.folds == config.test_fold), root=own.root)
    sites = {"cinc": cinc, "ptbxl": own}

    results: dict[str, dict] = {}
    for remedy in args.remedies:
        for site, ds in sites.items():
            folder = out / remedy / site
            if not (folder / "metrics.json").is_file():
                changed = replace(ds, signals=transform(remedy, ds.signals, config.rate, std))
                evaluate_external(run, None, folder, model="int8", dataset=changed, plots=False, n_boot=200)
            results[(remedy, site)] = scored(folder)

    rows = []
    for site in sites:
        base_ids, labels, base, sources = results[("none", site)]
        groups = {"all": np.ones(len(base_ids), bool)} if site == "ptbxl" else {
            "all CinC": np.ones(len(base_ids), bool), **{s: sources == s for s in sorted(set(sources.tolist()))}}
        for remedy in args.remedies:
            ids, y, p, _ = results[(remedy, site)]
            assert np.array_equal(ids, base_ids) and np.array_equal(y, labels), "remedies must score the same records"
            for group, sel in groups.items():
                rows.append({"site": "PTB-XL fold %d" % config.test_fold if site == "ptbxl" else group, "remedy": remedy,
                             **compare(y[sel], p[sel], base[sel], args.n_boot)})
    lines = [f"int8 (TFLite Micro) macro AUC by site and test-time remedy; run {args.run}; paired bootstrap "
             f"({args.n_boot}) against 'none' on the same records, over the classes present in each subset",
             f"{'site':<20} {'remedy':<12} {'records':>7} {'macro AUC [95% CI]':>24} {'vs none [95% CI]':>26}  classes"]
    for r in rows:
        d = r["vs_none"]
        lines.append(f"{r['site']:<20} {r['remedy']:<12} {r['records']:>7} "
                     f"{r['macro_auc']:.4f} [{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}] "
                     f"{d['difference']:+.4f} [{d['ci95'][0]:+.3f},{d['ci95'][1]:+.3f}]  {','.join(r['classes'])}")
    text = "\n".join(lines)
    (out / "site_shift.txt").write_text(text + "\n")
    (out / "site_shift.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
