"""Triton kernels (issue: Triton kernels for every op). Until they land, Triton serves no op and
says so."""

from __future__ import annotations

from typing import List

KERNELS: dict = {}


def unavailable_reasons() -> List[str]:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return [f"triton is not importable ({e})"]
    return []


def supports(op_name: str) -> bool:
    return op_name in KERNELS
