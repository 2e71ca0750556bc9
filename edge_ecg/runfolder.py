"""Writing a run folder safely: atomic file writes and the one-writer lock. No TensorFlow.

Atomic writes go to a temporary file in the same folder, are flushed to disk and then
renamed over the target (``os.replace``), so a reader, or a run killed half-way,
sees either the previous file or the new one, never a mix.

:class:`RunLock` lets one process at a time write a run folder: an exclusive,
non-blocking ``flock`` on ``RUN/.lock``. A second writer is refused with the holder's
pid, stage and command. The kernel drops the lock when its process ends, so a crash
never leaves a run folder locked; the file's text is only what the message shows.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process is writing the same run folder."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # the mode a plain open() would give, not mkstemp's 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


class RunLock:
    """Context manager: hold the exclusive writer lock of ``run_dir`` while ``stage`` writes it.

    With ``create``, makes ``run_dir`` if needed; without, a missing ``run_dir`` is not
    locked (the stage fails on it with its own message, and nothing is created).
    Raises :class:`RunLockedError` at once (no waiting) when another process holds it.
    Re-entering in the same process (a stage calling another on the same folder) is
    allowed: only the outermost holder takes and releases the lock.
    """

    _held: dict[Path, int] = {}  # lock path -> nesting depth in this process

    def __init__(self, run_dir: str | os.PathLike, stage: str, *, create: bool = False):
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.create = create
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._key: Path | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        if self.create:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        elif not self.run_dir.is_dir():
            return self
        key = self.path.resolve()
        if key in RunLock._held:
            RunLock._held[key] += 1
            self._key = key
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is being written by another process ({holder}); wait for it to finish, "
                f"or stop it, before running {self.stage} on this run folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "stage": self.stage, "command": " ".join(sys.argv)}).encode())
        self._fd, self._key = fd, key
        RunLock._held[key] = 1
        return self

    def __exit__(self, *exc) -> None:
        if self._key is None:  # nothing was locked
            return
        RunLock._held[self._key] -= 1
        if RunLock._held[self._key]:
            return
        del RunLock._held[self._key]
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking it would race a new holder)
            self._fd = None
        self._key = None


def locks_run(stage: str) -> Callable[[F], F]:
    """Decorator: the wrapped stage function (first argument: the run folder) runs holding its :class:`RunLock`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def locked(run, *args, **kwargs):
            with RunLock(run, stage):
                return fn(run, *args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate


def _read_holder(fd: int) -> str:
    """'pid N, stage S, command C' from an open lock file, or what is known."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info.get('pid', '?')}, stage {info.get('stage', '?')}, command: {info.get('command', '?')}"
    except (OSError, ValueError):
        return "holder unknown"
