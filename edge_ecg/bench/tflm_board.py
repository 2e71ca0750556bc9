"""The TensorFlow Lite Micro board: the host port running the ESP32 port's own TFLM runner.

The virtual board of :mod:`edge_ecg.bench.boards` runs the AOT C model; this one runs
``firmware/esp32/main/tflm_runner.cc`` itself (the file an ESP-IDF project compiles)
against a TensorFlow Lite Micro C++ source tree the user supplies, with the run's
export (``model_data.cc/.h``, ``model_ops.h``, ``model_config.h``). ESP-IDF headers
are stubbed by ``firmware/host/tflm/esp_stubs``; ``firmware/host/tflm/tflm_host.c``
supplies the target facts (``info%`` target ``host-tflm``). Kernels are TFLM's
reference kernels, so its int8 outputs must equal the ``tflite_micro`` package's.

The tree (``tflm_src``) is either

* a tflite-micro checkout whose third-party downloads are in place
  (``tensorflow/lite/micro/tools/make/downloads/{flatbuffers,gemmlowp,ruy,kissfft}``,
  as ``make -f tensorflow/lite/micro/tools/make/Makefile third_party_downloads`` leaves
  them), or
* the ``esp-tflite-micro`` component folder that ESP-IDF downloads
  (``third_party/{flatbuffers,gemmlowp,ruy,kissfft}``).

Only what the model needs is compiled: the framework sources of the Makefile's
``MICROLITE_CC_BASE_SRCS`` (minus tests and test helpers) and, of
``MICROLITE_CC_KERNEL_SRCS``, the kernel support files and the kernels that define the
``Register_*()`` of the model's ops (``model_ops.h``). Objects are cached per tree path,
compiler and flags under :func:`edge_ecg.settings.cache_dir` ``/tflm-host``; a second
build compiles only the runner and the board.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from edge_ecg.bench.boards import CORE_DIR, HOST_DIR, BoardConnector, BoardError
from edge_ecg.bench.host import FIRMWARE, build_host_port
from edge_ecg.runfolder import RunFolder

TFLM_HOST_DIR = HOST_DIR / "tflm"
ESP_STUBS_DIR = TFLM_HOST_DIR / "esp_stubs"
ESP32_MAIN_DIR = FIRMWARE / "esp32" / "main"
RUNNER = ESP32_MAIN_DIR / "tflm_runner.cc"
TFLM_TARGET = "host-tflm"

CXX = "g++"
# TFLM's Makefile flags (COMMON_FLAGS, CXXFLAGS for a host target). TF_LITE_STATIC_MEMORY
# changes TfLiteTensor's layout: every translation unit that includes TFLM headers,
# the runner included, must see the same defines.
TFLM_DEFINES = ("-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON", "-DTF_LITE_USE_CTIME")
TFLM_CXXFLAGS = ("-std=c++17", "-O2", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics",
                 "-ffunction-sections", "-fdata-sections", "-Wno-unused-parameter", *TFLM_DEFINES)
# The runner and the model data: ESP-IDF's warning flags (-Wall -Wextra without
# unused-parameter and sign-compare, which TFLM's headers trip), as errors.
RUNNER_CXXFLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-sign-compare", "-Werror",
                   "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", *TFLM_DEFINES)
LINK_ARGS = ("-Wl,--wrap=th_model_init", "-Wl,--wrap=th_model_invoke", "-Wl,--gc-sections", "-lstdc++")

# Test support in tensorflow/lite/micro/ that the Makefile's library also holds; the
# firmware never links it, so it is not compiled.
_NOT_FRAMEWORK = {"test_helpers.cc", "test_helper_custom_ops.cc", "fake_micro_context.cc", "mock_micro_graph.cc"}
# Kernel support every kernel uses (tensorflow/lite/micro/kernels/).
_KERNEL_SUPPORT = ("kernel_util.cc", "micro_tensor_utils.cc")

__all__ = [
    "TFLM_TARGET",
    "TflmTree",
    "build_tflm_board",
    "build_tflm_library",
    "find_tflm_tree",
    "host_arena_min",
    "model_resolver_calls",
    "tflm_board_connect",
    "tflm_sources",
]


@dataclass(frozen=True)
class TflmTree:
    """A TensorFlow Lite Micro source tree and where its third-party headers are."""

    root: Path
    layout: str
    """``"tflite-micro checkout"`` or ``"esp-tflite-micro component"``."""
    include_dirs: tuple[Path, ...]


# (header, the include dir it lives in per layout, relative to the root)
_DOWNLOADS = Path("tensorflow/lite/micro/tools/make/downloads")
_THIRD_PARTY = {
    "flatbuffers/flatbuffers.h": ("flatbuffers/include",),
    "fixedpoint/fixedpoint.h": ("gemmlowp",),
    "ruy/profiler/instrumentation.h": ("ruy",),
}
_LAYOUTS = {"tflite-micro checkout": _DOWNLOADS, "esp-tflite-micro component": Path("third_party")}


def find_tflm_tree(src: str | os.PathLike) -> TflmTree:
    """Check that ``src`` is a TFLM tree this board can build; name the first missing file.

    Looks for ``tensorflow/lite/micro/micro_interpreter.h`` and the third-party headers
    the runtime includes (flatbuffers, gemmlowp's fixedpoint, ruy's profiler) under the
    checkout's downloads folder or the component's ``third_party/``.
    """
    root = Path(src).expanduser().resolve()
    if not root.is_dir():
        raise BoardError(f"--tflm-src {src}: not a directory; give a tflite-micro checkout (with its third-party "
                         "downloads) or the esp-tflite-micro component folder")
    interpreter = root / "tensorflow/lite/micro/micro_interpreter.h"
    if not interpreter.is_file():
        raise BoardError(f"--tflm-src {src}: {interpreter} not found; give the root of a tflite-micro checkout "
                         "or of the esp-tflite-micro component")
    # A checkout has the Makefile (and a third_party/ of Bazel files); the component has neither.
    makefile = root / "tensorflow/lite/micro/tools/make/Makefile"
    layout = "tflite-micro checkout" if makefile.is_file() else "esp-tflite-micro component"
    base = root / _LAYOUTS[layout]
    include_dirs = [root]
    for header, (subdir,) in _THIRD_PARTY.items():
        where = base / subdir
        if not (where / header).is_file():
            fix = ("run `make -f tensorflow/lite/micro/tools/make/Makefile third_party_downloads` in the checkout "
                   "(or place the pinned downloads there by hand, TFLM's patches applied)"
                   if layout == "tflite-micro checkout" else "the component is incomplete: download it again")
            raise BoardError(f"--tflm-src {src}: {header} not found (looked in {where}, the {layout} layout): {fix}")
        include_dirs.append(where)
    return TflmTree(root=root, layout=layout, include_dirs=tuple(include_dirs))


# --------------------------------------------------------------------------- sources


_ADD_CALL = re.compile(r"resolver\.(Add\w+)\(\s*\)")


def model_resolver_calls(export: Path) -> list[str]:
    """The ``MicroMutableOpResolver::Add*`` methods the export's ``model_ops.h`` calls."""
    text = (export / "model_ops.h").read_text()
    calls = _ADD_CALL.findall(text)
    if not calls:
        raise BoardError(f"{export / 'model_ops.h'} registers no operators: run `edge-ecg export` again")
    return calls


def _registrations(tree: TflmTree, calls: Sequence[str]) -> list[str]:
    """``Register_X`` default of each ``AddY()`` in the tree's micro_mutable_op_resolver.h."""
    header = tree.root / "tensorflow/lite/micro/micro_mutable_op_resolver.h"
    text = header.read_text()
    names = []
    for call in calls:
        m = re.search(rf"\b{call}\s*\([^)]*?=\s*(?:tflite::)?(Register_\w+)\s*\(\s*\)", text)
        if m is None:
            raise BoardError(f"{header} has no {call}() with a default registration: this TFLM tree is too old or "
                             "too new for the export's model_ops.h")
        names.append(m.group(1))
    return names


def tflm_sources(tree: TflmTree, calls: Sequence[str]) -> list[Path]:
    """The TFLM sources a model with these resolver calls needs, sorted.

    Framework: the Makefile's ``MICROLITE_CC_BASE_SRCS`` (``micro/*.cc``,
    ``arena_allocator``, ``memory_planner``, ``tflite_bridge`` and the shared TFLite
    sources under ``tensorflow/`` outside ``lite/micro`` and ``lite/experimental``,
    without ``array.cc``), tests and test helpers left out. Kernels: the support files
    plus, per op, the ``kernels/*.cc`` that defines its ``Register_*()`` and that
    file's ``*_common.cc``.
    """
    root = tree.root
    micro = root / "tensorflow/lite/micro"
    base: list[Path] = []
    for folder in (micro, micro / "arena_allocator", micro / "memory_planner", micro / "tflite_bridge"):
        base += [p for p in folder.glob("*.cc") if not p.name.endswith("_test.cc") and p.name not in _NOT_FRAMEWORK]
    skip = (root / "tensorflow/lite/micro", root / "tensorflow/lite/experimental")
    for p in (root / "tensorflow").rglob("*.c*"):
        if p.suffix in (".cc", ".c") and not any(p.is_relative_to(s) for s in skip) \
                and not p.name.endswith("_test.cc") and p != root / "tensorflow/lite/array.cc":
            base.append(p)
    kernels_dir = micro / "kernels"
    kernels = {kernels_dir / name for name in _KERNEL_SUPPORT if (kernels_dir / name).is_file()}
    kernel_files = sorted(p for p in kernels_dir.glob("*.cc") if not p.name.endswith("_test.cc"))
    texts = {p: p.read_text(errors="replace") for p in kernel_files}
    for call, name in zip(calls, _registrations(tree, calls)):
        definition = re.compile(rf"\b{name}\s*\(\s*\)\s*\{{")
        found = [p for p, t in texts.items() if definition.search(t)]
        if not found:
            raise BoardError(f"no kernel in {kernels_dir} defines {name}() (for {call}): incomplete TFLM tree")
        for p in found:
            kernels.add(p)
            common = p.with_name(p.stem + "_common.cc")
            if common.is_file():
                kernels.add(common)
    return sorted(set(base) | kernels)


# --------------------------------------------------------------------------- builds


def _run(cmd: Sequence[str], what: str) -> None:
    result = subprocess.run(list(cmd), capture_output=True, text=True)
    if result.returncode != 0:
        raise BoardError(f"building {what} failed:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}")


def _compiler_id() -> str:
    if shutil.which(CXX) is None:
        raise BoardError(f"{CXX} not found: the TFLM board needs a C++17 compiler (Debian: apt-get install g++)")
    return subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _cache_root(tree: TflmTree, cache_dir: str | os.PathLike | None) -> Path:
    """Objects of one tree, compiler and flag set: ``<cache>/tflm-host/<key>``."""
    from edge_ecg.settings import cache_dir as default_cache

    key = hashlib.sha256("\0".join([str(tree.root), _compiler_id(), *TFLM_CXXFLAGS]).encode()).hexdigest()[:16]
    root = (Path(cache_dir) if cache_dir is not None else default_cache() / "tflm-host") / key
    root.mkdir(parents=True, exist_ok=True)
    (root / "tree.txt").write_text(f"{tree.root}\n{tree.layout}\n")
    return root


def build_tflm_library(
    tree: TflmTree,
    calls: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    jobs: int = 2,
) -> tuple[Path, dict]:
    """Compile (or reuse) the TFLM objects a model needs and archive them; return the ``.a`` and build facts.

    An object is rebuilt when missing or older than its source; ``jobs`` compilers run
    at a time. Facts: ``sources``, ``compiled`` (this call), ``cache`` folder.
    """
    sources = tflm_sources(tree, calls)
    includes = [f"-I{d}" for d in tree.include_dirs]
    return compile_archive(
        tree, sources, _cache_root(tree, cache_dir), lambda src: [CXX, *TFLM_CXXFLAGS, *includes], "ar", jobs=jobs
    )


def compile_archive(
    tree: TflmTree,
    sources: Sequence[Path],
    root: Path,
    compiler_for: Callable[[Path], list[str]],
    ar: str,
    *,
    jobs: int = 2,
) -> tuple[Path, dict]:
    """Compile ``sources`` of ``tree`` into objects under ``root`` (cached) and archive them with ``ar``.

    ``compiler_for(src)`` gives the compiler and flags for one source (``-c``/``-o`` are added).
    An object is rebuilt when missing or older than its source; ``jobs`` compilers run at a
    time. The host and the cross (mps2-an386) TFLM builds share this. Returns the ``.a`` and
    build facts: ``sources``, ``compiled`` (this call), ``cache`` folder.
    """
    todo = []
    objects = []
    for src in sources:
        obj = root / "obj" / src.relative_to(tree.root).with_suffix(".o")
        objects.append(obj)
        if not obj.is_file() or obj.stat().st_mtime < src.stat().st_mtime:
            todo.append((src, obj))

    def compile_one(item: tuple[Path, Path]) -> None:
        src, obj = item
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_suffix(f".o.{os.getpid()}.tmp")  # a killed build leaves no half object
        _run([*compiler_for(src), "-c", str(src), "-o", str(tmp)], f"TFLM source {src}")
        os.replace(tmp, obj)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for _ in pool.map(compile_one, todo):
            pass
    digest = hashlib.sha256("\n".join(map(str, objects)).encode()).hexdigest()[:12]
    lib = root / f"libtflm-{digest}.a"
    if todo or not lib.is_file():
        tmp = lib.with_suffix(f".a.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        _run([ar, "rcs", str(tmp), *map(str, objects)], "the TFLM library")
        os.replace(tmp, lib)
    return lib, {"sources": len(sources), "compiled": len(todo), "cache": str(root)}


def _export_dir(run: str | os.PathLike) -> Path:
    export = RunFolder(run).export
    needed = ("model_data.cc", "model_data.h", "model_ops.h", "model_config.h")
    missing = [n for n in needed if not (export / n).is_file()]
    if missing:
        raise BoardError(f"{export} lacks {', '.join(missing)}: run `edge-ecg export --run {run}` first")
    return export


def build_tflm_board(
    run: str | os.PathLike,
    workdir: str | os.PathLike,
    tflm_src: str | os.PathLike,
    *,
    arena_bytes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    jobs: int = 2,
) -> Path:
    """Build the host port with ``tflm_runner.cc`` and the run's export into ``workdir``; return the executable.

    ``arena_bytes`` replaces the export's ``ECG_ARENA_BYTES`` (the runner rounds it up
    to a multiple of 16, as on the ESP32); the executable is
    ``ecg_host_tflm`` or ``ecg_host_tflm_arena<N>``. The TFLM library comes from
    :func:`build_tflm_library` (cached).
    """
    if arena_bytes is not None and int(arena_bytes) < 1:
        raise BoardError(f"arena_bytes must be a positive number of bytes, got {arena_bytes}")
    export = _export_dir(run).resolve()
    tree = find_tflm_tree(tflm_src)
    lib, _ = build_tflm_library(tree, model_resolver_calls(export), cache_dir=cache_dir, jobs=jobs)
    workdir = Path(workdir)
    objdir = workdir / "obj"
    objdir.mkdir(parents=True, exist_ok=True)
    suffix = "" if arena_bytes is None else f"_arena{int(arena_bytes)}"
    bridge = f'-DEE_HOST_EXPORT_MODEL_CONFIG="{export / "model_config.h"}"'
    includes = [f"-I{TFLM_HOST_DIR}", f"-I{ESP_STUBS_DIR}", f"-I{ESP32_MAIN_DIR}", f"-I{CORE_DIR}", f"-I{export}",
                *(f"-I{d}" for d in tree.include_dirs)]
    runner_obj = objdir / f"tflm_runner{suffix}.o"
    arena = [f"-DEE_HOST_ARENA_BYTES={int(arena_bytes)}"] if arena_bytes is not None else []
    _run([CXX, *RUNNER_CXXFLAGS, "-DEE_HAVE_MODEL_CONFIG=1", bridge, *arena, *includes, "-c", str(RUNNER),
          "-o", str(runner_obj)], str(RUNNER))
    data_obj = objdir / "model_data.o"
    _run([CXX, *RUNNER_CXXFLAGS, f"-I{export}", "-c", str(export / "model_data.cc"), "-o", str(data_obj)],
         str(export / "model_data.cc"))
    try:
        return build_host_port(workdir, include_dirs=(TFLM_HOST_DIR, ESP32_MAIN_DIR),
                               extra_sources=(TFLM_HOST_DIR / "tflm_host.c",), defines=("EE_HOST_MODEL_SEPARATE=1", bridge[2:]),
                               name=f"ecg_host_tflm{suffix}", link_args=(str(runner_obj), str(data_obj), str(lib), *LINK_ARGS))
    except RuntimeError as exc:
        raise BoardError(f"the TFLM board: {exc}") from None


def tflm_board_connect(
    run: str | os.PathLike,
    workdir: str | os.PathLike,
    tflm_src: str | os.PathLike,
    *,
    arena_bytes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    boot_timeout: float = 10.0,
) -> BoardConnector:
    """Build the TFLM board once (:func:`build_tflm_board`); return a connector that starts it on a pty per call.

    The board's stderr (TFLM's own messages and the runner's status line) goes to
    ``workdir/tflm-board.stderr.log``.
    """
    exe = build_tflm_board(run, workdir, tflm_src, arena_bytes=arena_bytes, cache_dir=cache_dir)
    return BoardConnector([exe], name=f"TFLM board ({TFLM_TARGET})", boot_timeout=boot_timeout,
                          log=Path(workdir) / f"{exe.name}.stderr.log", artifact=exe)


def _allocates(run, workdir, tflm_src, arena_bytes: int, cache_dir) -> bool:
    from edge_ecg.bench.protocol import DutClient

    with tflm_board_connect(run, workdir, tflm_src, arena_bytes=arena_bytes, cache_dir=cache_dir) as connect:
        client = DutClient(connect(), timeout=20.0)
        client.wait_ready()
        return client.info()["model_ready"] is True


def host_arena_min(
    run: str | os.PathLike,
    workdir: str | os.PathLike,
    tflm_src: str | os.PathLike,
    *,
    lo: int,
    hi: int,
    cache_dir: str | os.PathLike | None = None,
) -> int:
    """Smallest ``ECG_ARENA_BYTES`` with which the runner's ``AllocateTensors()`` succeeds.

    ``lo`` must fail and ``hi`` must allocate (checked). Each probe rebuilds the runner
    (the arena is a compile-time constant, as on the ESP32) and boots the board. The
    runner rounds ``ECG_ARENA_BYTES`` up to a multiple of 16, so the search bisects over
    multiples of 16 and the answer is the smallest value that rounds up to the smallest
    one that allocates (``16 k - 15``); ``answer - 1`` rounds down a step and fails.
    """
    if _allocates(run, workdir, tflm_src, lo, cache_dir) or not _allocates(run, workdir, tflm_src, hi, cache_dir):
        raise BoardError(f"host_arena_min: an arena of {lo} bytes must fail and one of {hi} bytes must allocate")
    lo_k, hi_k = -(-lo // 16), -(-hi // 16)  # the rounded sizes the runner really uses, in 16-byte units
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if _allocates(run, workdir, tflm_src, 16 * mid, cache_dir):
            hi_k = mid
        else:
            lo_k = mid
    return 16 * hi_k - 15
