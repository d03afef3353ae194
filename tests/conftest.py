"""Shared fixtures of the concrete_ext test suite; the helpers (inputs, tolerances, checks against
the float64 reference, backend parameters) are in the importable module concrete_ext.testing.

Conventions:

* Kernels are compared with ``concrete_ext.reference`` run in float64 on the same inputs and the
  same explicit ``seed``/``offset`` (tolerances: concrete_ext.testing).
* Every random test uses fixed seeds: nothing here is flaky and nothing is rerun.
* ``DEVICES`` holds "cuda" only when a GPU is visible; CUDA-only tests use ``requires_cuda`` and
  skip cleanly without one. Tests of the Triton kernels carry the ``triton`` marker and skip while
  Triton serves no op (or cannot run here).
"""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors through the interpreter, which must be
# switched on before anything imports triton (collection imports the kernels).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import concrete_ext  # noqa: E402,F401  (after TRITON_INTERPRET is decided)


def pytest_configure(config):
    for line in (
        "cuda: needs a CUDA device (skipped without one)",
        "triton: runs Triton kernels (through TRITON_INTERPRET=1 on CPU)",
        "slow: longer statistical tests (deselect with -m 'not slow')",
    ):
        config.addinivalue_line("markers", line)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small-tensor tests (idle OpenMP threads spinning on a
    busy shared machine slow small ops tenfold); use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_default_generator():
    """Restores the default CPU generator's state after a test that seeds it."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)
