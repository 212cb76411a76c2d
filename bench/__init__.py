"""Benchmarks: each module runs on its own (`python -m bench.NAME`) and prints its figure on the last line."""
