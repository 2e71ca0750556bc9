"""The host port of the firmware core, built with the host's gcc (a board on a pseudo-terminal)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Sequence

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
CFLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-pedantic")


def build_host_port(
    out_dir: Path,
    *,
    include_dirs: Sequence[Path] = (),
    extra_sources: Sequence[Path] = (),
    defines: Sequence[str] = (),
    name: str = "ecg_host",
    link_args: Sequence[str] = (),
) -> Path:
    """Compile ``firmware/host`` + ``firmware/core`` into ``out_dir/name``; return the executable.

    By default the model is the checksum runner (transport tests only) with the host
    port's own ``model_config.h``. ``include_dirs`` go first on the include path (a
    run's exported ``model_config.h``), ``extra_sources`` and ``defines`` add another
    model (the virtual board: ``aot_model.c`` and the AOT C model). ``link_args``
    (objects, archives, linker flags) come after the sources: the TFLM board links its
    C++ runner and TFLM library this way.
    """
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc not found: install it (Debian: apt-get install gcc) to build the host port")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / name
    host, core = FIRMWARE / "host", FIRMWARE / "core"
    cmd = ["gcc", *CFLAGS, "-DEE_HAVE_MODEL_CONFIG=1", *(f"-D{d}" for d in defines), *(f"-I{d}" for d in include_dirs),
           f"-I{host}", f"-I{core}", str(host / "main.c"), *map(str, extra_sources),
           *map(str, sorted(core.glob("*.c"))), *link_args, "-lm", "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the host port failed:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}")
    return exe
