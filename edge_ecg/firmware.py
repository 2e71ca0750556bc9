"""Render, build and flash the ESP32 benchmark firmware of a run.

:func:`build` turns ``runs/NAME/export/`` into a complete, self-contained
ESP-IDF project in ``runs/NAME/firmware/<target>/``: the template
``firmware/esp32``, the portable core ``firmware/core`` (in ``main/core/``),
the generated model sources (in ``main/model/``) and ``build.json`` (target,
runtime, model hash, every file's SHA-256). Where ESP-IDF's ``idf.py`` is at
hand it also builds the project and reports flash and RAM use; elsewhere it
returns the commands to run where ESP-IDF is installed.

Two model runtimes share the one template: ``tflm`` (TensorFlow Lite Micro,
``main/tflm_runner.cc`` and the export's ``model_data.cc``) and ``aot`` (the
ahead-of-time C model of ``edge-ecg export --runtime aot``,
``main/aot_runner.c`` and ``export/aot/ecg_model.c``, no TFLite Micro). A
project holds its runtime's runner and model files only; ``main/CMakeLists.txt``
compiles the runtime that the rendered ``main/ecg_runtime.cmake`` names, and
``main/idf_component.yml`` is rendered per runtime (its
``# if runtime == X`` ... ``# endif runtime`` blocks), so only a tflm project
depends on espressif/esp-tflite-micro.

:func:`flash` writes a built project to a board, with ``idf.py`` or else with
esptool and the offsets of ``build/flasher_args.json``; without a port it
picks the one attached board (:func:`find_board_port`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from edge_ecg import __version__
from edge_ecg.runfolder import BUILD_RECORD, EXPORT_FILE, TFLITE_FILE, RunFolder, sha256_file, write_index

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
TEMPLATE_DIR = FIRMWARE_DIR / "esp32"
CORE_DIR = FIRMWARE_DIR / "core"

TARGETS = ("esp32", "esp32s3", "esp32c3")
RUNTIMES = ("tflm", "aot")
# Baud rate of the benchmark UART (main/Kconfig.projbuild) and of flashing.
UART_BAUD = 921600

# What `edge-ecg export` writes into runs/NAME/export/.
EXPORT_FILES = (TFLITE_FILE, "model_data.cc", "model_data.h", "model_ops.h", "model_config.h", EXPORT_FILE)
# The export files that go into the project's main/model/ (the .tflite is not compiled in).
MODEL_SOURCES = ("model_data.cc", "model_data.h", "model_ops.h", "model_config.h", EXPORT_FILE)
# Macros of the generated model_config.h that the port reads (firmware/esp32/main/config/model_config.h).
REQUIRED_MODEL_MACROS = (
    "ECG_INPUT_SAMPLES",
    "ECG_INPUT_LEADS",
    "ECG_NUM_CLASSES",
    "ECG_INPUT_SCALE",
    "ECG_INPUT_ZERO_POINT",
    "ECG_OUTPUT_SCALE",
    "ECG_OUTPUT_ZERO_POINT",
    "ECG_ARENA_BYTES",
    "ECG_ARENA_BYTES_ESP32",
    "ECG_ARENA_BYTES_ESP32S3",
    "ECG_MODEL_SHA256",
)
# The arena macro config/model_config.h picks for each target (CONFIG_IDF_TARGET_*):
# ESP-NN takes conv scratch from the arena on ESP32-S3 only; ESP32-C3 runs ESP32's kernels.
TARGET_ARENA_MACROS = {"esp32": "ECG_ARENA_BYTES_ESP32", "esp32s3": "ECG_ARENA_BYTES_ESP32S3",
                       "esp32c3": "ECG_ARENA_BYTES_ESP32"}  # fmt: skip
# Names the port's C++ expects in the other generated files.
REQUIRED_SYMBOLS = {
    "model_data.h": ("g_ecg_model_data",),
    "model_data.cc": ("g_ecg_model_data",),
    "model_ops.h": ("kEcgOpCount", "ecg_register_ops"),
}

# What `edge-ecg export --runtime aot` writes into runs/NAME/export/ for the AOT
# runtime: the ahead-of-time C model in aot/, besides the files above.
AOT_EXPORT_DIR = "aot"
AOT_SOURCES = ("ecg_model.c", "ecg_model.h")
AOT_EXPORT_FILES = (TFLITE_FILE, "model_config.h", EXPORT_FILE,
                    *(f"{AOT_EXPORT_DIR}/{name}" for name in AOT_SOURCES))  # fmt: skip
# What an AOT project's main/model/ holds: name there -> path in export/.
AOT_MODEL_SOURCES = {"model_config.h": "model_config.h", EXPORT_FILE: EXPORT_FILE,
                     **{name: f"{AOT_EXPORT_DIR}/{name}" for name in AOT_SOURCES}}  # fmt: skip
# Macros of the generated ecg_model.h that aot_runner.c reads.
REQUIRED_AOT_MACROS = (
    "ECG_MODEL_INPUT_SIZE",
    "ECG_MODEL_INPUT_SCALE",
    "ECG_MODEL_INPUT_ZERO_POINT",
    "ECG_MODEL_OUTPUT_SIZE",
    "ECG_MODEL_OUTPUT_SCALE",
    "ECG_MODEL_OUTPUT_ZERO_POINT",
    "ECG_MODEL_ACTIVATION_BYTES",
    "ECG_MODEL_OK",
)
AOT_ENTRY_POINT = "ecg_model_invoke"

# The template's model runners: a project holds its runtime's only.
RUNNERS = {"tflm": "main/tflm_runner.cc", "aot": "main/aot_runner.c"}
# Written into every project: main/CMakeLists.txt reads ECG_RUNTIME from it.
RUNTIME_CMAKE = "main/ecg_runtime.cmake"
# Template files whose "# if runtime == X" ... "# endif runtime" blocks stay
# only in a project for runtime X (the marker lines never do).
RENDERED_PER_RUNTIME = ("main/idf_component.yml",)
_BLOCK_BEGIN = re.compile(r"^[ \t]*#[ \t]*if runtime == (\S+)[ \t]*$")
_BLOCK_END = re.compile(r"^[ \t]*#[ \t]*endif runtime[ \t]*$")

# Left alone when a project is rendered again: ESP-IDF's build output, the
# downloaded components and the configuration, so rebuilds stay incremental.
KEPT_ON_RERENDER = ("build", "managed_components", "dependencies.lock", "sdkconfig", "sdkconfig.old")
# Of those, what the component manager derived from idf_component.yml: deleted
# when a project is rendered again for another runtime, whose manifest differs.
DEPENDENCIES = ("managed_components", "dependencies.lock")
# Written into every project in place of the template's README (which describes the template,
# not a project); PROTOCOL.md is copied beside it so the README's link resolves.
PROJECT_README = "README.md"
PROJECT_PROTOCOL = "PROTOCOL.md"
TARGET_NAMES = {"esp32": "ESP32", "esp32s3": "ESP32-S3", "esp32c3": "ESP32-C3"}

# USB vendor IDs of ESP32 boards' serial ports: the chip's own USB (ESP32-S3,
# ESP32-C3 USB-Serial-JTAG) and the USB-UART bridges dev boards carry.
BOARD_USB_VENDORS = {
    0x303A: "Espressif USB-Serial-JTAG / USB-OTG",
    0x10C4: "Silicon Labs CP210x",
    0x1A86: "WCH CH340/CH343/CH9102",
    0x0403: "FTDI",
}


class FirmwareError(ValueError):
    """A firmware step cannot go on; the message names the file or port and the fix."""


class UnknownTargetError(FirmwareError):
    """The target (or runtime) is not one edge-ecg builds for."""


class MissingExportError(FirmwareError):
    """The run has no complete ``export/``."""


class BoardNotFoundError(FirmwareError):
    """No single serial port can be chosen for the board."""


class ToolFailedError(FirmwareError):
    """idf.py or esptool exited with an error."""


# --------------------------------------------------------------------------- checks


def _check_choice(value: str, choices: Iterable[str], what: str, error: type[FirmwareError]) -> str:
    choices = tuple(choices)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value).lower(), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise error(f"unknown {what} {value!r}{hint} (choose from {', '.join(choices)})")


def check_target(target: str) -> str:
    """``target`` if edge-ecg builds for it, else :class:`UnknownTargetError` with a "did you mean"."""
    return _check_choice(target, TARGETS, "target", UnknownTargetError)


def check_runtime(runtime: str) -> str:
    """``runtime`` if edge-ecg builds firmware for it, else :class:`UnknownTargetError` with a "did you mean"."""
    return _check_choice(runtime, RUNTIMES, "runtime", UnknownTargetError)


def _export_fix(run: Path, runtime: str) -> str:
    return f"run `edge-ecg export --run {run}{' --runtime aot' if runtime == 'aot' else ''}`"


def _model_macros(config_h: Path) -> dict[str, str]:
    """``#define NAME value`` lines of a header, value stripped of comments."""
    macros = {}
    for match in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(?:[ \t]+(.*))?$", config_h.read_text(), re.M):
        value = re.sub(r"/\*.*?\*/|//.*$", "", match.group(2) or "").strip()
        macros[match.group(1)] = value
    return macros


def _export_dir(run: Path, runtime: str = "tflm") -> Path:
    """``run/export`` after checking that every file the ``runtime``'s firmware needs is there and usable."""
    export = RunFolder(run).export
    fix = f"{_export_fix(run, runtime)} first"
    for name in AOT_EXPORT_FILES if runtime == "aot" else EXPORT_FILES:
        if not (export / name).is_file():
            raise MissingExportError(f"{export / name} is missing: {fix}")
    missing = [m for m in REQUIRED_MODEL_MACROS if m not in _model_macros(export / "model_config.h")]
    if missing:
        raise MissingExportError(
            f"{export / 'model_config.h'} does not define {', '.join(missing)}, which the ESP32 port reads: "
            f"{fix} (or map the new names in firmware/esp32/main/config/model_config.h)"
        )
    if runtime == "aot":
        header = export / AOT_EXPORT_DIR / "ecg_model.h"
        missing = [m for m in REQUIRED_AOT_MACROS if m not in _model_macros(header)]
        if missing:
            raise MissingExportError(
                f"{header} does not define {', '.join(missing)}, which firmware/esp32/main/aot_runner.c reads: {fix}"
            )
        required = {f"{AOT_EXPORT_DIR}/{name}": (AOT_ENTRY_POINT,) for name in AOT_SOURCES}
    else:
        required = REQUIRED_SYMBOLS
    for name, symbols in required.items():
        text = (export / name).read_text(errors="replace")
        absent = [s for s in symbols if s not in text]
        if absent:
            raise MissingExportError(f"{export / name} does not mention {', '.join(absent)}: {fix}")
    return export


def _check_same_model(run: Path, export: Path, runtime: str) -> str:
    """The SHA-256 of ``model_int8.tflite``, after checking that the generated sources are of that model."""
    model_sha256 = sha256_file(export / TFLITE_FILE)
    declared = {"model_config.h": _model_macros(export / "model_config.h")["ECG_MODEL_SHA256"].strip('"').lower()}
    if runtime == "aot":
        # The generator names the model's hash in its banner: " * model: sha256 <hex>".
        header = export / AOT_EXPORT_DIR / "ecg_model.h"
        match = re.search(r"\bmodel: sha256 ([0-9a-fA-F]{64})\b", header.read_text(errors="replace"))
        declared[f"{AOT_EXPORT_DIR}/ecg_model.h"] = match.group(1).lower() if match else ""
    for name, sha in declared.items():
        if re.fullmatch(r"[0-9a-f]{64}", sha) and sha != model_sha256:
            raise MissingExportError(
                f"{export / name} is for another model (sha256 {sha[:12]}..., "
                f"model_int8.tflite {model_sha256[:12]}...): {_export_fix(run, runtime)} again"
            )
    return model_sha256


def esp_tflite_micro_version(component: str = "esp-tflite-micro") -> str:
    """The release of ``espressif/<component>`` the template pins (``main/idf_component.yml``)."""
    manifest = TEMPLATE_DIR / "main" / "idf_component.yml"
    match = re.search(rf'espressif/{re.escape(component)}:\s*"==([^"]+)"', manifest.read_text())
    if not match:
        raise FirmwareError(f"{manifest} does not pin espressif/{component} to one version (\"==X.Y.Z\")")
    return match.group(1)


# --------------------------------------------------------------------------- rendering


def _for_runtime(text: str, runtime: str, source: Path) -> str:
    """``text`` without its other runtimes' ``# if runtime == X`` ... ``# endif runtime`` blocks and the markers."""
    kept, block = [], None
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        begin = _BLOCK_BEGIN.match(line)
        if begin:
            if block is not None or begin.group(1) not in RUNTIMES:
                problem = "inside another block" if block is not None else f"names no runtime of {', '.join(RUNTIMES)}"
                raise FirmwareError(f"{source}:{number}: `{line.strip()}` {problem}")
            block = begin.group(1)
        elif _BLOCK_END.match(line):
            if block is None:
                raise FirmwareError(f"{source}:{number}: `{line.strip()}` closes no `# if runtime == X`")
            block = None
        elif block is None or block == runtime:
            kept.append(line)
    if block is not None:
        raise FirmwareError(f"{source}: `# if runtime == {block}` has no `# endif runtime`")
    return "".join(kept)


def _template_files() -> dict[str, Path]:
    if not (TEMPLATE_DIR / "CMakeLists.txt").is_file() or not CORE_DIR.is_dir():
        raise FirmwareError(
            f"firmware sources not found at {FIRMWARE_DIR}: edge-ecg must be installed from its source tree "
            "(pip install -e .)"
        )
    files = {}
    for path in sorted(TEMPLATE_DIR.rglob("*")):
        rel = path.relative_to(TEMPLATE_DIR)
        # Build output or rendered folders someone left in the template are not part of it.
        if rel.parts[0] in KEPT_ON_RERENDER or rel.parts[:2] in (("main", "core"), ("main", "model")):
            continue
        if path.is_file() and "__pycache__" not in rel.parts:
            files[rel.as_posix()] = path
    return files


def _project_files(export: Path, runtime: str = "tflm") -> dict[str, Path | bytes]:
    """Every file of a rendered project: its path in the project -> where it comes from, or its content."""
    files: dict[str, Path | bytes] = {}
    for rel, path in _template_files().items():
        if rel in RUNNERS.values() and rel != RUNNERS[runtime]:
            continue
        files[rel] = _for_runtime(path.read_text(), runtime, path).encode() if rel in RENDERED_PER_RUNTIME else path
    files[RUNTIME_CMAKE] = (
        f"# Written by `edge-ecg build --runtime {runtime}`: the model runtime main/CMakeLists.txt compiles.\n"
        f"set(ECG_RUNTIME {runtime})\n"
    ).encode()
    for path in sorted(CORE_DIR.iterdir()):
        if path.is_file():
            files[f"main/core/{path.name}"] = path
    model = AOT_MODEL_SOURCES if runtime == "aot" else {name: name for name in MODEL_SOURCES}
    for name, source in model.items():
        files[f"main/model/{name}"] = export / source
    return files


def project_readme(run: Path, target: str, runtime: str, export: Path, model_sha256: str) -> str:
    """The README of a rendered project: what it runs (target, runtime, model, memory) and how to build, flash and bench it."""
    run_arg = shlex.quote(str(run))
    aot = " --runtime aot" if runtime == "aot" else ""
    model_bytes = (export / TFLITE_FILE).stat().st_size
    if runtime == "tflm":
        macro = TARGET_ARENA_MACROS[target]
        arena = _model_macros(export / "model_config.h")[macro]
        runtime_line = (f"TensorFlow Lite Micro (espressif/esp-tflite-micro {esp_tflite_micro_version()}, "
                        f"ESP-NN kernels; `main/tflm_runner.cc`)")
        scratch = ", ESP-NN's conv scratch included" if target == "esp32s3" else ""
        memory = (f"| tensor arena | {int(arena):,} B (`{macro}`, measured by `edge-ecg export`{scratch}); in PSRAM "
                  f"when the board has it, else internal RAM (menuconfig: `ECG_ARENA_INTERNAL_FIRST`) |"
                  if arena.isdigit() else f"| tensor arena | `{macro}` = {arena} |")
    else:
        activation = _model_macros(export / AOT_EXPORT_DIR / "ecg_model.h")["ECG_MODEL_ACTIVATION_BYTES"]
        runtime_line = "the ahead-of-time C model of `edge-ecg export --runtime aot` (`main/aot_runner.c`; no TFLite Micro)"
        shown = f"{int(activation):,} B" if activation.isdigit() else activation
        memory = f"| activations | {shown} in one static buffer in internal RAM (`ECG_MODEL_ACTIVATION_BYTES`); weights in flash |"
    return f"""# edge-ecg benchmark firmware: {TARGET_NAMES[target]}, {runtime}

Written by `edge-ecg build` (edge-ecg {__version__}) from the run `{run}`; rendering again rewrites this
project, so change the run or the template (`firmware/esp32` of edge-ecg's source tree), not these files.
The firmware runs the run's int8 ECG model and serves the benchmark protocol ([PROTOCOL.md](PROTOCOL.md): MLPerf
Tiny / EEMBC commands plus edge-ecg's `info%`, binary load and raw int8 results).

| | |
|---|---|
| target | {TARGET_NAMES[target]} (`{target}`); ESP-IDF v5.1 or later |
| runtime | {runtime_line} |
| model | {model_bytes:,} B int8 `.tflite`, SHA-256 `{model_sha256}` (reported by `info%`; `edge-ecg bench` refuses a board running another) |
{memory}
| serial | UART0 at {UART_BAUD} baud, 8N1 (the dev board's USB-UART bridge); menuconfig → *edge-ecg benchmark* changes it |

## Build and flash

With ESP-IDF installed (`. $IDF_PATH/export.sh`), from edge-ecg's checkout:

```bash
edge-ecg build --run {run_arg} --target {target}{aot}     # renders this folder again, then idf.py build
edge-ecg flash --run {run_arg} --target {target}          # idf.py flash, or esptool with build/flasher_args.json
```

Or in this folder, on any machine with ESP-IDF:

```bash
idf.py set-target {target}
idf.py build flash
```

## Benchmark

```bash
edge-ecg bench --run {run_arg} --port /dev/ttyUSB0        # latency, macro AUC, parity with the host emulator
```

Results are appended to `{run}/bench/serial-<port>.jsonl` as they arrive, the summary goes to
`serial-<port>.json`; rerun the same command to continue an interrupted benchmark, `--fresh` starts over.

## What is where

| path | |
|---|---|
| `main/main.cc`, `main/th_esp32.cc`, `main/{RUNNERS[runtime].split("/")[1]}` | the ESP32 port and its model runner |
| `main/core/` | the portable benchmark core (C99) |
| `main/model/` | the run's export: model sources, `model_config.h`, `export.json` |
| `build.json` | target, runtime, model hash and every file's SHA-256, as rendered |

Serial-line details (boot output, console) and the `sdkconfig.defaults` settings are described in
`firmware/esp32/README.md` of edge-ecg's source tree.
"""


def _previous_record(project: Path) -> dict:
    """build.json of an earlier render; {} for a new or empty folder; refuses any other folder."""
    if not project.exists():
        return {}
    if not project.is_dir():
        raise FirmwareError(f"{project} is a file, not a folder: choose another output folder (--out)")
    record = project / BUILD_RECORD
    if record.is_file():
        try:
            return json.loads(record.read_text())
        except json.JSONDecodeError:
            return {}
    if any(project.iterdir()):
        raise FirmwareError(
            f"{project} is not empty and holds no {BUILD_RECORD}, so it is not an edge-ecg firmware project: "
            "choose an empty or new output folder (--out)"
        )
    return {}


def _sync(project: Path, files: Mapping[str, Path | bytes]) -> None:
    """Make ``project`` hold exactly ``files`` (besides KEPT_ON_RERENDER and build.json).

    Unchanged files are left as they are, so their timestamps do not force a
    rebuild; changed ones are copied with a new timestamp, so they always do.
    """
    for rel, source in files.items():
        destination = project / rel
        content = source if isinstance(source, bytes) else source.read_bytes()
        if destination.is_file() and destination.read_bytes() == content:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            destination.write_bytes(source)
        else:
            shutil.copyfile(source, destination)
    for path in sorted(project.rglob("*"), reverse=True):  # children before their folders
        rel = path.relative_to(project)
        if rel.parts[0] in KEPT_ON_RERENDER or rel.as_posix() == BUILD_RECORD:
            continue
        if path.is_file() and rel.as_posix() not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _file_list(project: Path) -> list[dict]:
    entries = []
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project)
        if path.is_file() and rel.parts[0] not in KEPT_ON_RERENDER and rel.as_posix() != BUILD_RECORD:
            entries.append({"path": rel.as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return entries


def _sdkconfig_defaults(entries: Iterable[dict]) -> dict[str, str]:
    return {e["path"]: e["sha256"] for e in entries if e["path"].startswith("sdkconfig.defaults")}


def idf_commands(project: str | os.PathLike, target: str) -> list[str]:
    """The shell command that builds, flashes and monitors ``project`` where ESP-IDF is installed."""
    where = shlex.quote(str(project))
    return [f"cd {where} && idf.py set-target {target} && idf.py build flash monitor -B {UART_BAUD}"]


def render(
    run: str | os.PathLike, target: str = "esp32", *, out: str | os.PathLike | None = None, runtime: str = "tflm"
) -> dict:
    """Write the complete ESP-IDF project of ``run`` for ``target`` and ``runtime``; build nothing.

    ``runtime`` is ``"tflm"`` (TensorFlow Lite Micro on the export's
    ``model_data.cc``) or ``"aot"`` (the ahead-of-time C model that
    ``edge-ecg export --runtime aot`` writes into ``export/aot/``; no TFLite
    Micro, no esp-tflite-micro dependency).

    Returns the build record (also written to ``<project>/build.json``) plus
    ``project_dir``, ``sdkconfig_reset`` (True when an old ``sdkconfig`` was
    deleted because the ``sdkconfig.defaults*`` files changed) and
    ``dependencies_reset`` (True when ``managed_components/`` and
    ``dependencies.lock`` were deleted because the project was rendered for
    another runtime before).
    """
    target = check_target(target)
    runtime = check_runtime(runtime)
    run = Path(run)
    export = _export_dir(run, runtime)
    project = Path(out) if out is not None else RunFolder(run).firmware(target)
    previous = _previous_record(project)
    model_sha256 = _check_same_model(run, export, runtime)

    project.mkdir(parents=True, exist_ok=True)
    files = _project_files(export, runtime)
    files[PROJECT_README] = project_readme(run, target, runtime, export, model_sha256).encode()
    files[PROJECT_PROTOCOL] = CORE_DIR / "PROTOCOL.md"
    _sync(project, files)
    files = _file_list(project)

    # The component manager's downloads and lock follow idf_component.yml,
    # which differs between runtimes: a tflm project's esp-tflite-micro must
    # not stay in an aot project.
    dependencies_reset = False
    if previous and previous.get("runtime", "tflm") != runtime:
        for name in DEPENDENCIES:
            path = project / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()
            else:
                continue
            dependencies_reset = True

    # ESP-IDF reads sdkconfig.defaults only when it creates sdkconfig, so an
    # old sdkconfig would silently keep the old settings.
    sdkconfig_reset = False
    if _sdkconfig_defaults(previous.get("files", [])) != _sdkconfig_defaults(files):
        for name in ("sdkconfig", "sdkconfig.old"):
            if (project / name).is_file():
                (project / name).unlink()
                sdkconfig_reset = True

    record = {
        "edge_ecg_version": __version__,
        "target": target,
        "runtime": runtime,
        "model_sha256": model_sha256,
        "model_bytes": (export / TFLITE_FILE).stat().st_size,
        "export_dir": str(export.resolve()),
        "esp_tflite_micro": esp_tflite_micro_version() if runtime == "tflm" else None,
        "esp_nn": esp_tflite_micro_version("esp-nn") if runtime == "tflm" else None,
        "uart_baud": UART_BAUD,
        "files": files,
    }
    if runtime == "tflm":
        arena = _model_macros(export / "model_config.h")[TARGET_ARENA_MACROS[target]]
        record["arena_macro"] = TARGET_ARENA_MACROS[target]
        record["arena_bytes"] = int(arena) if arena.isdigit() else arena
    if runtime == "aot":
        activation = _model_macros(export / AOT_EXPORT_DIR / "ecg_model.h")["ECG_MODEL_ACTIVATION_BYTES"]
        record["aot_activation_bytes"] = int(activation) if activation.isdigit() else activation
    (project / BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    write_index(run)
    return {
        **record,
        "project_dir": str(project),
        "sdkconfig_reset": sdkconfig_reset,
        "dependencies_reset": dependencies_reset,
    }


# --------------------------------------------------------------------------- building


def _idf_command(idf: str | os.PathLike | None) -> list[str] | None:
    """How to call idf.py: the given script or ESP-IDF folder, else idf.py on PATH, else None."""
    if idf is None:
        found = shutil.which("idf.py")
        return [found] if found else None
    path = Path(idf).expanduser()
    if path.is_dir():
        path = path / "tools" / "idf.py"
    if not path.is_file():
        raise FirmwareError(
            f"idf.py not found at {path}: pass the idf.py script or the ESP-IDF folder ($IDF_PATH), "
            "after `. $IDF_PATH/export.sh`"
        )
    return [str(path)]


def _run_streamed(command: list[str], cwd: Path, *, echo: bool = True) -> tuple[int, list[str]]:
    """Run ``command`` in ``cwd``, echoing its output line by line; (exit status, output lines)."""
    lines: list[str] = []
    try:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as exc:
        raise ToolFailedError(f"cannot run {command[0]}: {exc}") from exc
    with process:
        assert process.stdout is not None
        for line in process.stdout:
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            lines.append(line.rstrip("\n"))
    return process.returncode, lines


def _check_run(command: list[str], cwd: Path) -> list[str]:
    status, lines = _run_streamed(command, cwd)
    if status != 0:
        tail = "\n".join(lines[-25:])
        raise ToolFailedError(f"`{shlex.join(command)}` failed in {cwd} (exit status {status}):\n{tail}")
    return lines


def _configured_target(project: Path) -> str | None:
    sdkconfig = project / "sdkconfig"
    if not sdkconfig.is_file():
        return None
    match = re.search(r'^CONFIG_IDF_TARGET="([^"]*)"', sdkconfig.read_text(errors="replace"), re.M)
    return match.group(1) if match else None


def _first_json_object(text: str):
    """The first JSON object in ``text`` (idf.py prints its own lines around a tool's JSON), or None."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\s*\{", text, re.M):
        try:
            value, _ = decoder.raw_decode(text, match.end() - 1)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_idf_size(output: str) -> dict:
    """Flash and RAM use from ``idf.py size`` output, whichever ESP-IDF version printed it.

    Reads, in this order: esp-idf-size's ``--format json2`` (``layout`` list,
    ESP-IDF v5.1+), the legacy ``--format json`` (``used_dram``, ``flash_code``,
    ...), the esp-idf-size table and the legacy ``idf_size.py`` text. Returns
    ``image_bytes`` (the app binary), ``flash_code_bytes``, ``flash_data_bytes``
    (read-only data, the model included), ``dram_bytes`` (static data and bss,
    D/IRAM included), ``iram_bytes`` and ``format``; a size that the output
    does not give is None.
    """
    data = _first_json_object(output)
    if data is not None and isinstance(data.get("layout"), list):
        used = {entry.get("name"): entry.get("used") for entry in data["layout"] if isinstance(entry, dict)}
        return _size_summary("json2", data.get("total_size", data.get("image_size")), used)
    if data is not None and ("used_dram" in data or "total_size" in data):
        return {
            "format": "json",
            "image_bytes": data.get("total_size"),
            "flash_code_bytes": data.get("flash_code"),
            "flash_data_bytes": data.get("flash_rodata"),
            "dram_bytes": (data.get("used_dram") or 0) + (data.get("used_diram") or 0),
            "iram_bytes": data.get("used_iram"),
        }
    image = re.search(r"Total image size:\s*(\d+)\s*bytes", output)
    image_bytes = int(image.group(1)) if image else None
    table_rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if len(cells) >= 3 and cells[1] and not cells[1].startswith(".") and cells[2].isdigit():
            table_rows[cells[1]] = int(cells[2])
    if table_rows:
        return _size_summary("table", image_bytes, table_rows)

    def number(pattern: str) -> int | None:
        match = re.search(pattern, output, re.M)
        return int(match.group(1)) if match else None

    if image_bytes is None and number(r"Used static DRAM:\s*(\d+)") is None:
        raise FirmwareError("cannot read flash and RAM use from `idf.py size` output:\n" + output[-2000:])
    dram = number(r"Used static DRAM:\s*(\d+)")
    diram = number(r"Used stat D/IRAM:\s*(\d+)")
    return {
        "format": "text",
        "image_bytes": image_bytes,
        "flash_code_bytes": number(r"^\s*\.text:\s*(\d+)"),
        "flash_data_bytes": number(r"^\s*\.rodata:\s*(\d+)"),
        "dram_bytes": None if dram is None and diram is None else (dram or 0) + (diram or 0),
        "iram_bytes": number(r"Used static IRAM:\s*(\d+)"),
    }


def _size_summary(fmt: str, image_bytes, used_by_memory_type: Mapping) -> dict:
    dram = [used_by_memory_type.get(name) for name in ("DRAM", "DIRAM")]
    return {
        "format": fmt,
        "image_bytes": image_bytes,
        "flash_code_bytes": used_by_memory_type.get("Flash Code"),
        "flash_data_bytes": used_by_memory_type.get("Flash Data"),
        "dram_bytes": None if all(d is None for d in dram) else sum(d or 0 for d in dram),
        "iram_bytes": used_by_memory_type.get("IRAM"),
    }


def _idf_size(idf: list[str], project: Path) -> dict:
    """``idf.py size`` as JSON where this ESP-IDF can (json2, then json), else its text."""
    attempts = [["size", "--format", "json2"], ["size", "--format", "json"], ["size"]]
    last_output = ""
    for arguments in attempts:
        status, lines = _run_streamed([*idf, *arguments], project, echo=False)
        last_output = "\n".join(lines)
        if status == 0:
            try:
                return parse_idf_size(last_output)
            except FirmwareError:
                continue
    raise ToolFailedError(f"`idf.py size` failed in {project}:\n{last_output[-2000:]}")


def build(
    run: str | os.PathLike,
    target: str = "esp32",
    *,
    out: str | os.PathLike | None = None,
    runtime: str = "tflm",
    idf: str | os.PathLike | None = None,
) -> dict:
    """Render the run's ESP-IDF project for ``target`` and build it where ESP-IDF is available.

    The project (see :func:`render`, also for ``runtime``: ``"tflm"`` or
    ``"aot"``) goes to ``out`` (default ``run/firmware/<target>``). With
    ``idf`` (the idf.py script or the ESP-IDF folder) or ``idf.py`` on PATH,
    runs ``idf.py set-target`` (when the project is not configured for
    ``target`` yet) and ``idf.py build``, streaming their output, and adds
    ``size`` (see :func:`parse_idf_size`) to the result. Without ESP-IDF it
    builds nothing: ``built`` is False and ``commands`` says what to run where
    ESP-IDF is installed.
    """
    result = render(run, target, out=out, runtime=runtime)
    project = Path(result["project_dir"])
    idf_command = _idf_command(idf)
    if idf_command is None:
        commands = idf_commands(project, result["target"])
        print(f"Rendered {project}. ESP-IDF (idf.py) is not on PATH here; where it is installed, run:")
        for command in commands:
            print(f"  {command}")
        return {**result, "built": False, "commands": commands}

    if _configured_target(project) != result["target"]:
        _check_run([*idf_command, "set-target", result["target"]], project)
    _check_run([*idf_command, "build"], project)
    size = _idf_size(idf_command, project)
    return {**result, "built": True, "size": size, "flasher_args": str(project / "build" / "flasher_args.json")}


# --------------------------------------------------------------------------- flashing


def _esptool_major_version() -> int:
    try:
        return int(metadata.version("esptool").split(".")[0])
    except metadata.PackageNotFoundError as exc:
        raise FirmwareError("esptool is not installed: `pip install esptool` (edge-ecg pins esptool 5.6.0)") from exc


def esptool_command(
    flasher_args: Mapping,
    build_dir: str | os.PathLike,
    port: str,
    baud: int = UART_BAUD,
    *,
    esptool_major: int | None = None,
) -> list[str]:
    """The esptool command line that writes an ESP-IDF build, from its ``flasher_args.json``.

    Chip, reset modes, stub use, flash mode/size/frequency and every
    offset -> file pair come from ``flasher_args`` (what ESP-IDF computed for
    this build), never from edge-ecg. esptool 5 spells commands, options and
    reset modes with hyphens (``write-flash``, ``--flash-mode``,
    ``default-reset``), earlier ones with underscores; ``esptool_major``
    (default: the installed esptool) picks the spelling.
    """
    extra = flasher_args.get("extra_esptool_args") or {}
    flash_files = flasher_args.get("flash_files") or {}
    if not extra.get("chip") or not flash_files:
        raise FirmwareError(
            "flasher_args.json has no extra_esptool_args.chip or no flash_files: run `idf.py build` again"
        )
    if esptool_major is None:
        esptool_major = _esptool_major_version()
    hyphens = esptool_major >= 5

    def spelled(word: str) -> str:
        return word.replace("_", "-") if hyphens else word.replace("-", "_")

    command = [sys.executable, "-m", "esptool", "--chip", str(extra["chip"]), "--port", port, "--baud", str(baud)]
    for option in ("before", "after"):
        if extra.get(option):
            command += [f"--{option}", spelled(str(extra[option]))]
    if extra.get("stub") is False:
        command.append("--no-stub")
    command.append(spelled("write_flash"))
    # Options keep their values as given ("dio", "4MB", "80m", "keep"); only option names are respelled.
    for arg in flasher_args.get("write_flash_args", []):
        command.append("--" + spelled(arg[2:]) if arg.startswith("--") else arg)
    for offset, file in sorted(flash_files.items(), key=lambda item: int(item[0], 0)):
        command += [offset, str(Path(build_dir) / file)]
    return command


def _describe_port(port) -> str:
    vendor = BOARD_USB_VENDORS.get(port.vid, "")
    ids = f"USB {port.vid:04X}:{port.pid:04X}" if port.vid is not None and port.pid is not None else "not USB"
    label = ", ".join(part for part in (port.description, vendor, ids) if part and part != "n/a")
    return f"{port.device} ({label})"


def find_board_port() -> str:
    """The serial port of the one attached ESP32 board.

    A board's port is one whose USB vendor is Espressif (0x303A, the chip's
    own USB) or a USB-UART bridge that dev boards carry: Silicon Labs CP210x
    (0x10C4), WCH CH340/CH343 (0x1A86), FTDI (0x0403). None or several ->
    :class:`BoardNotFoundError`, listing the ports, asking for ``--port``.
    """
    from serial.tools import list_ports

    ports = list(list_ports.comports())
    boards = [p for p in ports if p.vid in BOARD_USB_VENDORS]
    if len(boards) == 1:
        return boards[0].device
    if not boards:
        seen = "; ".join(_describe_port(p) for p in ports) or "no serial ports at all"
        raise BoardNotFoundError(
            "no ESP32 board found: no serial port of an Espressif, CP210x, CH340 or FTDI USB device "
            f"(seen: {seen}). Connect the board, or name its port with --port PORT"
        )
    listed = "; ".join(_describe_port(p) for p in boards)
    raise BoardNotFoundError(
        f"{len(boards)} possible boards: {listed}. Choose one with --port PORT "
        "(an ESP32-S3 plugged in by both USB connectors shows up twice; either port can flash)"
    )


def flash(
    run: str | os.PathLike,
    target: str = "esp32",
    port: str | None = None,
    baud: int = UART_BAUD,
    *,
    project: str | os.PathLike | None = None,
    idf: str | os.PathLike | None = None,
) -> dict:
    """Write the built firmware of ``run`` for ``target`` to the board on ``port``.

    ``project`` defaults to ``run/firmware/<target>`` (``build``'s ``out``).
    With idf.py available this runs ``idf.py -p PORT -b BAUD flash``; else
    esptool (``python -m esptool``) with :func:`esptool_command` built from
    ``build/flasher_args.json``. Without ``port``, :func:`find_board_port`.
    """
    target = check_target(target)
    project_dir = Path(project) if project is not None else RunFolder(run).firmware(target)
    build_dir = project_dir / "build"
    flasher_args_path = build_dir / "flasher_args.json"
    if not flasher_args_path.is_file():
        raise FirmwareError(
            f"{flasher_args_path} not found: build the firmware first with "
            f"`edge-ecg build --run {run} --target {target}` on a machine with ESP-IDF, "
            f"and copy its build/ folder to {project_dir}"
        )
    flasher_args = json.loads(flasher_args_path.read_text())
    built_for = (flasher_args.get("extra_esptool_args") or {}).get("chip")
    if built_for and built_for != target:
        raise FirmwareError(
            f"{project_dir} is built for {built_for}, not {target}: flash with --target {built_for}, "
            f"or rebuild with `edge-ecg build --run {run} --target {target}`"
        )
    port = port or find_board_port()

    idf_command = _idf_command(idf)
    if idf_command is not None:
        tool, command, cwd = "idf.py", [*idf_command, "-p", port, "-b", str(baud), "flash"], project_dir
    else:
        tool, command, cwd = "esptool", esptool_command(flasher_args, build_dir, port, baud), build_dir
        for offset, file in (flasher_args.get("flash_files") or {}).items():
            if not (build_dir / file).is_file():
                raise FirmwareError(f"{build_dir / file} (for offset {offset}) is missing: rebuild the firmware")
    _check_run(command, cwd)
    return {
        "target": target,
        "port": port,
        "baud": baud,
        "tool": tool,
        "command": command,
        "project_dir": str(project_dir),
    }
