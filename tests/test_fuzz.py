"""The firmware core under libFuzzer with AddressSanitizer and UBSan, for a bounded time.

firmware/host/fuzz_core.c feeds arbitrary bytes to the core's intake (commands, hex and
binary loads, idle polls) and aborts if the device prints anything but printable ASCII
lines ended by CR LF. Runs where clang and its fuzzer runtime are installed (CI installs
them: Debian's clang and libclang-rt-14-dev); elsewhere it skips and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = REPO / "firmware" / "host"
CORE = REPO / "firmware" / "core"
FUZZ_SECONDS = int(os.environ.get("EDGE_ECG_FUZZ_SECONDS", "20"))


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (Debian: apt-get install clang libclang-rt-14-dev): no fuzzing")
    exe = tmp_path_factory.mktemp("fuzz") / "fuzz_core"
    cmd = ["clang", "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
           "-DEE_HAVE_MODEL_CONFIG=1", "-DEE_INFER_TIME_LIMIT_MS=5", f"-I{HOST}", f"-I{CORE}",
           str(HOST / "fuzz_core.c"), *map(str, sorted(CORE.glob("*.c"))), "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 and "cannot find" in result.stderr and "libclang_rt" in result.stderr:
        pytest.skip("clang's fuzzer runtime is missing (Debian: apt-get install libclang-rt-14-dev): no fuzzing")
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    return exe


def test_seed_corpus_covers_every_command():
    seeds = b"".join(path.read_bytes() for path in (HOST / "fuzz_corpus").iterdir())
    for command in (b"name%", b"profile%", b"timestamp%", b"help%", b"info%", b"results%", b"db load", b"db bin", b"infer"):
        assert command in seeds, command


@pytest.mark.slow
def test_core_survives_fuzzing(fuzzer, tmp_path):
    corpus = tmp_path / "corpus"  # new inputs go here; the committed seeds are only read
    corpus.mkdir()
    result = subprocess.run(
        [str(fuzzer), f"-max_total_time={FUZZ_SECONDS}", "-timeout=10", "-rss_limit_mb=4096", "-print_final_stats=1",
         str(corpus), str(HOST / "fuzz_corpus")],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 120, cwd=tmp_path,
        # The core allocates nothing; the fuzzer's corpus of 12 KB loads and ASan's quarantine do
        # (1.4 GB seen after 6,000 runs with the default quarantine): keep the quarantine small.
        env={**os.environ, "ASAN_OPTIONS": "quarantine_size_mb=32:malloc_context_size=4"},
    )
    tail = result.stderr[-3000:]
    assert result.returncode == 0, f"the fuzzer found a failure (crash input saved in {tmp_path}):\n{tail}"
    runs = [int(line.split(":")[-1]) for line in result.stderr.splitlines() if line.startswith("stat::number_of_executed_units")]
    assert runs and runs[0] > 1000, tail
