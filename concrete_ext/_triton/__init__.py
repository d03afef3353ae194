"""Triton kernels for every op of concrete_ext.

HOST maps each op of the op table (``concrete_ext._table``) to its Triton host function, with the
signature of ``torch.ops.concrete_ext_triton.<name>``: the arguments of the compiled op, except that
a random op takes its seed as an int64 device tensor ``rng_state = [seed, offset]`` instead of
``(seed, offset, generator)``. The kernels live in one module per op family (noise, exp_concrete:
categorical samples, densities: categorical log-densities, relaxed_kl, binary_concrete, index:
the index samplers). Importing
this package registers them as the kernels of the ``concrete_ext_triton`` ops, whose schemas, fake
kernels, autograd and vmap rules come from the op table like every other namespace's. KERNELS maps
each op to ``torch.ops.concrete_ext_triton.<name>`` called with the arguments of
``torch.ops.concrete_ext.<name>`` (differentiable, like every op).

Triton runs CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set before triton was
imported (the tests do so).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

HOST: Dict[str, Callable] = {}
KERNELS: Dict[str, Callable] = {}
_IMPORT_ERROR: Optional[str] = None

try:
    import triton  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without triton
    _IMPORT_ERROR = f"triton is not importable ({e})"
else:
    try:
        from . import binary_concrete, densities, exp_concrete, index, noise, relaxed_kl

        for _module in (noise, exp_concrete, densities, relaxed_kl, binary_concrete, index):
            HOST.update(_module.HOST)
    except Exception as e:  # pragma: no cover - a Triton / torch version without an API we use
        _IMPORT_ERROR = f"the Triton kernels failed to load ({type(e).__name__}: {e})"
        HOST.clear()


def unavailable_reasons() -> List[str]:
    """Why no Triton kernel can run here (empty when they can)."""
    return [_IMPORT_ERROR] if _IMPORT_ERROR else []


def supports(op_name: str) -> bool:
    return op_name in HOST


def compiled_signature(name: str) -> Callable:
    """``torch.ops.concrete_ext_triton.<name>`` with the arguments of ``torch.ops.concrete_ext.<name>``:
    a random op's (seed, offset, generator) become the rng_state it takes."""
    import torch

    from .._ops import NAMESPACE, SIGNATURES, TRITON_NAMESPACE
    from .common import rng_state

    op = getattr(torch.ops.concrete_ext_triton, name).default
    if not SIGNATURES[(NAMESPACE, name)].random:
        return op
    assert SIGNATURES[(TRITON_NAMESPACE, name)].names[-1] == "rng_state"

    def with_rng_state(*args):
        *head, seed, offset, generator = args
        like = next(a for a in head if isinstance(a, torch.Tensor))
        return op(*head, rng_state(seed, offset, generator, like.device))

    with_rng_state.__name__ = f"triton_{name}"
    return with_rng_state


def interpreted() -> bool:
    """Whether the kernels were defined for the Triton interpreter (TRITON_INTERPRET=1)."""
    if not HOST:
        return False
    from .common import is_interpreted
    from .noise import _noise_kernel

    return is_interpreted(_noise_kernel)


if HOST:
    from .._ops import register_triton_kernels

    register_triton_kernels(HOST)
    KERNELS.update((name, compiled_signature(name)) for name in HOST)
    from .. import _backend

    _backend.make_impls(("triton",))
