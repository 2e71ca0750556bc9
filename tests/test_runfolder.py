"""Run-folder writes: atomic files and the one-writer lock, exercised across real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_ecg.runfolder import RunLock, RunLockedError, atomic_write_bytes, atomic_write_json, atomic_write_text


def _python(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, **kw)


def test_atomic_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # the mode open() gives, not mkstemp's 0600
    plain.unlink()


def test_a_write_killed_half_way_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "standardization.json"
    path.write_text("previous\n")
    child = _python(f"""
        import os, signal
        from edge_ecg import runfolder
        # die the moment the new bytes are written but not yet renamed into place
        runfolder.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        runfolder.atomic_write_bytes({str(path)!r}, b"new " * 1_000_000)
    """)
    child.communicate(timeout=60)
    assert child.returncode == -9
    assert path.read_text() == "previous\n"
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".standardization.json.")  # the torn temp, never read


def test_a_second_writer_is_refused_while_the_first_finishes(tmp_path):
    run = tmp_path / "run"
    first = _python(f"""
        import sys
        from pathlib import Path
        from edge_ecg.runfolder import RunLock
        with RunLock({str(run)!r}, "train", create=True):
            print("locked", flush=True)
            sys.stdin.readline()  # hold the lock until the test says so
            Path({str(run)!r}, "history.csv").write_text("first\\n")
        print("done", flush=True)
    """)
    try:
        assert first.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"being written by another process \(pid {first.pid}, stage train, command: -c"):
            with RunLock(run, "train"):
                (run / "history.csv").write_text("second\n")
        out, _ = first.communicate("go\n", timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0 and out.strip() == "done"
    assert (run / "history.csv").read_text() == "first\n"
    with RunLock(run, "compress"):  # free again once the first writer is done
        pass


def test_a_crashed_writer_leaves_no_lock_behind(tmp_path):
    run = tmp_path / "run"
    child = _python(f"""
        import os, signal
        from edge_ecg.runfolder import RunLock
        with RunLock({str(run)!r}, "export", create=True):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    child.communicate(timeout=60)
    assert child.returncode == -9 and (run / ".lock").is_file()
    with RunLock(run, "export"):
        pass


def test_nested_locks_in_one_process_are_one_lock(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "run", create=True):
        with RunLock(run, "train"):
            pass
        with RunLock(run, "export"):  # still held by the outer one
            pass
    assert RunLock._held == {}
    assert not (tmp_path / "missing").exists()
    with RunLock(tmp_path / "missing", "bench"):  # nothing to lock, nothing created
        pass
    assert not (tmp_path / "missing").exists()


def test_train_through_the_cli_is_refused_while_another_process_writes_the_run(ptbxl_dir, tmp_path, capsys):
    from edge_ecg.cli import main

    run = tmp_path / "run"
    holder = _python(f"""
        import sys
        from edge_ecg.runfolder import RunLock
        with RunLock({str(run)!r}, "train", create=True):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["train", "--data", str(ptbxl_dir), "--run", str(run), "--epochs", "1", "--train-limit", "32"])
        holder.communicate("go\n", timeout=60)
    finally:
        holder.kill()
    assert code == 1
    err = capsys.readouterr().err
    assert f"pid {holder.pid}, stage train" in err
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the refused train wrote nothing


# --------------------------------------------------------------------------- the contract


def test_run_folder_file_names_are_spelled_only_in_runfolder():
    """Stages ask RunFolder for paths: a quoted run-folder file name anywhere else in the package is a second copy."""
    import re

    from edge_ecg import runfolder

    names = [runfolder.CONFIG_FILE, runfolder.STANDARDIZATION_FILE, runfolder.MODEL_FILE, runfolder.EXPORT_FILE,
             runfolder.TFLITE_FILE, runfolder.TEST_IDS_FILE, runfolder.TEST_OUTPUTS_FILE, runfolder.CV_FILE,
             runfolder.REPORT_FILE, runfolder.COMPRESSION_REPORT_MD, runfolder.COMPRESSION_REPORT_JSON,
             runfolder.BUILD_RECORD, runfolder.INDEX_FILE, *runfolder.EXPORT_FIGURES]
    package = Path(runfolder.__file__).parent
    pattern = re.compile("|".join(rf"[\"']{re.escape(n)}[\"']" for n in names))
    offenders = [f"{path.relative_to(package)}:{i}: {line.strip()}"
                 for path in sorted(package.rglob("*.py")) if path.name != "runfolder.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, "\n".join(offenders)


def test_run_folder_readers_name_the_file_and_the_fix(tmp_path):
    from edge_ecg.runfolder import RunError, RunFolder

    folder = RunFolder(tmp_path / "r")
    with pytest.raises(RunError, match=r"export\.json not found: run `edge-ecg export"):
        folder.read_export()
    with pytest.raises(RunError, match=r"config\.json: not found"):
        folder.read_config()
    with pytest.raises(RunError, match="run `edge-ecg train"):
        folder.deployable_model()
    (tmp_path / "r" / "compress").mkdir(parents=True)
    (tmp_path / "r" / "model.keras").write_bytes(b"x")
    assert folder.deployable_model() == folder.model
    (tmp_path / "r" / "compress" / "final.h5").write_bytes(b"x")
    assert folder.deployable_model() == folder.compress / "final.h5"  # compression's result comes first
    folder.export.mkdir()
    folder.export_report.write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        folder.read_export()


def test_the_index_links_every_stage_report_that_exists_and_nothing_else(tmp_path):
    import re

    from edge_ecg.runfolder import write_index

    run = tmp_path / "run"
    (run / "bench").mkdir(parents=True)
    (run / "report.md").write_text("# r\n")
    (run / "bench" / "serial-ttyUSB0.md").write_text("# b\n")
    (run / "bench" / "serial-ttyUSB0.json").write_text("{}\n")
    links = re.findall(r"\]\(([^)]+)\)", write_index(run).read_text())
    assert links == ["report.md", "bench/serial-ttyUSB0.md"]
    (run / "export").mkdir()
    (run / "export" / "report.md").write_text("# e\n")
    assert "export/report.md" in re.findall(r"\]\(([^)]+)\)", write_index(run).read_text())
