"""TensorFlow Lite Micro on the emulated Cortex-M4 (QEMU ``mps2-an386``), reference or CMSIS-NN kernels.

The same board as :func:`edge_ecg.bench.boards.build_qemu_board` (``firmware/mps2-an386``:
startup, linker script, UART and SysTick, the firmware core and its serial protocol), with
the ESP32 port's TFLM runner (``firmware/esp32/main/tflm_runner.cc``) instead of the AOT
model, cross-compiled with ``arm-none-eabi-g++`` and the board's CPU flags (Cortex-M4 with
DSP and FPU, ``-O2``). The TFLM tree is the one :mod:`edge_ecg.bench.tflm_board` accepts
(a tflite-micro checkout with its downloads, or the esp-tflite-micro component) and only
what the model needs is compiled (:func:`edge_ecg.bench.tflm_board.tflm_sources`).

``kernels="cmsis_nn"`` builds TFLM as its Makefile does with
``OPTIMIZED_KERNEL_DIR=cmsis_nn``: every ``kernels/X.cc`` that has a
``kernels/cmsis_nn/X.cc`` is replaced by it, ``-DCMSIS_NN`` is defined everywhere, and the
CMSIS-NN library's C sources (``downloads/cmsis_nn/Source``, integer kernels) are added,
those the CMSIS-NN kernels can reach (TFLM's Makefile compiles them all; the linker keeps
the same functions either way). CMSIS-NN must be in the tree (``tensorflow/lite/micro/tools/make/downloads/cmsis_nn``
in a checkout, ``third_party/cmsis_nn`` in the component) at the commit the tree pins.

The library objects are cached per tree, compiler, kernels and flags under
:func:`edge_ecg.settings.cache_dir` ``/tflm-mps2`` (a cold build is a few hundred
compiler calls); a second build compiles only the runner, the model data and the board.
The arena is ``heap_caps_aligned_alloc``'s (``firmware/mps2-an386/tflm/esp_heap_caps.h``:
newlib's heap), the export's
``ECG_ARENA_BYTES`` plus ``ARENA_SLACK`` for the CMSIS-NN scratch buffers; ``info%``
reports the bytes TFLM really uses (:func:`tflm_arena_used`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from edge_ecg.bench.boards import (
    ARM_CC,
    ARM_CFLAGS,
    ARM_CPU_FLAGS,
    ARM_LDFLAGS,
    CORE_DIR,
    HOST_DIR,
    MPS2_DIR,
    BoardError,
    qemu_connect,
)
from edge_ecg.bench.tflm_board import (
    _DOWNLOADS,
    ESP32_MAIN_DIR,
    ESP_STUBS_DIR,
    RUNNER,
    TFLM_HOST_DIR,
    TflmTree,
    _export_dir,
    compile_archive,
    find_tflm_tree,
    model_resolver_calls,
    tflm_sources,
)

ARM_CXX = "arm-none-eabi-g++"
KERNELS = ("reference", "cmsis_nn")
TFLM_MPS2_DIR = MPS2_DIR / "tflm"
ARENA_SLACK = 64 * 1024
"""Bytes added to the export's arena: CMSIS-NN kernels take scratch buffers from it."""

# TFLM's Makefile flags for a Cortex-M target, with the board's CPU and -O2 everywhere
# (TFLM's Makefile compiles the framework with -Os and the kernels with -O2).
_COMMON = ("-O2", *ARM_CPU_FLAGS, "-ffunction-sections", "-fdata-sections", "-fsigned-char",
           "-DTF_LITE_STATIC_MEMORY", "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0")
_CXX_ONLY = ("-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-fno-use-cxa-atexit",
             "-Wno-unused-parameter")
# The runner and the model data: the host TFLM board's warnings, as errors.
_RUNNER_WARNINGS = ("-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-sign-compare", "-Werror")

__all__ = ["ARM_CXX", "KERNELS", "build_mps2_tflm_board", "build_mps2_tflm_library", "mps2_tflm_sources",
           "tflm_arena_used"]


def _defines(kernels: str) -> tuple[str, ...]:
    if kernels not in KERNELS:
        raise BoardError(f"kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
    return ("-DCMSIS_NN",) if kernels == "cmsis_nn" else ()


def cmsis_nn_dir(tree: TflmTree) -> Path:
    """CMSIS-NN inside ``tree``; a clear error when it is missing."""
    base = tree.root / (_DOWNLOADS if tree.layout == "tflite-micro checkout" else Path("third_party"))
    where = base / "cmsis_nn"
    if not (where / "Include" / "arm_nnfunctions.h").is_file():
        raise BoardError(f"--tflm-src {tree.root}: {where}/Include/arm_nnfunctions.h not found: place CMSIS-NN there at "
                         "the commit the tree pins (tools/make/ext_libs/cmsis_nn_download.sh names it)")
    return where


def mps2_tflm_sources(tree: TflmTree, calls: Sequence[str], kernels: str) -> list[Path]:
    """The TFLM (and CMSIS-NN) sources a model with these resolver calls needs for ``kernels``."""
    _defines(kernels)
    sources = tflm_sources(tree, calls)
    if kernels == "reference":
        return sources
    kernels_dir = tree.root / "tensorflow/lite/micro/kernels"
    optimized = kernels_dir / "cmsis_nn"
    # TFLM's specialize_files.py: a file of the optimized folder replaces its namesake.
    sources = [optimized / p.name if p.parent == kernels_dir and (optimized / p.name).is_file() else p
               for p in sources]
    library = [p for p in (cmsis_nn_dir(tree) / "Source").rglob("*.c")
               if not p.name.endswith(("_f16.c", "_f32.c")) and p.name != "arm_nntables_flt.c"]
    return sorted(set(sources)) + _reachable(library, [p for p in sources if p.parent == optimized])


_ARM_NAME = re.compile(r"\barm_\w+")
_ARM_DEFINITION = re.compile(r"^[A-Za-z_][\w \t*]*?\b(arm_\w+)\s*\(", re.M)


def _reachable(library: Sequence[Path], kernels: Sequence[Path]) -> list[Path]:
    """The CMSIS-NN files whose functions the TFLM ``kernels`` can reach, sorted.

    TFLM's Makefile compiles all of CMSIS-NN and the linker keeps what is called; this
    compiles only the files defining an ``arm_*`` name the kernels, or a file already
    taken, mention (a cold build on 2 cores is then minutes shorter). ``arm_nntables.c``
    (data, no functions) always comes along.
    """
    defines: dict[str, Path] = {}
    for p in library:
        defines.setdefault(p.stem, p)
        for name in _ARM_DEFINITION.findall(p.read_text(errors="replace")):
            defines.setdefault(name, p)
    taken = {p for p in library if p.name == "arm_nntables.c"}
    todo = list(kernels) + sorted(taken)
    while todo:
        for name in _ARM_NAME.findall(todo.pop().read_text(errors="replace")):
            p = defines.get(name)
            if p is not None and p not in taken:
                taken.add(p)
                todo.append(p)
    return sorted(taken)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BoardError(f"{name} not found: the TFLM mps2-an386 board needs Debian's gcc-arm-none-eabi and "
                         "libstdc++-arm-none-eabi-newlib")
    return path


def _run(cmd: Sequence[str], what: str) -> None:
    result = subprocess.run(list(cmd), capture_output=True, text=True)
    if result.returncode != 0:
        raise BoardError(f"building {what} failed:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}")


def _includes(tree: TflmTree, kernels: str) -> list[str]:
    dirs = list(tree.include_dirs)
    if kernels == "cmsis_nn":
        nn = cmsis_nn_dir(tree)
        dirs += [nn, nn / "Include"]  # TFLM includes "Include/arm_nnfunctions.h"; CMSIS-NN "arm_nn_types.h"
    return [f"-I{d}" for d in dirs]


def build_mps2_tflm_library(
    tree: TflmTree,
    calls: Sequence[str],
    kernels: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    jobs: int = 2,
) -> tuple[Path, dict]:
    """Cross-compile (or reuse) the TFLM objects a model needs for ``kernels``; return the ``.a`` and build facts.

    An object is rebuilt when missing or older than its source; ``jobs`` compilers run at a
    time. Facts: ``sources``, ``compiled`` (this call), ``cache`` folder.
    """
    from edge_ecg.settings import cache_dir as default_cache

    cxx, cc = _tool(ARM_CXX), _tool(ARM_CC)
    defines = _defines(kernels)
    sources = mps2_tflm_sources(tree, calls, kernels)
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    key = hashlib.sha256("\0".join([str(tree.root), version, kernels, *_COMMON, *_CXX_ONLY, *defines]).encode())
    root = (Path(cache_dir) if cache_dir is not None else default_cache() / "tflm-mps2") / key.hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    (root / "tree.txt").write_text(f"{tree.root}\n{tree.layout}\n{kernels}\n")
    includes = _includes(tree, kernels)

    def compiler_for(src: Path) -> list[str]:
        compiler = [cxx, *_CXX_ONLY] if src.suffix == ".cc" else [cc, "-std=gnu11"]
        return [*compiler, *_COMMON, *defines, *includes]

    return compile_archive(tree, sources, root, compiler_for, "arm-none-eabi-ar", jobs=jobs)


def build_mps2_tflm_board(
    run: str | os.PathLike,
    workdir: str | os.PathLike,
    tflm_src: str | os.PathLike,
    kernels: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    jobs: int = 2,
) -> Path:
    """Build the mps2-an386 firmware with TFLM (``kernels``) and the run's export; return the ELF.

    Writes ``workdir/ecg_mps2_tflm_<kernels>.elf`` (and its ``.map``). Run it with
    :func:`edge_ecg.bench.boards.qemu_connect` (``elf=``) or
    :func:`edge_ecg.bench.boards.qemu_instructions_per_inference` (``elf=``).
    """
    export = _export_dir(run).resolve()
    tree = find_tflm_tree(tflm_src)
    lib, _ = build_mps2_tflm_library(tree, model_resolver_calls(export), kernels, cache_dir=cache_dir, jobs=jobs)
    cxx, cc = _tool(ARM_CXX), _tool(ARM_CC)
    defines = _defines(kernels)
    workdir = Path(workdir)
    objdir = workdir / f"obj-{kernels}"
    objdir.mkdir(parents=True, exist_ok=True)
    text = (export / "model_config.h").read_text()
    m = re.search(r"#define ECG_ARENA_BYTES (\d+)", text)
    if m is None:
        raise BoardError(f"{export / 'model_config.h'} defines no ECG_ARENA_BYTES: run `edge-ecg export` again")
    # firmware/host/tflm/model_config.h: the export's header with the arena overridden.
    bridge = [f'-DEE_HOST_EXPORT_MODEL_CONFIG="{export / "model_config.h"}"',
              f"-DEE_HOST_ARENA_BYTES={int(m.group(1)) + ARENA_SLACK}"]
    # The bridge model_config.h first (the host port's own and the export's share its name);
    # the board's esp_heap_caps.h before the host stubs' (newlib-nano has no posix_memalign).
    includes = [f"-I{TFLM_HOST_DIR}", f"-I{TFLM_MPS2_DIR}", f"-I{ESP_STUBS_DIR}", f"-I{ESP32_MAIN_DIR}",
                f"-I{MPS2_DIR}", f"-I{HOST_DIR}", f"-I{CORE_DIR}", f"-I{export}"]
    objects = []
    runner = objdir / "tflm_runner.o"
    _run([cxx, *_CXX_ONLY, *_COMMON, *_RUNNER_WARNINGS, *defines, "-DEE_HAVE_MODEL_CONFIG=1", *bridge, *includes,
          *_includes(tree, kernels), "-c", str(RUNNER), "-o", str(runner)], str(RUNNER))
    data = objdir / "model_data.o"
    _run([cxx, *_CXX_ONLY, *_COMMON, *_RUNNER_WARNINGS, f"-I{export}", "-c", str(export / "model_data.cc"),
          "-o", str(data)], str(export / "model_data.cc"))
    objects += [runner, data]
    c_sources = [*sorted(MPS2_DIR.glob("*.c")), TFLM_MPS2_DIR / "tflm_mps2.c", *sorted(CORE_DIR.glob("*.c"))]
    for src in c_sources:
        obj = objdir / f"{src.parent.name}-{src.stem}.o"
        _run([cc, *ARM_CFLAGS, "-DEE_HAVE_MODEL_CONFIG=1", *bridge, f'-DEE_MPS2_TFLM_KERNELS="{kernels}"',
              *includes, "-c", str(src), "-o", str(obj)], str(src))
        objects.append(obj)
    elf = workdir / f"ecg_mps2_tflm_{kernels}.elf"
    _run([cxx, *ARM_CPU_FLAGS, *map(str, objects), str(lib), f"-T{MPS2_DIR / 'link.ld'}", *ARM_LDFLAGS,
          f"-Wl,-Map={elf.with_suffix('.map')}", "-lm", "-o", str(elf)], f"the TFLM mps2-an386 firmware ({kernels})")
    return elf


def tflm_arena_used(run: str | os.PathLike, workdir: str | os.PathLike, elf: str | os.PathLike) -> dict:
    """Boot the TFLM board ``elf`` under QEMU; return its ``info%`` (``arena_used_bytes``: TFLM's need on this target)."""
    from edge_ecg.bench.protocol import DutClient

    with qemu_connect(run, workdir, elf=elf) as connect:
        client = DutClient(connect(), timeout=30.0)
        client.wait_ready()
        info = client.info()
    if not info.get("model_ready", True) or not info.get("arena_used_bytes"):
        raise BoardError(f"the TFLM board {elf} did not allocate its tensors: info {info}")
    return info
