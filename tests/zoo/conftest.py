"""Shared set-up of the zoo tests: the data folder and small deterministic models."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

_SHARED = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
)
if "CONCRETE_EXT_DATA" not in os.environ and os.path.isdir(_SHARED):
    os.environ["CONCRETE_EXT_DATA"] = _SHARED  # ../shared/data beside the checkout (tests and CI)
os.environ.setdefault("CONCRETE_EXT_OFFLINE", "1")  # never reach the network from the tests


@pytest.fixture(autouse=True)
def _one_thread():
    """The zoo tests run tiny networks: one thread is fastest, and immune to busy machines (idle
    OpenMP threads spinning on shared cores slow small ops tenfold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_fused_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*relaxed_kl_sample evaluates log_p.*")
        yield
