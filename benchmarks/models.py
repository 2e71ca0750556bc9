"""Train dscnn and the three reference architectures on the same split and budget; print one table.

    python benchmarks/models.py --data ../shared/data/ptbxl [--epochs 30] [--out runs/bench-models]
    python benchmarks/models.py --cv --data ../shared/data/ptbxl [--out runs/bench-cv]   (ten-fold rotation)
    python benchmarks/models.py --distill --data ../shared/data/ptbxl [--out runs/bench-distill] [--folds K ...]
        (dscnn with no teacher, in-sample teacher, cross-fitted teacher; fold by fold, resumable)

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

import numpy as np

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


# --------------------------------------------------------------------------- ten-fold rotation

CV_PLAN = (
    # (row name, architecture, epochs, seed, teacher rows) -- teachers before their students.
    # Epochs are cut for the large references so the rotation fits a 2-core machine (stated in the table).
    ("dscnn", "dscnn", 20, 0, None),
    ("cnn_base", "cnn_base", 20, 0, None),
    ("dscnn distilled", "dscnn", 20, 0, ("dscnn", "cnn_base")),
    ("dscnn seed 1", "dscnn", 20, 1, None),
    ("resnet1d_wang", "resnet1d_wang", 8, 0, None),
    ("inception_cnn", "inception_cnn", 4, 0, None),
    ("dscnn seed 2", "dscnn", 20, 2, None),
    # The same teachers cross-fitted (edge_ecg.distill.cross_fit): no soft label from a model that trained on its record.
    ("dscnn distilled cross-fitted", "dscnn", 20, 0, ("crossfit:dscnn", "crossfit:cnn_base")),
    # The references under dscnn's budget (20 epochs, same patience): hours on two cores, resumable per fold.
    ("inception_cnn full", "inception_cnn", 20, 0, None),
    ("resnet1d_wang full", "resnet1d_wang", 20, 0, None),
)
SEED_ROWS = ("dscnn", "dscnn seed 1", "dscnn seed 2")  # one configuration, three seeds: mean +- sd and their ensemble
INT8_ROWS = ("dscnn", "dscnn distilled")


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def int8_rotations(cv_dir: Path, dataset) -> dict[str, Path]:
    """Export every fold's model to int8 once (clipping chosen on its validation fold) and keep, as two
    pseudo-rotation folders, the TFLite Micro test probabilities with the chosen clipping and without."""
    from edge_ecg.cv import FOLDS, fold_dir
    from edge_ecg.evaluate import save_predictions
    from edge_ecg.export import export

    outs = {"int8": cv_dir.parent / f"{cv_dir.name}-int8", "int8 no clip": cv_dir.parent / f"{cv_dir.name}-int8-noclip"}
    for k in FOLDS:
        if all((fold_dir(o, k) / "predictions" / "test_probs.npy").is_file() for o in outs.values()):
            continue
        run = fold_dir(cv_dir, k)
        target = fold_dir(outs["int8"], k)
        # max_drop=1.0: this table measures the int8 loss of every fold; a fold past export's bar is reported, not refused
        result = export(run, dataset=dataset, clip_sigma="auto", out=target / "export", progress=False, n_boot=200, max_drop=1.0)
        chosen = result["calibration"]["clip_sigma"]
        ids, labels = np.load(run / "predictions" / "test_ecg_ids.npy"), np.load(run / "predictions" / "test_labels.npy")
        assert np.array_equal(ids, np.load(target / "export" / "test_ecg_ids.npy"))
        for label, clip in (("int8", chosen), ("int8 no clip", None)):
            probs = np.load(target / "export" / "calibration" / f"test_probs_clip-{'off' if clip is None else f'{clip:g}'}.npy")
            save_predictions(fold_dir(outs[label], k), "test", ids, probs, labels)
        (target / "export.json").write_text(json.dumps({k: result[k] for k in ("tflite", "calibration", "parity")}, indent=1))
    return outs


def clip_levels_table(cv_dir: Path) -> str:
    """Every clipping level's int8 test probabilities (kept by each fold's export), pooled: input step,
    macro AUC, paired difference against no clipping, and agreement with the float model."""
    from edge_ecg import cv
    from edge_ecg.export import CLIP_CANDIDATES
    from edge_ecg.metrics import macro_auc, paired_bootstrap

    ids, labels, float_probs, _ = cv.pooled_predictions(cv_dir)
    levels = ["off" if c is None else f"{c:g}" for c in CLIP_CANDIDATES]
    fold_ids, probs, steps, chosen = [], {c: [] for c in levels}, {c: [] for c in levels}, []
    for k in cv.FOLDS:
        export_dir = cv.fold_dir(cv_dir.parent / f"{cv_dir.name}-int8", k)
        fold_ids.append(np.load(export_dir / "export" / "test_ecg_ids.npy"))
        calibration = json.loads((export_dir / "export.json").read_text())["calibration"]
        chosen.append("off" if calibration["clip_sigma"] is None else f"{calibration['clip_sigma']:g}")
        for trial in calibration["trials"]:
            steps["off" if trial["clip_sigma"] is None else f"{trial['clip_sigma']:g}"].append(trial["input_scale"])
        for c in levels:
            probs[c].append(np.load(export_dir / "export" / "calibration" / f"test_probs_clip-{c}.npy"))
    order = np.argsort(np.concatenate(fold_ids), kind="stable")
    assert np.array_equal(np.concatenate(fold_ids)[order], ids)
    pooled = {c: np.concatenate(probs[c])[order] for c in levels}
    lines = [f"{cv_dir.name}: int8 (TFLM) per input clipping level, pooled; --clip auto chose per fold: {', '.join(chosen)}",
             f"{'clip (sd)':>9} {'input step (sd)':>15} {'macro AUC':>9} {'vs no clip [95% CI]':>27} {'|int8-float| mean':>17} {'max':>6}"]
    for c in levels:
        d = paired_bootstrap(labels, pooled[c], pooled["off"], n_boot=1000)
        err = np.abs(pooled[c] - float_probs)
        lines.append(f"{c:>9} {np.mean(steps[c]):>15.4f} {macro_auc(labels, pooled[c]):>9.4f} "
                     f"{d['difference']:>+9.4f} [{d['ci95'][0]:+.4f},{d['ci95'][1]:+.4f}] {err.mean():>17.4f} {err.max():>6.3f}")
    return "\n".join(lines)


def _teacher(row: str, out: Path, data, dataset, ray) -> Path:
    """A teacher row's rotation folder, or for "crossfit:ROW" the cross-fitted teacher of ROW's configuration (trained here)."""
    if not row.startswith("crossfit:"):
        return out / _slug(row)
    from edge_ecg.distill import cross_fit
    from edge_ecg.train import TrainConfig

    name = row.split(":", 1)[1]
    _, arch, epochs, seed, _ = next(r for r in CV_PLAN if r[0] == name)
    return cross_fit(out / f"crossfit_{_slug(name)}", TrainConfig(arch=arch, data=data, epochs=epochs, seed=seed),
                     dataset=dataset, ray=ray, progress=False)


def cv_main(args, dataset, data) -> None:
    from edge_ecg import cv
    from edge_ecg.metrics import macro_auc
    from edge_ecg.models import build, summary
    from edge_ecg.train import TrainConfig

    out = Path(args.out)
    pooled: dict[str, tuple] = {}
    meta: dict[str, dict] = {}
    for name, arch, epochs, seed, teachers in CV_PLAN:
        if args.arch and arch not in args.arch:
            continue
        teacher = ",".join(str(_teacher(t, out, data, dataset, args.ray)) for t in teachers) if teachers else None
        config = TrainConfig(arch=arch, data=data, epochs=epochs, seed=seed, teacher=teacher)
        cv.cross_validate(out / _slug(name), config, dataset=dataset, ray=args.ray)
        pooled[name] = cv.pooled_predictions(out / _slug(name))
        info = summary(build(arch))
        meta[name] = {"params": info["params"], "macs": info["macs"], "int8_bytes": info["int8_bytes"], "epochs": epochs}
        if name in INT8_ROWS and not args.no_int8:
            for label, folder in int8_rotations(out / _slug(name), dataset).items():
                pooled[f"{name} {label}"] = cv.pooled_predictions(folder)
                size = json.loads((cv.fold_dir(out / f"{_slug(name)}-int8", 10) / "export.json").read_text())
                meta[f"{name} {label}"] = {**meta[name], "int8_bytes": size["tflite"]["bytes"]}
        write_cv_table(out, pooled, meta)
    seeds = [name for name in SEED_ROWS if name in pooled]
    if len(seeds) > 1:
        name = f"dscnn {len(seeds)}-seed ensemble"
        pooled[name] = cv.ensemble([out / _slug(n) for n in seeds])
        meta[name] = {**meta["dscnn"], **{k: len(seeds) * meta["dscnn"][k] for k in ("params", "macs", "int8_bytes")}}
    table = write_cv_table(out, pooled, meta)
    if len(seeds) > 1:
        aucs = [macro_auc(pooled[n][1], pooled[n][2]) for n in seeds]
        table += f"\ndscnn single seeds ({', '.join(seeds)}): mean {np.mean(aucs):.4f} +- {np.std(aucs, ddof=1):.4f} sd"
    for name in INT8_ROWS:
        if name in pooled and not args.no_int8:
            table += "\n\n" + clip_levels_table(out / _slug(name))
    (out / "cv_table.txt").write_text(table + "\n")
    print(table)


def write_cv_table(out: Path, pooled: dict, meta: dict) -> str:
    from edge_ecg import cv

    first = next(iter(pooled.values()))
    ids, labels, _, folds = first
    pooled = {"naive (training-fold priors)": (ids, labels, cv.naive_probs(labels, folds), folds), **pooled}
    meta = {"naive (training-fold priors)": {"params": 0, "macs": 0, "int8_bytes": 0, "epochs": 0}, **meta}
    refs = [n for n in pooled if n.split()[0] in ("cnn_base", "resnet1d_wang", "inception_cnn")]
    reports = {n: cv.report_predictions(p[1], p[2], p[3], n_boot=1000) for n, p in pooled.items()}
    best_ref = max(refs, key=lambda n: reports[n]["macro_auc"]) if refs else None
    rows = []
    for name, (i, y, p, f) in pooled.items():
        assert np.array_equal(i, ids), "rows must hold predictions of the same records"
        r = reports[name]
        diff = cv.paired_bootstrap(y, p, pooled[best_ref][2], n_boot=1000) if best_ref else None
        rows.append({"model": name, **meta[name], **{k: r[k] for k in ("macro_auc", "macro_auc_ci95", "per_class_auc", "per_fold")},
                     "vs_best_reference": diff, "best_reference": best_ref})
    (out / "cv_table.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [f"Pooled out-of-fold predictions of {len(ids)} records, ten-fold rotation (test k, validate k+1); "
             f"paired bootstrap difference against the best reference ({best_ref})",
             f"{'model':<28} {'epochs':>6} {'params':>9} {'MACs/record':>12} {'int8 B':>7} {'macro AUC [95% CI]':>24} "
             + " ".join(f"{c:>6}" for c in CLASSES) + f" {'diff vs best ref [95% CI]':>28}"]
    for r in rows:
        ci = f"{r['macro_auc']:.4f} [{r['macro_auc_ci95'][0]:.3f},{r['macro_auc_ci95'][1]:.3f}]"
        d = r["vs_best_reference"]
        dtext = f"{d['difference']:+.4f} [{d['ci95'][0]:+.3f},{d['ci95'][1]:+.3f}]" if d else ""
        per = " ".join(f"{r['per_class_auc'][c]:>6.3f}" for c in CLASSES)
        lines.append(f"{r['model']:<28} {r['epochs']:>6} {r['params']:>9,} {r['macs']:>12,} {r['int8_bytes']:>7,} {ci:>24} {per} {dtext:>28}")
    table = "\n".join(lines)
    (out / "cv_table.txt").write_text(table + "\n")
    return table


# --------------------------------------------------------------------------- distillation: no teacher, in-sample, cross-fitted

DISTILL_TEACHER_SEEDS = (0, 1)
"""The teacher: the rotation's dscnn (20 epochs) of these seeds, averaged. Two seeds of the student's own
configuration: stronger than the student (the 3-seed ensemble gains ~0.012 pooled AUC) at twice its cost,
where a cross-fitted cnn_base (40 models at ~20x dscnn's MACs) or inception_cnn does not fit two cores.
Seed 0 is also the no-teacher student."""


def distill_main(args, dataset, data) -> None:
    """The dscnn student with no teacher, with the in-sample teacher and with the cross-fitted teacher, fold by fold.

    Each test fold's teacher models, then its two students, so an interrupted run leaves whole folds;
    the table (distill_table.txt/.json) is pooled over the folds every row has finished.
    ``--baseline DIR``: an existing seed-0 dscnn rotation (same options) copied in instead of retrained.
    """
    import shutil
    from dataclasses import replace

    # imported before any training: a source file edited while this runs cannot change it halfway
    from edge_ecg import cv, distill, train  # noqa: F401
    from edge_ecg.distill import cross_fit
    from edge_ecg.runfolder import CV_FILE
    from edge_ecg.train import TrainConfig

    out = Path(args.out)
    folds = tuple(args.folds or cv.FOLDS)
    base = TrainConfig(arch="dscnn", data=data, epochs=20, seed=0)
    teachers = {s: out / f"dscnn_seed{s}" for s in DISTILL_TEACHER_SEEDS}
    crossfit = {s: out / f"crossfit_dscnn_seed{s}" for s in DISTILL_TEACHER_SEEDS}
    if args.baseline and not (teachers[0] / CV_FILE).is_file():
        shutil.copytree(args.baseline, teachers[0])  # its cv.json is checked against ``base`` below
    students = {
        "in-sample teacher": (out / "dscnn_distilled_insample", ",".join(str(t) for t in teachers.values())),
        "cross-fitted teacher": (out / "dscnn_distilled_crossfit", ",".join(str(t) for t in crossfit.values())),
    }
    for k in folds:
        print(f"fold {k}: teachers", flush=True)
        for s, folder in teachers.items():
            cv.cross_validate(folder, replace(base, seed=s), dataset=dataset, folds=(k,), progress=False, ray=args.ray)
            cross_fit(crossfit[s], replace(base, seed=s), dataset=dataset, test_folds=(k,), ray=args.ray, progress=False)
        for name, (folder, teacher) in students.items():
            print(f"fold {k}: student, {name}", flush=True)
            cv.cross_validate(folder, replace(base, teacher=teacher), dataset=dataset, folds=(k,), progress=False, ray=args.ray)
        print(write_distill_table(out, teachers, students, dataset), flush=True)


def write_distill_table(out: Path, teachers: dict, students: dict, dataset) -> str:
    """Pooled macro AUC of each row over the folds all rows finished, paired differences; soft-label fit on training records."""
    from edge_ecg import cv
    from edge_ecg.metrics import macro_auc

    def done(folder: Path) -> set[int]:
        return {k for k in cv.FOLDS if cv.fold_finished(cv.fold_dir(folder, k))}

    folds = tuple(sorted(set.intersection(*(done(f) for f in [*teachers.values(), *(f for f, _ in students.values())]))))
    if not folds:
        return "no fold finished by every row yet"
    rows = {"dscnn, no teacher": cv.pooled_predictions(teachers[0], folds=folds),
            f"teacher: dscnn seeds {'+'.join(map(str, teachers))} averaged": cv.ensemble(list(teachers.values()), folds),
            **{f"dscnn, {name}": cv.pooled_predictions(folder, folds=folds) for name, (folder, _) in students.items()}}
    ids, labels, _, test_folds = rows["dscnn, no teacher"]
    label_of = dict(zip(dataset.ecg_ids.tolist(), range(len(dataset))))
    report = []
    for name, (i, y, p, f) in rows.items():
        assert np.array_equal(i, ids), "rows must hold predictions of the same records"
        r = cv.report_predictions(y, p, f, n_boot=1000)
        entry = {"model": name, "macro_auc": r["macro_auc"], "macro_auc_ci95": r["macro_auc_ci95"],
                 "vs_no_teacher": None if name == "dscnn, no teacher" else cv.paired_bootstrap(y, p, rows["dscnn, no teacher"][2], n_boot=1000)}
        student = next((folder for n, (folder, _) in students.items() if name == f"dscnn, {n}"), None)
        if student is not None:  # how tightly the soft labels fit the labels of the records the student trains on
            fits = []
            for k in folds:
                run = cv.fold_dir(student, k)
                train_ids = np.load(run / "train_ecg_ids.npy")
                fits.append(macro_auc(dataset.labels[[label_of[int(e)] for e in train_ids]], np.load(run / "teacher_train_probs.npy")))
            entry["soft_label_train_auc"] = float(np.mean(fits))
        report.append(entry)
    crossfit, insample = rows["dscnn, cross-fitted teacher"][2], rows["dscnn, in-sample teacher"][2]
    versus = cv.paired_bootstrap(labels, crossfit, insample, n_boot=1000)
    (out / "distill_table.json").write_text(json.dumps({"folds": list(folds), "records": int(len(ids)), "rows": report,
                                                          "crossfit_vs_insample": versus}, indent=1) + "\n")
    lines = [f"Pooled out-of-fold predictions of {len(ids)} records (test folds {','.join(map(str, folds))}); dscnn student, "
             f"20 epochs, alpha 0.5, T 2; paired bootstrap (1000) against no teacher",
             f"{'model':<34} {'macro AUC [95% CI]':>24} {'diff vs no teacher [95% CI]':>29} {'soft-label AUC on train':>24}"]
    for e in report:
        d = e["vs_no_teacher"]
        dtext = f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f},{d['ci95'][1]:+.4f}]" if d else ""
        fit = f"{e['soft_label_train_auc']:.4f}" if "soft_label_train_auc" in e else ""
        lines.append(f"{e['model']:<34} {e['macro_auc']:.4f} [{e['macro_auc_ci95'][0]:.3f},{e['macro_auc_ci95'][1]:.3f}] "
                     f"{dtext:>29} {fit:>24}")
    lines.append(f"cross-fitted minus in-sample teacher: {versus['difference']:+.4f} [{versus['ci95'][0]:+.4f},{versus['ci95'][1]:+.4f}]")
    table = "\n".join(lines)
    (out / "distill_table.txt").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="PTB-XL folder (default: $EDGE_ECG_DATA)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-models")
    parser.add_argument("--arch", action="append", choices=ARCHS, help="only these (repeatable; default: all four)")
    parser.add_argument("--cv", action="store_true", help="ten-fold rotation with pooled predictions (see CV_PLAN)")
    parser.add_argument("--no-int8", action="store_true", help="with --cv: skip the int8 exports of each fold")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="with --cv: folds as Ray tasks, on a local Ray (no ADDRESS) or the cluster at ADDRESS")
    parser.add_argument("--distill", action="store_true",
                        help="dscnn with no teacher vs in-sample vs cross-fitted teacher, on the rotation (see distill_main)")
    parser.add_argument("--folds", type=int, nargs="+", metavar="K", help="with --distill: only these test folds (default: all ten)")
    parser.add_argument("--baseline", metavar="DIR", help="with --distill: an existing dscnn seed-0 rotation to copy in, not retrain")
    args = parser.parse_args()
    from edge_ecg.data import load_ptbxl

    data = str(Path(args.data).resolve()) if args.data else None
    dataset = load_ptbxl(data)
    if args.distill:
        if args.out == "runs/bench-models":
            args.out = "runs/bench-distill"
        distill_main(args, dataset, data)
        return
    if args.cv:
        if args.out == "runs/bench-models":
            args.out = "runs/bench-cv"
        cv_main(args, dataset, data)
        return
    out = Path(args.out)
    rows = []
    for arch in args.arch or ARCHS:
        rows.append(run_one(arch, out, data, args.epochs, args.seed, dataset))
        (out / "models.json").write_text(json.dumps(rows, indent=1) + "\n")  # incremental: keep what is done
    print_table(rows, args.epochs)


if __name__ == "__main__":
    main()
