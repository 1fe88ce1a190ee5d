"""Benchmarks that run against the local lab; see benchmarks/README.md."""
