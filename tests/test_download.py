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


def _add_sums_line(root, line):
    with open(root / "SHA256SUMS.txt", "a") as fh:
        fh.write(line + "\n")


@pytest.mark.parametrize(
    "name", ["records100/../../outside.txt", "/tmp/edge-ecg-absolute.txt", "records100/00000/./x.dat"]
)
def test_checksum_list_naming_a_path_outside_dest_fails_before_writing(release, tmp_path, name):
    root, url = release
    payload = b"written by a hostile mirror\n"
    (root / "outside.txt").write_bytes(payload)
    _add_sums_line(root, f"{hashlib.sha256(payload).hexdigest()}  {name}")
    dest = tmp_path / "a" / "dest"
    with pytest.raises(DataError, match=r"SHA256SUMS\.txt:\d+: refused path") as err:
        download_ptbxl(dest, 100, base_url=url)
    assert repr(name) in str(err.value)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "a" / "outside.txt").exists()
    assert not Path("/tmp/edge-ecg-absolute.txt").exists()
    assert list(dest.iterdir()) == []  # not even the checksum list or a record was written
    assert RangeHandler.requests == [("/SHA256SUMS.txt", None)]


def test_checksum_list_entry_resolving_outside_dest_through_a_link_is_refused(release, tmp_path):
    root, url = release
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "records100").symlink_to(outside)
    with pytest.raises(DataError, match="outside"):
        download_ptbxl(dest, 100, base_url=url)
    assert list(outside.iterdir()) == []


def test_malformed_checksum_line_is_refused(release, tmp_path):
    root, url = release
    _add_sums_line(root, "z" * 64 + "  records100/00000/00009_lr.dat")
    with pytest.raises(DataError, match=r"SHA256SUMS\.txt:\d+: not a 'sha256  path' line"):
        download_ptbxl(tmp_path / "dest", 100, base_url=url)


def test_pinned_checksum_list_digest_is_checked(release, tmp_path):
    root, url = release
    listed = hashlib.sha256((root / "SHA256SUMS.txt").read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="not the pinned release's checksum list"):
        download_ptbxl(dest, 100, base_url=url, sums_sha256="0" * 64)
    assert list(dest.iterdir()) == []
    assert download_ptbxl(dest, 100, base_url=url, sums_sha256=listed).downloaded == 13


def test_physionet_url_pins_the_1_0_3_checksum_list(monkeypatch, tmp_path):
    """The default URL checks the pinned digest: a list with another digest is refused."""
    from edge_ecg import settings
    from edge_ecg.data import download

    def fake_fetch(url, path, timeout, resume=False):
        assert url == settings.PTBXL_URL + "SHA256SUMS.txt"
        path.write_text(f"{'0' * 64}  records100/00000/00001_lr.dat\n")
        return 0

    monkeypatch.delenv("EDGE_ECG_PTBXL_URL", raising=False)
    monkeypatch.setattr(download, "_fetch", fake_fetch)
    with pytest.raises(DataError, match=download.PTBXL_103_SUMS_SHA256):
        download_ptbxl(tmp_path / "dest", 100)
    assert list((tmp_path / "dest").iterdir()) == []
