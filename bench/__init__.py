"""Podium's benchmarks: `python -m bench` (or `bench/run`). Not part of CI's pass/fail."""
