"""TFLite Micro vs the ahead-of-time C runtime on the same int8 model, side by side.

    python benchmarks/runtimes.py --run runs/dscnn [--run runs/resnet ...] [--tflm-src DIR]
        [--records 20] [--repeats 5] [--qemu-records 3] [--out FILE] [--no-qemu]

Each run must be exported with ``edge-ecg export --run RUN --runtime aot``. For each
run's ``export/model_int8.tflite`` and its generated ``export/aot/`` C model:

* **host time per inference**: TFLite Micro through ``tflite_micro`` in process vs
  the AOT C model as a host shared library (``edge_ecg.aot.build_shared_library``,
  called through ctypes on preallocated buffers), interleaved record by record
  (the order alternating each round), median over records x rounds; the int8
  outputs of the two are compared on every record;
* **RAM**: TFLite Micro's tensor arena as measured by the export (to the byte on the
  64-bit host, and the recommended size for a 32-bit target) vs the AOT activation
  buffer plus the model's stack from ``-fstack-usage`` (Cortex-M4 build);
* **model flash**: the .tflite flatbuffer (which the firmware embeds as a C array;
  the TFLite Micro library's code comes on top) vs the AOT object's .rodata (and
  .text, its kernels) from ``arm-none-eabi-size`` on ``ecg_model.c`` compiled for
  the Cortex-M4 (host ``size`` of a host object when the cross compiler is missing);
* **instructions per inference on QEMU** (mps2-an386, Cortex-M4, AOT build): see
  ``edge_ecg.bench.boards`` (``-icount shift=0``; 1 instruction = 1 ns virtual);
* **per layer on QEMU**: the model built with ``-DECG_MODEL_PROFILE`` into
  ``edge_ecg.aot.cortex_m``'s harness, which timestamps every op: MACs,
  instructions and instructions per MAC of each layer.

Then ONE side-by-side table over all runs, on QEMU mps2-an386 (``-icount shift=0``, the
same records for every runtime): per model and runtime, instructions per inference and
per MAC (MACs from the generator's report), RAM, flash and whether the int8 outputs
equal the export's TFLM reference outputs (``export/test_int8_outputs.npy``). Without
``--tflm-src`` it has the AOT rows only. With ``--tflm-src DIR`` (a TFLite Micro tree,
see ``edge_ecg.bench.tflm_qemu``; nothing of it enters the repository) the same board
firmware is built with TFLM's reference kernels and with CMSIS-NN, the libraries cached
outside the repository (a cold build compiles a few hundred files: minutes):

* RAM: TFLM's arena as the runner reports it after ``AllocateTensors()`` on the board
  (``arena_used_bytes``; its buffer is larger) vs the AOT plan (activations, input
  included) plus the model's stack (``-fstack-usage``);
* flash: the whole firmware ELF's flash (.vectors + .text + .rodata + ...; the same
  core and board code in every row, so differences are the runtime and the model).

Instructions are not cycles: QEMU models no pipeline, wait states or multi-cycle
instructions.

Prints the tables and writes JSON (default ``RUN/bench/runtimes.json`` per run, or one
``--out`` file for all).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def _object_size(c_dir: Path, workdir: Path) -> dict:
    """Sections and stack use of the AOT model compiled alone (Cortex-M4 if possible)."""
    from edge_ecg.bench.boards import ARM_CC, ARM_CFLAGS, ARM_SIZE

    sources = sorted(c_dir.glob("*.c"))
    if shutil.which(ARM_CC) and shutil.which(ARM_SIZE):
        cc, flags, size, target = ARM_CC, list(ARM_CFLAGS), ARM_SIZE, "cortex-m4 (arm-none-eabi-gcc -O2)"
    else:
        cc, flags, size, target = "gcc", ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"], "size", "host (gcc -O2)"
    sections: dict[str, int] = {}
    stack: dict[str, int] = {}
    for source in sources:
        obj = workdir / (source.stem + ".o")
        cmd = [cc, *flags, "-fstack-usage", f"-I{c_dir}", "-c", str(source), "-o", str(obj)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}\n{result.stderr}")
        out = subprocess.run([size, "-A", "-d", str(obj)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
                # -ffunction-sections: .text.op01_conv_2d ... -> .text
                kind = "." + parts[0].split(".")[1]
                if kind in (".text", ".rodata", ".data", ".bss"):
                    sections[kind] = sections.get(kind, 0) + int(parts[1])
        su = obj.with_suffix(".su")
        for line in su.read_text().splitlines():
            # file:line:col:function<TAB>bytes<TAB>static|dynamic|bounded
            where, nbytes, kind = line.rsplit("\t", 2)
            stack[where.rsplit(":", 1)[-1]] = int(nbytes) if kind.strip() == "static" else -int(nbytes)
    # ecg_model_invoke calls the op functions (when not inlined into it), which call nothing:
    # its frame plus the deepest op's frame bounds the model's stack.
    invoke = stack.get("ecg_model_invoke", 0)
    others = [abs(v) for k, v in stack.items() if k != "ecg_model_invoke"]
    return {"target": target, "sections": sections, "stack_frames": stack,
            "stack_bytes": abs(invoke) + max(others, default=0),
            "stack_static": all(v >= 0 for v in stack.values())}


def _time_runtimes(tflite: bytes, arena: int, aot_lib: Path, x: np.ndarray, repeats: int) -> dict:
    """Interleaved per-inference host times (µs) of TFLM and AOT, and their output agreement."""
    from edge_ecg.aot import AotModel
    from edge_ecg.export.emulator import tflm_interpreter

    interpreter = tflm_interpreter(tflite, arena)
    aot = AotModel(aot_lib)
    out = np.empty(aot.output_shape, np.int8)
    invoke = aot._invoke  # the C entry point; ctypes call on preallocated buffers
    times = {"tflm": [], "aot": []}
    identical = 0

    def run_tflm(sample):
        interpreter.set_input(sample[None], 0)
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = time.perf_counter() - start
        return elapsed, interpreter.get_output(0).reshape(-1).copy()

    def run_aot(sample):
        src = np.ascontiguousarray(sample)
        start = time.perf_counter()
        status = invoke(src.ctypes.data, out.ctypes.data)
        elapsed = time.perf_counter() - start
        if status != 0:
            raise RuntimeError(f"ecg_model_invoke returned {status}")
        return elapsed, out.reshape(-1).copy()

    for sample in x[: min(len(x), 3)]:  # warm caches and lazy allocations
        run_tflm(sample), run_aot(sample)
    for r in range(repeats):
        for i, sample in enumerate(x):
            order = (run_tflm, run_aot) if (r + i) % 2 == 0 else (run_aot, run_tflm)
            got = {}
            for fn in order:
                elapsed, y = fn(sample)
                key = "tflm" if fn is run_tflm else "aot"
                times[key].append(elapsed * 1e6)
                got[key] = y
            if r == 0:
                identical += int(np.array_equal(got["tflm"], got["aot"]))
    return {
        "tflm_median_us": statistics.median(times["tflm"]),
        "aot_median_us": statistics.median(times["aot"]),
        "tflm_p90_us": float(np.percentile(times["tflm"], 90)),
        "aot_p90_us": float(np.percentile(times["aot"], 90)),
        "samples_each": len(times["tflm"]),
        "identical_outputs": identical,
        "records": len(x),
    }


RUNTIMES = ("TFLM reference kernels", "TFLM + CMSIS-NN", "edge-ecg AOT")


def _reference_outputs(run: Path) -> dict[int, list[int]]:
    """The export's TFLM reference int8 outputs of the test records, by ecg_id."""
    return dict(zip(np.load(run / "export" / "test_ecg_ids.npy").tolist(),
                    np.load(run / "export" / "test_int8_outputs.npy").tolist()))


def _qemu_row(run: Path, elf: Path, workdir: Path, records: list, iterations: int, warmup: int) -> dict:
    """Instructions per inference, outputs and flash of one board firmware on ``records``."""
    from edge_ecg.bench.boards import firmware_size, qemu_instructions_per_inference

    # Deterministic code: one iteration per record suffices but for the resolution (1000 / iterations).
    count = qemu_instructions_per_inference(run, workdir, records=[d for _, d in records], iterations=iterations,
                                            warmup=warmup, elf=elf, timeout=600.0)
    reference = _reference_outputs(run)
    return {"instructions": count["instructions_per_inference"], "per_record": count["per_record"],
            "identical": sum(out == reference[i] for (i, _), out in zip(records, count["outputs_int8"])),
            "records": len(records), "flash_bytes": firmware_size(elf)["flash_bytes"]}


def _side_by_side(run: Path, plan_bytes: int, aot_ram: int, macs: int, qemu: dict | None, records: list,
                  tflm_src: str | None, workdir: Path) -> list[dict]:
    """The side-by-side rows of one run: TFLM reference and CMSIS-NN (with ``tflm_src``), then AOT."""
    rows = []
    if tflm_src:
        from edge_ecg.bench.boards import BoardError
        from edge_ecg.bench.tflm_qemu import build_mps2_tflm_board, tflm_arena_used

        for kernels, name in zip(("reference", "cmsis_nn"), RUNTIMES):
            row = {"model": run.name, "runtime": name, "macs": macs}
            try:
                elf = build_mps2_tflm_board(run, workdir / "tflm", tflm_src, kernels)
                info = tflm_arena_used(run, workdir / f"tflm-{kernels}", elf)
                # Reference kernels take ~75 instructions per MAC: one invoke per record.
                fast = kernels != "reference"
                row.update(_qemu_row(run, elf, workdir / f"tflm-{kernels}", records, 5 if fast else 1, 1 if fast else 0))
                row["ram_bytes"] = info["arena_used_bytes"]
                row["ram"] = f"arena used, buffer {info['arena_bytes']:,}"
            except BoardError as exc:  # the table names it; the JSON keeps the compiler's words
                row["error"], row["error_detail"] = str(exc).splitlines()[0], str(exc)
            rows.append(row)
    row = {"model": run.name, "runtime": RUNTIMES[2], "macs": macs, "ram_bytes": aot_ram}
    if qemu and "instructions" in qemu:
        count = qemu["instructions"]
        row.update(instructions=count["instructions_per_inference"], identical=count["identical_to_tflm"],
                   records=count["records"], flash_bytes=qemu["firmware"]["flash_bytes"])
    elif qemu:
        row["error"] = qemu["error"].splitlines()[0]
    row["ram"] = f"plan {plan_bytes:,} + stack {aot_ram - plan_bytes:,}"
    rows.append(row)
    return rows


def format_side_by_side(rows: list[dict]) -> str:
    """The one table over all runs and runtimes, as text."""
    head = ("model", "runtime", "instructions/inference", "per MAC", "RAM (B)", "RAM vs CMSIS-NN", "flash (B)",
            "outputs = TFLM ref")
    table = []
    for r in rows:
        cmsis = next((c for c in rows if c["model"] == r["model"] and c["runtime"] == RUNTIMES[1]
                      and "ram_bytes" in c), None)
        if "error" in r:
            table.append((r["model"], r["runtime"], r["error"], "", "", "", "", ""))
            continue
        table.append((
            r["model"], r["runtime"],
            f"{r['instructions']:,.0f}" if "instructions" in r else "n/a",
            f"{r['instructions'] / r['macs']:.2f}" if "instructions" in r and r["macs"] else "",
            f"{r['ram_bytes']:,} ({r['ram']})",
            f"{r['ram_bytes'] / cmsis['ram_bytes']:.2f}x" if cmsis else "",
            f"{r['flash_bytes']:,}" if "flash_bytes" in r else "",
            f"{r['identical']}/{r['records']}" if "identical" in r else "",
        ))
    width = [max(len(str(t[k])) for t in [head, *table]) for k in range(len(head))]
    lines = [
        "Side by side on QEMU mps2-an386 (Cortex-M4, -icount shift=0). Instructions are not cycles: QEMU models no "
        "pipeline, wait states or multi-cycle instructions.",
        " | ".join(f"{h:<{w}}" for h, w in zip(head, width)),
        "-+-".join("-" * w for w in width),
    ]
    lines += [" | ".join(f"{str(c):<{w}}" for c, w in zip(t, width)) for t in table]
    lines.append("RAM: TFLM's arena as AllocateTensors() uses it on the board; AOT: the static plan (input included) "
                 "+ the model's stack. Flash: the whole firmware (same core and board code in every row).")
    return "\n".join(lines)


def _one_run(run: Path, args, dataset) -> tuple[dict, list[dict]]:
    """The detailed comparison of one run (printed) and its side-by-side rows."""
    from edge_ecg.aot import build_shared_library, generate
    from edge_ecg.bench import test_records
    from edge_ecg.bench.boards import BoardError, build_qemu_board, firmware_size, qemu_instructions_per_inference

    exported = json.loads((run / "export" / "export.json").read_text())
    aot_dir = run / "export" / "aot"
    if "aot" not in exported or not aot_dir.is_dir():
        raise SystemExit(f"{run}/export has no AOT model: run `edge-ecg export --run {run} --runtime aot` first")
    tflite = (run / "export" / exported["tflite"]["file"]).read_bytes()
    # The plan of the C model actually built (export.json may predate a regeneration).
    m = re.search(r"#define ECG_MODEL_ACTIVATION_BYTES (\d+)", (aot_dir / "ecg_model.h").read_text())
    if m is None:
        raise SystemExit(f"{aot_dir / 'ecg_model.h'} defines no ECG_MODEL_ACTIVATION_BYTES: export again")
    plan_bytes = int(m.group(1))
    records, _ = test_records(run, limit=args.records, dataset=dataset)
    shape = exported["tflite"]["input"]["shape"][1:]
    x = np.stack([np.frombuffer(data, np.int8).reshape(shape) for _, data in records])

    result: dict = {"run": str(run), "model_sha256": exported["tflite"]["sha256"], "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="edge-ecg-runtimes-") as tmp:
        tmp = Path(tmp)
        macs = sum(int(op.get("macs", 0)) for op in generate(tflite, tmp / "report")["ops"])
        lib = build_shared_library(aot_dir, tmp / "libecg_model.so")
        timing = _time_runtimes(tflite, exported["arena"]["recommended_bytes"], lib, x, args.repeats)
        obj = _object_size(aot_dir, tmp)
        result["host_time"] = timing
        result["aot_object"] = obj
        qemu = None
        qemu_records = records[: args.qemu_records]
        if not args.no_qemu:
            try:
                elf = build_qemu_board(run, tmp / "qemu")
                size = firmware_size(elf)
                count = qemu_instructions_per_inference(run, tmp / "qemu", records=[d for _, d in qemu_records],
                                                        iterations=5, elf=elf)
                reference = _reference_outputs(run)
                count["identical_to_tflm"] = sum(out == reference[i] for (i, _), out in zip(qemu_records, count["outputs_int8"]))
                count.pop("elf")
                qemu = {"instructions": count, "firmware": {k: v for k, v in size.items() if k != "file"}}
            except BoardError as exc:
                qemu = {"error": str(exc)}
            if qemu and "instructions" in qemu:
                from edge_ecg.aot.cortex_m import profile_on_qemu

                qemu["per_op"] = profile_on_qemu(tflite, aot_dir, x[0], tmp / "profile")
        result["qemu"] = qemu
        side = []
        if not args.no_qemu:
            aot_ram = plan_bytes + obj["stack_bytes"]
            side = _side_by_side(run, plan_bytes, aot_ram, macs, qemu, qemu_records, args.tflm_src, tmp)
        result["side_by_side"] = side

    arena = exported["arena"]
    s = obj["sections"]
    result["table"] = rows = [
        ("host time per inference, median (µs)", f"{timing['tflm_median_us']:.1f}", f"{timing['aot_median_us']:.1f}"),
        ("host time per inference, p90 (µs)", f"{timing['tflm_p90_us']:.1f}", f"{timing['aot_p90_us']:.1f}"),
        ("int8 outputs, TFLM = AOT (host)", f"{timing['identical_outputs']}/{timing['records']} records", ""),
        ("RAM: arena / activations incl. input (B)",
         f"{arena['min_bytes']:,} measured ({arena['recommended_bytes']:,} rec.)", f"{plan_bytes:,}"),
        ("RAM: model stack (B)", "n/a (interpreter)", f"{obj['stack_bytes']:,} (-fstack-usage)"),
        ("flash: model data (B)", f"{exported['tflite']['bytes']:,} (.tflite)", f"{s.get('.rodata', 0):,} (.rodata)"),
        ("flash: model code (B)", "TFLM library (see the side-by-side table)", f"{s.get('.text', 0):,} (.text)"),
    ]
    if qemu and "instructions" in qemu:
        fw = qemu["firmware"]
        rows += [
            ("QEMU Cortex-M4 instructions / inference", "see the side-by-side table",
             f"{qemu['instructions']['instructions_per_inference']:,.0f} (median of {qemu['instructions']['records']} records)"),
            ("int8 outputs, QEMU = TFLM", "", f"{qemu['instructions']['identical_to_tflm']}/{qemu['instructions']['records']} records"),
            ("Cortex-M4 firmware flash / RAM (B)", "", f"{fw['flash_bytes']:,} / {fw['ram_bytes']:,} (stack {fw['stack']:,})"),
        ]
    elif qemu:
        rows.append(("QEMU", "", qemu["error"].splitlines()[0]))

    width = [max(len(r[k]) for r in rows + [("", "TFLite Micro", "AOT C")]) for k in range(3)]
    print(f"Runtimes for {run} (model sha256 {exported['tflite']['sha256'][:12]}, {timing['records']} test records "
          f"x {args.repeats} interleaved rounds; AOT object: {obj['target']})")
    print(f"{'':<{width[0]}} | {'TFLite Micro':<{width[1]}} | AOT C")
    print(f"{'-' * width[0]}-+-{'-' * width[1]}-+-{'-' * width[2]}")
    for name, a, b in rows:
        print(f"{name:<{width[0]}} | {a:<{width[1]}} | {b}")
    if qemu and "per_op" in qemu:
        from edge_ecg.aot.cortex_m import format_profile

        print("\n" + format_profile(qemu["per_op"]))
    print()
    return result, side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, action="append",
                        help="a run folder exported with --runtime aot; repeat for more models")
    parser.add_argument("--tflm-src", default=None,
                        help="a TFLite Micro tree (checkout with its downloads and CMSIS-NN): add TFLM rows on QEMU")
    parser.add_argument("--records", type=int, default=20, help="test-fold records to time (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds over the records (default 5)")
    parser.add_argument("--qemu-records", type=int, default=3, help="records run on QEMU (default 3)")
    parser.add_argument("--no-qemu", action="store_true", help="skip the emulated Cortex-M4")
    parser.add_argument("--data", default=None, help="PTB-XL folder (default: each run's)")
    parser.add_argument("--out", default=None, help="JSON output (default RUN/bench/runtimes.json per run)")
    args = parser.parse_args()
    if args.tflm_src and args.no_qemu:
        parser.error("--tflm-src runs TFLM on QEMU: drop --no-qemu")

    dataset = None
    if args.data:
        from edge_ecg.data import load_ptbxl

        dataset = load_ptbxl(args.data)
    results, side = [], []
    for run in map(Path, args.run):
        result, rows = _one_run(run, args, dataset)
        results.append(result)
        side += rows
        if not args.out:
            out = run / "bench" / "runtimes.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(f"-> {out}")
    if side:
        print("\n" + format_side_by_side(side))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"runs": results, "side_by_side": side}, indent=1) + "\n")
        print(f"-> {out}")


if __name__ == "__main__":
    main()
