"""One record at a time on a device over a serial link, surviving timeouts, garbage and resets.

A record's attempt is idempotent (load the input, run one inference, read its
outputs), so any fault is handled the same way: resynchronize the link, or
reconnect if that fails, and try the record again, a bounded number of times.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

from edge_ecg.bench.protocol import (
    EE_MSG_INIT_DONE,
    DutClient,
    DutTimeoutError,
    ProtocolError,
    Transport,
    elapsed_us,
)


@dataclass
class RecordOutcome:
    """What one record gave: its int8 outputs and device latency, or why it failed."""

    status: str  # "ok" or "failed"
    int8: list[int] = field(default_factory=list)
    latency_us: float | None = None
    attempts: int = 0
    resets: int = 0
    errors: list[str] = field(default_factory=list)


class ResetCounter:
    """A transport wrapper that reports every boot banner seen on the line (a device reset)."""

    def __init__(self, inner: Transport, on_reset: Callable[[], None]):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "_on_reset", on_reset)
        object.__setattr__(self, "_tail", b"")

    def write(self, data: bytes):
        return self.inner.write(data)

    def read(self, size: int = 1) -> bytes:
        data = self.inner.read(size)
        if data:
            window = self._tail + data
            for _ in range(window.count(EE_MSG_INIT_DONE.encode())):
                self._on_reset()
            object.__setattr__(self, "_tail", window[-(len(EE_MSG_INIT_DONE) - 1) :])
        return data

    def __getattr__(self, name):  # timeout, in_waiting, close ... of the real transport
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)


class DeviceSession:
    """Runs records on a device reached through ``connect()`` (which returns a fresh transport).

    ``load`` is ``"binary"`` (the edge-ecg bulk load, checked by CRC-32) or ``"hex"``
    (the standard MLPerf Tiny ``db`` commands).
    """

    def __init__(
        self,
        connect: Callable[[], Transport],
        *,
        timeout: float = 5.0,
        retries: int = 3,
        warmup: int = 3,
        load: str = "binary",
        boot_timeout: float = 10.0,
    ):
        if load not in ("binary", "hex"):
            raise ValueError(f"load must be 'binary' or 'hex', got {load!r}")
        self.connect, self.timeout, self.retries, self.warmup, self.load = connect, timeout, retries, warmup, load
        self.boot_timeout = boot_timeout
        self.transport: ResetCounter | None = None
        self.client: DutClient | None = None
        self._warmed = False
        self.resets = 0
        """Boot banners seen since the session opened (the first boot included)."""

    # ---- link

    def open(self) -> dict:
        """Connect and return the device's ``info`` (waits for the boot banner if there is one)."""
        self.transport = ResetCounter(self.connect(), self._count_reset)
        self.client = DutClient(self.transport, timeout=self.timeout)
        # Opening a port may reset a board (DTR) and a fresh one prints its boot banner:
        # wait until the line is quiet, drop what came, then sync, so no stale m-ready
        # is taken for the answer to the next command.
        self.client.resync(timeout=self.boot_timeout)
        return self.client.info()

    def _count_reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        if self.transport is not None and hasattr(self.transport.inner, "close"):
            self.transport.inner.close()
        self.transport = self.client = None

    def _recover(self) -> None:
        """Resync the link; if the device does not answer, reconnect."""
        try:
            self.client.resync(timeout=self.timeout)
        except ProtocolError:
            self.close()
            self.open()
        self._warmed = False

    # ---- records

    def run(self, data: bytes) -> RecordOutcome:
        """Load ``data``, infer once (after warm-up on a fresh device) and read the int8 outputs."""
        outcome = RecordOutcome(status="failed")
        resets_at_start = self.resets
        for attempt in range(1, self.retries + 2):
            outcome.attempts = attempt
            resets_before = self.resets
            try:
                if self.load == "binary":
                    crc = self.client.load_binary(data)
                    if crc != zlib.crc32(data):
                        raise ProtocolError(f"load CRC {crc:08x} != {zlib.crc32(data):08x}: bytes corrupted on the way")
                else:
                    self.client.load_hex(data)
                warmup = 0 if self._warmed else self.warmup
                t0, t1 = self.client.infer(1, warmup, timeout=self.timeout + 60.0)
                _, int8 = self.client.last_results
                if self.resets != resets_before:
                    raise ProtocolError("the device reset during the record")
                self._warmed = True
                outcome.status, outcome.int8, outcome.latency_us = "ok", list(int8), float(elapsed_us(t0, t1))
                break
            except (ProtocolError, DutTimeoutError, OSError) as exc:
                outcome.errors.append(f"attempt {attempt}: {exc}")
                try:
                    self._recover()
                except (ProtocolError, DutTimeoutError, OSError) as again:
                    outcome.errors.append(f"recovery failed: {again}")
                    time.sleep(0.5)
        outcome.resets = self.resets - resets_at_start
        return outcome
