"""Benchmarks: not tests. Each measures ratios side by side in one run and writes its section of BENCHMARKS.md."""
