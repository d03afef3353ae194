"""Triton kernels for every op of concrete_ext (the issue "Triton kernels for every op").

KERNELS maps each op name of concrete_ext._ops.SCHEMAS to a callable with the signature of
``torch.ops.concrete_ext.<name>``. The kernels live in one module per op family (noise,
exp_concrete: categorical samples, densities: categorical log-densities and the relaxed KL,
binary_concrete), and each op is a ``torch.library.triton_op`` in the namespace
``concrete_ext_triton`` (differentiable through register_autograd, its backward calling the Triton
backward kernels; traceable by torch.compile(fullgraph=True), which sees the kernels through
``wrap_triton``; the op's own implementation doubles as its fake kernel). The random ops take the
seed as an int64 device tensor [seed, offset] instead of (seed, offset, generator): the callables
in KERNELS build it (common.rng_state) and keep the public signature.

Triton runs CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set before triton was
imported (the tests do so).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

KERNELS: Dict[str, Callable] = {}
_IMPORT_ERROR: Optional[str] = None

try:
    import triton  # noqa: F401
    from torch.library import triton_op  # noqa: F401  (torch >= 2.6)
except ImportError as e:  # pragma: no cover - exercised only without triton
    _IMPORT_ERROR = f"triton is not importable ({e})"
else:
    try:
        from . import binary_concrete, densities, exp_concrete, noise, relaxed_kl

        for _module in (noise, exp_concrete, densities, relaxed_kl, binary_concrete):
            KERNELS.update(_module.KERNELS)
    except Exception as e:  # pragma: no cover - a Triton / torch version without an API we use
        _IMPORT_ERROR = f"the Triton kernels failed to load ({type(e).__name__}: {e})"
        KERNELS.clear()


def unavailable_reasons() -> List[str]:
    """Why no Triton kernel can run here (empty when they can)."""
    return [_IMPORT_ERROR] if _IMPORT_ERROR else []


def supports(op_name: str) -> bool:
    return op_name in KERNELS


def register_cuda_fallback() -> List[str]:
    """Registers the Triton kernels as the CUDA kernels of the ``concrete_ext`` ops (forward and
    backward ops alike, so the ops' own autograd runs the Triton backward kernels), for a build of
    ``_C`` without CUDA kernels. Returns the names registered; raises if Triton is unavailable."""
    import torch

    from .. import _ops

    if _IMPORT_ERROR:
        raise RuntimeError(_IMPORT_ERROR)
    for name, fn in KERNELS.items():
        torch.library.impl(f"{_ops.NAMESPACE}::{name}", "CUDA", lib=_ops._lib)(fn)
    return sorted(KERNELS)


def interpreted() -> bool:
    """Whether the kernels were defined for the Triton interpreter (TRITON_INTERPRET=1)."""
    if not KERNELS:
        return False
    from .common import is_interpreted
    from .noise import _noise_kernel

    return is_interpreted(_noise_kernel)
