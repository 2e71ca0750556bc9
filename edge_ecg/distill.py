"""Teachers for knowledge distillation: soft labels that never come from the student's test fold.

A teacher is given as one of:

- a run folder (``runs/cnn_base``): usable when the student's test fold is the fold
  that run never trained on (its ``test_fold``);
- a cross-validation folder (``runs/cv/cnn_base``, see :mod:`edge_ecg.cv`): the fold
  run whose test fold is the student's is used, so the rotation never leaks;
- several of the above joined with ``,``: an ensemble, probabilities averaged;
- a predictions file ``.npz`` with ``ecg_ids``, ``probs`` (N, 5) and ``unseen_test_fold``;
- a cross-fitted teacher folder (:func:`cross_fit`, marked by ``crossfit.json``): each
  training record's soft label comes from a model that saw neither that record nor the
  student's test fold (the in-sample teachers above label records they trained on).

The teacher's probabilities must cover every training record of the student. Soft labels
are per record, so teacher and student may read different leads (a 12-lead teacher for a
``--leads 3`` student): each teacher model reads its own leads of the records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_ecg.data import PtbxlDataset
from edge_ecg.runfolder import CV_FILE, LABELLED_IDS_FILE, TEST_IDS_FILE, TRAIN_IDS_FILE, VAL_IDS_FILE, RunFolder, cv_fold_dir


CROSSFIT_FILE = "crossfit.json"
CROSSFIT_GROUPS = 4
"""Teacher models per student test fold: each labels 2 of the student's 8 training folds and trains on the other 6."""


class TeacherError(ValueError):
    """A teacher that cannot be used for this student; the message says why."""


def _run_probs(run: Path, records: PtbxlDataset, test_fold: int) -> np.ndarray:
    from edge_ecg.data import Standardizer
    from edge_ecg.train import STANDARDIZATION_FILE, TrainConfig, check_input_shape, load_run_model, predict, read_run_config

    config = TrainConfig.from_dict(read_run_config(run)["train"])
    if config.test_fold != test_fold:
        raise TeacherError(
            f"teacher {run} was trained with fold {test_fold} in its training or validation data (its test fold is "
            f"{config.test_fold}); its soft labels would leak the student's test fold {test_fold}"
        )
    records = _teacher_leads(records, tuple(config.leads), f"teacher {run}")
    model = load_run_model(run)
    x = Standardizer.load(run / STANDARDIZATION_FILE).transform(records.signals)
    check_input_shape(model, x, f"teacher {run}")
    return predict(model, x)


def _teacher_leads(records: PtbxlDataset, leads: tuple[str, ...], source: str) -> PtbxlDataset:
    """The records with the teacher's own leads: soft labels are per record, so a 12-lead teacher
    labels a reduced-lead student's records from all twelve (``records`` must hold them)."""
    from edge_ecg.data.leads import LeadError, display_name, select_leads

    try:
        return select_leads(records, leads)
    except LeadError:
        show = lambda names: ",".join(display_name(x) for x in names)  # noqa: E731
        raise TeacherError(f"{source} reads leads {show(leads)}; the records it should label hold only {show(records.leads)}") from None


def _npz_probs(path: Path, records: PtbxlDataset, test_fold: int) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        missing_keys = {"ecg_ids", "probs", "unseen_test_fold"} - set(z.files)
        if missing_keys:
            raise TeacherError(f"{path}: missing array(s) {', '.join(sorted(missing_keys))}")
        ids, probs, unseen = z["ecg_ids"], z["probs"], int(z["unseen_test_fold"])
    if unseen != test_fold:
        raise TeacherError(f"{path}: made by a teacher that saw fold {test_fold} (it kept out fold {unseen}); it would leak the test fold")
    index = {int(i): k for k, i in enumerate(ids)}
    absent = [int(i) for i in records.ecg_ids if int(i) not in index]
    if absent:
        raise TeacherError(f"{path}: no teacher prediction for {len(absent)} training record(s), e.g. ecg_id {absent[:5]}")
    return probs[[index[int(i)] for i in records.ecg_ids]].astype(np.float32)


def teacher_soft_labels(
    teacher: str, records: PtbxlDataset, *, test_fold: int, cache: Path | None = None
) -> np.ndarray:
    """The teacher's probabilities for ``records`` (N, 5), checked for leaks and coverage.

    ``records`` are the student's training records with every lead the data hold: a teacher
    model reads its own leads of them (its run's ``train.leads``), whatever the student's are.
    """
    if cache is not None and cache.is_file():
        return np.load(cache)
    parts = []
    for source in (t.strip() for t in teacher.split(",") if t.strip()):
        path = Path(source)
        if path.suffix == ".npz":
            parts.append(_npz_probs(path, records, test_fold))
        elif (path / CROSSFIT_FILE).is_file():
            parts.append(_npz_probs(crossfit_predictions(path, test_fold), records, test_fold))
        elif (path / CV_FILE).is_file():
            fold_run = cv_fold_dir(path, test_fold)
            if not RunFolder(fold_run).model.is_file():
                raise TeacherError(f"teacher {path}: fold {test_fold} has no trained model yet ({fold_run})")
            parts.append(_run_probs(fold_run, records, test_fold))
        elif RunFolder(path).config.is_file():
            parts.append(_run_probs(path, records, test_fold))
        else:
            raise TeacherError(f"teacher {source!r}: not a run folder, a CV folder or a .npz of predictions")
    if not parts:
        raise TeacherError("--teacher is empty")
    probs = np.mean(parts, axis=0).astype(np.float32)
    if cache is not None:
        np.save(cache, probs)
    return probs


def write_teacher_npz(path: Path, ecg_ids: np.ndarray, probs: np.ndarray, unseen_test_fold: int) -> None:
    """Save predictions in the form ``--teacher`` reads."""
    np.savez(path, ecg_ids=np.asarray(ecg_ids, np.int64), probs=np.asarray(probs, np.float32), unseen_test_fold=np.int64(unseen_test_fold))


# --------------------------------------------------------------------------- cross-fitted teacher


def crossfit_plan(test_fold: int, groups: int = CROSSFIT_GROUPS) -> list[dict]:
    """The teacher models of the student whose test fold is ``test_fold`` (validation fold: the next one).

    The student's eight training folds are cut into ``groups`` groups; model g labels group g
    and trains on the other training folds, selecting its epoch on the student's validation
    fold. No model trains on the records it labels, and none sees the student's test fold.
    """
    from edge_ecg.cv import FOLDS, rotation

    ((_, val_fold),) = rotation((test_fold,))
    train_folds = [k for k in FOLDS if k not in (test_fold, val_fold)]
    if not 2 <= groups <= len(train_folds):
        raise TeacherError(f"cross-fitting needs 2 to {len(train_folds)} groups, got {groups}")
    return [{"group": g, "labels_folds": [int(k) for k in part], "train_folds": [k for k in train_folds if k not in part],
             "val_fold": val_fold, "test_fold": test_fold}
            for g, part in enumerate(np.array_split(np.array(train_folds), groups))]


def _crossfit_fold_dir(teacher_dir: Path, test_fold: int) -> Path:
    return Path(teacher_dir) / f"fold{test_fold:02d}"


def _teacher_model(run: Path, config, dataset: PtbxlDataset, part: dict, progress: bool) -> np.ndarray:
    """Train (or resume) one cross-fitting model in ``run``; its probabilities for the records it labels."""
    from dataclasses import replace

    from edge_ecg import CLASSES, models
    from edge_ecg.data import Standardizer
    from edge_ecg.tf import keras
    from edge_ecg.train import BEST_WEIGHTS, STANDARDIZATION_FILE, STATE_DIR, FitData, FitOptions, fit, predict

    leads = getattr(config, "leads", None)
    if leads is not None:  # the model's channels, as train() selects them
        from edge_ecg.data.leads import select_leads

        dataset = select_leads(dataset, leads)
    train_ds = dataset.select(np.isin(dataset.folds, part["train_folds"]))
    if config.train_limit is not None:
        train_ds = train_ds.select(np.arange(min(config.train_limit, len(train_ds))))
    val_ds = dataset.select(dataset.folds == part["val_fold"])
    labelled = dataset.select(np.isin(dataset.folds, part["labels_folds"]))
    run.mkdir(parents=True, exist_ok=True)
    np.save(run / TRAIN_IDS_FILE, train_ds.ecg_ids)  # the bookkeeping check_crossfit audits
    np.save(run / VAL_IDS_FILE, val_ds.ecg_ids)
    # deterministic: a resume refits the same one; the teacher filters its input as its config says (train --highpass)
    standardizer = Standardizer.fit(train_ds.signals, tuple(dataset.leads), config.highpass_hz, config.rate)
    standardizer.save(run / STANDARDIZATION_FILE)
    data = FitData(standardizer.transform(train_ds.signals), train_ds.labels.astype(np.float32),
                   standardizer.transform(val_ds.signals), val_ds.labels.astype(np.float32), config.rate)
    keras.utils.set_random_seed(config.seed)
    model = models.build(config.arch, num_samples=data.x_train.shape[1], num_leads=data.x_train.shape[2],
                         num_classes=len(CLASSES), **config.arch_kwargs)
    fit(model, data, run, FitOptions.from_config(replace(config, teacher=None)), progress=progress)
    model.load_weights(run / STATE_DIR / BEST_WEIGHTS)
    probs = predict(model, standardizer.transform(labelled.signals))
    np.save(run / LABELLED_IDS_FILE, labelled.ecg_ids)
    return probs


def _cross_fit_fold(teacher_dir: Path, config, dataset: PtbxlDataset, test_fold: int, groups: int, progress: bool) -> Path:
    """All teacher models of one student test fold, and their soft labels as ``foldKK.npz``."""
    from edge_ecg.runfolder import atomic_write_json

    folder = _crossfit_fold_dir(teacher_dir, test_fold)
    plan = crossfit_plan(test_fold, groups)
    ids, probs = [], []
    for part in plan:
        run = folder / f"group{part['group']}"
        if progress:
            from edge_ecg.progress import console

            console().print(f"[bold]{Path(teacher_dir).name}[/]: test fold {test_fold}, model {part['group'] + 1} of {len(plan)} "
                            f"(labels folds {','.join(map(str, part['labels_folds']))}, validates on {part['val_fold']})")
        probs.append(_teacher_model(run, config, dataset, part, progress))
        ids.append(np.load(run / LABELLED_IDS_FILE))
    np.save(folder / TEST_IDS_FILE, dataset.ecg_ids[dataset.folds == test_fold])
    atomic_write_json(folder / "plan.json", plan)
    out = folder.with_suffix(".npz")
    write_teacher_npz(out, np.concatenate(ids), np.concatenate(probs), test_fold)
    check_crossfit(teacher_dir, test_fold)
    return out


def cross_fit(teacher_dir, config, *, dataset: PtbxlDataset | None = None, test_folds: tuple[int, ...] | None = None,
              groups: int = CROSSFIT_GROUPS, ray: str | None = None, progress: bool = True) -> Path:
    """Train the cross-fitted teacher of a rotation into ``teacher_dir`` (resumable); use it as ``--teacher teacher_dir``.

    For each student test fold t, :func:`crossfit_plan` models of ``config``'s architecture
    label the student's training records (``fold{t}.npz``). ``ray`` runs the test folds as
    Ray tasks. ``groups`` x len(test_folds) models are trained (40 for the whole rotation).
    """
    from dataclasses import asdict

    from edge_ecg.cv import FOLDS
    from edge_ecg.data import load_ptbxl
    from edge_ecg.runfolder import atomic_write_json
    from edge_ecg.scaleout import map_calls
    from edge_ecg.train import check_same_config

    teacher_dir = Path(teacher_dir)
    if config.teacher:
        raise TeacherError("a cross-fitted teacher is trained from labels only; drop --teacher from its configuration")
    test_folds = tuple(test_folds or FOLDS)
    unknown = [k for k in test_folds if k not in FOLDS]
    if unknown:
        raise TeacherError(f"test fold(s) {', '.join(map(str, unknown))}: PTB-XL's folds are 1 to 10")
    crossfit_plan(test_folds[0], groups)  # a bad number of groups fails before the data are read
    dataset = dataset if dataset is not None else load_ptbxl(config.data, config.rate)
    marker = teacher_dir / CROSSFIT_FILE
    if marker.is_file():
        saved = json.loads(marker.read_text())
        check_same_config(marker, saved["train"], config, "use the same options or another folder")
        if saved["groups"] != groups:
            raise TeacherError(f"{marker}: made with {saved['groups']} groups, not {groups}")
    else:
        teacher_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"format": 1, "groups": groups, "train": asdict(config)})
    todo = [t for t in test_folds if not _crossfit_fold_dir(teacher_dir, t).with_suffix(".npz").is_file()]
    if progress and todo != list(test_folds):
        from edge_ecg.progress import console

        done = ", ".join(str(t) for t in test_folds if t not in todo)
        console().print(f"[bold]{teacher_dir.name}[/]: test fold(s) {done} already cross-fitted (kept)")
    if progress and ray is not None and todo:
        from edge_ecg.progress import console

        console().print(f"[bold]{teacher_dir.name}[/]: test folds {', '.join(map(str, todo))} as Ray tasks ({ray})")
    map_calls(_cross_fit_fold, [(teacher_dir, config, dataset, t, groups, progress and ray is None) for t in todo], ray=ray)
    return teacher_dir


def crossfit_summary(teacher_dir) -> dict:
    """What a cross-fitted teacher folder holds: per student test fold its checked soft labels and models."""
    from edge_ecg.cv import FOLDS

    teacher_dir = Path(teacher_dir)
    marker = teacher_dir / CROSSFIT_FILE
    if not marker.is_file():
        raise TeacherError(f"{teacher_dir}: not a cross-fitted teacher (no {CROSSFIT_FILE})")
    saved = json.loads(marker.read_text())
    folds, missing = {}, []
    for k in FOLDS:
        npz = _crossfit_fold_dir(teacher_dir, k).with_suffix(".npz")
        if not npz.is_file():
            missing.append(k)
            continue
        check_crossfit(teacher_dir, k)
        models = []
        for part in json.loads((_crossfit_fold_dir(teacher_dir, k) / "plan.json").read_text()):
            state_path = _crossfit_fold_dir(teacher_dir, k) / f"group{part['group']}" / "state" / "state.json"
            state = json.loads(state_path.read_text()) if state_path.is_file() else {}
            models.append({**part, "best_epoch": state.get("best_epoch"), "best_val_auc": state.get("best_auc")})
        with np.load(npz) as z:
            records = int(len(z["ecg_ids"]))
        folds[str(k)] = {"soft_labels": str(npz), "records": records, "models": models}
    return {"teacher_dir": str(teacher_dir), "groups": saved["groups"], "train": saved["train"], "folds": folds,
            "folds_missing": missing, "use": f"--teacher {teacher_dir}"}


def check_crossfit(teacher_dir, test_fold: int) -> None:
    """TeacherError unless the bookkeeping of ``teacher_dir`` shows no leak for student test fold ``test_fold``.

    Reads each model's ``train_ecg_ids.npy``, ``val_ecg_ids.npy`` and ``labelled_ecg_ids.npy``
    and the student's ``test_ecg_ids.npy``:
    no model trained on a record it labels, none trained on or validated with a record whose
    label is the student's test fold, and every record is labelled once.
    """
    folder = _crossfit_fold_dir(Path(teacher_dir), test_fold)
    plan_path = folder / "plan.json"
    if not plan_path.is_file():
        raise TeacherError(f"{folder}: the cross-fitted teacher of test fold {test_fold} is not trained yet (no plan.json)")
    seen_labelled: set[int] = set()
    with np.load(folder.with_suffix(".npz")) as z:
        npz_ids = set(z["ecg_ids"].tolist())
    test_ids = set(np.load(folder / TEST_IDS_FILE).tolist())
    for part in json.loads(plan_path.read_text()):
        run = folder / f"group{part['group']}"
        trained = set(np.load(run / TRAIN_IDS_FILE).tolist())
        validated = set(np.load(run / VAL_IDS_FILE).tolist())
        labelled = set(np.load(run / LABELLED_IDS_FILE).tolist())
        leak = trained & labelled
        if leak:
            raise TeacherError(f"{run}: trained on {len(leak)} record(s) it labels, e.g. ecg_id {sorted(leak)[:5]}")
        if test_fold in part["train_folds"] or test_fold == part["val_fold"] or (trained | validated) & test_ids:
            raise TeacherError(f"{run}: saw the student's test fold {test_fold}")
        if seen_labelled & labelled:
            raise TeacherError(f"{run}: labels records another model of fold {test_fold} labels already")
        seen_labelled |= labelled
    if seen_labelled != npz_ids:
        raise TeacherError(f"{folder.with_suffix('.npz')}: holds other records than its models labelled")


def crossfit_predictions(teacher_dir, test_fold: int) -> Path:
    """The checked ``fold{t}.npz`` of a cross-fitted teacher (see :func:`check_crossfit`)."""
    check_crossfit(teacher_dir, test_fold)
    return _crossfit_fold_dir(Path(teacher_dir), test_fold).with_suffix(".npz")


__all__ = ["CROSSFIT_GROUPS", "TeacherError", "check_crossfit", "cross_fit", "crossfit_plan", "crossfit_summary",
           "teacher_soft_labels", "write_teacher_npz"]
