"""Measurement and reporting for the benchmark command lines (``tools/benchmark_*.py``)."""
