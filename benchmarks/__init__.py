"""Benchmarks of concrete_ext (docs/BENCHMARKS.md): `python -m benchmarks.run --help`."""
