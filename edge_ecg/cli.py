"""The ``edge-ecg`` command: a thin layer over the Python API, one function per subcommand."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge_ecg import __version__
from edge_ecg.runfolder import FEDERATE_REPORT_MD, REPORT_FILE, RunFolder

PIPELINE = "data -> train -> compress -> export -> build -> flash -> bench"


class CliError(Exception):
    """An error whose message is the whole story for the user."""


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=1))


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="PTB-XL folder (default: $EDGE_ECG_DATA, else ./data/ptbxl)")
    p.add_argument("--rate", type=int, choices=(100, 500), default=100, help="sampling rate in Hz (default: 100)")
    p.add_argument("--cache-dir", metavar="DIR", help="prepared-array cache (default: $EDGE_ECG_CACHE or ~/.cache/edge-ecg)")
    p.add_argument("--strict", action="store_true", help="fail on any record that would be skipped")


# --------------------------------------------------------------------------- data


def cmd_data_info(args) -> int:
    from edge_ecg.data import load_ptbxl

    from edge_ecg.data.ptbxl import group_skipped

    ds = load_ptbxl(args.data, args.rate, cache_dir=args.cache_dir, strict=args.strict, progress=not args.json)
    info = ds.summary()
    info["skipped_by_reason"] = group_skipped(info["skipped"])
    # a folder with the tables but no readable record (e.g. no records100/) is an error, after the summary
    readable = info["records"] - len(info["skipped"])
    failure = None
    if readable <= 0:
        top = info["skipped_by_reason"][0]["reason"] if info["skipped_by_reason"] else "the table lists none"
        failure = (f"{info['root']}: none of the {info['records']} records listed in its table is readable "
                   f"({top}); is it the whole PTB-XL folder? Get one with `edge-ecg data download --dest DIR`")
    if args.json:
        _print_json(info)
        if failure:
            raise CliError(failure)
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]PTB-XL[/] at {info['root']}  ({info['rate']} Hz, {ds.signals.shape[1]} samples x {len(ds.leads)} leads)")
    con.print(
        f"records: {info['records']}   labelled: {info['labelled']}   no superclass: {info['unlabelled']}"
        f"   skipped: {len(info['skipped'])}   suspicious: {len(info['suspicious'])}"
    )
    folds = Table("strat_fold", "records", "labelled", "role", title="Folds")
    for k, n in info["per_fold"].items():
        role = {"9": "validation", "10": "test"}.get(k, "train")
        folds.add_row(k, str(n), str(info["per_fold_labelled"].get(k, 0)), role)
    con.print(folds)
    classes = Table("superclass", "records", title="Superclasses (multi-label)")
    for c, n in info["per_class"].items():
        classes.add_row(c, str(n))
    con.print(classes)
    # skipped records by reason, a few examples each (--json lists every one): thousands of lines hid the cause
    for group in info["skipped_by_reason"]:
        con.print(f"[yellow]skipped[/] {group['records']} record(s): {group['reason']}", highlight=False)
        for example in group["examples"]:
            con.print(f"    e.g. {example}", highlight=False, soft_wrap=True)
        if group["records"] > len(group["examples"]):
            con.print(f"    ... and {group['records'] - len(group['examples'])} more (--json lists them all)", highlight=False)
    for item in info["suspicious"]:
        con.print(f"[yellow]suspicious[/] ecg_id {item['ecg_id']}: {item['reason']}", highlight=False)
    if info["unlabelled_ids"]:
        con.print(f"no diagnostic superclass (left out): ecg_id {', '.join(map(str, info['unlabelled_ids']))}")
    if failure:
        raise CliError(failure)
    return 0


def cmd_data_prepare(args) -> int:
    from edge_ecg.data import load_ptbxl

    ds = load_ptbxl(args.data, args.rate, cache_dir=args.cache_dir, strict=args.strict, progress=True)
    print(f"prepared {len(ds)} labelled records ({len(ds.skipped)} skipped) -> {ds.cache_file}")
    return 0


def cmd_data_download(args) -> int:
    from edge_ecg.data import download_ptbxl

    report = download_ptbxl(args.dest, args.rate, base_url=args.url, sums_sha256=args.sums_sha256, progress=True)
    print(f"{report.dest}: {report.downloaded} file(s) downloaded, {report.present} already verified, {report.bytes} bytes")
    return 0


# --------------------------------------------------------------------------- train / evaluate


def _parse_arch_args(pairs: list[str]) -> dict:
    """``--arch-arg key=value`` pairs; values are JSON literals (numbers, lists, true) or strings."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--arch-arg {pair!r}: expected KEY=VALUE, e.g. --arch-arg dropout_rate=0.3")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value  # a plain string; never evaluated as code
    return out


def _check_leads(args) -> None:
    """Stages after train take the run's lead set (config.json); a --leads that differs is refused, never applied."""
    if getattr(args, "leads", None) is None or not getattr(args, "run", None):
        return
    from edge_ecg.data.leads import display_name, parse_leads

    wanted, have = parse_leads(args.leads, "--leads"), RunFolder(args.run).leads()
    if wanted != have:
        show = lambda leads: ",".join(display_name(x) for x in leads)  # noqa: E731
        raise CliError(f"--leads {args.leads}: run {args.run} was trained on leads {show(have)}, not {show(wanted)}; "
                       "leave --leads out (later stages read it from the run) or train a new run with these leads")


def _train_config(args):
    from edge_ecg.data.leads import parse_leads
    from edge_ecg.train import TrainConfig

    return TrainConfig(
        leads=list(parse_leads(getattr(args, "leads", None), "--leads")),
        arch=args.arch,
        arch_kwargs=_parse_arch_args(args.arch_arg),
        data=str(Path(args.data).resolve()) if args.data else None,
        rate=args.rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        average_epochs=args.average_epochs,
        seed=args.seed,
        class_weighted=args.class_weighted,
        augment=not args.no_augment,
        augment_site=args.augment_site,
        highpass_hz=args.highpass,
        train_limit=args.train_limit,
        teacher=args.teacher,
        distill_alpha=args.alpha,
        distill_temperature=args.temperature,
    )


def cmd_train(args) -> int:
    from edge_ecg.evaluate import evaluate
    from edge_ecg.train import train

    run = Path(args.run or f"runs/{args.arch}")
    state = train(run, _train_config(args))
    if state.get("averaged_epochs"):
        first = state["best_epoch"] - state["averaged_epochs"] + 1
        print(f"validation macro AUC {state['best_auc']:.4f} of the weights averaged over epochs {first}-{state['best_epoch']} -> {RunFolder(run).model}")
    else:
        print(f"best validation macro AUC {state['best_auc']:.4f} at epoch {state['best_epoch']} -> {RunFolder(run).model}")
    report = evaluate(run)
    t = report["test"]
    print(f"test macro AUC {t['macro_auc']:.4f} [{t['macro_auc_ci95'][0]:.4f}, {t['macro_auc_ci95'][1]:.4f}] -> {run / REPORT_FILE}")
    return 0


def cmd_evaluate(args) -> int:
    if args.cv:
        return _evaluate_cv(args)
    if not args.run:
        raise CliError("evaluate needs --run DIR (a trained run) or --cv (the ten-fold rotation)")
    _check_leads(args)
    if args.out or args.format or args.rhythm_only:
        return _evaluate_external(args)
    if args.data:  # another folder without --out would overwrite the run's own reports: refused
        if not RunFolder(args.run).is_own_data(args.data):
            raise CliError(f"--data {args.data} is not the data of run {args.run} ({RunFolder(args.run).data_dir()}); "
                           "add --out DIR to evaluate the run "
                           "on every labelled record of it (the run's own reports are never overwritten)")
    from edge_ecg.evaluate import evaluate, markdown_report

    model = args.model or "float"
    report = evaluate(args.run, data=str(Path(args.data).resolve()) if args.data else None, model=model)
    out = Path(args.run) if model == "float" else RunFolder(args.run).evaluation(model)
    if args.json:
        _print_json(report)
    else:
        print(markdown_report(out, report))
        print(f"-> {out / REPORT_FILE}")
    return 0


def _evaluate_external(args) -> int:
    if not (args.out and args.data):
        raise CliError("an external evaluation needs --data DIR (the records) and --out DIR (where the results go)")
    from edge_ecg.external_eval import evaluate_external, markdown_report

    report = evaluate_external(args.run, args.data, args.out, model=args.model or "float", format=args.format or "auto",
                               rhythm_only=args.rhythm_only or "sinus", progress=not args.json)
    if args.json:
        _print_json(report)
    else:
        print(markdown_report(report))
        print(f"-> {Path(args.out)}")
    return 0


def _evaluate_cv(args) -> int:
    from dataclasses import replace

    import numpy as np

    from edge_ecg import cv

    config = _train_config(args)
    out = Path(args.run or f"runs/cv/{args.arch}")
    seeds = [args.seed + i for i in range(args.seeds)]
    reports = {s: cv.cross_validate(out / f"seed{s}", replace(config, seed=s), ray=args.ray) for s in seeds}
    result = {"cv_dir": str(out), "seeds": {str(s): r for s, r in reports.items()}}
    aucs = [r["macro_auc"] for r in reports.values()]
    if len(seeds) > 1:
        ids, labels, probs, folds = cv.ensemble([out / f"seed{s}" for s in seeds])
        result["ensemble"] = cv.report_predictions(labels, probs, folds)
        result["single_seed_mean"], result["single_seed_sd"] = float(np.mean(aucs)), float(np.std(aucs, ddof=1))
    if args.json:
        _print_json(result)
        return 0
    for s, r in reports.items():
        print(f"seed {s}: pooled macro AUC {r['macro_auc']:.4f} [{r['macro_auc_ci95'][0]:.4f}, {r['macro_auc_ci95'][1]:.4f}] "
              f"over {r['records']} records -> {out / f'seed{s}' / REPORT_FILE}")
    if "ensemble" in result:
        e = result["ensemble"]
        print(f"single seeds {result['single_seed_mean']:.4f} ± {result['single_seed_sd']:.4f}; "
              f"ensemble of {len(seeds)} {e['macro_auc']:.4f} [{e['macro_auc_ci95'][0]:.4f}, {e['macro_auc_ci95'][1]:.4f}]")
    return 0


def cmd_cross_fit(args) -> int:
    from edge_ecg.distill import cross_fit, crossfit_summary

    config = _train_config(args)
    out = Path(args.run or f"runs/crossfit/{args.arch}")
    cross_fit(out, config, test_folds=tuple(args.folds) if args.folds else None, groups=args.groups, ray=args.ray,
              progress=not args.json)
    summary = crossfit_summary(out)
    if args.json:
        _print_json(summary)
        return 0
    for k, fold in summary["folds"].items():
        aucs = ", ".join(f"{m['best_val_auc']:.3f}" for m in fold["models"] if m["best_val_auc"] is not None)
        print(f"test fold {k}: {fold['records']} training records labelled by {len(fold['models'])} models "
              f"(validation macro AUC {aucs}) -> {fold['soft_labels']}")
    if summary["folds_missing"]:
        print(f"test folds not cross-fitted yet: {', '.join(map(str, summary['folds_missing']))}")
    print(f"distill from it: edge-ecg evaluate --cv --teacher {out} ... (or train --teacher {out})")
    return 0


def cmd_search(args) -> int:
    from edge_ecg.search import Constraints, SearchSettings, search

    config = _train_config(args)
    settings = SearchSettings(target=args.target, constraints=Constraints(args.flash, args.ram, args.max_macs, args.latency_ms),
                              folds=tuple(args.search_folds), clock_mhz=args.clock_mhz, seed=args.seed)
    run = Path(args.run or f"runs/search/{args.target}")
    result = search(run, config, settings, trials=args.trials, ray=args.ray)
    chosen = result["chosen"]
    print(f"{result['trained']} shapes trained, {result['pruned']} pruned; front of {len(result['front'])} -> {run / 'pareto.md'}")
    print(f"chosen: validation macro AUC {chosen['val_macro_auc']:.4f}, {chosen['latency_ms']:.2f} ms, "
          f"{chosen['flash_bytes'] / 1024:.1f} KB flash, {chosen['ram_bytes'] / 1024:.1f} KB RAM")
    print(chosen["command"])
    return 0


def cmd_compress(args) -> int:
    from edge_ecg.compress import compress

    _check_leads(args)
    report = compress(args.run, prune=args.prune, structured=args.structured, qat=args.qat, epochs=args.epochs, learning_rate=args.lr)
    if args.json:
        _print_json(report)
        return 0
    for s in report["stages"]:
        print(f"{s['name']:<28} val AUC {s['val_auc']:.4f}  zero weights {s['sparsity']:.1%}  params {s['params']:,}  MACs {s['macs']:,}")
    print(f"-> {RunFolder(args.run).compressed_model()} (what `edge-ecg export` takes); report: {RunFolder(args.run).compress_markdown}")
    return 0


def _clip_arg(value: str):
    if value in ("auto", "off"):
        return None if value == "off" else "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of standard deviations, 'auto' or 'off', got {value!r}") from None


def cmd_export(args) -> int:
    from edge_ecg.export import export

    _check_leads(args)
    result = export(args.run, model_path=args.model, clip_sigma=args.clip, allow_mismatch=args.allow_mismatch,
                    out=args.out, data=str(Path(args.data).resolve()) if args.data else None, runtime=args.runtime,
                    **({} if args.max_drop is None else {"max_drop": args.max_drop}))
    if args.json:
        _print_json(result)
    return 0


def cmd_build(args) -> int:
    from edge_ecg.firmware import build

    _check_leads(args)
    result = build(args.run, args.target, out=args.out, runtime=args.runtime, idf=args.idf)
    if args.json:
        _print_json(result)
    elif result.get("built"):
        print(f"built {result['project_dir']}: {json.dumps(result.get('size', {}))}")
    return 0


def cmd_flash(args) -> int:
    from edge_ecg.firmware import flash

    result = flash(args.run, args.target, args.port, args.baud, project=args.project, idf=args.idf)
    print(f"flashed {result['project_dir']} to {result['port']} with {result['tool']}")
    return 0


def cmd_bench(args) -> int:
    from edge_ecg.bench import ParityError, bench, format_summary

    def show(summary: dict) -> None:
        if args.json:
            _print_json(summary)
        else:
            print(format_summary(summary))

    emulator = None if args.port else (args.emulator or "tflm")
    try:
        summary = bench(args.run, port=args.port, baud=args.baud, emulator=emulator, limit=args.limit, fresh=args.fresh,
                        retries=args.retries, timeout=args.timeout, warmup=args.warmup, load=args.load,
                        allow_mismatch=args.allow_mismatch, runtime=args.runtime, tflm_src=args.tflm_src,
                        arena_bytes=args.arena_bytes, profile=args.profile, data=args.data)
    except ParityError as exc:  # the results are shown, then the failure (exit status 1)
        show(exc.summary)
        raise
    show(summary)
    return 0


def cmd_mlperf(args) -> int:
    from edge_ecg.bench.mlperf import runner_files

    result = runner_files(args.run, args.out, port=args.port, usb_vid=args.usb_vid,
                          usb_pid=args.usb_pid, baud=args.baud, inferences=args.inferences, limit=args.limit)
    if args.json:
        _print_json(result)
        return 0
    print(f"{result['records']} records of {result['record_bytes']} int8 bytes -> {result['dataset_dir']}; "
          f"{result['tests_file']}: {result['windows']} windows of {result['inferences']} inferences ({result['inferences_from']}); "
          f"{result['devices_file']}: USB ids {result['usb']} ({result['usb_from']})")
    print(f"in mlcommons/tiny benchmark/runner: {result['command']}")
    return 0


def _usb_id(value: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a hexadecimal USB id such as 10c4 or 0x10C4, got {value!r}") from None


def cmd_federate(args) -> int:
    from edge_ecg.federate import FederateConfig, federate, format_score

    if args.compare is None:  # a deployment's sites train their local baseline; centralized needs pooled data (--data), opt-in
        args.compare = "local" if args.deployment else "local,centralized"
    compare = () if args.compare == "none" else tuple(c for c in args.compare.split(",") if c)
    config = FederateConfig(
        data=str(Path(args.data).resolve()) if args.data else None, rate=args.rate, site_by=args.site_by, blank=args.blank,
        arch=args.arch, arch_kwargs=_parse_arch_args(args.arch_arg), rounds=args.rounds, local_epochs=args.local_epochs,
        clients_per_round=args.clients_per_round, strategy=args.strategy, proximal_mu=args.proximal_mu, batch_norm=args.batch_norm,
        server_lr=args.server_lr, server_momentum=args.server_momentum, keep_round=args.keep_round,
        batch_size=args.batch_size, learning_rate=args.lr, lr_schedule=args.lr_schedule, augment=not args.no_augment,
        augment_site=args.augment_site, highpass_hz=args.highpass, seed=args.seed,
        site_train_limit=args.site_train_limit, compare=compare, n_boot=args.n_boot, fine_tune=args.fine_tune,
        fine_tune_epochs=args.fine_tune_epochs, fine_tune_lr=args.fine_tune_lr, export_sites=args.export_sites,
        compress_epochs=args.compress_epochs, export_max_drop=args.export_max_drop, target=args.target,
        site_data=tuple(args.site_data), num_sites=args.sites,
    )
    report = federate(args.run, config, verbose=args.verbose, deployment=args.deployment)
    for name, score in report["test_macro_auc"]["pooled"].items():
        print(f"{name:12s} pooled test macro AUC {format_score(score)}")
    for site, row in report["paired"].get("vs_local", {}).items():
        if row["difference"] is not None:
            print(f"{report['paired']['model']} - local, {site}: {row['difference']:+.3f} [{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}]")
    for row in report["transfer"].values():
        if "error" in row:
            print(f"{row['run']}: {row['error']}", file=sys.stderr)
    print(f"report -> {Path(args.run) / FEDERATE_REPORT_MD}")
    return 0


def cmd_run(args) -> int:
    from edge_ecg.run import run_pipeline

    from edge_ecg.data.leads import parse_leads

    if RunFolder(args.run).config.is_file():
        _check_leads(args)  # resuming: the run's leads stand
    else:
        parse_leads(args.leads, "--leads")  # a bad name fails here, before any stage runs
    stages = run_pipeline(args.run, data=args.data, arch=args.arch, preset=args.preset, target=args.target, seed=args.seed,
                          leads=args.leads)
    _print_json(stages)
    return 0


# --------------------------------------------------------------------------- parser


def _ray_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--ray [ADDRESS]``, the same on every command whose independent work edge_ecg.scaleout runs."""
    from edge_ecg.scaleout import LOCAL

    p.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                   help=f"{what} as Ray tasks, on a local Ray (no ADDRESS) or the cluster at ADDRESS "
                        "(`ray start --head`); the folder must be on storage every node sees")


def _train_options(p: argparse.ArgumentParser) -> None:
    from edge_ecg.train import TrainConfig

    d = TrainConfig()
    p.add_argument("--arch", default=d.arch, help="dscnn | cnn_base | inception_cnn | resnet1d_wang (default: dscnn)")
    p.add_argument("--arch-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture keyword argument, repeatable (e.g. --arch-arg filters=[16,32,32])")
    p.add_argument("--data", metavar="DIR", help="PTB-XL folder (default: $EDGE_ECG_DATA, else ./data/ptbxl)")
    p.add_argument("--rate", type=int, choices=(100, 500), default=d.rate, help="sampling rate (default: 100)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum epochs (default: {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default: {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.learning_rate, help=f"peak learning rate, cosine decay (default: {d.learning_rate})")
    p.add_argument("--patience", type=int, default=d.patience, help=f"early stopping patience in epochs (default: {d.patience})")
    p.add_argument("--average-epochs", type=int, default=d.average_epochs, metavar="K",
                   help="stochastic weight averaging: the model is the mean of the weights of the last K epochs, trained at "
                        "a constant quarter of --lr; no early stopping (default: 0, off; e.g. --epochs 30 --average-epochs 10)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed; same seed, same result (default: 0)")
    p.add_argument("--class-weighted", action="store_true", help="weight positives by negatives/positives per class")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    _site_shift_options(p)
    p.add_argument("--train-limit", type=int, metavar="N", help="use only the first N training records (quick checks)")
    p.add_argument("--teacher", metavar="RUN_OR_PREDICTIONS",
                   help="distill from a run folder, a --cv folder, a predictions .npz, or several joined by ',' (ensemble)")
    p.add_argument("--alpha", type=float, default=d.distill_alpha, help=f"weight of the teacher's soft labels (default: {d.distill_alpha})")
    p.add_argument("--temperature", type=float, default=d.distill_temperature, help=f"distillation temperature (default: {d.distill_temperature})")
    _leads_option(p)


def _site_shift_options(p: argparse.ArgumentParser, where: str = "") -> None:
    """--augment-site and --highpass, shared by train (and the commands that train) and federate."""
    p.add_argument("--augment-site", action="store_true",
                   help="add site-shift augmentation: per-lead gain and baseline errors, noise spectra, resampling "
                        f"(edge_ecg.train.augment_site){where}")
    p.add_argument("--highpass", type=float, default=0.0, metavar="HZ",
                   help="zero-phase high-pass cutoff applied to each window before standardization, in training, "
                        "evaluation and the firmware (e.g. 0.5: removes baseline wander and offsets that differ "
                        f"between sites; default: none){where}")


_LEADS_HELP = ("input leads: 12 (default), 6 (limb leads I,II,III,aVR,aVL,aVF), 3 (I,II,V2), 2 (I,II), 1 or I (lead I), "
               "II, or a comma list of lead names; stored in the run, which later stages read")


def _leads_option(p: argparse.ArgumentParser, later: bool = False) -> None:
    p.add_argument("--leads", metavar="SET", help="must match the run's lead set (taken from the run; default)" if later else _LEADS_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-ecg",
        description=f"12-lead ECG (PTB-XL) to a microcontroller. Pipeline: {PIPELINE}.",
        epilog="Every subcommand has --help. Errors name the file and the problem.",
    )
    parser.add_argument("--version", action="version", version=f"edge-ecg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's and the TFLite converter's own log lines (hidden by default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="inspect, download and prepare PTB-XL", description="PTB-XL data: info, download, prepare.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data_sub.add_parser("info", help="count records, folds, classes; list skipped records",
                            description="Count records, labelled records, records per strat_fold and superclass, "
                                        "and list every skipped or suspicious record with its reason.")
    _data_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=cmd_data_info)
    p = data_sub.add_parser("prepare", help="read the WFDB records and write the array cache",
                            description="Read every record with wfdb and write the prepared-array cache.")
    _data_args(p)
    p.set_defaults(func=cmd_data_prepare)
    p = data_sub.add_parser("download", help="download PTB-XL 1.0.3 from PhysioNet (verified, resumable)",
                            description="Download PTB-XL 1.0.3: only the files the chosen rate needs, each verified "
                                        "against SHA256SUMS.txt; an interrupted download resumes.")
    p.add_argument("--dest", metavar="DIR", help="target folder (default: $EDGE_ECG_DATA, else ./data/ptbxl)")
    p.add_argument("--rate", type=int, choices=(100, 500), default=100, help="sampling rate to fetch (default: 100)")
    p.add_argument("--url", metavar="URL", help="release base URL (default: $EDGE_ECG_PTBXL_URL or PhysioNet)")
    p.add_argument("--sums-sha256", metavar="HEX", help="SHA-256 the mirror's SHA256SUMS.txt must have (default: "
                   "pinned for PhysioNet's 1.0.3 release, unchecked for another --url)")
    p.set_defaults(func=cmd_data_download)

    p = sub.add_parser("train", help="train an architecture on folds 1-8, select the best epoch on fold 9",
                       description="Train an architecture on the training folds (1-8) with augmentation, early stopping "
                                   "and checkpoint selection on validation (fold 9) macro AUC, then evaluate on fold 10. "
                                   "Interrupted runs resume: run the same command again.")
    _train_options(p)
    p.add_argument("--run", metavar="DIR", help="run folder (default: runs/ARCH)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run on fold 10, or the ten-fold rotation (--cv)",
                       description="Evaluate a run's best model on the test fold: macro AUC with a 95% bootstrap "
                                   "interval, per-class AUC and F1 (thresholds tuned on fold 9), Fmax, exact-match and "
                                   "label-wise accuracy; writes metrics.json, report.md, predictions/ and plots. With --cv, "
                                   "run the rotation over the ten official folds (test k, validate k+1, train the rest; "
                                   "resumable per fold) and report pooled out-of-fold macro AUC; the training options "
                                   "below then apply.")
    p.add_argument("--run", metavar="DIR", help="run folder (with --cv: the rotation's folder, default runs/cv/ARCH)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the report")
    p.add_argument("--cv", action="store_true", help="ten-fold rotation with pooled out-of-fold predictions")
    p.add_argument("--seeds", type=int, default=1, help="with --cv: rotations with seeds SEED..SEED+N-1, and their ensemble")
    p.add_argument("--out", metavar="DIR", help="external evaluation: score every labelled record of --data (PTB-XL or "
                   "CinC layout) and write the results here; the run's own reports are not touched")
    p.add_argument("--model", choices=("float", "compressed", "int8"),
                   help="the model to score: float (model.keras, default), compressed (compress/final.h5; its report goes to "
                        "RUN/evaluation/compressed/) or int8 (export/model_int8.tflite through TFLite Micro; "
                        "RUN/evaluation/int8/). With --out: float or int8")
    p.add_argument("--format", choices=("auto", "ptbxl", "cinc"), help="with --out: layout of --data (default: auto-detected)")
    p.add_argument("--rhythm-only", choices=("sinus", "nsr", "unlabelled"),
                   help="with --out, CinC records whose codes give no superclass: sinus (default) = NORM when every code is "
                        "a sinus rhythm; nsr = NORM only for sinus rhythm alone; unlabelled = left out")
    _ray_option(p, "with --cv: run the folds")
    _train_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("cross-fit", help="a leak-free teacher for distillation: cross-fitted soft labels for the rotation",
                       description="Train a cross-fitted teacher (edge_ecg.distill.cross_fit) for the ten-fold rotation: for each "
                                   "student test fold k (validation fold k+1), the eight training folds are cut into --groups "
                                   "groups and each group's soft labels come from a model trained on the other training folds, "
                                   "so no model labels a record it trained on and none sees fold k. Resumable: rerun the same "
                                   "command to continue. Use the folder as --teacher of `evaluate --cv` or `train`. The "
                                   "training options below apply to every teacher model.")
    p.add_argument("--run", metavar="DIR", help="teacher folder (default: runs/crossfit/ARCH)")
    p.add_argument("--folds", type=int, nargs="+", metavar="K", help="only these student test folds (default: all ten)")
    from edge_ecg.distill import CROSSFIT_GROUPS

    p.add_argument("--groups", type=int, default=CROSSFIT_GROUPS, metavar="N", help="teacher models per test fold, 2 to 8: "
                   f"each labels 8/N training folds and trains on the rest (default: {CROSSFIT_GROUPS})")
    p.add_argument("--json", action="store_true", help="print one JSON object (folds, models, soft-label files)")
    _ray_option(p, "train the test folds")
    _train_options(p)
    p.set_defaults(func=cmd_cross_fit)

    p = sub.add_parser("search", help="hardware-aware search of dscnn shapes (Optuna): validation AUC vs latency within budgets",
                       description="Search dscnn shapes (depth, widths, kernel sizes, strides, pooling, input decimation) that "
                                   "maximize validation macro AUC and minimize latency on --target. Every shape is costed before "
                                   "training from its int8 model (flash and RAM from the AOT generator's static plan; latency from "
                                   "QEMU instruction counts on cortex-m4, per-operator rates on the ESP32s) and pruned if over a "
                                   "budget. Writes the Optuna study (SQLite: rerun the same command to continue), pareto.md/.json/"
                                   ".png and chosen.json (the --arch-arg values for train). The training options below apply to "
                                   "every trial.")
    p.add_argument("--run", metavar="DIR", help="search folder (default: runs/search/TARGET)")
    p.add_argument("--target", required=True, choices=("cortex-m4", "esp32", "esp32s3"), help="the chip whose budgets and latency count")
    p.add_argument("--flash", type=float, required=True, metavar="KB", help="flash budget for the model's constant data, KB")
    p.add_argument("--ram", type=float, required=True, metavar="KB", help="RAM budget for the activations (input included), KB")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--max-macs", type=int, metavar="N", help="most multiply-accumulates per record")
    limit.add_argument("--latency-ms", type=float, metavar="MS", help="most estimated milliseconds per record")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="shapes to train (pruned ones do not count)")
    p.add_argument("--search-folds", type=int, nargs="+", default=[8, 9, 10], metavar="K",
                   help="rotation folds trained per shape, their validation AUCs averaged: test K held out, validate on "
                        "K+1 (default: 8 9 10, validating on 9, 10 and 1)")
    p.add_argument("--clock-mhz", type=float, metavar="MHZ",
                   help="clock turning instructions/cycles into ms (default: 100 for cortex-m4, 240 for the ESP32s)")
    _ray_option(p, "train the trials")
    _train_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("compress", help="structured pruning, magnitude pruning, quantization-aware training",
                       description="Compress a trained run: --structured removes whole filters (smaller dense model), "
                                   "--prune sets a fraction of weights to zero (tfmot magnitude pruning), --qat trains "
                                   "quantization-aware (prune-preserving when combined with --prune). Stages run in that "
                                   "order, each fine-tuning from the one before and keeping its best epoch on fold 9.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder written by `edge-ecg train`")
    p.add_argument("--structured", type=float, metavar="FRACTION", help="fraction of filters to remove per layer, e.g. 0.5")
    p.add_argument("--prune", type=float, metavar="SPARSITY", help="target fraction of zero weights, e.g. 0.5")
    p.add_argument("--qat", action="store_true", help="quantization-aware training (int8)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per stage (default: 10)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak fine-tuning learning rate (default: 5e-4)")
    p.add_argument("--json", action="store_true", help="print compress.json")
    _leads_option(p, later=True)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("export", help="full-int8 TFLite + TFLite Micro C sources, checked on the host emulator",
                       description="Convert the run's model (compress/final.h5 if present, else model.keras) to a "
                                   "full-int8 TFLite model (batch 1, int8 I/O, calibrated on training records), evaluate "
                                   "it through the real TFLite Micro interpreter on every test record, check it bit for bit "
                                   "against LiteRT's reference kernels, measure the tensor arena, and write model_data.cc/.h, "
                                   "model_ops.h and model_config.h into RUN/export/.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder")
    p.add_argument("--model", metavar="FILE", help="export this model file instead (.keras or .h5)")
    p.add_argument("--clip", type=_clip_arg, default="auto", metavar="SIGMA|auto|off",
                   help="clip standardized inputs at ±SIGMA before calibration and in the firmware; auto (default) "
                        "chooses on the validation fold, off unless the gain holds under a paired bootstrap")
    p.add_argument("--data", metavar="DIR", help="PTB-XL folder (default: the run's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/export)")
    p.add_argument("--allow-mismatch", action="store_true", help="export even if TFLite Micro and LiteRT disagree")
    p.add_argument("--max-drop", type=float, metavar="AUC",
                   help="largest validation (fold 9) macro AUC the int8 model may lose against the float model; a larger "
                        "drop fails and writes nothing, so a previous export stays (default: 0.01)")
    p.add_argument("--runtime", choices=("tflm", "aot"), default="tflm",
                   help="aot: also generate the ahead-of-time C model (export/aot/), checked bit for bit against TFLite Micro")
    p.add_argument("--json", action="store_true", help="print export.json")
    _leads_option(p, later=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("build", help="render (and build, with ESP-IDF) the firmware project for a target",
                       description="Write a complete ESP-IDF project (template, firmware core and the run's generated "
                                   "model files) into RUN/firmware/TARGET; if idf.py is on PATH, run set-target and build and "
                                   "report flash and RAM use, else print exactly what to run where ESP-IDF is installed.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder with an export/")
    p.add_argument("--target", default="esp32", help="esp32 | esp32s3 | esp32c3 (default: esp32)")
    p.add_argument("--runtime", default="tflm", help="tflm (TFLite Micro, default) | aot (the ahead-of-time C model; needs `export --runtime aot`)")
    p.add_argument("--out", metavar="DIR", help="project folder (default: RUN/firmware/TARGET)")
    p.add_argument("--idf", metavar="PATH", help="idf.py or the ESP-IDF folder (default: idf.py on PATH)")
    p.add_argument("--json", action="store_true", help="print the build record as JSON")
    _leads_option(p, later=True)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("flash", help="flash the built firmware to a board",
                       description="Flash RUN/firmware/TARGET with idf.py, or with esptool and the offsets of "
                                   "build/flasher_args.json. Without --port, the one attached Espressif board is used.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder")
    p.add_argument("--target", default="esp32", help="esp32 | esp32s3 | esp32c3 (default: esp32)")
    p.add_argument("--port", help="serial port (default: the one Espressif board found)")
    p.add_argument("--baud", type=int, default=921600, help="flashing baud rate (default: 921600)")
    p.add_argument("--project", metavar="DIR", help="built project folder (default: RUN/firmware/TARGET)")
    p.add_argument("--idf", metavar="PATH", help="idf.py or the ESP-IDF folder (default: idf.py on PATH)")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("bench", help="latency and accuracy over serial (MLPerf Tiny protocol) or on the emulator",
                       description="Send the run's test-fold records to the board (--port) or the TFLite Micro host "
                                   "emulator (--emulator), read outputs and device timestamps, and report per-record "
                                   "latency (median, p90, min, max; warm-up excluded), macro AUC from the device's outputs "
                                   "and, for every record, whether its int8 outputs equal the host emulator's. Results are "
                                   "appended to RUN/bench/<backend>.jsonl as they arrive: rerun the same command and it continues "
                                   "(--fresh starts over). Exit status "
                                   "1 when any device output differs from the emulator's (unless --allow-mismatch) or no "
                                   "record completed; the summary RUN/bench/<backend>.json is written either way. Records "
                                   "that failed after their retries are listed and do not change the exit status "
                                   "(rerunning runs them again).")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder with an export/")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB0")
    where.add_argument("--emulator", nargs="?", const="tflm", choices=("tflm", "board", "qemu"),
                       help="tflm (default): TFLite Micro in process; board: the host port with the AOT model on a "
                            "pseudo-terminal (with --runtime tflm: with the TFLite Micro runner); qemu: the Cortex-M4 "
                            "firmware in QEMU (instruction-counted); board (aot) and qemu need `export --runtime aot`")
    p.add_argument("--baud", type=int, default=921600, help="(default: 921600)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N test records")
    p.add_argument("--data", metavar="DIR",
                   help="send every labelled record of another folder (PTB-XL or CinC layout) instead of the test fold, "
                        "each checked against the export's model run through TFLite Micro on the same bytes; a record "
                        "longer than the model's window is one row per window (id ecg_id*1000+k) and the macro AUC counts "
                        "windows; results go to RUN/bench/<backend>-<folder name>.json(l), apart from the run's own")
    p.add_argument("--fresh", action="store_true", help="delete this backend's results and start over (default: continue them)")
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # the old flag: continuing is now the default
    p.add_argument("--retries", type=int, default=3, help="attempts per record after a fault (default: 3)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply (default: 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed inferences before the first timed one (default: 3)")
    p.add_argument("--load", choices=("binary", "hex"), default="binary", help="record transfer (default: binary)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="pass even if device outputs differ from the emulator's; the summary counts them as allowed")
    p.add_argument("--runtime", choices=("aot", "tflm"), default="aot",
                   help="with --emulator board: aot (default) runs the AOT C model; tflm runs the ESP32 port's TFLite Micro "
                        "runner (firmware/esp32/main/tflm_runner.cc) built against --tflm-src")
    p.add_argument("--tflm-src", metavar="DIR",
                   help="TFLite Micro source tree for --runtime tflm: a tflite-micro checkout with its third-party downloads, "
                        "or the esp-tflite-micro component folder")
    p.add_argument("--profile", action="store_true",
                   help="with --emulator qemu: instructions, MACs and instructions per MAC of each op (AOT model, first record)")
    p.add_argument("--arena-bytes", type=int, metavar="N",
                   help="with --runtime tflm: build with an N-byte tensor arena instead of the export's ECG_ARENA_BYTES")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("mlperf", help="dataset and YAML files for the MLCommons tiny runner (performance mode)",
                       description="Write what mlcommons/tiny's benchmark/runner needs to benchmark this run's model "
                                   "(model id ecg01) on a board: one int8 .bin per test record (the bytes `edge-ecg bench` "
                                   "sends) and y_labels.csv under OUT/ecg01/, tests_performance.yaml (5 windows of "
                                   "`infer N W`, N sized from the run's latest serial bench so a window lasts about 12 s) "
                                   "and devices_ecg01.yaml (baud rate and the board's USB vendor/product ids, which the "
                                   "runner scans for). Use the runner's performance mode only: its accuracy mode "
                                   "normalizes outputs as single-label probabilities, meaningless for this multi-label "
                                   "logit model.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder with an export/")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write: the runner's --dataset_path")
    p.add_argument("--port", help="take the USB ids from this attached serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--usb-vid", type=_usb_id, metavar="HEX",
                   help="USB vendor id of the board's serial port (`python -m serial.tools.list_ports -v` shows VID:PID); "
                        "without it or --port, common ESP32 USB-serial bridges are listed")
    p.add_argument("--usb-pid", type=_usb_id, metavar="HEX", help="USB product id, with --usb-vid")
    p.add_argument("--baud", type=int, default=921600, help="the firmware's baud rate (default: 921600)")
    p.add_argument("--inferences", type=int, metavar="N",
                   help="timed inferences per window (default: about 12 s at the latest serial bench's median latency)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N test records")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_mlperf)

    p = sub.add_parser("federate", help="federated training across PTB-XL sites on Flower (simulation), with baselines",
                       description="Split PTB-XL into sites by a metadata column (each keeps its own folds 1-8/9/10 and "
                                   "standardization), train with FedAvg or FedProx in a Flower simulation, and report per-site "
                                   "and pooled test macro AUC with intervals against local-only and centralized training, "
                                   "bytes sent per round and AUC per round. See edge_ecg/federate.py for the site rules.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder for the results")
    p.add_argument("--data", metavar="DIR", help="PTB-XL folder (default: $EDGE_ECG_DATA, else ./data/ptbxl)")
    p.add_argument("--rate", type=int, choices=(100, 500), default=100, help="sampling rate (default: 100)")
    p.add_argument("--site-by", choices=("device", "site"), default="device",
                   help="device: recorder family (CS-12, AT-6); site: recording site number (default: device)")
    p.add_argument("--blank", choices=("unknown", "drop"), default="unknown",
                   help="records with a blank site column: their own site 'unknown' (default) or left out")
    p.add_argument("--arch", default="dscnn", help="architecture (default: dscnn)")
    p.add_argument("--arch-arg", action="append", default=[], metavar="KEY=VALUE", help="architecture keyword argument, repeatable")
    p.add_argument("--rounds", type=int, default=10, help="federated rounds (default: 10)")
    p.add_argument("--local-epochs", type=int, default=2, help="epochs each client trains per round (default: 2)")
    p.add_argument("--clients-per-round", type=int, metavar="K", help="sites sampled per round (default: all)")
    p.add_argument("--strategy", choices=("fedavg", "fedprox", "fedavgm", "fedadam"), default="fedavg",
                   help="Flower strategy (default: fedavg); fedavgm, fedadam: server-side momentum / Adam on the averaged update")
    p.add_argument("--server-lr", type=float, default=1.0, help="fedavgm's server learning rate, fedadam's eta (try 0.01) (default: 1.0)")
    p.add_argument("--server-momentum", type=float, default=0.9, help="fedavgm's server momentum (default: 0.9)")
    p.add_argument("--keep-round", choices=("last", "best-val"), default="last",
                   help="the global model kept: the last round's (default) or the round's with the best mean validation macro AUC "
                        "the sites reported (weighted by their records)")
    p.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx's proximal weight (default: 0.01)")
    p.add_argument("--batch-norm", choices=("global", "local"), default="global",
                   help="global (default, measured: see the README): BatchNormalization weights averaged like the rest; "
                        "local: kept on each site (FedBN)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the clients' cosine decay (default: 2e-3)")
    p.add_argument("--lr-schedule", choices=("restart", "rounds"), default="rounds",
                   help="rounds (default, measured: see the README): one cosine decay across all rounds, each client's stint taking "
                        "its part (as the centralized baseline over its epochs); restart: each round's local epochs decay from --lr")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    _site_shift_options(p, where="; in the clients' training, the fine-tunes, both baselines and every site's export")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--site-train-limit", type=int, metavar="N", help="first N training records of each site (quick checks)")
    p.add_argument("--site-data", action="append", default=[], metavar="NAME=PATH",
                   help="another data folder (a CinC source, e.g. georgia=../shared/data/cinc/georgia) as one more site, "
                        "beside the PTB-XL sites; repeatable. Its records are dealt into folds 1-10 by record")
    p.add_argument("--compare", default=None,
                   help="baselines trained for as many epochs as each client: local, centralized, both or none (default: both; "
                        "with --deployment: local, trained by each site's client, as centralized needs every site's records here)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for the intervals (default: 1000)")
    p.add_argument("--fine-tune", choices=("none", "head", "all"), default="head",
                   help="after federation, fine-tune per site: the classifier only (default, measured best), every layer, or not at all")
    p.add_argument("--fine-tune-epochs", type=int, default=10, help="fine-tune epochs per site, best on its fold 9 kept (default: 10)")
    p.add_argument("--fine-tune-lr", type=float, default=5e-4, help="fine-tune peak learning rate (default: 5e-4)")
    p.add_argument("--export-sites", default="all", metavar="all|none|NAME,...",
                   help="sites whose run folder (RUN/sites/NAME) gets compress (QAT), int8 export and a firmware project (default: all)")
    p.add_argument("--compress-epochs", type=int, default=2, help="QAT epochs per exported site; 0 exports the float model (default: 2)")
    p.add_argument("--export-max-drop", type=float, default=0.01,
                   help="largest int8 validation macro AUC loss a site's export accepts, on its own fold 9 (default: 0.01)")
    p.add_argument("--target", default="esp32", help="firmware target of each exported site (default: esp32)")
    p.add_argument("--deployment", metavar="HOST:PORT",
                   help="run on a Flower SuperLink (its address, e.g. 127.0.0.1:8000: flwr 1.42 serves every API on the SuperLink's --port) instead of the simulation; "
                        "see the README for starting the SuperLink and one SuperNode per site. This process then reads no data: "
                        "each SuperNode fine-tunes, compresses and exports its own site's model from its own --node-config data=...")
    p.add_argument("--sites", type=int, metavar="N", help="with --deployment: the number of sites (one SuperNode each) to wait for")
    p.set_defaults(func=cmd_federate)

    p = sub.add_parser("run", help="the whole pipeline: data, train, compress, export, build, bench (emulator)",
                       description="Run every stage on one run folder; rerun the same command to resume.")
    p.add_argument("--run", default="runs/quick", metavar="DIR", help="run folder (default: runs/quick)")
    p.add_argument("--data", metavar="DIR", help="PTB-XL folder (default: $EDGE_ECG_DATA, else ./data/ptbxl)")
    p.add_argument("--arch", default="dscnn", help="architecture (default: dscnn)")
    p.add_argument("--preset", default="quick", help="quick (a few minutes on 2 cores, default) | full")
    p.add_argument("--target", default="esp32", help="firmware target (default: esp32)")
    p.add_argument("--seed", type=int, default=0)
    _leads_option(p)
    p.set_defaults(func=cmd_run)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:  # read by edge_ecg.tf before TensorFlow's first import
        os.environ["EDGE_ECG_VERBOSE"] = "1"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; completed work is kept in the run folder", file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError, RuntimeError) as exc:
        # DataError and the stages' errors are ValueErrors whose message names file and fix
        print(f"edge-ecg: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
