"""Which implementation serves a call: the compiled kernels, Triton, or the reference.

Default: CPU tensors use the compiled CPU kernels; CUDA tensors the compiled CUDA kernels, else
Triton. ``CONCRETE_EXT_BACKEND=cuda|triton|cpu|reference`` or ``with concrete_ext.backend(name):``
(which wins over the variable) requests one; a request that cannot be met raises with every reason.
``concrete_ext.backends()`` lists each backend with what it can serve and why not.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Dict, List, Optional

import torch

from . import _ops

BACKENDS = ("cuda", "triton", "cpu", "reference")
ENV = "CONCRETE_EXT_BACKEND"

_requested: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "concrete_ext_backend", default=None)


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def backend(name: Optional[str]):
    """Use backend `name` for the ops called inside the block (None: the default choice)."""
    token = _requested.set(None if name is None else _check_name(name))
    try:
        yield
    finally:
        _requested.reset(token)


def requested() -> Optional[str]:
    name = _requested.get()
    if name is not None:
        return name
    env = os.environ.get(ENV, "").strip().lower()
    return _check_name(env) if env else None


def _triton_reasons() -> List[str]:
    from . import _triton

    return _triton.unavailable_reasons()


def not_supported_reasons(name: str, device: torch.device, op_name: str = "") -> List[str]:
    """Why backend `name` cannot serve op `op_name` on `device` (empty: it can)."""
    reasons = []
    if name == "reference":
        return reasons
    if name in ("cpu", "cuda"):
        if device.type != name:
            reasons.append(f"the {name} backend runs {name} tensors, these are on {device}")
        if not _ops.has_compiled(name):
            info = _ops.compiled_info()
            why = info.get("error") or f"this build of concrete_ext._C has no {name.upper()} kernels"
            reasons.append(f"compiled {name} kernels unavailable: {why}")
        return reasons
    if name == "triton":
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            reasons.append(f"Triton runs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), "
                           f"these are on {device}")
        reasons.extend(_triton_reasons())
        from . import _triton

        if op_name and not _triton.supports(op_name):
            reasons.append(f"no Triton kernel for {op_name}")
    return reasons


def select(op_name: str, device: torch.device) -> str:
    """The backend for one call of `op_name` on `device`."""
    name = requested()
    if name is not None:
        reasons = not_supported_reasons(name, device, op_name)
        if reasons:
            raise RuntimeError(f"concrete_ext backend {name!r} cannot run {op_name} on {device}: "
                               + "; ".join(reasons))
        return name
    order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpu", "reference")
    for candidate in order:
        if not not_supported_reasons(candidate, device, op_name):
            return candidate
    return "reference"


def backends() -> Dict[str, dict]:
    """Each backend: whether it is available on this machine, and the reasons when not."""
    cuda_dev = torch.device("cuda")
    out = {}
    for name in BACKENDS:
        dev = torch.device("cpu") if name in ("cpu", "reference") else cuda_dev
        reasons = not_supported_reasons(name, dev)
        if name in ("cuda", "triton") and not torch.cuda.is_available():
            reasons = reasons + ["no CUDA device is visible"]
        out[name] = {"available": not reasons, "reasons": reasons}
    return out
