"""Benchmark scripts, run from the repository root: speed and memory beside ``predrnn bench``
(:mod:`predrnn.perf`), the equal-budget quality ablation (``bench.ablation``), and the scripts."""
