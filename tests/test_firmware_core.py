"""The firmware core (firmware/core) through its host port (firmware/host).

The host port is built with gcc, run on a pseudo-terminal as a board sits on
a serial port, and driven with the real client, edge_ecg.bench.protocol.
Its model is a checksum runner: outputs are a position-weighted hash of the
input bytes, so comparing them with the same hash computed here proves that
loads arrive byte-exact.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from edge_ecg.bench import protocol as p
from edge_ecg.bench.host import build_host_port
from edge_ecg.bench.protocol import DutClient, DutTimeoutError, FdTransport, ProtocolError

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "firmware" / "core"
HOST = REPO / "firmware" / "host"
CFLAGS = ["-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-pedantic"]
INPUT_BYTES = 1000 * 12
TARGET_NAME = "host-checksum"


# --------------------------------------------------------------------------- build


def _gcc(*args: str | Path) -> None:
    cmd = ["gcc", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build the firmware core")
    out = tmp_path_factory.mktemp("firmware")
    build_host_port(out)  # -> out/ecg_host, the same build the benchmark uses
    _gcc(*CFLAGS, f"-I{CORE}", HOST / "unit_tests.c", CORE / "ee_util.c", CORE / "ee_preprocess.c",
         "-lm", "-o", out / "unit_tests")
    return out


def test_core_is_strict_portable_c99(build_dir, tmp_path):
    """Core alone, default config (no model_config.h), extra warnings on."""
    for source in sorted(CORE.glob("*.c")):
        _gcc(*CFLAGS, "-Wshadow", "-Wconversion", "-Wstrict-prototypes", f"-I{CORE}", "-c", source,
             "-o", tmp_path / (source.stem + ".o"))
    allowed = {"<stddef.h>", "<stdint.h>", "<string.h>", "<math.h>", "<float.h>"}  # float.h: freestanding, FLT_EVAL_METHOD
    for source in [*CORE.glob("*.c"), *CORE.glob("*.h")]:
        text = source.read_text()
        for header in re.findall(r"^\s*#\s*include\s+(<[^>]+>)", text, re.M):
            assert header in allowed, f"{source.name} includes {header}"
        assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", text), f"{source.name} allocates"


# --------------------------------------------------------------------------- device fixtures


class HostDut:
    """The host port on a pty, with a client; closed by the fixture."""

    def __init__(self, executable: Path, *options: str, timeout: float = 3.0):
        self.process, self.transport = p.spawn_on_pty([str(executable), *options])
        self.client = DutClient(self.transport, timeout=timeout)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.transport.close()


@pytest.fixture
def host(build_dir):
    dut = HostDut(build_dir / "ecg_host")
    yield dut
    dut.close()


@pytest.fixture
def dut(host) -> DutClient:
    host.client.wait_ready()
    return host.client


def assert_device_error(dut: DutClient, command: str | bytes, text: str) -> ProtocolError:
    """Send ``command`` raw and expect ``e-[<text>...]``; the device must keep serving."""
    payload = command if isinstance(command, bytes) else command.encode() + b"%"
    with pytest.raises(ProtocolError) as info:
        dut.transact(payload)
    assert info.value.device_message is not None, str(info.value)
    assert info.value.device_message.startswith(text), info.value.device_message
    assert dut.name() == TARGET_NAME  # still serving
    return info.value


def random_record(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, INPUT_BYTES, dtype=np.uint8).tobytes()


def expected_results(data: bytes) -> tuple[list[float], list[int]]:
    """What the checksum runner must report for ``data``, floats in float32."""
    q = p.checksum_runner_outputs(data)
    scale, zero_point = np.float32(1 / 256), -128
    return [float(scale * np.float32(v - zero_point)) for v in q], q


# --------------------------------------------------------------------------- protocol constants


def test_python_constants_mirror_the_header():
    header = p.parse_protocol_header(CORE / "ee_protocol.h")
    mirror = p.python_constants()
    assert set(header) == set(mirror), set(header) ^ set(mirror)
    for name, value in header.items():
        assert mirror[name] == value, name
    # The host's hex chunking follows from the command size.
    assert p.HEX_CHUNK_BYTES == (header["EE_CMD_SIZE"] - len("db ")) // 2 == 38
    assert header["EE_MSG_READY"].startswith(header["EE_MSG_PREFIX"])
    assert header["EE_ERR_OPEN"].startswith(header["EE_ERR_PREFIX"])


def test_header_parser_rejects_what_it_cannot_mirror(tmp_path):
    header = tmp_path / "h.h"
    header.write_text('#define EE_OK "a\\r\\n"\n#define EE_N 80u\n#define EE_C \'%\'\n#define EE_GUARD\n')
    assert p.parse_protocol_header(header) == {"EE_OK": "a\r\n", "EE_N": 80, "EE_C": "%"}
    header.write_text("#define EE_EXPR (1 + 2)\n")
    with pytest.raises(ValueError, match="EE_EXPR"):
        p.parse_protocol_header(header)


# --------------------------------------------------------------------------- boot and identity


def test_boot_banner(host):
    banner = host.client.wait_ready()
    assert banner[0] == p.EE_MSG_TIMESTAMP_MODE
    assert banner[1].startswith(p.EE_MSG_LAP_US) and banner[1][len(p.EE_MSG_LAP_US):].isdigit()
    assert banner[2:] == [p.EE_MSG_INIT_DONE]


def test_identity_commands(dut):
    assert dut.name() == TARGET_NAME
    assert dut.profile() == (p.EE_PROFILE_STRING, p.EE_MODEL_ID)
    help_text = "\n".join(dut.help())
    for command in ("name", "profile", "timestamp", "db load N", "db HH", "db bin N", "infer", "results", "info"):
        assert command in help_text
    dut.sync()  # empty command: m-ready alone


def test_info(dut):
    info = dut.info()
    assert info["protocol"] == p.EE_EXT_PROTOCOL_VERSION
    assert info["core_version"] == p.EE_CORE_VERSION
    assert info["target"] == TARGET_NAME
    assert info["model"] == p.EE_MODEL_ID
    assert info["model_hash"] == "checksum-runner"
    assert info["model_ready"] is True
    assert info["input_shape"] == [1000, 12]
    assert info["input_bytes"] == info["load_capacity"] == INPUT_BYTES
    assert (info["input_scale"], info["input_zero_point"]) == (1 / 32, 0)
    assert (info["output_count"], info["output_scale"], info["output_zero_point"]) == (5, 1 / 256, -128)
    assert info["cmd_size"] == p.EE_CMD_SIZE and info["bin_timeout_ms"] == p.EE_BIN_TIMEOUT_MS
    assert info["infer_time_limit_ms"] == 60000
    for key in ("firmware_version", "arena_bytes", "arena_used_bytes", "cpu_hz"):
        assert key in info


def test_timestamps_are_monotonic(dut):
    stamps = [dut.timestamp() for _ in range(20)]
    time.sleep(0.01)
    stamps.append(dut.timestamp())
    assert stamps == sorted(stamps)
    assert stamps[-1] - stamps[0] >= 10_000
    assert p.elapsed_us(2**32 - 5, 3) == 8


# --------------------------------------------------------------------------- loads and inference


def test_hex_load_is_byte_exact(dut):
    data = random_record(1)
    dut.load_hex(data)
    t0, t1 = dut.infer(3, 2)
    assert t0 <= t1
    assert dut.last_results == expected_results(data)
    assert dut.results() == expected_results(data)


def test_binary_load_is_byte_exact_and_cheap(dut):
    # Every byte value, the terminator and line ends included: binary data
    # must bypass the command parser entirely.
    data = bytearray(random_record(2))
    data[:256] = bytes(range(256))
    data[256:266] = b"%%\r\n%\x03\x04\x00%%"
    data = bytes(data)
    written, read = dut.bytes_written, dut.bytes_read
    assert dut.load_binary(data) == zlib.crc32(data)
    wire_bytes = (dut.bytes_written - written) + (dut.bytes_read - read)
    assert wire_bytes <= 1.1 * len(data)  # both directions, all framing included
    dut.infer(1, 0)
    assert dut.results() == expected_results(data)


def test_hex_and_binary_loads_agree_and_detect_moved_bytes(dut):
    data = random_record(3)
    dut.load_binary(data)
    dut.infer(1, 0)
    by_binary = dut.results()
    dut.load_hex(data)
    dut.infer(1, 1)
    assert dut.results() == by_binary == expected_results(data)

    swapped = bytearray(data)
    swapped[100], swapped[105] = data[105], data[100]  # same residue class mod 5
    assert data[100] != data[105]
    dut.load_binary(bytes(swapped))
    dut.infer(1, 0)
    assert dut.results()[1] != by_binary[1]


def test_infer_reply_follows_mlperf(dut):
    dut.load_binary(random_record(4))
    lines = dut.command("infer 2 3")
    assert lines[:3] == [f"{p.EE_MSG_WARMUP_START}3", p.EE_MSG_WARMUP_DONE, f"{p.EE_MSG_INFER_START}2"]
    assert lines[3].startswith(p.EE_MSG_LAP_US) and lines[4].startswith(p.EE_MSG_LAP_US)
    assert lines[5] == p.EE_MSG_INFER_DONE
    assert lines[6].startswith(p.EE_MSG_RESULTS) and lines[7].startswith(p.EE_MSG_RESULTS_INT8)
    lines = dut.command("infer")  # defaults: 1 timed after 10 warm-ups
    assert lines[0] == f"{p.EE_MSG_WARMUP_START}{p.EE_INFER_DEFAULT_WARMUP}"
    assert lines[2] == f"{p.EE_MSG_INFER_START}{p.EE_INFER_DEFAULT_ITERATIONS}"


def test_repeated_inference_gives_the_single_inference_results(dut):
    """The checksum runner overwrites its input tensor on every invoke, as TFLite Micro's planner
    does; the core restores the loaded record before each invoke, so every N, W agrees with 1, 0."""
    data = random_record(11)
    dut.load_binary(data)
    results = {}
    for n, w in ((1, 0), (5, 3), (20, 10), (1, 2)):
        dut.infer(n, w)
        results[n, w] = dut.results()
    assert all(r == expected_results(data) for r in results.values()), results
    # The load itself is untouched by inference: a second round on it gives the same.
    dut.infer(2, 0)
    assert dut.results() == expected_results(data)


def test_the_test_model_really_clobbers_its_input(build_dir, tmp_path):
    """Without the core's restore the checksum runner's second invoke must differ: proof that the
    test above can fail. Here the harness is emulated with the model hooks linked alone."""
    harness = tmp_path / "clobber.c"
    harness.write_text(
        '#include <stdio.h>\n#include <string.h>\n#include "th_hooks.h"\n'
        "int ee_port_fail_init = 0, ee_port_fail_invoke = 0;\n"
        "void th_serial_write(const char *d, size_t n) { (void)d; (void)n; }\n"
        "uint32_t th_timestamp_us(void) { return 0; }\n"
        "int main(void) { size_t n, c, i; int8_t *in; const int8_t *out; int8_t first[8];\n"
        "  th_model_init(); in = th_input_tensor(&n); for (i = 0; i < n; ++i) in[i] = (int8_t)(i * 13);\n"
        "  th_model_invoke(); out = th_output_tensor(&c); memcpy(first, out, c);\n"
        "  th_model_invoke(); printf(\"%d\\n\", memcmp(first, out, c) != 0); return 0; }\n"
    )
    exe = tmp_path / "clobber"
    _gcc("-std=c99", "-DEE_HAVE_MODEL_CONFIG=1", f"-I{HOST}", f"-I{CORE}", harness, HOST / "checksum_model.c", "-o", exe)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip() == "1"


def test_infer_stops_at_its_time_limit(build_dir, tmp_path):
    """`infer 4294967295 0` would run for days; the core stops it at EE_INFER_TIME_LIMIT_MS."""
    limit_ms = 300
    exe = build_host_port(tmp_path, defines=[f"EE_INFER_TIME_LIMIT_MS={limit_ms}"], name="ecg_host_limit")
    dut = HostDut(exe, timeout=10.0)
    try:
        dut.client.wait_ready()
        assert dut.client.info()["infer_time_limit_ms"] == limit_ms
        dut.client.load_binary(random_record(12))
        error = assert_device_error(dut.client, "infer 4294967295 0", p.EE_ERR_INFER_TIME_LIMIT)
        assert error.device_message.endswith(f"of 4294967295 runs in {limit_ms} ms")
        assert_device_error(dut.client, "infer 1 4294967295", p.EE_ERR_INFER_TIME_LIMIT)  # warm-ups too
        dut.client.infer(1, 0)  # and it keeps serving
        assert dut.client.results() == expected_results(random_record(12))
    finally:
        dut.close()


# --------------------------------------------------------------------------- errors


def test_command_length_limit(dut):
    longest = "x" * p.EE_CMD_SIZE
    assert_device_error(dut, longest, p.EE_ERR_UNKNOWN_COMMAND)  # parsed, so within the limit
    assert_device_error(dut, longest + "x", p.EE_ERR_COMMAND_TOO_LONG)
    assert_device_error(dut, "y" * 500, p.EE_ERR_COMMAND_TOO_LONG)
    with pytest.raises(ValueError):
        dut.command(longest + "x")  # the client refuses to send it at all


def test_unknown_and_malformed_commands(dut):
    error = assert_device_error(dut, "bogus", p.EE_ERR_UNKNOWN_COMMAND)
    assert error.device_message == "Unknown command: bogus"
    assert_device_error(dut, "name extra", p.EE_ERR_TOO_MANY_ARGUMENTS)
    assert_device_error(dut, "db", p.EE_ERR_DB_SUBCOMMAND)
    assert_device_error(dut, "db load", p.EE_ERR_BAD_NUMBER)
    assert_device_error(dut, "db load -5", p.EE_ERR_BAD_NUMBER)
    error = assert_device_error(dut, "db load 12000 1", p.EE_ERR_TOO_MANY_ARGUMENTS)
    assert error.device_message == p.EE_ERR_TOO_MANY_ARGUMENTS  # as PROTOCOL.md says
    assert_device_error(dut, "infer x", p.EE_ERR_BAD_NUMBER)
    assert_device_error(dut, "infer 0", p.EE_ERR_INFER_ITERATIONS)
    assert_device_error(dut, "infer 1 2 3", p.EE_ERR_TOO_MANY_ARGUMENTS)
    assert_device_error(dut, "results", p.EE_ERR_NO_RESULTS)


def test_load_size_limits(dut):
    assert_device_error(dut, f"db load {INPUT_BYTES + 1}", p.EE_ERR_LOAD_SIZE)
    assert_device_error(dut, f"db bin {INPUT_BYTES + 1}", p.EE_ERR_LOAD_SIZE)
    assert_device_error(dut, "db load 0", p.EE_ERR_LOAD_SIZE)
    assert_device_error(dut, "db load 99999999999", p.EE_ERR_BAD_NUMBER)  # over 32 bits
    assert dut.command(f"db load {INPUT_BYTES}") == [f"m-[Expecting {INPUT_BYTES} bytes]"]


def test_hex_chunk_errors_change_nothing(dut):
    assert_device_error(dut, "db 0011", p.EE_ERR_NO_LOAD)
    dut.command("db load 4")
    assert_device_error(dut, "db 00zz", p.EE_ERR_HEX_DIGIT)
    assert_device_error(dut, "db 001", p.EE_ERR_HEX_ODD)
    assert_device_error(dut, "db 0011223344", p.EE_ERR_LOAD_OVERFLOW)  # 5 bytes into 4
    assert dut.command("db 0011") == []
    assert dut.command("db A1fF") == [p.EE_MSG_LOAD_DONE]  # the rejected chunks left no trace
    assert_device_error(dut, "db 00", p.EE_ERR_LOAD_OVERFLOW)  # nothing more expected


def test_infer_needs_a_complete_load_of_the_right_size(dut):
    assert_device_error(dut, "infer 1 0", p.EE_ERR_INPUT_NOT_LOADED)
    dut.command("db load 100")
    dut.command("db " + "ab" * 10)
    error = assert_device_error(dut, "infer 1 0", p.EE_ERR_INPUT_NOT_LOADED)
    assert "10 of 100" in error.device_message
    dut.load_hex(bytes(10))  # complete, but not one record
    error = assert_device_error(dut, "infer 1 0", p.EE_ERR_INPUT_SIZE)
    assert error.device_message == f"{p.EE_ERR_INPUT_SIZE}: loaded 10, model expects {INPUT_BYTES}"


def test_short_binary_load_times_out_and_the_core_recovers(dut):
    dut.command("db bin 100")
    dut.transport.write(bytes(10))
    started = time.monotonic()
    with pytest.raises(ProtocolError) as info:
        dut.transact(b"", timeout=3 * p.EE_BIN_TIMEOUT_MS / 1000)
    waited = time.monotonic() - started
    assert info.value.device_message == f"{p.EE_ERR_BIN_TIMEOUT}: received 10 of 100 bytes"
    assert p.EE_BIN_TIMEOUT_MS / 1000 * 0.8 <= waited <= p.EE_BIN_TIMEOUT_MS / 1000 * 2.5
    assert dut.name() == TARGET_NAME
    assert_device_error(dut, "infer 1 0", p.EE_ERR_INPUT_NOT_LOADED)  # the partial load is gone

    # A host that lost track (here: in the middle of a load) resyncs.
    dut.command("db bin 50")
    dut.transport.write(bytes(7))
    dut.resync()
    data = random_record(5)
    dut.load_binary(data)
    dut.infer(1, 0)
    assert dut.results() == expected_results(data)


def test_model_hook_failures_are_reported(build_dir):
    broken = HostDut(build_dir / "ecg_host", "--fail-init")
    try:
        banner = broken.client.wait_ready()
        assert banner[1] == f"{p.EE_ERR_OPEN}{p.EE_ERR_MODEL_INIT}]" and banner[-1] == p.EE_MSG_INIT_DONE
        assert broken.client.info()["model_ready"] is False
        broken.client.load_binary(random_record(9))
        assert_device_error(broken.client, "infer 1 0", p.EE_ERR_MODEL_INIT)
    finally:
        broken.close()

    broken = HostDut(build_dir / "ecg_host", "--fail-invoke")
    try:
        broken.client.wait_ready()
        broken.client.load_binary(random_record(9))
        assert_device_error(broken.client, "infer 1 0", p.EE_ERR_INVOKE)
        assert_device_error(broken.client, "infer 1 2", p.EE_ERR_INVOKE)  # fails in the warm-up
        assert_device_error(broken.client, "results", p.EE_ERR_NO_RESULTS)
    finally:
        broken.close()


# --------------------------------------------------------------------------- client behaviour


class ScriptedTransport:
    """A fake link that answers every write with canned bytes."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.timeout: float | None = None
        self._out = b""

    def write(self, data: bytes) -> int:
        self._out += self.reply
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self._out:
            time.sleep(self.timeout or 0)
            return b""
        chunk, self._out = self._out[:size], self._out[size:]
        return chunk


def test_client_rejects_garbage_and_times_out():
    with pytest.raises(ProtocolError, match="unexpected output"):
        DutClient(ScriptedTransport(b"m-name-dut-[x]\r\nhello\r\nm-ready\r\n")).name()
    with pytest.raises(ProtocolError, match="unexpected output"):
        DutClient(ScriptedTransport(b"\xff\xfe\r\nm-ready\r\n")).name()
    with pytest.raises(ProtocolError, match="expected m-name"):
        DutClient(ScriptedTransport(b"m-name-dut-[x\r\nm-ready\r\n")).name()
    with pytest.raises(DutTimeoutError):
        DutClient(ScriptedTransport(b"m-name-dut-[x]\r\n"), timeout=0.2, poll_interval=0.02).name()
    with pytest.raises(TimeoutError):  # also a plain TimeoutError
        DutClient(ScriptedTransport(b""), timeout=0.1, poll_interval=0.02).timestamp()
    crc_wrong = b"m-[Expecting 3 bytes]\r\nm-load-crc-00000000\r\nm-load-done\r\nm-ready\r\n"
    with pytest.raises(ProtocolError, match="corrupted"):
        DutClient(ScriptedTransport(crc_wrong)).load_binary(b"abc")
    assert isinstance(FdTransport(0), p.Transport)


def test_device_path_argument(build_dir):
    """Given a terminal's path, the port serves on it instead of stdin/stdout."""
    master, slave = os.openpty()
    process = subprocess.Popen([str(build_dir / "ecg_host"), os.ttyname(slave)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    transport = FdTransport(master)
    try:
        client = DutClient(transport, timeout=3.0)
        assert client.wait_ready()[-1] == p.EE_MSG_INIT_DONE
        assert client.name() == TARGET_NAME
    finally:
        process.terminate()
        process.wait(timeout=5)
        transport.close()
        os.close(slave)


def test_pyserial_transport(build_dir):
    """pyserial's Serial is a Transport: drive the port through one."""
    serial = pytest.importorskip("serial")
    master, slave = os.openpty()
    # Open before the port starts: opening flushes what is already waiting.
    port = serial.Serial(os.ttyname(slave), timeout=0.05)
    os.close(slave)
    process = subprocess.Popen([str(build_dir / "ecg_host")], stdin=master, stdout=master)
    os.close(master)
    try:
        client = DutClient(port, timeout=3.0)
        assert client.wait_ready()[-1] == p.EE_MSG_INIT_DONE
        assert client.name() == TARGET_NAME
        data = random_record(6)
        client.load_binary(data)
        client.infer(1, 0)
        assert client.results() == expected_results(data)
    finally:
        process.terminate()
        process.wait(timeout=5)
        port.close()


# --------------------------------------------------------------------------- C unit tests


def numpy_preprocess(x, mean, std, clip: float, scale: float, zero_point: int, highpass=None) -> np.ndarray:
    """The Python reference of ee_preprocess_mv(): edge_ecg.preprocess, which export and bench use."""
    from edge_ecg.preprocess import int8_input

    return int8_input(x, mean, std, clip, scale, zero_point, highpass)


def run_preprocess_case(build_dir, tmp_path, x, mean, std, clip, scale, zero_point, highpass=None) -> np.ndarray:
    """Run one case through the C core and assert it equals numpy bit for bit; returns the int8 bytes."""
    x = np.ascontiguousarray(x, np.float32)
    case = tmp_path / "case.bin"
    expected = tmp_path / "expected.bin"
    case.write_bytes(
        np.array(x.shape, np.uint32).tobytes()
        + np.array([clip, scale], np.float32).tobytes()
        + np.array([zero_point, highpass is not None], np.int32).tobytes()
        + np.asarray(highpass if highpass is not None else np.zeros(5), np.float32).tobytes()
        + np.asarray(mean, np.float32).tobytes()
        + np.asarray(std, np.float32).tobytes()
        + x.tobytes()
    )
    q = numpy_preprocess(x, np.asarray(mean), np.asarray(std), clip, scale, zero_point, highpass)
    expected.write_bytes(q.tobytes())
    result = subprocess.run([build_dir / "unit_tests", "preprocess", case, expected], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return q


@pytest.mark.parametrize("clip", [3.0, 0.0, -1.0])
def test_preprocess_matches_numpy(build_dir, tmp_path, clip):
    rng = np.random.default_rng(7)
    mean = rng.normal(0, 0.2, 12).astype(np.float32)
    std = rng.uniform(0.05, 0.6, 12).astype(np.float32)
    # PTB-XL-like millivolts plus outliers beyond the clip and the int8 range.
    x = rng.normal(mean, std * 1.5, (1000, 12)).astype(np.float32)
    x[::97] *= 40
    run_preprocess_case(build_dir, tmp_path, x, mean, std, clip, scale=0.0271, zero_point=-3)


@pytest.mark.parametrize("cutoff_hz", [0.5, 0.05])
def test_preprocess_with_highpass_matches_numpy(build_dir, tmp_path, cutoff_hz):
    """The zero-phase high-pass in C equals edge_ecg.preprocess bit for bit, on wander, offsets, spikes and a NaN."""
    from edge_ecg.preprocess import highpass_coefficients

    rng = np.random.default_rng(11)
    t = np.arange(1000, dtype=np.float32)[:, None] / np.float32(100)
    wander = np.float32(0.8) * np.sin(2 * np.pi * 0.15 * t + rng.uniform(0, 6, 12)) + rng.normal(0, 1.5, 12)  # offsets
    x = (rng.normal(0, 0.3, (1000, 12)) + wander).astype(np.float32)
    x[::97] *= 40
    x[500, 3] = np.nan  # lead 3 carries no information from here on, both ways
    coefficients = highpass_coefficients(cutoff_hz, 100)
    q = run_preprocess_case(build_dir, tmp_path, x, np.zeros(12), np.full(12, 0.3), 3.0, scale=0.0271, zero_point=-3,
                            highpass=coefficients)
    assert (q[:, 3] == -3).all() and len(np.unique(q[:, 0])) > 50
    unfiltered = numpy_preprocess(x, np.zeros(12), np.full(12, 0.3), 3.0, 0.0271, -3)
    assert (q != unfiltered).mean() > 0.5  # the filter really ran (and removed the offsets)


def test_preprocess_rounds_ties_to_even(build_dir, tmp_path):
    # z / scale lands exactly on k + 0.5: half-to-even and half-away differ.
    k = np.arange(-140, 140, dtype=np.float32)
    x = np.resize((k + np.float32(0.5)) * np.float32(0.25), (24, 12))
    # The reference itself rounds half to even (0.5 -> 0, 1.5 -> 2, -0.5 -> 0).
    ties = numpy_preprocess(np.array([[0.125, 0.375, -0.125]]), np.zeros(3), np.ones(3), 0, 0.25, 0)
    assert ties.tolist() == [[0, 2, 0]]
    run_preprocess_case(build_dir, tmp_path, x, np.zeros(12), np.ones(12), 0.0, scale=0.25, zero_point=0)
    run_preprocess_case(build_dir, tmp_path, x, np.zeros(12), np.ones(12), 0.0, scale=0.25, zero_point=7)


def test_float_formatting_round_trips_float32(build_dir, tmp_path):
    rng = np.random.default_rng(8)
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    special = np.array([0.0, 1.0, -1.0, 0.5, 1 / 256, 1 / 3, 123456789.0, 1e9, 1e-5, 9.9999e-6,
                        np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -2.5e-38], np.float32)
    values = np.concatenate([special, values, (np.arange(256) - 128).astype(np.float32) / np.float32(256)])
    path = tmp_path / "floats.bin"
    path.write_bytes(values.tobytes())
    result = subprocess.run([build_dir / "unit_tests", "format-float", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    texts = result.stdout.split()
    assert len(texts) == len(values)
    parsed = np.array([float(t) for t in texts]).astype(np.float32)
    bad = np.flatnonzero(parsed != values)
    assert bad.size == 0, [(values[i], texts[i]) for i in bad[:5]]
    assert texts[:8] == ["0", "1", "-1", "0.5", "0.00390625", "0.333333343", "123456792", "1e+09"]
