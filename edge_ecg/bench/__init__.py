"""Benchmarking the deployed model over a serial link.

:mod:`edge_ecg.bench.protocol` speaks the MLPerf Tiny / EEMBC benchmark protocol
(plus the edge-ecg extensions) to firmware built on ``firmware/core``: a board
on a serial port, or the host port on a pseudo-terminal.
"""
