"""Benchmarks: speed and memory (``bench.perf``), the equal-budget quality ablation (``bench.ablation``), scripts."""
