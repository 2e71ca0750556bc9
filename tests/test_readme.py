"""The README's commands: the test command is the one CI runs, and the workflow runs as written after the first."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from edge_ecg.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _bash_blocks() -> list[list[str]]:
    """Every ```bash block of the README, as its command lines (comments and blank lines dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [[ln for ln in (line.split("  #")[0].strip() for line in b.splitlines()) if ln and not ln.startswith("#")] for b in blocks]


def test_the_readme_opens_with_its_two_commands():
    first = README.split("\n\n")[1]  # right after the title
    assert first.startswith("```bash\n") and _bash_blocks()[0] == first.splitlines()[1:3]
    install, tests = _bash_blocks()[0]
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -e \".[test]\" && .venv/bin/edge-ecg run --data ")
    assert tests == "scripts/test"


def test_ci_runs_exactly_the_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    marker = ci.index("# The README's test command, exactly:")
    assert ci[marker + 1] == _bash_blocks()[0][1]
    assert ci[marker + 1:] == [ci[marker + 1]], "the test command is CI's last step"
    # .ci/run keeps its data default and a temporary cache, and makes a package it cannot install an error
    assert any(line.startswith('export EDGE_ECG_DATA="${EDGE_ECG_DATA:-') for line in ci)
    assert 'export EDGE_ECG_CACHE="${EDGE_ECG_CACHE:-$(mktemp -d)}"' in ci
    assert "export EDGE_ECG_REQUIRE_TOOLS=1" in ci


def test_the_test_script_installs_what_the_tests_need_and_runs_pytest_quietly():
    script = REPO / "scripts" / "test"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    for package in ("gcc", "g++", "make", "cmake", "gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm",
                    "clang", "libclang-rt-14-dev"):
        assert re.search(rf"(^|[\s(]){re.escape(package)}([\s)]|$)", text, flags=re.M), package
        assert f"`{package}`" in README, f"the README's prerequisites do not name {package}"
    assert '.venv/bin/pip install -q -e ".[test]"' in text
    assert text.rstrip().splitlines()[-1] == 'exec .venv/bin/python -m pytest -q -n "${EDGE_ECG_TEST_WORKERS:-auto}" --dist loadgroup "$@"'


def test_the_readme_states_the_python_range_of_pyproject():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10,<3.13"' in pyproject
    assert "Python 3.10, 3.11 or 3.12" in README


def test_the_workflow_runs_as_written_after_the_first_command():
    """Its commands find edge-ecg (the venv is activated or named), read the first command's data and parse."""
    install = _bash_blocks()[0][0]
    data = install.split("--data ")[1].split()[0]
    workflow = README.split("## The workflow\n", 1)[1].split("\n### ", 1)[0]
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", workflow, flags=re.S)
             for ln in (line.split("  #")[0].strip() for line in block.splitlines()) if ln]
    assert lines[0] == ". .venv/bin/activate"
    commands = [shlex.split(ln) for ln in lines[1:]]
    assert commands and all(c[0] == "edge-ecg" for c in commands)
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])  # exits (a test failure) on an option the CLI does not have
        if "--data" in argv:
            assert args.data == data, f"{' '.join(argv)}: --data differs from the first command's {data}"
    assert any("--data" in c for c in commands)


def _script_sandbox(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of scripts/test beside a stub venv (pip and pytest only echo), on a PATH with no compiler and no apt-get."""
    import shutil

    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test", root / "scripts" / "test")
    (root / ".venv" / "bin").mkdir(parents=True)
    for name in ("python", "pip"):
        stub = root / ".venv" / "bin" / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        stub.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "id", "ls", "bash"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    os.symlink(os.path.realpath(sys.executable), bin_dir / "python3")  # the interpreter itself, not a pyenv shim
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return root, env


def test_the_test_script_names_what_it_cannot_install_and_runs_pytest(tmp_path):
    import shutil
    import subprocess

    root, env = _script_sandbox(tmp_path)
    bash = shutil.which("bash")
    run = subprocess.run([bash, "scripts/test", "tests/test_x.py", "-x"], cwd=root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert ("scripts/test: not installed (needs apt-get as root): gcc g++ make cmake gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi qemu-system-arm clang libclang-rt-14-dev; the tests that need them skip") in run.stderr
    assert run.stdout.splitlines() == ['pip install -q -e .[test]', "python -m pytest -q -n auto --dist loadgroup tests/test_x.py -x"]
    serial = subprocess.run([bash, "scripts/test"], cwd=root, env={**env, "EDGE_ECG_TEST_WORKERS": "0"}, capture_output=True, text=True)
    assert serial.stdout.splitlines()[-1] == "python -m pytest -q -n 0 --dist loadgroup"

    strict = subprocess.run([bash, "scripts/test"], cwd=root, env={**env, "EDGE_ECG_REQUIRE_TOOLS": "1"},
                            capture_output=True, text=True)
    assert strict.returncode == 1 and "cannot install gcc g++" in strict.stderr and "pytest" not in strict.stdout

    old = tmp_path / "bin" / "python3.13"
    old.write_text('#!/bin/sh\nexit 1\n')  # fails the version check like an interpreter outside the range
    old.chmod(0o755)
    wrong = subprocess.run([bash, "scripts/test"], cwd=root, env={**env, "PYTHON": str(old)}, capture_output=True, text=True)
    assert wrong.returncode == 1 and "edge-ecg needs Python 3.10-3.12" in wrong.stderr and not wrong.stdout


def _links(markdown: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", markdown)


@pytest.mark.slow
def test_the_readmes_first_command_runs_the_pipeline_as_written(ptbxl_dir, tmp_path):
    """The first line's `edge-ecg run` part, run as written with the installed venv into a temporary run folder.

    The venv and `pip install` parts are this checkout's own installation (not redone); `--run` is added so the
    test writes nothing into the checkout. Every stage's report must exist, link figures that exist, and be
    linked from index.md.
    """
    import subprocess

    install = _bash_blocks()[0][0]
    parts = [p.strip() for p in install.split("&&")]
    assert parts[:2] == ["python3 -m venv .venv", '.venv/bin/pip install -e ".[test]"'], parts
    argv = shlex.split(parts[2])
    assert argv[:2] == [".venv/bin/edge-ecg", "run"] and "--run" not in argv, argv
    exe = REPO / argv[0]
    if not exe.is_file():
        pytest.skip(f"{exe} not found: run the README's first command (it creates the venv) before this test")
    data = argv[argv.index("--data") + 1]
    if not (REPO / data).is_dir():  # the checkout is not beside shared/: the same records, where the tests read them
        argv[argv.index("--data") + 1] = str(ptbxl_dir)
    run = tmp_path / "quick"
    done = subprocess.run([str(exe), *argv[1:], "--run", str(run)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    assert stages["bench"]["records"] == stages["bench"]["identical_to_reference"] == 126
    assert (run / "compress" / "final.h5").is_file() and (run / "firmware" / "esp32" / "build.json").is_file()

    index = (run / "index.md").read_text()
    reports = ["report.md", "compress/report.md", "export/report.md", "bench/emulator-tflm.md"]
    assert set(reports) <= set(_links(index)) and "no report yet" not in index, index
    for report in reports:
        path = run / report
        figures = [link for link in _links(path.read_text()) if link.endswith(".png")]
        assert len(figures) >= 2, (report, figures)
        assert all((path.parent / f).stat().st_size > 0 for f in figures), (report, figures)
    from test_quiet import TF_LOG_LINE  # tests/ is on sys.path (pytest rootdir conftest)

    assert not TF_LOG_LINE.search(done.stderr + done.stdout), done.stderr[-3000:]  # quiet by default
