"""Benchmarks of concrete_ext (DESIGN.md section 6): `python -m benchmarks.run --help`."""
