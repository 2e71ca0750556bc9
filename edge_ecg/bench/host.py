"""The host port of the firmware core, built with the host's gcc (a board on a pseudo-terminal)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


def build_host_port(out_dir: Path, *, config_dir: Path | None = None, extra_sources: tuple[Path, ...] = ()) -> Path:
    """Compile ``firmware/host`` + ``firmware/core`` into ``out_dir/ecg_host``; return the executable.

    ``config_dir`` holds the ``model_config.h`` to build with (default: the host
    port's own, for the checksum runner).
    """
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc not found: install it (Debian: apt-get install gcc) to build the host port")
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / "ecg_host"
    host, core = FIRMWARE / "host", FIRMWARE / "core"
    include = [f"-I{config_dir}"] if config_dir else []
    cmd = ["gcc", *CFLAGS, "-DEE_HAVE_MODEL_CONFIG=1", *include, f"-I{host}", f"-I{core}", str(host / "main.c"),
           *map(str, sorted(core.glob("*.c"))), *map(str, extra_sources), "-lm", "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the host port failed:\n{' '.join(cmd)}\n{result.stderr}")
    return exe
