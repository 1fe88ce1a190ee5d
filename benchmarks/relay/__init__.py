"""The relay benchmark's parts: the runner and its case table, the probes that measure a run,
the ffmpeg baseline, and the report written into docs/performance.md.

``benchmarks/relay_benchmark.py`` is the command; ``benchmarks/README.md`` says what it
measures and how.
"""
