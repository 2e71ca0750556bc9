"""Site shift: a PTB-XL-trained model's int8 export (TFLite Micro) on each CinC source, baseline vs remedies.

    python benchmarks/site_shift.py --run RUN --cinc ../shared/data/cinc --ptbxl ../shared/data/ptbxl \
        [--out runs/site-shift]

RUN is a trained run (e.g. fold 10 of a rotation, ``runs/bench-leads/leads-12/fold10``). It is copied
to --out/run (the original is only read) and exported to int8 there once (clipping chosen on its
validation fold). Each remedy is a test-time input transform in millivolts that a device can apply
to its 10-s window before the firmware's standardization, applied alike to every record of every
site:

* ``none``: the records as read (the baseline);
* ``highpass``: 0.5 Hz second-order Butterworth high-pass, zero phase over the window: the firmware's
  filter (``edge_ecg.preprocess.highpass_filter``, what ``train --highpass 0.5`` builds into a run), here
  on a model trained without it; removes the baseline wander and offsets that differ between sites'
  acquisition chains;
* ``record-gain``: per record and lead, the window's median removed and its standard deviation
  scaled to the training folds' (the run's standardization): removes gain differences between sites,
  and with them the absolute voltage (a cost on HYP is expected).

Every remedy is scored by :func:`edge_ecg.external_eval.evaluate_external` (int8, thresholds from the
run's export) on every labelled CinC record, per source, and on the run's own PTB-XL test fold (the
in-distribution cost). Each row gives the macro AUC with its 95 % bootstrap interval and the paired
bootstrap difference to the baseline on the same records (edge_ecg.metrics.paired_bootstrap), over the
classes with both label values in that subset.

Training-time remedies (``--trained NAME=RUN``, repeatable): RUN is a run trained like --run but with
the remedy (e.g. fold 10 of a rotation trained with ``--augment-site``, same test fold). It is copied to
--out/NAME/run, exported the same way, and its int8 model scored with no test-time remedy on the same
records, paired against the baseline's (row remedy NAME).

Fine-tuning on the new site (``--shots 10 20 40 --draws 3``): for each draw d a pool of ``--pool``
labelled CinC records is drawn at random (seed d) and held apart; the remaining records are that draw's
test records, on which every point of the curve is scored. Point k fine-tunes the baseline run on the
first k records of the pool (nested: 10 within 20 within 40) with
:func:`edge_ecg.site_tune.fine_tune_site` (all layers, a fixed number of epochs, ``--replay`` records of
the run's PTB-XL training folds replayed), exports it with the baseline's input clipping, and scores
it (int8, TFLite Micro) on the draw's test records, paired against the baseline (k = 0) on the same
records; the largest k is also scored on the PTB-XL test fold (what the site's model forgot). The mean over draws has an interval from the averaged paired bootstrap
replicates of the draws (the same replicate index in every draw).
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
    from edge_ecg.preprocess import highpass_coefficients, highpass_filter

    x = np.asarray(x_mv, np.float32)
    if name == "none":
        return x
    if name == "highpass":
        return highpass_filter(x, highpass_coefficients(0.5, rate))
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


def boot_differences(labels, probs, base_probs, n_boot: int) -> np.ndarray:
    """Paired bootstrap replicates of macro AUC(probs) - macro AUC(base_probs), classes present in ``labels``."""
    from edge_ecg.metrics import bootstrap_samples, macro_auc

    pos = labels.sum(axis=0)
    d = [c for c in range(len(CLASSES)) if 0 < pos[c] < len(labels)]
    y, p, b = labels[:, d], probs[:, d], base_probs[:, d]
    return np.asarray([macro_auc(y[i], p[i]) - macro_auc(y[i], b[i]) for i in bootstrap_samples(y, n_boot, 0)])


def export_like(run: Path, ptbxl, clip_sigma) -> None:
    """The run's int8 export (once), calibrated on its training folds, with the given input clipping."""
    from edge_ecg.export import export
    from edge_ecg.runfolder import RunFolder

    if not RunFolder(run).export_report.is_file():
        # max_drop=1.0: the int8 model is what is measured here, whatever its loss against the float one
        export(run, dataset=ptbxl, progress=False, n_boot=200, max_drop=1.0, clip_sigma=clip_sigma)


def fine_tune_curve(args, out: Path, run: Path, cinc, own, ptbxl, clip_sigma, base: dict) -> list[dict]:
    """The few-shot learning curve (see the module doc); rows per draw and k, plus the mean over draws."""
    from edge_ecg.external_eval import evaluate_external
    from edge_ecg.site_tune import fine_tune_site

    ids_all = np.unique(cinc.ecg_ids)
    rows, replicates = [], {}
    for draw in range(args.draws):
        pool = np.random.default_rng(draw).permutation(ids_all)[: args.pool]
        test_ids = np.setdiff1d(ids_all, pool)
        b_ids, b_y, b_p, _ = base[("none", "cinc")]
        keep = np.isin(b_ids, test_ids)
        test = cinc.select(np.isin(cinc.ecg_ids, test_ids))
        pb_ids, pb_y, pb_p, _ = base[("none", "ptbxl")]
        for k in args.shots:
            folder = out / "fine-tune" / f"draw{draw}" / f"k{k}"
            if not (folder / "cinc" / "metrics.json").is_file():
                if not (folder / "run" / "model.keras").is_file():
                    fine_tune_site(run, cinc, pool[:k], folder / "run", epochs=args.fine_tune_epochs, learning_rate=args.fine_tune_lr,
                                   seed=draw, replay=ptbxl, replay_limit=args.replay, exclude=test_ids)
                export_like(folder / "run", ptbxl, clip_sigma)
                evaluate_external(folder / "run", None, folder / "cinc", model="int8", dataset=test, plots=False, n_boot=200)
            if k == max(args.shots) and not (folder / "ptbxl" / "metrics.json").is_file():  # forgetting: the largest k only
                evaluate_external(folder / "run", None, folder / "ptbxl", model="int8", dataset=own, plots=False, n_boot=200)
            ids, y, p, _ = scored(folder / "cinc")
            assert np.array_equal(ids, b_ids[keep]) and np.array_equal(y, b_y[keep]), "curve points must score the same records"
            assert not set(ids.tolist()) & set(pool.tolist()), "a fine-tune record was scored"
            row = compare(y, p, b_p[keep], args.n_boot)
            replicates.setdefault(k, []).append(boot_differences(y, p, b_p[keep], args.n_boot))
            rows.append({"draw": draw, "k": k, **row, "baseline_macro_auc": compare(y, b_p[keep], b_p[keep], 10)["macro_auc"]})
            if (folder / "ptbxl" / "metrics.json").is_file():
                q_ids, q_y, q_p, _ = scored(folder / "ptbxl")
                assert np.array_equal(q_ids, pb_ids)
                rows[-1]["ptbxl"] = compare(q_y, q_p, pb_p, args.n_boot)
    for k in args.shots:
        mine = [r for r in rows if r["k"] == k]
        mean = np.mean(replicates[k], axis=0)
        lo, hi = np.quantile(mean, [0.025, 0.975])
        rows.append({"draw": "mean", "k": k, "records": int(np.mean([r["records"] for r in mine])),
                     "macro_auc": float(np.mean([r["macro_auc"] for r in mine])),
                     "baseline_macro_auc": float(np.mean([r["baseline_macro_auc"] for r in mine])),
                     "vs_none": {"difference": float(np.mean([r["vs_none"]["difference"] for r in mine])), "ci95": [float(lo), float(hi)]},
                     "ptbxl_vs_none": float(np.mean([r["ptbxl"]["vs_none"]["difference"] for r in mine])) if all("ptbxl" in r for r in mine) else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained 12-lead (or any) run folder; only read")
    parser.add_argument("--cinc", required=True, help="CinC folder (e.g. ../shared/data/cinc)")
    parser.add_argument("--ptbxl", help="PTB-XL folder for the in-distribution cost (default: the run's data)")
    parser.add_argument("--out", default="runs/site-shift")
    parser.add_argument("--remedies", nargs="+", default=list(REMEDIES), choices=REMEDIES)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--trained", action="append", default=[], metavar="NAME=RUN",
                        help="a run trained with a training-time remedy (same test fold as --run); repeatable")
    parser.add_argument("--shots", type=int, nargs="*", default=[], help="fine-tune curve points, e.g. 10 20 40 (none: no curve)")
    parser.add_argument("--draws", type=int, default=3, help="random fine-tune pools (default: 3)")
    parser.add_argument("--pool", type=int, default=40, help="records held apart for fine-tuning per draw (default: 40)")
    parser.add_argument("--fine-tune-epochs", type=int, default=10)
    parser.add_argument("--fine-tune-lr", type=float, default=5e-4)
    parser.add_argument("--replay", type=int, default=256, help="PTB-XL training records replayed in each fine-tune (default: 256)")
    args = parser.parse_args()
    args.remedies = list(dict.fromkeys(["none", *args.remedies]))  # the baseline every row is paired with
    if args.shots and max(args.shots) > args.pool:
        parser.error(f"--shots {max(args.shots)} is more than the --pool of {args.pool} records")

    from edge_ecg.data import Standardizer, load_dataset, load_ptbxl
    from edge_ecg.data.leads import select_leads
    from edge_ecg.external_eval import evaluate_external
    from edge_ecg.runfolder import RunFolder
    from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, read_run_config

    out = Path(args.out)
    run = out / "run"
    if not run.is_dir():
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("export", "bench", "external", "firmware"))
    config = TrainConfig.from_dict(read_run_config(run)["train"])
    ptbxl = load_ptbxl(args.ptbxl or RunFolder(run).data_dir())
    export_like(run, ptbxl, "auto")
    clip_sigma = json.loads(RunFolder(run).export_report.read_text())["calibration"]["clip_sigma"]
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
    trained = dict(t.split("=", 1) for t in args.trained)
    for name, other in trained.items():
        other_run = out / name / "run"
        if not other_run.is_dir():
            shutil.copytree(other, other_run, ignore=shutil.ignore_patterns("export", "bench", "external", "firmware"))
        other_config = TrainConfig.from_dict(read_run_config(other_run)["train"])
        if (other_config.test_fold, other_config.leads, other_config.rate) != (config.test_fold, config.leads, config.rate):
            raise SystemExit(f"--trained {name}={other}: its test fold, leads or rate differ from --run's")
        export_like(other_run, ptbxl, "auto")
        for site, ds in sites.items():
            folder = out / name / site
            if not (folder / "metrics.json").is_file():
                evaluate_external(other_run, None, folder, model="int8", dataset=ds, plots=False, n_boot=200)
            results[(name, site)] = scored(folder)
    remedies = [*args.remedies, *trained]
    curve = fine_tune_curve(args, out, run, cinc, sites["ptbxl"], ptbxl, clip_sigma, results) if args.shots else []

    rows = []
    for site in sites:
        base_ids, labels, base, sources = results[("none", site)]
        groups = {"all": np.ones(len(base_ids), bool)} if site == "ptbxl" else {
            "all CinC": np.ones(len(base_ids), bool), **{s: sources == s for s in sorted(set(sources.tolist()))}}
        for remedy in remedies:
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
    if curve:
        lines += ["", f"fine-tuning on k CinC records (pool of {args.pool} held apart per draw, {args.draws} draws); int8 (TFLite "
                  f"Micro) macro AUC on each draw's remaining CinC records, paired bootstrap ({args.n_boot}) against k = 0 "
                  "(the baseline) on the same records; PTB-XL: the same models on the PTB-XL test fold",
                  f"{'draw':<5} {'k':>3} {'records':>7} {'k=0 AUC':>8} {'macro AUC':>10} {'vs k=0 [95% CI]':>26} {'PTB-XL vs k=0':>14}"]
        for r in curve:
            d = r["vs_none"]
            ptb = r["ptbxl"]["vs_none"]["difference"] if "ptbxl" in r else r.get("ptbxl_vs_none")
            lines.append(f"{r['draw']!s:<5} {r['k']:>3} {r['records']:>7} {r['baseline_macro_auc']:>8.4f} {r['macro_auc']:>10.4f} "
                         f"{d['difference']:+.4f} [{d['ci95'][0]:+.3f},{d['ci95'][1]:+.3f}] " + (f"{ptb:>+14.4f}" if ptb is not None else f"{'-':>14}"))
    text = "\n".join(lines)
    (out / "site_shift.txt").write_text(text + "\n")
    (out / "site_shift.json").write_text(json.dumps({"remedies": rows, "fine_tune": curve}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
