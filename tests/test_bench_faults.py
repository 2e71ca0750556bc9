"""The benchmark's record loop against the host port, with injected link faults.

The host port runs the checksum runner (transport tests only): each output is a
position-weighted hash of the bytes received, so a record that arrived damaged or
misplaced shows in its outputs.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from edge_ecg.bench.host import build_host_port
from edge_ecg.bench.protocol import checksum_runner_outputs, spawn_on_pty
from edge_ecg.bench.runner import BenchError, read_jsonl, run_records, summarize
from edge_ecg.bench.session import DeviceSession

RECORD_BYTES = 12000

# Every test here drives the host port, which gcc builds.
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (Debian: apt-get install gcc) to build the host port")


@pytest.fixture(scope="module")
def host_exe(tmp_path_factory):
    return build_host_port(tmp_path_factory.mktemp("host"))


@pytest.fixture
def records():
    rng = np.random.default_rng(11)
    return [(100 + i, rng.integers(-128, 128, RECORD_BYTES, dtype=np.int8).tobytes()) for i in range(8)]


class FaultyLink:
    """A serial link to the host port that misbehaves on chosen binary loads.

    ``faults`` maps the number of a ``db bin`` command (1, 2, ... counting retries)
    to one of: ``drop`` (lose 100 payload bytes), ``garbage`` (noise on the line),
    ``stall`` (the device's replies held back past the client's timeout) and
    ``restart`` (the device process is killed and started again, as a board reset).
    """

    def __init__(self, exe, faults: dict[int, str], stall_s: float = 2.5):
        self.exe, self.faults, self.stall_s = exe, dict(faults), stall_s
        self.loads = 0
        self.fault_now: str | None = None
        self.hold_until = 0.0
        self.processes = []
        self._spawn()

    def _spawn(self):
        process, self.inner = spawn_on_pty([str(self.exe)])
        self.processes.append(process)

    def connect(self):
        return self

    # transport interface
    timeout = 0.05

    @property
    def in_waiting(self):
        return 0 if time.monotonic() < self.hold_until else self.inner.in_waiting

    def write(self, data: bytes):
        if data.startswith(b"db bin"):
            self.loads += 1
            self.fault_now = self.faults.pop(self.loads, None)
            if self.fault_now == "stall":
                self.hold_until = time.monotonic() + self.stall_s
            return self.inner.write(data)
        if len(data) == RECORD_BYTES and self.fault_now in ("drop", "restart", "garbage"):
            fault, self.fault_now = self.fault_now, None
            if fault == "drop":
                return self.inner.write(data[:5000] + data[5100:])
            if fault == "restart":
                self.processes[-1].kill()
                self.processes[-1].wait()
                self.inner.close()
                self._spawn()
                return self.inner.write(data)
            self.inner.write(data)
            self.injected = b"\x00\xfe\xffgarbage\x80\r\n"
            return len(data)
        return self.inner.write(data)

    def read(self, size: int = 1) -> bytes:
        if getattr(self, "injected", b""):
            out, self.injected = self.injected, b""
            return out
        if time.monotonic() < self.hold_until:
            time.sleep(self.timeout)
            return b""
        self.inner.timeout = self.timeout
        return self.inner.read(size)

    def close(self):
        pass  # the session reconnects to the same "port"; the test closes the processes

    def shutdown(self):
        for p in self.processes:
            p.kill()
            p.wait()
        self.inner.close()


def _session(link, **kw):
    session = DeviceSession(link.connect, timeout=1.0, retries=3, warmup=1, **kw)
    session.open()
    return session


def test_every_record_is_accounted_for_through_drops_garbage_stalls_and_a_reset(host_exe, records, tmp_path):
    link = FaultyLink(host_exe, {2: "drop", 4: "garbage", 6: "stall", 8: "restart"})
    try:
        session = _session(link)
        out = tmp_path / "bench.jsonl"
        rows = run_records(session.run, records, out, {"backend": "host", "model_hash": "checksum"}, progress=False)
    finally:
        link.shutdown()
    assert [r["ecg_id"] for r in rows] == [i for i, _ in records]
    assert all(r["status"] == "ok" for r in rows), [r["errors"] for r in rows]
    for (ecg_id, data), row in zip(records, rows):
        assert row["int8"] == checksum_runner_outputs(data), ecg_id  # byte-exact despite the faults
    # each of the four faults costs its record at least one more attempt; a stall's
    # recovery may also meet the next fault, so count attempts, not records
    extra_attempts = sum(r["attempts"] - 1 for r in rows)
    assert extra_attempts >= 4, [(r["ecg_id"], r["attempts"], r["errors"]) for r in rows]
    assert sum(r["resets"] for r in rows) == 1
    summary = summarize(rows, reference={i: checksum_runner_outputs(d) for i, d in records}, expected_ids=[i for i, _ in records])
    assert summary["ok"] == 8 and summary["identical_to_reference"] == 8 and summary["missing"] == []
    assert summary["retried"] >= 3 and summary["resets"] == 1
    assert summary["latency"]["records"] == 8


def test_hex_load_gives_the_same_outputs(host_exe, records):
    link = FaultyLink(host_exe, {})
    try:
        session = _session(link, load="hex")
        outcome = session.run(records[0][1])
    finally:
        link.shutdown()
    assert outcome.status == "ok" and outcome.int8 == checksum_runner_outputs(records[0][1])


def test_an_interrupted_benchmark_resumes_without_losing_or_repeating(host_exe, records, tmp_path):
    out = tmp_path / "bench.jsonl"
    header = {"backend": "host", "model_hash": "checksum"}
    link = FaultyLink(host_exe, {})
    try:
        session = _session(link)
        count = 0

        def disconnect_after_three(data):
            nonlocal count
            count += 1
            if count == 4:
                raise KeyboardInterrupt  # the user pulls the cable
            return session.run(data)

        with pytest.raises(KeyboardInterrupt):
            run_records(disconnect_after_three, records, out, header, progress=False)
        assert len(read_jsonl(out)[1]) == 3
        with pytest.raises(BenchError, match="never mixed.*--fresh"):
            run_records(session.run, records, out, {**header, "model_hash": "other"}, progress=False)
        rows = run_records(session.run, records, out, header, progress=False)  # the same call again continues
    finally:
        link.shutdown()
    assert [r["ecg_id"] for r in rows] == [i for i, _ in records]
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert sum(l["type"] == "header" for l in lines) == 1 and len(lines) == 1 + len(records)


def test_a_device_that_never_answers_fails_the_record_with_reasons(host_exe, records):
    link = FaultyLink(host_exe, {})
    session = _session(link)
    link.shutdown()  # the board is unplugged
    session.retries = 1
    outcome = session.run(records[0][1])
    assert outcome.status == "failed" and outcome.attempts == 2
    assert any("attempt 1" in e for e in outcome.errors)


def test_a_device_blocked_on_its_own_output_turns_a_write_into_a_timeout_not_a_hang(host_exe):
    """Garbage makes the device answer every byte pair with an error line; unread, those replies fill the
    pty and the device stops reading. The write must give up in bounded time, and resync must recover."""
    from edge_ecg.bench.protocol import DutClient

    process, transport = spawn_on_pty([str(host_exe)])
    try:
        transport.write_timeout = 1.0
        client = DutClient(transport, timeout=3.0)
        client.resync()
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="took no input"):
            transport.write(b"x%" * 100_000)
        assert time.monotonic() - started < 5
        client.resync(timeout=30.0)
        assert client.name() == "host-checksum"
    finally:
        process.kill()
        process.wait()
        transport.close()
