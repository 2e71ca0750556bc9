"""Boards without hardware: the virtual board and an emulated Cortex-M4, both running the real model.

Both run ``firmware/core`` with the model hooks of ``firmware/host/aot_model.c``:
the ahead-of-time C model of an export (``edge-ecg export --runtime aot``), so
their int8 outputs must equal TFLite Micro's bit for bit.

* **Virtual board** (:func:`build_virtual_board`, :func:`virtual_board_connect`):
  the host port (``firmware/host/main.c``) built with the host's gcc, on a
  pseudo-terminal. Target name ``host-aot``; timestamps are host microseconds.
* **Emulated Cortex-M4** (:func:`build_qemu_board`, :func:`qemu_connect`):
  ``firmware/mps2-an386`` cross-compiled with Debian's ``gcc-arm-none-eabi`` +
  ``libnewlib-arm-none-eabi`` and run by ``qemu-system-arm -machine mps2-an386``
  with UART0 on a pseudo-terminal. Target name ``mps2-an386``.

Each ``*_connect`` returns a :class:`BoardConnector`: a callable for
:class:`~edge_ecg.bench.session.DeviceSession` (and so ``bench(run, connect=...)``)
that builds once, then starts a fresh board process per call (stopping the
previous one) and returns a transport whose ``close()`` stops it. The connector
is also a context manager, and anything still running is stopped at exit.

**Instruction counts.** QEMU runs with ``-icount shift=0``: the virtual clock
advances exactly 1 ns per guest instruction executed, independent of host speed
and load. The firmware's microsecond timestamps come from SysTick, which QEMU
clocks from that virtual clock, so on this board ``m-lap-us`` differences are
instructions / 1000 (and bench latencies are "microseconds at one instruction
per nanosecond"). :func:`qemu_instructions_per_inference` divides
``infer N``'s interval by N. QEMU models no pipeline, caches or wait states: this
is an instruction count, not a cycle count of a real Cortex-M4 (whose cycles per
instruction for this kind of integer code is typically 1.2-2). Debian's QEMU ships
no TCG plugins (no ``libinsn.so``) and QEMU models no DWT cycle counter, hence
this method.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import termios
import time
from pathlib import Path
from typing import Sequence

from edge_ecg.bench.host import FIRMWARE, build_host_port
from edge_ecg.bench.protocol import EE_MSG_READY, DutClient, FdTransport, elapsed_us
from edge_ecg.runfolder import RunFolder

HOST_DIR = FIRMWARE / "host"
CORE_DIR = FIRMWARE / "core"
MPS2_DIR = FIRMWARE / "mps2-an386"


ARM_CC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
ARM_CPU_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
ARM_CFLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-pedantic", *ARM_CPU_FLAGS,
              "-ffunction-sections", "-fdata-sections")
ARM_LDFLAGS = ("-nostartfiles", "-Wl,--gc-sections", "--specs=nano.specs", "--specs=nosys.specs",
               "-Wl,--no-warn-rwx-segments")

QEMU = "qemu-system-arm"
QEMU_MACHINE = "mps2-an386"
MPS2_SYSCLK_HZ = 25_000_000
ICOUNT_SHIFT = 0
"""``-icount shift=0``: one guest instruction = 1 ns of virtual time."""

DEBIAN_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm")
INSTALL_HINT = ("apt-get update && apt-get install -y --no-install-recommends " + " ".join(DEBIAN_PACKAGES))

VIRTUAL_TARGET = "host-aot"
QEMU_TARGET = "mps2-an386"

__all__ = [
    "BoardConnector",
    "BoardError",
    "BoardTransport",
    "build_qemu_board",
    "build_virtual_board",
    "firmware_size",
    "qemu_connect",
    "qemu_instructions_per_inference",
    "virtual_board_connect",
]


class BoardError(RuntimeError):
    """A board could not be built or started, or stopped answering."""


# --------------------------------------------------------------------------- builds


def _export_sources(run: str | os.PathLike) -> tuple[Path, Path, list[Path]]:
    """(export dir, its aot dir, the AOT C files) of an export made with ``--runtime aot``."""
    export = RunFolder(run).export
    aot = export / "aot"
    sources = sorted(aot.glob("*.c"))
    if not (export / "model_config.h").is_file() or not (aot / "ecg_model.h").is_file() or not sources:
        raise BoardError(f"{export} has no AOT model (model_config.h, aot/ecg_model.c/.h): run "
                         f"`edge-ecg export --run {run} --runtime aot` first")
    return export, aot, sources


def _compile(cmd: Sequence[str], what: str) -> None:
    result = subprocess.run(list(cmd), capture_output=True, text=True)
    if result.returncode != 0:
        raise BoardError(f"building {what} failed:\n{' '.join(cmd)}\n{result.stdout}{result.stderr}")


def build_virtual_board(run: str | os.PathLike, workdir: str | os.PathLike) -> Path:
    """Compile the host port with the run's AOT model into ``workdir/ecg_host_aot``; return it.

    gcc, strict C99, ``-Werror``; the run's ``export/model_config.h`` and
    ``export/aot/*`` go first on the include path.
    """
    export, aot, sources = _export_sources(run)
    try:
        return build_host_port(Path(workdir), include_dirs=(export, aot), extra_sources=(HOST_DIR / "aot_model.c", *sources),
                               defines=("EE_HOST_MODEL_SEPARATE=1",), name="ecg_host_aot")
    except RuntimeError as exc:
        raise BoardError(f"the virtual board: {exc}") from None


def _need_tool(tool: str, purpose: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BoardError(f"{tool} not found: {purpose} needs the Debian packages {', '.join(DEBIAN_PACKAGES)} "
                         f"({INSTALL_HINT})")
    return path


def build_qemu_board(run: str | os.PathLike, workdir: str | os.PathLike, *, stack_bytes: int | None = None) -> Path:
    """Cross-compile ``firmware/mps2-an386`` with the run's AOT model into ``workdir/ecg_mps2.elf``; return it.

    Needs ``arm-none-eabi-gcc`` and newlib (Debian: gcc-arm-none-eabi,
    libnewlib-arm-none-eabi). Also writes ``ecg_mps2.map``. ``stack_bytes``
    overrides the linker script's 16 KiB stack reservation.
    """
    cc = _need_tool(ARM_CC, "building the mps2-an386 firmware")
    export, aot, sources = _export_sources(run)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    elf = workdir / "ecg_mps2.elf"
    stack = [f"-Wl,--defsym=__stack_size={int(stack_bytes)}"] if stack_bytes else []
    cmd = [cc, *ARM_CFLAGS, "-DEE_HAVE_MODEL_CONFIG=1", f'-DEE_AOT_TARGET_NAME="{QEMU_TARGET}"',
           f"-DEE_AOT_CPU_HZ={MPS2_SYSCLK_HZ}",
           f"-I{export}", f"-I{aot}", f"-I{MPS2_DIR}", f"-I{HOST_DIR}", f"-I{CORE_DIR}",
           *map(str, sorted(MPS2_DIR.glob("*.c"))), str(HOST_DIR / "aot_model.c"), *map(str, sources),
           *map(str, sorted(CORE_DIR.glob("*.c"))),
           f"-T{MPS2_DIR / 'link.ld'}", *ARM_LDFLAGS, *stack, f"-Wl,-Map={workdir / 'ecg_mps2.map'}", "-lm",
           "-o", str(elf)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        hint = ""
        if "nano.specs" in result.stderr or "cannot find -lc" in result.stderr or "stdint.h" in result.stderr:
            hint = f"\n(newlib missing? install the Debian package libnewlib-arm-none-eabi: {INSTALL_HINT})"
        raise BoardError(f"building the mps2-an386 firmware failed:\n{' '.join(cmd)}\n{result.stderr}{hint}")
    return elf


# Sections that occupy no memory on the target.
_NOT_LOADED = re.compile(r"^(\.comment|\.ARM\.attributes|\.debug.*|\.stab.*|\.note.*|\.gnu\.attributes)$")
# Sections that live in RAM only; .data lives in both (image in flash, copy in RAM).
_RAM_ONLY = {".bss", ".stack", ".heap", ".noinit", ".tbss"}
_BOTH = {".data", ".tdata"}


def firmware_size(elf: str | os.PathLike, *, size_tool: str | None = None) -> dict:
    """Flash and RAM use of a firmware ELF from ``arm-none-eabi-size -A``.

    flash = every loaded section but RAM-only ones (.vectors, .text, .rodata,
    .ARM.exidx... and the .data image); RAM = .data + .bss + .stack (+ .heap).
    ``text``/``data``/``bss`` are ``size``'s Berkeley figures.
    """
    tool = size_tool or (shutil.which(ARM_SIZE) and ARM_SIZE) or "size"
    if shutil.which(tool) is None:
        raise BoardError(f"{tool} not found: install binutils (Debian: {', '.join(DEBIAN_PACKAGES[:1])})")
    result = subprocess.run([tool, "-A", "-d", str(elf)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BoardError(f"{tool} -A {elf} failed: {result.stderr.strip()}")
    sections: dict[str, int] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            if not _NOT_LOADED.match(parts[0]):
                sections[parts[0]] = int(parts[1])
    berkeley = subprocess.run([tool, "-B", "-d", str(elf)], capture_output=True, text=True).stdout.splitlines()
    text, data, bss = (int(v) for v in berkeley[1].split()[:3]) if len(berkeley) > 1 else (0, 0, 0)
    flash = sum(v for k, v in sections.items() if k not in _RAM_ONLY)
    ram = sum(v for k, v in sections.items() if k in _RAM_ONLY or k in _BOTH)
    return {
        "file": str(elf),
        "sections": sections,
        "text": text,
        "data": data,
        "bss": bss,
        "stack": sections.get(".stack", 0),
        "flash_bytes": flash,
        "ram_bytes": ram,
    }


# --------------------------------------------------------------------------- running boards


def _raw_pty() -> tuple[int, int]:
    """A pty pair in raw mode, output post-processing off (no \\n -> \\r\\n even if a program turns OPOST on)."""
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[0] = 0  # iflag: no CR/NL translation, no flow control, no parity marks
    attrs[1] = 0  # oflag: no OPOST, no ONLCR
    attrs[2] = (attrs[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[3] = 0  # lflag: no echo, no canonical mode, no signals
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def _stop(process: subprocess.Popen, grace: float = 2.0) -> None:
    """Terminate ``process``, kill it if it lingers; always reaps it."""
    if process.poll() is None:
        try:
            process.terminate()
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


class BoardTransport(FdTransport):
    """The pty master of a board process: a :class:`~edge_ecg.bench.protocol.Transport` whose
    ``close()`` also stops the process. Bytes read while waiting for the boot banner are
    replayed first, so a client still sees the banner."""

    def __init__(self, process: subprocess.Popen, fd: int, *, name: str, log: Path | None = None, timeout: float | None = 0.05):
        super().__init__(fd, timeout)
        self.process = process
        self.name = name
        self.log = log
        self._replay = bytearray()
        self._closed = False

    def read(self, size: int = 1) -> bytes:
        if self._replay:
            data = bytes(self._replay[:size])
            del self._replay[:size]
            return data
        return super().read(size)

    @property
    def in_waiting(self) -> int:
        return len(self._replay) + (0 if self._closed else super().in_waiting)

    def stderr_tail(self, limit: int = 2000) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        return self.log.read_text(errors="replace")[-limit:].strip()

    def wait_for_banner(self, timeout: float) -> None:
        """Read until the first ``m-ready`` line (kept for replay) or fail with BoardError."""
        deadline = time.monotonic() + timeout
        seen = bytearray()
        while (EE_MSG_READY.encode() + b"\r\n") not in seen and (EE_MSG_READY.encode() + b"\n") not in seen:
            if self.process.poll() is not None:
                raise BoardError(f"{self.name} exited with status {self.process.returncode} before its boot banner"
                                 + (f": {self.stderr_tail()}" if self.stderr_tail() else ""))
            if time.monotonic() >= deadline:
                raise BoardError(f"{self.name} printed no boot banner (m-ready) within {timeout:g} s; stopped it"
                                 + (f". Its output: {bytes(seen[-200:])!r}" if seen else "")
                                 + (f". stderr: {self.stderr_tail()}" if self.stderr_tail() else ""))
            try:
                chunk = FdTransport.read(self, 4096)
            except ConnectionError:
                chunk = b""
                time.sleep(0.02)
            seen += chunk
        self._replay += seen

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            _stop(self.process)
        finally:
            try:
                os.close(self.fd)
            except OSError:
                pass


class BoardConnector:
    """``connect()`` for :class:`~edge_ecg.bench.session.DeviceSession`: each call starts a
    fresh board process on a pty (stopping the previous one), waits at most
    ``boot_timeout`` seconds for its boot banner and returns its :class:`BoardTransport`.

    Use as a context manager or call :meth:`close`; anything left running is stopped at exit.
    """

    def __init__(self, argv: Sequence[str], *, name: str, boot_timeout: float = 10.0, log: Path | None = None,
                 artifact: Path | None = None):
        self.argv = [str(a) for a in argv]
        self.name = name
        self.boot_timeout = boot_timeout
        self.log = log
        self.artifact = artifact
        """The executable or ELF that runs on the board."""
        self.transport: BoardTransport | None = None
        self.process: subprocess.Popen | None = None
        """The board process started last (stopped or not)."""
        self.starts = 0
        atexit.register(self.close)

    def __call__(self) -> BoardTransport:
        self.close_process()
        master, slave = _raw_pty()
        stderr = open(self.log, "wb") if self.log else subprocess.DEVNULL  # this process only
        try:
            process = subprocess.Popen(self.argv, stdin=slave, stdout=slave, stderr=stderr, close_fds=True,
                                       start_new_session=True)
        except FileNotFoundError as exc:
            os.close(master)
            raise BoardError(f"cannot start {self.name}: {exc}") from None
        finally:
            os.close(slave)
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        transport = BoardTransport(process, master, name=self.name, log=self.log)
        self.transport, self.process = transport, process
        self.starts += 1
        try:
            transport.wait_for_banner(self.boot_timeout)
        except BaseException:
            self.close_process()
            raise
        return transport

    def close_process(self) -> None:
        """Stop the board process started last, if any."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def close(self) -> None:
        """Stop the board; the connector can still start a new one."""
        self.close_process()

    def __enter__(self) -> "BoardConnector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        atexit.unregister(self.close)


def virtual_board_connect(run: str | os.PathLike, workdir: str | os.PathLike, *, boot_timeout: float = 10.0) -> BoardConnector:
    """Build the virtual board once (:func:`build_virtual_board`); return a connector that
    starts it on a pty per call."""
    exe = build_virtual_board(run, workdir)
    return BoardConnector([exe], name="virtual board (host-aot)", boot_timeout=boot_timeout,
                          log=Path(workdir) / "virtual-board.stderr.log", artifact=exe)


def qemu_argv(elf: str | os.PathLike, *, icount: bool = True, extra_args: Sequence[str] = ()) -> list[str]:
    """The QEMU command line: mps2-an386, no display or monitor, UART0 on QEMU's stdin/stdout
    (``signal=off``: bytes like 0x03 are data, not Ctrl-C), ``-icount shift=0`` unless ``icount`` is False."""
    return [QEMU, "-machine", QEMU_MACHINE, "-nographic", "-monitor", "none",
            "-chardev", "stdio,id=uart0,signal=off", "-serial", "chardev:uart0",
            "-kernel", str(elf), *(["-icount", f"shift={ICOUNT_SHIFT}"] if icount else []), *extra_args]


def qemu_connect(
    run: str | os.PathLike,
    workdir: str | os.PathLike,
    *,
    icount: bool = True,
    boot_timeout: float = 10.0,
    extra_args: Sequence[str] = (),
    elf: str | os.PathLike | None = None,
) -> BoardConnector:
    """Build the mps2-an386 firmware once (or use ``elf``); return a connector that starts
    ``qemu-system-arm -machine mps2-an386`` per call, UART0 on a pty.

    With ``icount`` (default) device timestamps count instructions (1 µs = 1000,
    see the module docstring). QEMU is killed on close, on reconnect and at exit;
    a QEMU that prints no boot banner within ``boot_timeout`` seconds is killed and
    reported (:class:`BoardError`).
    """
    _need_tool(QEMU, "running the mps2-an386 board")
    workdir = Path(workdir)
    elf = Path(elf) if elf is not None else build_qemu_board(run, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return BoardConnector(qemu_argv(elf, icount=icount, extra_args=extra_args), name=f"QEMU {QEMU_MACHINE}",
                          boot_timeout=boot_timeout, log=workdir / "qemu.stderr.log", artifact=elf)


def qemu_instructions_per_inference(
    run: str | os.PathLike,
    workdir: str | os.PathLike,
    *,
    records: Sequence[bytes] | None = None,
    iterations: int = 10,
    warmup: int = 1,
    elf: str | os.PathLike | None = None,
    timeout: float = 120.0,
) -> dict:
    """Guest instructions per inference of the AOT model on the emulated Cortex-M4.

    Starts QEMU with ``-icount shift=0`` (1 instruction = 1 ns of virtual time),
    loads each record (default: one record of zeros) over the serial link, runs
    ``infer iterations warmup`` and converts the device's SysTick interval:
    instructions = (t1 - t0) µs x 1000 / iterations. Resolution: 1000 / iterations
    instructions (the device reports whole microseconds); the interval also holds
    the harness's loop and two timestamp reads (about a hundred instructions).
    """
    if records is None:
        from edge_ecg.bench import _export

        shape = _export(Path(run))["tflite"]["input"]["shape"]
        size = 1
        for d in shape:
            size *= int(d)
        records = [bytes(size)]
    with qemu_connect(run, workdir, icount=True, elf=elf) as connect:
        client = DutClient(connect(), timeout=timeout)
        client.wait_ready()
        info = client.info()
        per_record, outputs = [], []
        for data in records:
            client.load_binary(data)
            t0, t1 = client.infer(iterations, warmup, timeout=timeout)
            per_record.append(elapsed_us(t0, t1) * 1000 / iterations)
            outputs.append(client.last_results[1])
    ordered = sorted(per_record)
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    return {
        "instructions_per_inference": median,
        "per_record": per_record,
        "records": len(per_record),
        "iterations": iterations,
        "resolution_instructions": 1000 / iterations,
        "outputs_int8": outputs,
        "method": f"qemu-system-arm -machine {QEMU_MACHINE} -icount shift={ICOUNT_SHIFT}: 1 guest instruction = 1 ns "
                  "virtual; SysTick microseconds x 1000 / iterations",
        "model_hash": info.get("model_hash"),
        "elf": str(connect.artifact),
    }
