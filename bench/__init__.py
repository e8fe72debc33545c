"""Benchmarks: each subpackage runs with `python -m bench.<name>`, measures side by side in one
run, and writes its results under `bench/results/` (see bench/README.md)."""
