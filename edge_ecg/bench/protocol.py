"""The host side of the benchmark protocol: constants, a client, transports.

The device side is ``firmware/core`` (C); its header ``ee_protocol.h`` is the one
source of truth for the wire strings. The ``EE_*`` constants below mirror it
name for name, and ``tests/test_firmware_core.py`` checks them against the
header with :func:`parse_protocol_header`. ``firmware/core/PROTOCOL.md``
describes the commands.

:class:`DutClient` drives a device through any :class:`Transport`: a
``serial.Serial`` from pyserial, or :class:`FdTransport` on a pseudo-terminal.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import select
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

# --------------------------------------------------------------------------- constants
# Mirror of firmware/core/ee_protocol.h: same names, same values.

EE_CORE_VERSION = "0.1.0"
EE_EXT_PROTOCOL_VERSION = "edge-ecg/1"

EE_CMD_TERMINATOR = "%"
EE_CMD_DELIMITER = " "
EE_CMD_SIZE = 80
EE_LINE_END = "\r\n"
EE_MSG_PREFIX = "m-"
EE_ERR_PREFIX = "e-"

EE_DEVICE_NAME = "dut"
EE_PROFILE_STRING = "ULPMark for tinyML Firmware V0.0.1"
EE_MODEL_ID = "ecg01"

EE_CMD_NAME = "name"
EE_CMD_PROFILE = "profile"
EE_CMD_HELP = "help"
EE_CMD_TIMESTAMP = "timestamp"
EE_CMD_DB = "db"
EE_CMD_DB_LOAD = "load"
EE_CMD_INFER = "infer"
EE_CMD_RESULTS = "results"
EE_INFER_DEFAULT_ITERATIONS = 1
EE_INFER_DEFAULT_WARMUP = 10

EE_CMD_INFO = "info"
EE_CMD_DB_BIN = "bin"
EE_BIN_TIMEOUT_MS = 500

EE_MSG_READY = "m-ready"
EE_MSG_INIT_DONE = "m-init-done"
EE_MSG_TIMESTAMP_MODE = "m-timestamp-mode-performance"
EE_MSG_LAP_US = "m-lap-us-"
EE_MSG_NAME = "m-name-dut-["
EE_MSG_PROFILE = "m-profile-["
EE_MSG_MODEL = "m-model-["
EE_MSG_EXPECTING = "m-[Expecting "
EE_MSG_EXPECTING_END = " bytes]"
EE_MSG_LOAD_DONE = "m-load-done"
EE_MSG_WARMUP_START = "m-warmup-start-"
EE_MSG_WARMUP_DONE = "m-warmup-done"
EE_MSG_INFER_START = "m-infer-start-"
EE_MSG_INFER_DONE = "m-infer-done"
EE_MSG_RESULTS = "m-results-["
EE_MSG_HELP = "m-help-"
EE_BRACKET_END = "]"

EE_MSG_RESULTS_INT8 = "m-results-int8-["
EE_MSG_INFO = "m-info-["
EE_MSG_LOAD_CRC = "m-load-crc-"

EE_ERR_OPEN = "e-["
EE_ERR_UNKNOWN_COMMAND = "Unknown command"
EE_ERR_COMMAND_TOO_LONG = "Command too long"
EE_ERR_TOO_MANY_ARGUMENTS = "Too many arguments"
EE_ERR_BAD_NUMBER = "Invalid number"
EE_ERR_DB_SUBCOMMAND = "Command 'db' requires a subcommand"
EE_ERR_LOAD_SIZE = "Load size out of range"
EE_ERR_NO_LOAD = "No load in progress"
EE_ERR_HEX_ODD = "Odd number of hex digits"
EE_ERR_HEX_DIGIT = "Invalid hex digit"
EE_ERR_LOAD_OVERFLOW = "More bytes than announced"
EE_ERR_INPUT_NOT_LOADED = "Input not loaded"
EE_ERR_INPUT_SIZE = "Input size mismatch"
EE_ERR_INFER_ITERATIONS = "Inference iterations must be >0"
EE_ERR_INFER_TIME_LIMIT = "Inference time limit exceeded"
EE_ERR_MODEL_INIT = "Model init failed"
EE_ERR_INVOKE = "Inference failed"
EE_ERR_NO_RESULTS = "No results: run infer first"
EE_ERR_BIN_TIMEOUT = "Binary load timed out"

# Derived values (not in the header).

HEX_CHUNK_BYTES = (EE_CMD_SIZE - len(f"{EE_CMD_DB}{EE_CMD_DELIMITER}")) // 2
"""Bytes per ``db <hex>`` command: two hex digits each, within EE_CMD_SIZE chars."""

LAP_US_MODULUS = 1 << 32
"""Device timestamps are 32-bit microsecond counters that wrap."""

HOST_OUTPUT_COUNT = 5
"""Outputs of the host port's checksum runner (the five PTB-XL superclasses)."""


def default_header_path() -> Path:
    """``firmware/core/ee_protocol.h`` of the source tree this module sits in."""
    return Path(__file__).resolve().parents[2] / "firmware" / "core" / "ee_protocol.h"


_DEFINE = re.compile(r"^\s*#\s*define\s+(EE_\w+)[ \t]+(.+?)\s*$")
_INTEGER = re.compile(r"^(\d+)[uUlL]*$")


def parse_protocol_header(path: str | os.PathLike | None = None) -> dict[str, str | int]:
    """The ``#define EE_NAME value`` constants of ``ee_protocol.h``.

    Values must be one string literal, one character literal or one decimal
    integer (the header's own rule); anything else raises ``ValueError`` so a
    definition the mirror cannot follow is noticed. Macros without a value
    (the include guard) are skipped.
    """
    text = Path(path or default_header_path()).read_text(encoding="ascii")
    constants: dict[str, str | int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _DEFINE.match(line)
        if not match:
            continue
        name, raw = match.groups()
        integer = _INTEGER.match(raw)
        if integer:
            constants[name] = int(integer.group(1))
        elif (raw.startswith('"') and raw.endswith('"')) or (
            raw.startswith("'") and raw.endswith("'") and len(raw) >= 3
        ):
            # C and Python agree on the escapes used here (\r, \n, \", \\).
            value = ast.literal_eval(raw)
            if not isinstance(value, str):
                raise ValueError(f"{path}:{number}: {name}: not a string literal: {raw}")
            constants[name] = value
        else:
            raise ValueError(f"{path}:{number}: {name}: unsupported value {raw!r}")
    return constants


def python_constants() -> dict[str, str | int]:
    """This module's mirror of the header: every ``EE_*`` name defined here."""
    return {k: v for k, v in globals().items() if k.startswith("EE_") and isinstance(v, (str, int))}


# --------------------------------------------------------------------------- errors


class ProtocolError(Exception):
    """The device answered with ``e-[...]``, a line that is not protocol, or a
    reply that does not match the command.

    ``device_message`` holds the text inside ``e-[...]`` when the device sent
    one; ``lines`` the reply lines read before ``m-ready``.
    """

    def __init__(self, message: str, *, device_message: str | None = None, lines: Sequence[str] = ()):
        super().__init__(message)
        self.device_message = device_message
        self.lines = list(lines)


class DutTimeoutError(ProtocolError, TimeoutError):
    """No complete reply (no ``m-ready``) within the time allowed."""


# --------------------------------------------------------------------------- transports


@runtime_checkable
class Transport(Protocol):
    """What :class:`DutClient` needs from a link: pyserial's ``Serial`` fits.

    ``read(size)`` returns at most ``size`` bytes, waiting at most ``timeout``
    seconds for the first one, and ``b""`` when none came. ``write`` sends all
    of ``data``.
    """

    timeout: float | None

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int = 1) -> bytes: ...


class FdTransport:
    """A :class:`Transport` over a POSIX file descriptor, e.g. a pty master.

    Reads return whatever is available (up to ``size``) as soon as anything
    is. A closed other side (``EIO`` on a pty) raises ``ConnectionError``.
    """

    def __init__(self, fd: int, timeout: float | None = 0.05, write_timeout: float = 5.0):
        self.fd = fd
        self.timeout = timeout
        self.write_timeout = write_timeout
        # Non-blocking writes: a device that is itself blocked writing to us (its output
        # unread while we send a record) would otherwise deadlock both ends of the pty.
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        deadline = time.monotonic() + self.write_timeout
        while view:
            try:
                sent = os.write(self.fd, view)
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([], [self.fd], [], remaining)[1]:
                    raise TimeoutError(
                        f"the device took no input for {self.write_timeout:g} s ({len(view)} of {len(data)} bytes unsent)"
                    ) from None
                continue
            view = view[sent:]
        return len(data)

    def read(self, size: int = 1) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            return b""
        try:
            data = os.read(self.fd, size)
        except OSError as exc:
            if exc.errno == errno.EIO:
                raise ConnectionError("the other end of the terminal closed") from exc
            raise
        if not data:
            raise ConnectionError("end of file on the device link")
        return data

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read without waiting."""
        import fcntl  # POSIX only, like this class; keeps the module importable elsewhere
        import termios

        try:
            raw = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return struct.unpack("i", raw)[0]

    def close(self) -> None:
        os.close(self.fd)


def spawn_on_pty(argv: Sequence[str]) -> tuple[subprocess.Popen, FdTransport]:
    """Start ``argv`` (e.g. the host port) with a pseudo-terminal as its
    stdin/stdout, as a board sits on a serial port; return the process and a
    transport on the pty's master side."""
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(list(argv), stdin=slave, stdout=slave, close_fds=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return process, FdTransport(master)


# --------------------------------------------------------------------------- host-port helpers


def checksum_runner_outputs(data: bytes, count: int = HOST_OUTPUT_COUNT) -> list[int]:
    """The int8 outputs the host port's checksum runner computes for ``data``.

    A transport check, not a model: output k hashes the bytes at positions
    k, k+count, ... in order, weighted by position, as ``firmware/host/checksum_model.c``
    does, so any lost, changed or moved byte shows.
    """
    outputs = []
    for k in range(count):
        h = 0
        for i in range(k, len(data), count):
            h = (h * 31 + (data[i] + 1) * (i + 1)) & 0xFFFFFFFF
        folded = (h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) & 0xFF
        outputs.append(folded - 256 if folded >= 128 else folded)
    return outputs


def elapsed_us(t0: int, t1: int) -> int:
    """Microseconds from ``t0`` to ``t1``, across one wrap of the 32-bit counter."""
    return (t1 - t0) % LAP_US_MODULUS


# --------------------------------------------------------------------------- client


def _bracketed(line: str, prefix: str) -> str:
    """The text of ``<prefix>...]``; ProtocolError if the line is not that."""
    if not (line.startswith(prefix) and line.endswith(EE_BRACKET_END)):
        raise ProtocolError(f"expected {prefix}...{EE_BRACKET_END}, got {line!r}")
    return line[len(prefix) : -len(EE_BRACKET_END)]


class DutClient:
    """Drives a device under test that runs ``firmware/core``.

    Every method sends one command, reads reply lines up to ``m-ready`` and
    returns what it parsed. An ``e-[...]`` reply raises :class:`ProtocolError`
    with the device's message (after the rest of the reply is read, so the
    link stays in step); so does a line that is not protocol. No ``m-ready``
    within ``timeout`` seconds raises :class:`DutTimeoutError`.

    The client sets ``transport.timeout`` to ``poll_interval``: a short read
    timeout lets it keep its own deadlines.
    """

    def __init__(self, transport: Transport, timeout: float = 5.0, poll_interval: float = 0.05):
        self.transport = transport
        self.timeout = timeout
        if hasattr(transport, "timeout"):
            transport.timeout = poll_interval
        self._pending = bytearray()
        self.bytes_written = 0
        """Bytes sent to the device so far (wire-cost accounting)."""
        self.bytes_read = 0
        """Bytes received from the device so far."""
        self.last_results: tuple[list[float], list[int]] | None = None
        """Outputs printed after the last :meth:`infer`."""

    # ---- low level

    def _write(self, data: bytes) -> None:
        self.transport.write(data)
        self.bytes_written += len(data)

    def _read_line(self, deadline: float, waiting_for: str) -> bytes:
        """One line, without its line end, as bytes."""
        while True:
            end = self._pending.find(b"\n")
            if end >= 0:
                line = bytes(self._pending[:end])
                del self._pending[: end + 1]
                return line.rstrip(b"\r")
            if time.monotonic() >= deadline:
                partial = bytes(self._pending)
                raise DutTimeoutError(f"no complete reply to {waiting_for!r} in time (partial line: {partial!r})")
            size = max(1, getattr(self.transport, "in_waiting", 0) or 0)
            chunk = self.transport.read(size)
            if chunk:
                self._pending += chunk
                self.bytes_read += len(chunk)

    def _read_reply(self, waiting_for: str, timeout: float | None = None) -> list[str]:
        """Lines up to ``m-ready`` (exclusive), checked for errors and garbage."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        lines: list[str] = []
        errors: list[str] = []
        garbage: list[bytes] = []
        while True:
            raw = self._read_line(deadline, waiting_for)
            try:
                line = raw.decode("ascii")
            except UnicodeDecodeError:
                garbage.append(raw)
                continue
            if line == EE_MSG_READY:
                break
            if not line:
                continue  # a stray line end carries nothing
            if line.startswith(EE_ERR_PREFIX):
                errors.append(line)
            elif line.startswith(EE_MSG_PREFIX):
                lines.append(line)
            else:
                garbage.append(raw)
        if errors:
            first = errors[0]
            text = first[len(EE_ERR_OPEN) : -1] if first.startswith(EE_ERR_OPEN) and first.endswith("]") else first
            raise ProtocolError(f"device error for {waiting_for!r}: {text}", device_message=text, lines=lines + errors)
        if garbage:
            raise ProtocolError(f"unexpected output for {waiting_for!r}: {garbage!r}", lines=lines)
        return lines

    def command(self, command: str, timeout: float | None = None) -> list[str]:
        """Send ``command`` (terminator added) and return its reply lines."""
        if EE_CMD_TERMINATOR in command:
            raise ValueError(f"command contains the terminator {EE_CMD_TERMINATOR!r}: {command!r}")
        if len(command) > EE_CMD_SIZE:
            raise ValueError(f"command longer than {EE_CMD_SIZE} characters: {command!r}")
        self._write(command.encode("ascii") + EE_CMD_TERMINATOR.encode("ascii"))
        return self._read_reply(command, timeout)

    def transact(self, payload: bytes, timeout: float | None = None) -> list[str]:
        """Send ``payload`` exactly as given (no terminator added, nothing
        checked) and return the reply lines: for tests and tools that need to
        send what :meth:`command` refuses. An empty payload only reads."""
        if payload:
            self._write(payload)
        return self._read_reply(f"raw {bytes(payload[:40])!r}", timeout)

    @staticmethod
    def _find(lines: Sequence[str], prefix: str, command: str) -> str:
        for line in lines:
            if line.startswith(prefix):
                return line
        raise ProtocolError(f"no {prefix}... line in the reply to {command!r}: {list(lines)}", lines=lines)

    # ---- session

    def wait_ready(self, timeout: float | None = None) -> list[str]:
        """Read the boot banner up to ``m-ready``; return its protocol lines.

        Lines that are not protocol (a boot ROM's log, noise from a reset) are
        skipped here, unlike in replies to commands.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        banner: list[str] = []
        while True:
            line = self._read_line(deadline, "boot banner").decode("ascii", errors="replace")
            if line == EE_MSG_READY:
                return banner
            if line.startswith((EE_MSG_PREFIX, EE_ERR_PREFIX)):
                banner.append(line)

    def sync(self, timeout: float | None = None) -> None:
        """Send an empty command; the device answers ``m-ready`` alone."""
        self._write(EE_CMD_TERMINATOR.encode("ascii"))
        self._read_reply("(empty command)", timeout)

    def resync(self, timeout: float | None = None) -> None:
        """Bring an out-of-step link back: wait until the device has been quiet
        longer than a binary load's timeout (which it abandons), drop what it
        sent, then :meth:`sync`. Use after an interrupted load or a timeout."""
        quiet_needed = EE_BIN_TIMEOUT_MS / 1000 * 1.5
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout) + quiet_needed
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_needed:
            if time.monotonic() >= deadline:
                raise DutTimeoutError("device never went quiet")
            size = max(1, getattr(self.transport, "in_waiting", 0) or 0)
            if self.transport.read(size):
                quiet_since = time.monotonic()
        self._pending.clear()
        self.sync(timeout)

    # ---- standard commands

    def name(self) -> str:
        """The target name from ``m-name-dut-[<name>]``."""
        lines = self.command(EE_CMD_NAME)
        return _bracketed(self._find(lines, EE_MSG_NAME, EE_CMD_NAME), EE_MSG_NAME)

    def profile(self) -> tuple[str, str]:
        """(profile string, model id), e.g. (EE_PROFILE_STRING, "ecg01")."""
        lines = self.command(EE_CMD_PROFILE)
        profile = _bracketed(self._find(lines, EE_MSG_PROFILE, EE_CMD_PROFILE), EE_MSG_PROFILE)
        model = _bracketed(self._find(lines, EE_MSG_MODEL, EE_CMD_PROFILE), EE_MSG_MODEL)
        return profile, model

    def help(self) -> list[str]:
        """The device's help text, one entry per line."""
        return [line[len(EE_MSG_HELP) :] for line in self.command(EE_CMD_HELP) if line.startswith(EE_MSG_HELP)]

    def timestamp(self) -> int:
        """The device's microsecond counter (32 bits, wraps)."""
        return _parse_lap(self._find(self.command(EE_CMD_TIMESTAMP), EE_MSG_LAP_US, EE_CMD_TIMESTAMP))

    def load_hex(self, data: bytes, timeout: float | None = None) -> None:
        """Load ``data`` as the input with ``db load`` and ``db <hex>`` commands
        (the standard, slow way: 2 characters per byte and one round trip per
        HEX_CHUNK_BYTES)."""
        data = bytes(data)
        self._announce(EE_CMD_DB_LOAD, len(data), timeout)
        lines: list[str] = []
        for offset in range(0, len(data), HEX_CHUNK_BYTES):
            chunk = data[offset : offset + HEX_CHUNK_BYTES]
            lines = self.command(f"{EE_CMD_DB}{EE_CMD_DELIMITER}{chunk.hex()}", timeout)
        if EE_MSG_LOAD_DONE not in lines:
            raise ProtocolError(f"hex load of {len(data)} bytes ended without {EE_MSG_LOAD_DONE}", lines=lines)

    def load_binary(self, data: bytes, timeout: float | None = None) -> int:
        """Load ``data`` as the input with ``db bin N`` and N raw bytes; check
        the device's CRC-32 against ours and return it. ``timeout`` must cover
        the transfer at the link's baud rate (about 1 s per 11.5 kB at 115200)."""
        data = bytes(data)
        self._announce(EE_CMD_DB_BIN, len(data), timeout)
        self._write(data)
        lines = self._read_reply(f"{EE_CMD_DB} {EE_CMD_DB_BIN} payload of {len(data)} bytes", timeout)
        crc_line = self._find(lines, EE_MSG_LOAD_CRC, "db bin")
        try:
            device_crc = int(crc_line[len(EE_MSG_LOAD_CRC) :], 16)
        except ValueError:
            raise ProtocolError(f"bad CRC line {crc_line!r}", lines=lines) from None
        expected = zlib.crc32(data)
        if device_crc != expected:
            raise ProtocolError(
                f"binary load corrupted: device CRC-32 {device_crc:08x}, sent {expected:08x}", lines=lines
            )
        if EE_MSG_LOAD_DONE not in lines:
            raise ProtocolError(f"binary load ended without {EE_MSG_LOAD_DONE}", lines=lines)
        return device_crc

    def _announce(self, subcommand: str, size: int, timeout: float | None) -> None:
        if size <= 0:
            raise ValueError("nothing to load")
        command = f"{EE_CMD_DB} {subcommand} {size}"
        lines = self.command(command, timeout)
        expected = f"{EE_MSG_EXPECTING}{size}{EE_MSG_EXPECTING_END}"
        if expected not in lines:
            raise ProtocolError(f"expected {expected!r} in reply to {command!r}", lines=lines)

    def infer(
        self,
        iterations: int = EE_INFER_DEFAULT_ITERATIONS,
        warmup: int = EE_INFER_DEFAULT_WARMUP,
        timeout: float | None = None,
    ) -> tuple[int, int]:
        """Run ``warmup`` untimed then ``iterations`` timed inferences on the
        loaded input; return the device timestamps (t0_us, t1_us) around the
        timed ones (see :func:`elapsed_us`). The outputs printed afterwards are
        kept in :attr:`last_results`."""
        command = f"{EE_CMD_INFER} {iterations} {warmup}"
        lines = self.command(command, timeout)
        laps = [_parse_lap(line) for line in lines if line.startswith(EE_MSG_LAP_US)]
        if len(laps) != 2:
            raise ProtocolError(f"expected two {EE_MSG_LAP_US} lines in reply to {command!r}", lines=lines)
        self.last_results = _parse_results(lines, command)
        return laps[0], laps[1]

    def results(self) -> tuple[list[float], list[int]]:
        """(dequantized float outputs, raw int8 outputs) of the last inference."""
        return _parse_results(self.command(EE_CMD_RESULTS), EE_CMD_RESULTS)

    # ---- extensions

    def info(self) -> dict:
        """Target and model facts from ``m-info-[{json}]`` (see PROTOCOL.md)."""
        line = self._find(self.command(EE_CMD_INFO), EE_MSG_INFO, EE_CMD_INFO)
        try:
            info = json.loads(_bracketed(line, EE_MSG_INFO))
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"bad info JSON: {exc}: {line!r}") from None
        if not isinstance(info, dict):
            raise ProtocolError(f"info is not a JSON object: {line!r}")
        return info


def _parse_lap(line: str) -> int:
    text = line[len(EE_MSG_LAP_US) :]
    if not text.isdigit():
        raise ProtocolError(f"bad timestamp line {line!r}")
    return int(text)


def _parse_results(lines: Sequence[str], command: str) -> tuple[list[float], list[int]]:
    floats_text = _bracketed(DutClient._find(lines, EE_MSG_RESULTS, command), EE_MSG_RESULTS)
    ints_text = _bracketed(DutClient._find(lines, EE_MSG_RESULTS_INT8, command), EE_MSG_RESULTS_INT8)
    try:
        floats = [float(v) for v in floats_text.split(",")] if floats_text else []
        ints = [int(v) for v in ints_text.split(",")] if ints_text else []
    except ValueError:
        raise ProtocolError(f"bad results lines in reply to {command!r}: {list(lines)}") from None
    if len(floats) != len(ints):
        raise ProtocolError(f"{len(floats)} float but {len(ints)} int8 results for {command!r}")
    return floats, ints
