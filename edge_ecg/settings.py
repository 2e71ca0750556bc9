"""Where edge-ecg reads data and keeps caches: one place for every setting.

Each setting has an environment variable so CI and users can point edge-ecg
elsewhere without editing code; the CLI's options override them.
"""

from __future__ import annotations

import os
from pathlib import Path

PTBXL_URL = "https://physionet.org/files/ptb-xl/1.0.3/"
"""PhysioNet's PTB-XL 1.0.3 release; override with EDGE_ECG_PTBXL_URL."""


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The PTB-XL folder: ``path`` if given, else $EDGE_ECG_DATA, else ./data/ptbxl."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("EDGE_ECG_DATA")
    return Path(env).expanduser() if env else Path("data/ptbxl")


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Folder for prepared-array caches: ``path``, $EDGE_ECG_CACHE, or the user's cache dir.

    Never inside the data folder, which may be read-only.
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("EDGE_ECG_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edge-ecg"


def ptbxl_url(url: str | None = None) -> str:
    """Base URL of the PTB-XL release, always ending with '/'."""
    url = url or os.environ.get("EDGE_ECG_PTBXL_URL") or PTBXL_URL
    return url if url.endswith("/") else url + "/"
