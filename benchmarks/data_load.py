"""Cold and cached load time of PTB-XL (`load_ptbxl`), each in a fresh process.

    python benchmarks/data_load.py [--data DIR] [--repeat 3]

Cold: an empty cache folder, so every WFDB record is read and the cache written.
Cached: the same folder again, so only the content hash and the .npz are read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

PROBE = """
import json, sys, time
t = time.perf_counter()
from edge_ecg.data import load_ptbxl
ds = load_ptbxl(sys.argv[1], cache_dir=sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "records": len(ds)}))
"""


def timed_load(data: str, cache: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, data, cache], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="PTB-XL folder (default: $EDGE_ECG_DATA)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from edge_ecg import settings

    data = str(settings.data_dir(args.data))
    cold, cached = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(timed_load(data, cache))
            cached.append(timed_load(data, cache))
    records = cold[0]["records"]
    c = statistics.median(r["seconds"] for r in cold)
    w = statistics.median(r["seconds"] for r in cached)
    print(f"PTB-XL at {data}: {records} labelled records, median of {args.repeat} (includes importing numpy/pandas/wfdb)")
    print(f"{'load':<8} {'seconds':>8}")
    print(f"{'cold':<8} {c:>8.2f}")
    print(f"{'cached':<8} {w:>8.2f}")
    print(f"speed-up {c / w:.1f}x")


if __name__ == "__main__":
    main()
