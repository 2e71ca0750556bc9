"""The compression stage table for a trained run: float, post-training int8, QAT, pruned + PQAT, structured.

    python benchmarks/compression.py --run runs/dscnn [--epochs 10] [--prune 0.5] [--structured 0.5]

Runs the compress stages that are missing (each resumable, each fine-tuning from the
trained model), exports every variant to int8, evaluates it through TFLite Micro on
the test fold, and prints the table that `compression.md` in the run folder holds.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained run folder (dscnn for structured pruning)")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per compress stage")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--structured", type=float, default=0.5)
    parser.add_argument("--clip", default="auto", help="input clipping for every export: auto, off or a number")
    args = parser.parse_args()
    from edge_ecg.compress import compress
    from edge_ecg.export.report import format_table, stage_report

    clip = None if args.clip == "off" else (args.clip if args.clip == "auto" else float(args.clip))
    compress(args.run, qat=True, epochs=args.epochs)
    compress(args.run, prune=args.prune, qat=True, epochs=args.epochs)
    compress(args.run, structured=args.structured, epochs=args.epochs)
    report = stage_report(args.run, clip_sigma=clip)
    print(f"Compression stages of {args.run} (test fold 10 through TFLite Micro; arena = measured minimum on the host)")
    print(format_table(report["rows"]))


if __name__ == "__main__":
    main()
