"""The demo, the benchmarks and the GPU check: applications beside the cotap_mm library, run by
``tools/demo.py``, ``tools/benchmark_*.py`` and ``tools/gpu_check.py`` (docs/benchmarks.md)."""
