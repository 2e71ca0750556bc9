"""`download_ptbxl` against a local HTTP server (127.0.0.1) serving a copy of real records."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_subset
from edge_ecg.data import DataError, download_ptbxl, load_ptbxl


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=N-`` support, logging what was asked."""

    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        RangeHandler.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def release(ptbxl_dir, tmp_path):
    """A small PTB-XL release folder with its own SHA256SUMS.txt, served on 127.0.0.1."""
    root = copy_subset(ptbxl_dir, tmp_path / "release", [1, 2, 3, 4, 5])
    (root / "LICENSE.txt").write_text("CC BY 4.0\n")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    lines = [f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}" for f in files]
    lines.append(f"{'0' * 64}  records500/00000/00001_hr.dat")  # another rate: must not be fetched
    (root / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RangeHandler.requests.clear()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_full_download_verifies_and_loads(release, tmp_path):
    root, url = release
    dest = tmp_path / "dest"
    report = download_ptbxl(dest, 100, base_url=url)
    assert report.downloaded == 13 and report.present == 0  # 2 tables + licence + 5 x (.hea, .dat)
    assert not any("records500" in path for path, _ in RangeHandler.requests)
    assert not list(dest.rglob("*.part"))
    got, expected = load_ptbxl(dest, cache=False), load_ptbxl(root, cache=False)
    np.testing.assert_array_equal(got.signals, expected.signals)
    np.testing.assert_array_equal(got.labels, expected.labels)
    again = download_ptbxl(dest, 100, base_url=url)
    assert again.downloaded == 0 and again.present == 13


def test_checksum_mismatch_is_refused_and_not_kept(release, tmp_path):
    root, url = release
    sums = (root / "SHA256SUMS.txt").read_text().splitlines()
    bad = [i for i, line in enumerate(sums) if line.endswith("00003_lr.dat")][0]
    sums[bad] = "f" * 64 + "  records100/00000/00003_lr.dat"
    (root / "SHA256SUMS.txt").write_text("\n".join(sums) + "\n")
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"00003_lr\.dat: SHA-256 .* does not match"):
        download_ptbxl(dest, 100, base_url=url)
    assert not (dest / "records100/00000/00003_lr.dat").exists()
    assert not (dest / "records100/00000/00003_lr.dat.part").exists()
    assert (dest / "records100/00000/00002_lr.dat").is_file()  # what was verified before stays


def test_partial_download_resumes_with_a_range_request(release, tmp_path):
    root, url = release
    dest = tmp_path / "dest"
    rel = "records100/00000/00004_lr.dat"
    full = (root / rel).read_bytes()
    (dest / rel).parent.mkdir(parents=True)
    (dest / (rel + ".part")).write_bytes(full[:10000])
    report = download_ptbxl(dest, 100, base_url=url)
    assert (dest / rel).read_bytes() == full
    assert ("/" + rel, "bytes=10000-") in RangeHandler.requests
    assert report.downloaded == 13


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot connect"):
        download_ptbxl(tmp_path / "dest", 100, base_url="http://127.0.0.1:9/", timeout=2)
