"""Download PTB-XL 1.0.3 from PhysioNet, verified against the release's SHA256SUMS.txt.

Only what one sampling rate needs is fetched: the two tables, the licence and the
``records<rate>/`` files. Files are downloaded to ``<name>.part`` and renamed only
after their SHA-256 matches, so a later run never trusts a bad file; an existing
``.part`` is continued with an HTTP Range request (resume).

The checksum list is the root of trust, so it is checked before anything else is
written: its own SHA-256 is pinned for PhysioNet's 1.0.3 release
(:data:`PTBXL_103_SUMS_SHA256`) or given by the caller (``sums_sha256``); for any
other mirror without a pin, the list is trusted as the release's. Either way every
line must be ``<64 hex>  <relative path>`` with a path that stays inside the
destination (no absolute path, no ``..``, nothing resolving outside it).
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edge_ecg import settings
from edge_ecg.data.ptbxl import DATABASE_CSV, RATES, STATEMENTS_CSV, DataError
from edge_ecg.runfolder import sha256_file

SUMS_FILE = "SHA256SUMS.txt"
PTBXL_103_SUMS_SHA256 = "b7224b92b341511ec3ceb13dc6652079b2c36a06504bcb49506f157f51dc695d"
"""SHA-256 of ``SHA256SUMS.txt`` of PTB-XL 1.0.3 at settings.PTBXL_URL (87,203 lines).

Not published by PhysioNet itself: the value recorded, identically, by several independent
public projects that fetched that file. Checked whenever the default PhysioNet URL is used."""
TOP_LEVEL_FILES = (DATABASE_CSV, STATEMENTS_CSV, "LICENSE.txt", "RECORDS")
_CHUNK = 1 << 16


@dataclass
class DownloadReport:
    dest: Path
    downloaded: int  # files fetched (fully or resumed) in this call
    present: int  # files already complete and verified
    bytes: int  # bytes transferred in this call


_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *]?(\S.*)")  # sha256sum's text (' ') and binary ('*') forms


def read_sums(path: Path, dest: Path | None = None) -> dict[str, str]:
    """``SHA256SUMS.txt`` as {relative path: hex digest}, every line checked.

    A name is refused unless it is a plain relative POSIX path (no absolute path, no
    backslash, no empty, ``.`` or ``..`` part) and, when ``dest`` is given, resolves
    inside ``dest``: the list comes from the mirror, and nothing it says may write
    elsewhere. Duplicate names are refused too.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a checksum list ({exc})") from None
    sums: dict[str, str] = {}
    root = dest.resolve() if dest is not None else None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SUMS_LINE.fullmatch(line.rstrip())
        if match is None:
            raise DataError(f"{path}:{n}: not a 'sha256  path' line: {line!r}")
        digest, name = match.group(1).lower(), match.group(2)
        problem = _unsafe_name(name, root)
        if problem:
            raise DataError(f"{path}:{n}: refused path {name!r} ({problem}); the checksum list is not a PTB-XL release's")
        if name in sums:
            raise DataError(f"{path}:{n}: {name!r} is listed twice")
        sums[name] = digest
    return sums


def _unsafe_name(name: str, root: Path | None) -> str | None:
    """Why ``name`` may not be joined to the destination, or None if it may."""
    if "\\" in name or "\0" in name or ":" in name:
        return "backslash, NUL or colon"
    parts = name.split("/")
    if name.startswith("/"):
        return "absolute path"
    if any(part in ("", ".", "..") for part in parts):
        return "empty, '.' or '..' path component"
    if root is not None:
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            return f"resolves to {target}, outside {root}"
    return None


def files_for_rate(sums: dict[str, str], rate: int) -> list[str]:
    """The files of the release that a given sampling rate needs, in release order."""
    if rate not in RATES:
        raise DataError(f"rate={rate!r} is not a PTB-XL sampling rate; use one of {RATES}")
    prefix = f"records{rate}/"
    return [f for f in sums if f in TOP_LEVEL_FILES or f.startswith(prefix)]


sha256 = sha256_file  # one SHA-256 of a file for the whole package (edge_ecg.runfolder)


def download_ptbxl(
    dest: str | os.PathLike | None = None,
    rate: int = 100,
    *,
    base_url: str | None = None,
    sums_sha256: str | None = None,
    progress: bool = False,
    timeout: float = 60.0,
) -> DownloadReport:
    """Download (or complete) PTB-XL for ``rate`` into ``dest``; verify every file.

    ``sums_sha256`` pins the SHA-256 of the mirror's ``SHA256SUMS.txt``; by default it
    is :data:`PTBXL_103_SUMS_SHA256` for PhysioNet's URL and unchecked for other mirrors.
    """
    dest = settings.data_dir(dest)
    url = settings.ptbxl_url(base_url)
    if sums_sha256 is None and url == settings.ptbxl_url(settings.PTBXL_URL):
        sums_sha256 = PTBXL_103_SUMS_SHA256
    if sums_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sums_sha256):
        raise DataError(f"sums_sha256={sums_sha256!r} is not a SHA-256 (64 hexadecimal digits)")
    dest.mkdir(parents=True, exist_ok=True)
    sums_path = dest / SUMS_FILE
    part = sums_path.with_name(SUMS_FILE + ".part")
    _fetch(url + SUMS_FILE, part, timeout)  # small; always refreshed
    try:  # the list is checked whole before anything it names is written
        if sums_sha256 is not None and (digest := sha256(part)) != sums_sha256.lower():
            raise DataError(
                f"{url}{SUMS_FILE}: SHA-256 {digest}, expected {sums_sha256.lower()}; this is not the pinned "
                "release's checksum list. Nothing was written. Check the mirror, or pin its list with --sums-sha256"
            )
        sums = read_sums(part, dest)
    except DataError as exc:
        part.unlink()
        raise DataError(str(exc).replace(str(part), url + SUMS_FILE)) from None
    os.replace(part, sums_path)
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
