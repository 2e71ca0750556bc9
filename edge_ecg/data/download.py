"""Download PTB-XL 1.0.3 from PhysioNet, verified against the release's SHA256SUMS.txt.

Only what one sampling rate needs is fetched: the two tables, the licence and the
``records<rate>/`` files. Files are downloaded to ``<name>.part`` and renamed only
after their SHA-256 matches, so a later run never trusts a bad file; an existing
``.part`` is continued with an HTTP Range request (resume).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edge_ecg import settings
from edge_ecg.data.ptbxl import DATABASE_CSV, RATES, STATEMENTS_CSV, DataError

SUMS_FILE = "SHA256SUMS.txt"
TOP_LEVEL_FILES = (DATABASE_CSV, STATEMENTS_CSV, "LICENSE.txt", "RECORDS")
_CHUNK = 1 << 16


@dataclass
class DownloadReport:
    dest: Path
    downloaded: int  # files fetched (fully or resumed) in this call
    present: int  # files already complete and verified
    bytes: int  # bytes transferred in this call


def read_sums(path: Path) -> dict[str, str]:
    """``SHA256SUMS.txt`` as {relative path: hex digest}."""
    sums = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{path}:{n}: not a 'sha256  path' line: {line!r}")
        sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def files_for_rate(sums: dict[str, str], rate: int) -> list[str]:
    """The files of the release that a given sampling rate needs, in release order."""
    if rate not in RATES:
        raise DataError(f"rate={rate!r} is not a PTB-XL sampling rate; use one of {RATES}")
    prefix = f"records{rate}/"
    return [f for f in sums if f in TOP_LEVEL_FILES or f.startswith(prefix)]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_ptbxl(
    dest: str | os.PathLike | None = None,
    rate: int = 100,
    *,
    base_url: str | None = None,
    progress: bool = False,
    timeout: float = 60.0,
) -> DownloadReport:
    """Download (or complete) PTB-XL for ``rate`` into ``dest``; verify every file."""
    dest = settings.data_dir(dest)
    url = settings.ptbxl_url(base_url)
    dest.mkdir(parents=True, exist_ok=True)
    sums_path = dest / SUMS_FILE
    _fetch(url + SUMS_FILE, sums_path.with_name(SUMS_FILE + ".part"), timeout)  # small; always refreshed
    os.replace(sums_path.with_name(SUMS_FILE + ".part"), sums_path)
    sums = read_sums(sums_path)
    wanted = files_for_rate(sums, rate)
    if not any(f.startswith(f"records{rate}/") for f in wanted):
        raise DataError(f"{url}{SUMS_FILE} lists no records{rate}/ files; is the base URL a PTB-XL release?")

    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

    from edge_ecg.progress import console

    report = DownloadReport(dest, 0, 0, 0)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console(), disable=not progress, transient=True) as bar:
        task = bar.add_task("PTB-XL", total=len(wanted))
        for rel in wanted:
            target = dest / rel
            if target.is_file() and sha256(target) == sums[rel]:
                report.present += 1
                bar.advance(task)
                continue
            part = target.with_name(target.name + ".part")
            target.parent.mkdir(parents=True, exist_ok=True)
            report.bytes += _fetch(url + rel, part, timeout, resume=True)
            digest = sha256(part)
            if digest != sums[rel]:
                part.unlink()  # never leave a bad file where a later run could trust it
                raise DataError(
                    f"{url}{rel}: SHA-256 {digest} does not match {SUMS_FILE} ({sums[rel]}); the file was "
                    "deleted, nothing else changed. Run the command again; if it persists the mirror is bad."
                )
            os.replace(part, target)
            report.downloaded += 1
            bar.update(task, advance=1, description=rel)
    return report


def _fetch(url: str, path: Path, timeout: float, resume: bool = False) -> int:
    """Fetch ``url`` into ``path``; with ``resume``, continue an existing partial file."""
    start = path.stat().st_size if resume and path.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "edge-ecg"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the part is already whole; its checksum decides
            return 0
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: cannot connect ({exc}); check the network or EDGE_ECG_PTBXL_URL") from None
    with response:
        mode = "ab" if start and response.status == 206 else "wb"  # a server without Range support restarts
        count = 0
        with open(path, mode) as fh:
            for block in iter(lambda: response.read(_CHUNK), b""):
                fh.write(block)
                count += len(block)
    return count
