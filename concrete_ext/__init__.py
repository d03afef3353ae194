"""concrete_ext: fused kernels for the Concrete / Gumbel-Softmax distribution.

Maddison, Mnih & Teh, "The Concrete Distribution: A Continuous Relaxation of Discrete Random
Variables", ICLR 2017. See README.md for the API in brief and docs/ARCHITECTURE.md for the design.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import (  # noqa: E402
    _ops,  # noqa: F401  (defines the ops and loads the compiled kernels)
    distributions,
    functional,
    reference,
)
from ._backend import backend, backends
from .functional import (
    binary_concrete_log_prob,
    binary_concrete_sample,
    categorical_sample,
    concrete_log_prob,
    concrete_sample,
    exp_concrete_log_prob,
    exp_concrete_sample,
    gumbel_max_sample,
    gumbel_softmax,
    gumbel_top_k,
    logit_binary_concrete_log_prob,
    logit_binary_concrete_sample,
    noise,
    relaxed_kl_sample,
)


def build_info() -> dict:
    """What the compiled extension contains: versions, CUDA archs, which backends were built."""
    info = _ops.compiled_info()
    info.setdefault("package_version", __version__)
    return info


__all__ = [
    "__version__",
    "backend",
    "backends",
    "build_info",
    "binary_concrete_log_prob",
    "categorical_sample",
    "binary_concrete_sample",
    "concrete_log_prob",
    "concrete_sample",
    "distributions",
    "exp_concrete_log_prob",
    "exp_concrete_sample",
    "functional",
    "gumbel_max_sample",
    "gumbel_softmax",
    "gumbel_top_k",
    "logit_binary_concrete_log_prob",
    "logit_binary_concrete_sample",
    "noise",
    "reference",
    "relaxed_kl_sample",
]
