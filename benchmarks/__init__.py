"""Benchmark scripts: each runs as ``python benchmarks/<name>.py`` from the repository root
and writes JSON + Markdown (+ a PNG plot where a picture helps) to ``benchmarks/results/``.
See ``benchmarks/README.md``."""
