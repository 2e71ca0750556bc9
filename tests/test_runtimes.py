"""benchmarks/runtimes.py's side-by-side table (the numbers come from QEMU; here the layout and arithmetic)."""

from __future__ import annotations

from conftest import load_benchmark


def _runtimes():
    return load_benchmark("runtimes")


def test_side_by_side_table_says_instructions_are_not_cycles_and_computes_ratios():
    rt = _runtimes()
    rows = [
        {"model": "m", "runtime": rt.RUNTIMES[0], "macs": 1000, "instructions": 74000.0, "ram_bytes": 900,
         "ram": "arena used", "flash_bytes": 5000, "identical": 3, "records": 3},
        {"model": "m", "runtime": rt.RUNTIMES[1], "macs": 1000, "instructions": 3120.0, "ram_bytes": 1000,
         "ram": "arena used", "flash_bytes": 6000, "identical": 3, "records": 3},
        {"model": "m", "runtime": rt.RUNTIMES[2], "macs": 1000, "instructions": 1900.0, "ram_bytes": 680,
         "ram": "plan 600 + stack 80", "flash_bytes": 2000, "identical": 2, "records": 3},
        {"model": "n", "runtime": rt.RUNTIMES[1], "macs": 10, "error": "building the TFLM library failed:"},
        {"model": "n", "runtime": rt.RUNTIMES[2], "macs": 10, "instructions": 40.0, "ram_bytes": 50, "ram": "plan 50",
         "identical": 1, "records": 1},
    ]
    text = rt.format_side_by_side(rows)
    assert "Instructions are not cycles" in text
    lines = {(line.split("|")[0].strip(), line.split("|")[1].strip()): [c.strip() for c in line.split("|")]
             for line in text.splitlines() if line.count("|") == 7}
    aot = lines["m", rt.RUNTIMES[2]]
    assert aot[2:] == ["1,900", "1.90", "680 (plan 600 + stack 80)", "0.68x", "2,000", "2/3"]
    assert lines["m", rt.RUNTIMES[0]][5] == "0.90x"  # every row against the CMSIS-NN arena
    assert lines["n", rt.RUNTIMES[1]][2] == "building the TFLM library failed:"
    assert lines["n", rt.RUNTIMES[2]][5] == ""  # no CMSIS-NN figure to compare with
