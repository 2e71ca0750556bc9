"""Serial path costs: per-record transfer and round trip over a pseudo-terminal, hex vs binary load.

    python benchmarks/serial.py [--records 20] [--run runs/NAME]

The host port (firmware/host, checksum runner) runs on a pty as a board sits on a
UART. A pty has no baud rate, so besides the measured times the table gives the bytes
each load puts on the wire in both directions and what that costs on a 921,600-baud
UART (10 bits per byte, 8N1): the figure that transfers to a real board. With --run,
the TFLite Micro host emulator's time per inference for that run's model is added.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

BAUD = 921_600
RECORD_BYTES = 12_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--run", help="a run folder with export/ (adds the emulator's inference time)")
    args = parser.parse_args()
    from edge_ecg.bench.host import build_host_port
    from edge_ecg.bench.protocol import DutClient, spawn_on_pty

    rng = np.random.default_rng(0)
    records = [rng.integers(-128, 128, RECORD_BYTES, dtype=np.int8).tobytes() for _ in range(args.records)]
    raw_wire_s = RECORD_BYTES * 10 / BAUD
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        process, transport = spawn_on_pty([str(build_host_port(Path(tmp)))])
        try:
            client = DutClient(transport, timeout=10.0)
            client.resync()
            for mode in ("hex", "binary"):
                load_s, round_trip_s, wire = [], [], []
                for data in records:
                    before = client.bytes_written + client.bytes_read
                    t0 = time.perf_counter()
                    client.load_hex(data) if mode == "hex" else client.load_binary(data)
                    t1 = time.perf_counter()
                    client.infer(1, 0)
                    t2 = time.perf_counter()
                    load_s.append(t1 - t0)
                    round_trip_s.append(t2 - t0)
                    wire.append(client.bytes_written + client.bytes_read - before)
                w = statistics.median(wire)
                rows.append((mode, statistics.median(load_s) * 1e3, statistics.median(round_trip_s) * 1e3, w, w / RECORD_BYTES,
                             w * 10 / BAUD * 1e3))
        finally:
            process.kill()
            process.wait()
            transport.close()
    print(f"{args.records} records of {RECORD_BYTES:,} bytes; raw data at {BAUD:,} baud = {raw_wire_s * 1e3:.1f} ms")
    print(f"{'load':<8} {'pty load ms':>12} {'pty load+infer ms':>18} {'wire bytes':>11} {'x raw':>6} {'at 921600 baud ms':>18}")
    for mode, load_ms, rt_ms, w, ratio, uart_ms in rows:
        print(f"{mode:<8} {load_ms:>12.2f} {rt_ms:>18.2f} {w:>11,.0f} {ratio:>6.3f} {uart_ms:>18.1f}")
    if args.run:
        from edge_ecg.bench import bench

        summary = bench(args.run, emulator="tflm", limit=args.records, progress=False, resume=True)
        lat = summary["latency"]
        print(f"TFLite Micro host emulator ({args.run}): median {lat['median_us'] / 1e3:.2f} ms per inference "
              f"(p90 {lat['p90_us'] / 1e3:.2f} ms, {lat['records']} records)")


if __name__ == "__main__":
    main()
