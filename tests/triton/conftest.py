"""Setup of the Triton tests: they run the kernels on CUDA tensors where a GPU is visible, else on
CPU tensors through the Triton interpreter. TRITON_INTERPRET=1 must be set before the kernels are
defined (when concrete_ext._triton is first imported); this conftest sets it when no GPU is
visible, before anything here imports triton. If another part of the session imported the kernels
earlier without it, the tests skip and say so.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if not torch.cuda.is_available() and "concrete_ext._triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"


def pytest_collection_modifyitems(config, items):
    reason = None
    try:
        import triton  # noqa: F401
    except ImportError as e:
        reason = f"triton is not importable ({e})"
    else:
        from concrete_ext import _triton

        if _triton.unavailable_reasons():
            reason = "; ".join(_triton.unavailable_reasons())
        elif _triton.interpreted() != INTERPRET:
            reason = (
                "the Triton kernels were defined before TRITON_INTERPRET=1 was set (set it in "
                "the environment, or in the root conftest before anything imports triton)"
            )
        elif DEVICE == "cuda" and not torch.cuda.is_available():
            reason = "no CUDA device is visible and the kernels are not interpreted"
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.triton)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def device():
    return DEVICE
