"""Reproducible performance benchmarks; each module is one command (see benchmarks/README.md)."""
