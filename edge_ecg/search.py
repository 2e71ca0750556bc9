"""Hardware-aware architecture search over the dscnn family (Optuna, optionally on Ray).

``search(run, config, target, constraints, trials=N)`` looks for dscnn shapes that
maximize validation macro AUC and minimize latency on ``target`` while fitting its flash,
RAM and (optionally) MACs and latency budgets. Each trial:

1. samples a shape from :class:`SearchSpace` (depth, widths, kernel sizes, strides,
   global pooling, input decimation, and dropout, which costs nothing on the chip: named
   arguments of :func:`edge_ecg.models.dscnn`); the first trial of a new study is dscnn's
   default shape when the space holds it, so the front always shows the reference;
2. builds the untrained model, converts it to int8 with a representative set of random
   records (sizes and operation counts do not depend on the weights' values) and plans
   it with the AOT generator: flash = the generated C's constant data (weights, biases,
   requantization constants; the code itself is not counted), RAM = its static
   activation buffer (model input included; stack not counted), MACs from its ops;
3. estimates latency (:func:`latency_ms`): on ``cortex-m4`` from the instructions the
   generated C executes on the QEMU mps2-an386 board, on ``esp32``/``esp32s3`` from
   per-operator rates (:data:`ESP_RATES`);
4. is *pruned* (recorded with its reason, never trained) when any budget is exceeded;
5. otherwise trains with the run's training options on each search fold k of the rotation
   (test fold k held out, validation fold k+1) and scores the mean best *validation*
   macro AUC. Test folds are never read: the rotation judges the winner once, later.
   The default search folds 8, 9, 10 validate on folds 9, 10 and 1 (354 of the 975
   records of the PTB-XL subset here): one fold's ~100 records give a macro AUC whose
   95 % interval is about 0.1 wide, wider than most differences between shapes.

Before any training the smallest shape of the space is costed; a budget even it
exceeds raises :class:`SearchError`. The run folder::

    runs/search/NAME/
      search.json      the settings (resuming with other ones is refused)
      study.db         the Optuna study (SQLite): rerunning the same command continues it
      trials/HASH/foldKK/   one ordinary run folder per trained shape and search fold
      pareto.md, pareto.json, pareto.png   the Pareto front (AUC vs latency) and the choice
      chosen.json      the chosen shape as --arch-arg values for train/compress/export/build

Latency figures are estimates for ranking shapes, not measurements of a board: QEMU
counts instructions, not cycles (no pipeline, wait states or multi-cycle instructions),
and the ESP rates are kernel benchmarks, not this model on the chip.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_ecg import CLASSES
from edge_ecg.aot.graph import AotError
from edge_ecg.runfolder import RunError, RunLock, atomic_write_json, atomic_write_text
from edge_ecg.train import TrainConfig, check_same_config

TARGETS = ("cortex-m4", "esp32", "esp32s3")

CORTEX_M4_CLOCK_MHZ = 100.0
"""Clock that turns QEMU instructions into milliseconds on ``cortex-m4``, one instruction per
cycle assumed: a mid-range Cortex-M4 part (STM32F4: 84-180 MHz). The emulated MPS2 AN386
FPGA image itself runs at 25 MHz. Override with ``clock_mhz``."""

# Cycles per multiply-accumulate (convolutions, fully connected) or per element read
# (pooling, reductions, elementwise ops), derived from the kernel table of ESP-NN's
# README (ESP32-S3 at 240 MHz, ticks per kernel call): 1x1 convolution 10x10x64 -> 64
# (409,600 MACs: 428,675 ticks optimized, 4,663,012 ANSI C), 3x3 convolution 3 -> 64 on
# 10x10 (172,800 MACs: 1,020,923 / 2,115,418), depthwise 3x3 x16 on 18x18 (36,864 MACs:
# 203,278 / 1,190,062), fully connected 265 x 3 (795 MACs: 9,547 / 15,853), average
# pool 3x3 x16 on 16x16 (28,224 reads: 160,580 / 541,462). ESP-NN has no vector path for
# the plain ESP32 and publishes no figures for it: its rates are the ANSI C column (an
# upper bound; ESP-NN's generic optimizations run somewhat faster).
ESP_RATES: dict[str, dict[str, float]] = {
    "esp32s3": {"clock_mhz": 240.0, "conv_1x1": 1.05, "conv": 5.9, "depthwise": 5.5, "fully_connected": 12.0, "element": 5.7},
    "esp32": {"clock_mhz": 240.0, "conv_1x1": 11.4, "conv": 12.2, "depthwise": 32.3, "fully_connected": 19.9, "element": 19.2},
}

SEARCH_FILE = "search.json"
STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
FRONT_MD, FRONT_JSON, FRONT_PLOT, CHOSEN_FILE = "pareto.md", "pareto.json", "pareto.png", "chosen.json"
REPRESENTATIVE_RECORDS = 8


class SearchError(ValueError):
    """A search that cannot run as asked; the message says why and what to change."""


@dataclass(frozen=True)
class Constraints:
    """Budgets a shape must meet before it is trained (None: no limit)."""

    flash_kb: float
    ram_kb: float
    max_macs: int | None = None
    latency_ms: float | None = None

    def violations(self, cost: dict) -> list[str]:
        """What ``cost`` exceeds, one phrase per budget (empty: it fits)."""
        out = []
        if cost["flash_bytes"] > self.flash_kb * 1024:
            out.append(f"flash {cost['flash_bytes'] / 1024:.1f} KB > {self.flash_kb:g} KB")
        if cost["ram_bytes"] > self.ram_kb * 1024:
            out.append(f"RAM {cost['ram_bytes'] / 1024:.1f} KB > {self.ram_kb:g} KB")
        if self.max_macs is not None and cost["macs"] > self.max_macs:
            out.append(f"MACs {cost['macs']:,} > {self.max_macs:,}")
        if self.latency_ms is not None and cost.get("latency_ms") is not None and cost["latency_ms"] > self.latency_ms:
            out.append(f"latency {cost['latency_ms']:.1f} ms > {self.latency_ms:g} ms")
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The dscnn shapes searched; every value is a named argument of :func:`edge_ecg.models.dscnn`.

    ``depth`` counts the stem and the depthwise-separable blocks (len(filters)); each layer
    draws its own width, stride and kernel size. Strides never exceed the smallest kernel,
    so every sampled shape is valid. ``dropout_rates`` (before the classifier) change the
    training only, never the int8 model's size or cost.
    """

    depths: tuple[int, ...] = (2, 3, 4, 5, 6)
    widths: tuple[int, ...] = (8, 16, 24, 32, 48, 64, 96, 128)
    strides: tuple[int, ...] = (1, 2, 4)
    kernel_sizes: tuple[int, ...] = (5, 7, 9, 11)
    pools: tuple[str, ...] = ("avg", "max")
    decimations: tuple[int, ...] = (1, 2, 4)
    dropout_rates: tuple[float, ...] = (0.1, 0.3, 0.5)

    def sample(self, trial) -> dict:
        """dscnn keyword arguments drawn by an Optuna trial."""
        depth = trial.suggest_categorical("depth", list(self.depths))
        return {
            "filters": [trial.suggest_categorical(f"width{i}", list(self.widths)) for i in range(depth)],
            "strides": [trial.suggest_categorical(f"stride{i}", list(self.strides)) for i in range(depth)],
            "kernel_size": [trial.suggest_categorical(f"kernel{i}", list(self.kernel_sizes)) for i in range(depth)],
            "pool": trial.suggest_categorical("pool", list(self.pools)),
            "decimate": trial.suggest_categorical("decimate", list(self.decimations)),
            "dropout_rate": trial.suggest_categorical("dropout_rate", list(self.dropout_rates)),
        }

    def params(self, arch_kwargs: dict) -> dict | None:
        """The Optuna parameters that :meth:`sample` turns into ``arch_kwargs`` (None: not in the space)."""
        depth = len(arch_kwargs["filters"])
        kernels = arch_kwargs["kernel_size"]
        kernels = [kernels] * depth if isinstance(kernels, int) else list(kernels)
        params = {"depth": depth, "pool": arch_kwargs["pool"], "decimate": arch_kwargs["decimate"],
                  "dropout_rate": arch_kwargs["dropout_rate"]}
        for i in range(depth):
            params.update({f"width{i}": arch_kwargs["filters"][i], f"stride{i}": arch_kwargs["strides"][i], f"kernel{i}": kernels[i]})
        choices = {"depth": self.depths, "pool": self.pools, "decimate": self.decimations, "dropout_rate": self.dropout_rates,
                   "width": self.widths, "stride": self.strides, "kernel": self.kernel_sizes}
        inside = all(v in choices[k.rstrip("0123456789")] for k, v in params.items())
        return params if inside and len(kernels) == depth == len(arch_kwargs["strides"]) else None

    def smallest(self) -> dict:
        """The cheapest shape of the space in flash, RAM, MACs and latency alike."""
        depth = min(self.depths)
        return {"filters": [min(self.widths)] * depth, "strides": [max(self.strides)] * depth,
                "kernel_size": [min(self.kernel_sizes)] * depth, "pool": "avg", "decimate": max(self.decimations)}


# --------------------------------------------------------------------------- cost


def int8_model(arch_kwargs: dict, num_samples: int, num_leads: int, seed: int = 0) -> bytes:
    """The untrained dscnn of ``arch_kwargs`` as an int8 TFLite flatbuffer, calibrated on random records.

    The same graph ``export`` converts (cut at the logits); only the quantization ranges differ
    from a trained model's, and they change neither sizes nor operation counts.
    """
    from edge_ecg import models
    from edge_ecg.export.convert import deployable_model, to_int8_tflite
    from edge_ecg.tf import keras

    keras.utils.set_random_seed(seed)
    model = models.build("dscnn", num_samples=num_samples, num_leads=num_leads, num_classes=len(CLASSES), **arch_kwargs)
    deployed, _ = deployable_model(model)
    rep = np.random.default_rng(seed).standard_normal((REPRESENTATIVE_RECORDS, num_samples, num_leads)).astype(np.float32)
    return to_int8_tflite(deployed, rep)


def _op_cycles(op: dict, rates: dict[str, float]) -> float:
    """Cycles of one generated op at ``rates`` (an alias such as RESHAPE costs nothing)."""
    if op.get("function") is None:
        return 0.0
    macs = int(op.get("macs", 0))
    name = op["op"]
    if name == "CONV_2D":
        in_channels = op["inputs"][0][-1]
        kernel_area = macs / max(1, int(np.prod(op["output"])) * in_channels)
        return macs * (rates["conv_1x1"] if kernel_area <= 1 else rates["conv"])
    if name == "DEPTHWISE_CONV_2D":
        return macs * rates["depthwise"]
    if name == "FULLY_CONNECTED":
        return macs * rates["fully_connected"]
    elements = max([int(np.prod(shape)) for shape in op["inputs"]] + [int(np.prod(op["output"]))])
    return elements * rates["element"]


def latency_ms(target: str, ops: list[dict], c_dir: Path | None = None, *, clock_mhz: float | None = None,
               input_shape: tuple[int, ...] | None = None, workdir: Path | None = None) -> dict:
    """Estimated milliseconds per inference on ``target`` and how they were obtained.

    ``cortex-m4``: the generated C in ``c_dir`` runs one random record on QEMU mps2-an386
    (:func:`edge_ecg.aot.cortex_m.run_on_mps2`); ms = instructions / clock, one instruction per
    cycle assumed (instructions are not cycles). ESP targets: the sum over ``ops`` (the AOT
    generator's report) of MACs or elements times :data:`ESP_RATES`, over the clock.
    """
    if target == "cortex-m4":
        from edge_ecg.aot.cortex_m import run_on_mps2, tools_missing

        missing = tools_missing()
        if missing:
            raise SearchError(f"--target cortex-m4 measures latency on QEMU mps2-an386: {missing}")
        clock = clock_mhz or CORTEX_M4_CLOCK_MHZ
        record = np.random.default_rng(0).integers(-128, 128, int(np.prod(input_shape)), dtype=np.int8)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            instructions = run_on_mps2(c_dir, [record], tmp)["instructions"][0]
        return {"latency_ms": instructions / (clock * 1e3), "instructions": int(instructions), "clock_mhz": clock,
                "latency_method": f"QEMU mps2-an386 instructions / {clock:g} MHz (1 instruction = 1 cycle assumed)"}
    if target not in ESP_RATES:
        raise SearchError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    rates = ESP_RATES[target]
    clock = clock_mhz or rates["clock_mhz"]
    cycles = sum(_op_cycles(op, rates) for op in ops)
    return {"latency_ms": cycles / (clock * 1e3), "cycles": int(cycles), "clock_mhz": clock,
            "latency_method": f"ESP-NN per-operator rates for {target} (edge_ecg.search.ESP_RATES) at {clock:g} MHz"}


def model_cost(arch_kwargs: dict, target: str, *, num_samples: int, num_leads: int, constraints: Constraints | None = None,
               clock_mhz: float | None = None, workdir: Path | None = None) -> dict:
    """Flash, RAM, MACs and latency of the int8 dscnn of ``arch_kwargs`` on ``target``, without training.

    With ``constraints``, latency is only estimated (QEMU on cortex-m4) once flash, RAM and
    MACs fit; ``violations`` lists what the shape exceeds.
    """
    from edge_ecg.aot import generate

    tflite = int8_model(arch_kwargs, num_samples, num_leads)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        report = generate(tflite, tmp)
        ops = report["ops"]
        cost = {"flash_bytes": int(report["weights_bytes"]), "ram_bytes": int(report["activation_bytes"]),
                "macs": int(sum(int(op.get("macs", 0)) for op in ops)), "tflite_bytes": len(tflite), "latency_ms": None}
        violations = constraints.violations(cost) if constraints else []
        if not violations:
            cost.update(latency_ms(target, ops, Path(tmp), clock_mhz=clock_mhz, input_shape=tuple(report["input"]["shape"]),
                                   workdir=workdir))
            violations = constraints.violations(cost) if constraints else []
    cost["violations"] = violations
    return cost


# --------------------------------------------------------------------------- trials


def default_dscnn_kwargs() -> dict:
    """dscnn's default shape in the form :meth:`SearchSpace.sample` returns."""
    from edge_ecg.models.dscnn import DEFAULT_DROPOUT_RATE, DEFAULT_FILTERS, DEFAULT_KERNEL_SIZE, DEFAULT_STRIDES

    return {"filters": list(DEFAULT_FILTERS), "strides": list(DEFAULT_STRIDES),
            "kernel_size": [DEFAULT_KERNEL_SIZE] * len(DEFAULT_FILTERS), "pool": "avg", "decimate": 1,
            "dropout_rate": DEFAULT_DROPOUT_RATE}


def shape_key(arch_kwargs: dict) -> str:
    """A short, stable folder name for a shape (the same shape resumes the same folder)."""
    return hashlib.sha256(json.dumps(arch_kwargs, sort_keys=True).encode()).hexdigest()[:12]


def train_trial(trial_dir: Path, config: TrainConfig, folds: tuple[int, ...], dataset, progress: bool = False) -> float:
    """Mean best validation macro AUC of ``config`` trained on each search fold (test k, validate k+1).

    One run folder per fold under ``trial_dir``, resumable. Module-level so it runs as a Ray task.
    """
    from edge_ecg.cv import rotation
    from edge_ecg.train import train

    aucs = []
    for test_fold, val_fold in rotation(folds):
        state = train(Path(trial_dir) / f"fold{test_fold:02d}", replace(config, test_fold=test_fold, val_fold=val_fold),
                      dataset=dataset, progress=progress)
        aucs.append(float(state["best_auc"]))
    return float(np.mean(aucs))


def arch_args(arch_kwargs: dict) -> list[str]:
    """``KEY=VALUE`` strings that ``--arch-arg`` parses back into ``arch_kwargs``."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}" for k, v in arch_kwargs.items()]


@dataclass
class SearchSettings:
    """Everything that determines a search (``search.json``); the trial count may grow between runs."""

    target: str
    constraints: Constraints
    folds: tuple[int, ...] = (8, 9, 10)
    clock_mhz: float | None = None
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    start_from_default: bool = True  # first trial: dscnn's default shape, when the space holds it

    def to_dict(self) -> dict:
        return {"target": self.target, "constraints": asdict(self.constraints), "folds": list(self.folds),
                "clock_mhz": self.clock_mhz, "seed": self.seed, "space": {k: list(v) for k, v in asdict(self.space).items()},
                "start_from_default": self.start_from_default}


def _open_search(run: Path, settings: SearchSettings, config: TrainConfig) -> None:
    path = run / SEARCH_FILE
    wanted = {"format": 1, "search": settings.to_dict(), "train": asdict(config)}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["search"] != wanted["search"]:
            diff = sorted(k for k in wanted["search"] if saved["search"].get(k) != wanted["search"][k])
            raise RunError(f"{path}: this search was started with other settings ({', '.join(diff)}); "
                           "use the same options to continue it, or another --run folder")
        check_same_config(path, saved["train"], config, "use the same training options to continue it, or another --run folder")
        return
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, wanted)


def check_feasible(settings: SearchSettings, num_samples: int, num_leads: int, workdir: Path | None = None) -> dict:
    """SearchError when even the smallest shape of the space exceeds a budget; else its cost."""
    smallest = settings.space.smallest()
    cost = model_cost(smallest, settings.target, num_samples=num_samples, num_leads=num_leads,
                      constraints=settings.constraints, clock_mhz=settings.clock_mhz, workdir=workdir)
    if cost["violations"]:
        raise SearchError(
            f"no dscnn of the search space fits {settings.target}: its smallest shape ({', '.join(arch_args(smallest))}) "
            f"already needs {'; '.join(cost['violations'])}. Raise the budget"
            + (" (RAM holds at least the int8 input record)" if any(v.startswith("RAM") for v in cost["violations"]) else "")
        )
    return cost


def search(
    run: str | os.PathLike,
    config: TrainConfig,
    settings: SearchSettings,
    *,
    trials: int,
    dataset=None,
    ray: str | None = None,
    progress: bool = True,
    max_pruned: int | None = None,
) -> dict:
    """Run (or continue) the search until ``trials`` shapes are trained; write and return the front.

    ``config`` holds the training options of every trial (its ``arch_kwargs`` are fixed
    arguments the sampled ones are added to). Pruned shapes do not count towards ``trials``;
    after ``max_pruned`` of them (default 50 + 20 x trials) the search stops with what it has.
    ``ray`` runs the trials' training as Ray tasks, as many at once as the cluster has CPUs.
    """
    from edge_ecg.data import load_ptbxl

    if settings.target not in TARGETS:
        raise SearchError(f"unknown --target {settings.target!r}; choose from {', '.join(TARGETS)}")
    if config.arch != "dscnn":
        raise SearchError(f"the search covers the dscnn family; got --arch {config.arch}")
    if trials < 1:
        raise SearchError(f"--trials must be at least 1, got {trials}")
    bad_folds = [k for k in settings.folds if k not in range(1, 11)]
    if bad_folds or not settings.folds:
        raise SearchError(f"search folds must be among 1..10, got {list(settings.folds)}")
    run = Path(run)
    dataset = dataset if dataset is not None else load_ptbxl(config.data, config.rate)
    num_samples = dataset.signals.shape[1]
    num_leads = len(getattr(config, "leads", None) or dataset.leads)  # the model's channels (train() selects them)
    smallest = check_feasible(settings, num_samples, num_leads)  # before anything is written or trained
    with RunLock(run, "search", create=True):  # one writer per study: a second search of the same folder is refused
        return _search_locked(run, config, settings, trials=trials, dataset=dataset, ray=ray, progress=progress,
                              max_pruned=max_pruned, num_samples=num_samples, num_leads=num_leads, smallest=smallest)


def _search_locked(run: Path, config: TrainConfig, settings: SearchSettings, *, trials: int, dataset, ray: str | None,
                   progress: bool, max_pruned: int | None, num_samples: int, num_leads: int, smallest: dict) -> dict:
    import optuna

    from edge_ecg.progress import console
    from edge_ecg.scaleout import cpus, map_calls

    say = console().print if progress else (lambda *a, **k: None)
    _open_search(run, settings, config)
    say(f"smallest shape of the space: {smallest['flash_bytes'] / 1024:.1f} KB flash, {smallest['ram_bytes'] / 1024:.1f} KB RAM, "
        f"{smallest['latency_ms']:.2f} ms on {settings.target}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="dscnn", storage=f"sqlite:///{(run / STUDY_FILE).resolve()}", load_if_exists=True,
        directions=["maximize", "minimize"],
    )
    # A resumed study reseeds its sampler by its length: the same seed again would redraw the shapes
    # of the first run's random start-up trials (still deterministic for a given history).
    study.sampler = optuna.samplers.TPESampler(seed=settings.seed + len(study.get_trials(deepcopy=False)), n_startup_trials=8)
    States = optuna.trial.TrialState
    if settings.start_from_default and not study.get_trials(deepcopy=False):
        # The hand-made shape first: the front then answers "did the search beat it?" on the same folds.
        start = settings.space.params(default_dscnn_kwargs())
        if start is not None:
            study.enqueue_trial(start)
    for t in study.get_trials(deepcopy=False, states=(States.RUNNING,)):
        # Interrupted: mark it failed and ask for the same shape again; its training folder resumes.
        # (WAITING trials are enqueued shapes not yet asked for: the next ask() takes them as they are.)
        study._storage.set_trial_state_values(t._trial_id, States.FAIL)  # noqa: SLF001 - Optuna has no public call for this
        if t.params:
            study.enqueue_trial(t.params, skip_if_exists=False)
    max_pruned = max_pruned if max_pruned is not None else 50 + 20 * trials
    parallel = cpus(ray)

    def count(*states):
        return len(study.get_trials(deepcopy=False, states=states))

    while count(States.COMPLETE) < trials and count(States.PRUNED, States.FAIL) < max_pruned:
        batch = []
        while len(batch) < min(parallel, trials - count(States.COMPLETE)) and count(States.PRUNED, States.FAIL) < max_pruned:
            trial = study.ask()
            kwargs = settings.space.sample(trial)
            try:
                cost = model_cost(kwargs, settings.target, num_samples=num_samples, num_leads=num_leads,
                                  constraints=settings.constraints, clock_mhz=settings.clock_mhz)
            except (RuntimeError, AotError) as exc:
                # A shape the AOT generator or the QEMU harness cannot cost is skipped with the reason (listed
                # in pareto.md), not trained: one toolchain defect must not end a search of hours.
                trial.set_user_attr("arch_kwargs", kwargs)
                trial.set_user_attr("cost_error", _error_line(exc))
                study.tell(trial, state=States.FAIL)
                say(f"trial {trial.number}: not costed, skipped ({_error_line(exc)})")
                continue
            trial.set_user_attr("arch_kwargs", kwargs)
            trial.set_user_attr("cost", {k: v for k, v in cost.items() if k != "violations"})
            if cost["violations"]:
                trial.set_user_attr("pruned", "; ".join(cost["violations"]))
                study.tell(trial, state=States.PRUNED)
                say(f"trial {trial.number}: pruned before training ({'; '.join(cost['violations'])})")
                continue
            batch.append((trial, kwargs, cost))
        if not batch:
            break
        for trial, kwargs, cost in batch:
            say(f"trial {trial.number}: {' '.join(arch_args(kwargs))}: {cost['flash_bytes'] / 1024:.1f} KB flash, "
                f"{cost['ram_bytes'] / 1024:.1f} KB RAM, {cost['macs']:,} MACs, {cost['latency_ms']:.2f} ms; training")
        calls = [(run / TRIALS_DIR / shape_key(kwargs), replace(config, arch_kwargs={**config.arch_kwargs, **kwargs}),
                  tuple(settings.folds), dataset, progress and ray is None) for _, kwargs, _ in batch]
        aucs = map_calls(train_trial, calls, ray=ray)
        for (trial, kwargs, cost), call, auc in zip(batch, calls, aucs):
            trial.set_user_attr("folder", str(call[0]))
            study.tell(trial, [auc, cost["latency_ms"]])
            say(f"trial {trial.number}: validation macro AUC {auc:.4f}")
    return write_front(run, study, settings, config)


def _error_line(exc: Exception) -> str:
    """The first line of ``exc`` and its first compiler ``error:`` line, if any."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    detail = next((line.strip() for line in lines[1:] if "error:" in line), None)
    return lines[0].rstrip(":") + (f": {detail}" if detail else "")


# --------------------------------------------------------------------------- outputs


def _rows(study) -> tuple[list[dict], list[dict]]:
    import optuna

    done, pruned = [], []
    front = {t.number for t in study.best_trials} if any(
        t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) else set()
    for t in study.get_trials(deepcopy=False):
        row = {"trial": t.number, "arch_kwargs": t.user_attrs.get("arch_kwargs"), **t.user_attrs.get("cost", {})}
        if t.state == optuna.trial.TrialState.COMPLETE:
            done.append({**row, "val_macro_auc": t.values[0], "pareto": t.number in front, "folder": t.user_attrs.get("folder")})
        elif t.state == optuna.trial.TrialState.PRUNED:
            pruned.append({**row, "reason": t.user_attrs.get("pruned", "")})
        elif "cost_error" in t.user_attrs:
            pruned.append({**row, "reason": f"not costed: {t.user_attrs['cost_error']}"})
    return done, pruned


def choose(done: list[dict]) -> dict | None:
    """The front's shape with the best validation AUC (ties: the faster)."""
    front = [r for r in done if r["pareto"]]
    return max(front, key=lambda r: (r["val_macro_auc"], -r["latency_ms"])) if front else None


def write_front(run: Path, study, settings: SearchSettings, config: TrainConfig) -> dict:
    """pareto.md/.json/.png and chosen.json from the study; returns what pareto.json holds."""
    done, pruned = _rows(study)
    if not done:
        raise SearchError(f"{run}: no trial was trained ({len(pruned)} pruned: e.g. {pruned[0]['reason'] if pruned else '-'}); "
                          "loosen the budgets")
    chosen = choose(done)
    args = arch_args(chosen["arch_kwargs"])
    command = "edge-ecg train --arch dscnn " + " ".join(f"--arch-arg '{a}'" for a in args)
    result = {"target": settings.target, "constraints": asdict(settings.constraints), "search_folds": list(settings.folds),
              "selection": "mean best validation macro AUC over the search folds (test folds never read)",
              "latency_method": chosen.get("latency_method"), "trained": len(done), "pruned": len(pruned),
              "front": sorted((r for r in done if r["pareto"]), key=lambda r: r["latency_ms"]),
              "trials": done, "pruned_trials": pruned,
              "chosen": {**chosen, "arch": "dscnn", "arch_args": args, "command": command}}
    atomic_write_json(run / FRONT_JSON, result)
    atomic_write_json(run / CHOSEN_FILE, {"arch": "dscnn", "arch_kwargs": chosen["arch_kwargs"], "arch_args": args,
                                          "command": command, "val_macro_auc": chosen["val_macro_auc"]})
    c = settings.constraints
    lines = [f"# Search: dscnn on {settings.target}", "",
             f"Budgets: flash {c.flash_kb:g} KB, RAM {c.ram_kb:g} KB"
             + (f", {c.max_macs:,} MACs" if c.max_macs else "") + (f", {c.latency_ms:g} ms" if c.latency_ms else "")
             + f". {len(done)} shapes trained, {len(pruned)} pruned before training. Selection: {result['selection']}, "
             f"search folds {', '.join(map(str, settings.folds))}.", "",
             f"Latency: {chosen.get('latency_method')}; an estimate for ranking shapes, not a board measurement.", "",
             "## Pareto front", "",
             "| trial | val macro AUC | latency (ms) | flash (KB) | RAM (KB) | MACs | --arch-arg |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["front"]:
        lines.append(f"| {r['trial']} | {r['val_macro_auc']:.4f} | {r['latency_ms']:.2f} | {r['flash_bytes'] / 1024:.1f} | "
                     f"{r['ram_bytes'] / 1024:.1f} | {r['macs']:,} | `{' '.join(arch_args(r['arch_kwargs']))}` |")
    lines += ["", f"## Chosen (best validation AUC on the front): trial {chosen['trial']}", "", "```", command, "```", "",
              "The same `--arch-arg` values serve `evaluate --cv` (judge it once on the rotation's test folds); "
              "`compress`, `export` and `build` read them from the run folder.", ""]
    if pruned:
        lines += ["## Pruned before training", "", "| trial | reason |", "| ---: | --- |"]
        lines += [f"| {r['trial']} | {r['reason']} |" for r in pruned]
        lines.append("")
    lines.append(f"![validation AUC against latency]({FRONT_PLOT})")
    atomic_write_text(run / FRONT_MD, "\n".join(lines) + "\n")
    _plot(run / FRONT_PLOT, done, settings)
    return result


def _plot(path: Path, done: list[dict], settings: SearchSettings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    others = [r for r in done if not r["pareto"]]
    front = sorted((r for r in done if r["pareto"]), key=lambda r: r["latency_ms"])
    ax.scatter([r["latency_ms"] for r in others], [r["val_macro_auc"] for r in others], c="0.6", s=22, label="trained shape")
    ax.plot([r["latency_ms"] for r in front], [r["val_macro_auc"] for r in front], "o-", c="C3", label="Pareto front")
    for r in front:
        ax.annotate(str(r["trial"]), (r["latency_ms"], r["val_macro_auc"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if settings.constraints.latency_ms:
        ax.axvline(settings.constraints.latency_ms, ls="--", c="0.4", lw=1, label="latency budget")
    ax.set_xlabel(f"estimated latency on {settings.target} (ms per record)")
    ax.set_ylabel("validation macro AUC")
    ax.set_title(f"dscnn search: {len(done)} trained shapes")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


__all__ = [
    "CORTEX_M4_CLOCK_MHZ",
    "ESP_RATES",
    "TARGETS",
    "Constraints",
    "SearchError",
    "SearchSettings",
    "SearchSpace",
    "arch_args",
    "check_feasible",
    "default_dscnn_kwargs",
    "latency_ms",
    "model_cost",
    "search",
    "train_trial",
    "write_front",
]
