"""Run a generated model on the emulated Cortex-M4 (QEMU ``mps2-an386``), DSP path.

:func:`run_on_mps2` cross-compiles ``ecg_model.c`` with the board's flags (so
``__ARM_FEATURE_DSP`` is set and the ACLE kernels are used) into a small harness
(``firmware/mps2-an386/harness/aot_harness.c``) that runs given records and prints
the outputs and, with ``profile=True``, the instructions of each op: QEMU runs with
``-icount shift=0`` (1 instruction = 1 ns of virtual time) and the board's SysTick
counts 25 MHz ticks, so a tick is 40 instructions. Instructions are not cycles:
QEMU models no pipeline, wait states or multi-cycle instructions.
"""

from __future__ import annotations

import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

import numpy as np

INSTRUCTIONS_PER_TICK = 40  # 1 ns per instruction, 25 MHz SysTick
_LINE = re.compile(r"^(out|error|ticks|op) (\d+) ?(\S*)$")


def tools_missing() -> str | None:
    """Why :func:`run_on_mps2` cannot run here, or None."""
    from edge_ecg.bench.boards import ARM_CC, QEMU

    missing = [t for t in (ARM_CC, QEMU) if shutil.which(t) is None]
    return f"{' and '.join(missing)} not found" if missing else None


def build_harness(c_dir: str | Path, records: Sequence[np.ndarray], workdir: str | Path, *,
                  profile: bool = False, prefix: str = "ecg_model") -> Path:
    """The harness ELF for the generated model in ``c_dir`` and int8 ``records``."""
    from edge_ecg.bench.boards import ARM_CC, ARM_CFLAGS, ARM_LDFLAGS, MPS2_DIR

    if prefix != "ecg_model":
        raise ValueError("the harness calls ecg_model_*: generate with prefix='ecg_model'")
    c_dir, workdir = Path(c_dir), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in records:
        values = np.ascontiguousarray(r, dtype=np.int8).reshape(-1)
        rows.append("  {" + ",".join(str(int(v)) for v in values) + "}")
    (workdir / "harness_inputs.h").write_text(
        "#define HARNESS_RECORDS " + str(len(rows)) + "\n"
        "static const int8_t harness_inputs[HARNESS_RECORDS][ECG_MODEL_INPUT_SIZE] = {\n"
        + ",\n".join(rows) + "\n};\n"
    )
    elf = workdir / "aot_harness.elf"
    cmd = [ARM_CC, *ARM_CFLAGS, *(["-DECG_MODEL_PROFILE=1"] if profile else []),
           f"-I{workdir}", f"-I{c_dir}", f"-I{MPS2_DIR}",
           str(MPS2_DIR / "startup.c"), str(MPS2_DIR / "board.c"), str(MPS2_DIR / "harness" / "aot_harness.c"),
           *map(str, sorted(c_dir.glob("*.c"))), f"-T{MPS2_DIR / 'link.ld'}", *ARM_LDFLAGS, "-o", str(elf)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the mps2-an386 harness failed:\n{' '.join(cmd)}\n{result.stderr}")
    return elf


def run_on_mps2(c_dir: str | Path, records: Sequence[np.ndarray], workdir: str | Path, *,
                profile: bool = False, timeout: float = 300.0) -> dict:
    """Run the generated model in ``c_dir`` on ``records`` under QEMU.

    Returns ``outputs`` (int8 arrays, one per record), ``instructions`` (per record,
    from the ticks around the invoke, resolution 40) and, with ``profile``,
    ``op_instructions`` ({op index: instructions per inference, averaged over the
    records}; the hook's own few dozen instructions fall in the next op).
    """
    from edge_ecg.bench.boards import qemu_argv

    elf = build_harness(c_dir, records, workdir, profile=profile)
    argv = qemu_argv(elf)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    text = b""
    deadline = time.monotonic() + timeout
    try:
        while b"done\n" not in text:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"QEMU harness gave no 'done' in {timeout:.0f} s; output so far: {text[-500:]!r}")
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = proc.stdout.read1(65536)
                if not chunk:
                    raise RuntimeError(f"QEMU exited: {proc.stderr.read().decode(errors='replace')[-500:]}")
                text += chunk
    finally:
        proc.kill()
        proc.wait()
    outputs: dict[int, np.ndarray] = {}
    ticks: dict[int, int] = {}
    ops: dict[int, int] = {}
    for line in text.decode(errors="replace").replace("\r", "").splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        kind, index, value = m.group(1), int(m.group(2)), m.group(3)
        if kind == "error":
            raise RuntimeError(f"ecg_model_invoke failed on record {index}")
        if kind == "out":
            outputs[index] = np.frombuffer(bytes.fromhex(value), np.uint8).view(np.int8)
        elif kind == "ticks":
            ticks[index] = int(value)
        elif kind == "op" and int(value):
            ops[index] = int(value) * INSTRUCTIONS_PER_TICK / len(records)
    n = len(records)
    if sorted(outputs) != list(range(n)):
        raise RuntimeError(f"QEMU harness printed outputs for {sorted(outputs)}, expected {n} records")
    result = {"outputs": [outputs[i] for i in range(n)],
              "instructions": [ticks[i] * INSTRUCTIONS_PER_TICK for i in range(n)],
              "method": "qemu-system-arm -machine mps2-an386 -icount shift=0; SysTick ticks x 40"}
    if profile:
        result["op_instructions"] = ops
    return result


def profile_on_qemu(tflite: bytes, c_dir: str | Path, record: np.ndarray, workdir: str | Path) -> list[dict]:
    """Per op of the generated model in ``c_dir``: name, output shape, MACs, QEMU instructions and instructions per MAC.

    One inference of ``record`` on the DSP path under QEMU (see :func:`run_on_mps2`); MACs and
    shapes come from the generator's own report for ``tflite``. The rows' instructions add up
    to the whole inference but for the timing hook's few dozen instructions per op.
    """
    import tempfile

    from edge_ecg.aot import generate

    with tempfile.TemporaryDirectory() as tmp:
        ops = generate(tflite, tmp)["ops"]
    counts = run_on_mps2(c_dir, [record], workdir, profile=True)["op_instructions"]
    rows = []
    for op in ops:
        instructions = counts.get(op["index"])
        if instructions is None:  # an alias (RESHAPE) that generates no code
            continue
        macs = int(op.get("macs", 0))
        rows.append({"index": op["index"], "op": op["op"], "output": list(op["output"]), "macs": macs,
                     "instructions": float(instructions),
                     "instructions_per_mac": round(instructions / macs, 3) if macs else None})
    return rows


def format_profile(rows: Sequence[dict]) -> str:
    """The per-op table :func:`profile_on_qemu` returns, as text."""
    lines = ["Per op on QEMU mps2-an386 (Cortex-M4, DSP path; instructions, not cycles):",
             f"{'op':>3} {'name':<20} {'output':<16} {'MACs':>11} {'instructions':>13} {'per MAC':>8}"]
    for r in rows:
        per = f"{r['instructions_per_mac']:8.2f}" if r["instructions_per_mac"] is not None else f"{'':8}"
        lines.append(f"{r['index']:>3} {r['op']:<20} {'x'.join(map(str, r['output'])):<16} {r['macs']:>11,} "
                     f"{r['instructions']:>13,.0f} {per}")
    macs, instructions = sum(r["macs"] for r in rows), sum(r["instructions"] for r in rows)
    lines.append(f"{'':>3} {'total':<20} {'':<16} {macs:>11,} {instructions:>13,.0f} {instructions / max(macs, 1):8.2f}")
    return "\n".join(lines)
