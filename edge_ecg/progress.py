"""Progress bars on standard error (stdout stays clean for --json output)."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def console():
    from rich.console import Console

    return Console(stderr=True)


def track(items: Iterable[T], total: int | None = None, description: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, total=total, description=description, console=console(), transient=True)


class status:
    """A spinner with ``text`` on stderr while a step without countable items runs (no-op when not ``enabled``)."""

    def __init__(self, text: str, enabled: bool = True):
        self._status = console().status(text) if enabled else None

    def __enter__(self) -> "status":
        if self._status is not None:
            self._status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
