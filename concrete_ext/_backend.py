"""Which implementation serves a call: the compiled kernels, Triton, the Python kernels, or the
reference.

Default: CPU tensors use the compiled CPU kernels, else the Python kernels; CUDA tensors the
compiled CUDA kernels, else Triton, else the Python kernels. ``CONCRETE_EXT_BACKEND=cuda|triton|
cpu|python|reference`` (read when concrete_ext is imported) or ``with concrete_ext.backend(name):``
(which wins over the variable) requests one; a request that cannot be met raises with every reason. ``concrete_ext.backends()``
lists each backend with what it can serve and why not.

``cpu``, ``cuda``, ``triton`` and ``python`` run the ops of the op layer (``_ops``): their three
namespaces share the schemas, autograd, vmap rules and layouts generated from the op table.
``reference`` calls ``concrete_ext.reference`` directly (composite PyTorch, the tests' ground truth).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Dict, List, Optional, Tuple

import torch

from . import _ops

BACKENDS = ("cuda", "triton", "cpu", "python", "reference")
ENV = "CONCRETE_EXT_BACKEND"

_requested: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "concrete_ext_backend", default=None
)


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


def _from_environment() -> Optional[str]:
    env = os.environ.get(ENV, "").strip().lower()
    return _check_name(env) if env else None


# Read once, when concrete_ext is imported (an environment lookup on every call would cost more
# than a small op).
_ENV_CHOICE: Optional[str] = _from_environment()


def requested() -> Optional[str]:
    """The backend asked for by ``backend(...)``, else by CONCRETE_EXT_BACKEND (None: default)."""
    name = _requested.get()
    return name if name is not None else _ENV_CHOICE


def _triton_reasons() -> List[str]:
    from . import _triton

    return _triton.unavailable_reasons()


def not_supported_reasons(name: str, device: torch.device, op_name: str = "") -> List[str]:
    """Why backend `name` cannot serve op `op_name` on `device` (empty: it can)."""
    reasons = []
    if name in ("reference", "python"):
        return reasons
    if name in ("cpu", "cuda"):
        if device.type != name:
            reasons.append(f"the {name} backend runs {name} tensors, these are on {device}")
        if not _ops.has_compiled(name):
            info = _ops.compiled_info()
            why = (
                info.get("error") or f"this build of concrete_ext._C has no {name.upper()} kernels"
            )
            reasons.append(f"compiled {name} kernels unavailable: {why}")
        elif op_name and not _ops.has_kernel(op_name, name):
            reasons.append(f"this build of concrete_ext._C has no {name} kernel for {op_name}")
        return reasons
    if name == "triton":
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            reasons.append(
                f"Triton runs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), "
                f"these are on {device}"
            )
        reasons.extend(_triton_reasons())
        from . import _triton

        if op_name and not _triton.supports(op_name):
            reasons.append(f"no Triton kernel for {op_name}")
    return reasons


_DEFAULT: Dict[Tuple[str, str], str] = {}


def select(op_name: str, device: torch.device) -> str:
    """The backend for one call of `op_name` on `device`."""
    name = requested()
    if name is not None:
        reasons = not_supported_reasons(name, device, op_name)
        if reasons:
            raise RuntimeError(
                f"concrete_ext backend {name!r} cannot run {op_name} on {device}: "
                + "; ".join(reasons)
            )
        return name
    key = (op_name, device.type)
    choice = _DEFAULT.get(key)
    if choice is not None:
        return choice
    order = ("cuda", "triton", "python") if device.type == "cuda" else ("cpu", "python")
    choice = next(c for c in order if not not_supported_reasons(c, device, op_name))
    _DEFAULT[key] = choice
    return choice


_IMPLS: Dict[Tuple[str, str], "object"] = {}


def impl(op_name: str, name: str):
    """The _autograd.Impl of `op_name` on backend `name` (not "reference"). They are built ahead
    (here for the compiled and Python kernels, when Triton loads for Triton), not while
    torch.compile traces a first call."""
    if name == "cuda":  # one Impl per namespace: the compiled one serves both devices
        name = "cpu"
    found = _IMPLS.get((op_name, name))
    return found if found is not None else _make_impl(op_name, name)


def _make_impl(op_name: str, name: str):
    key = (op_name, name)
    from ._autograd import Impl

    sig = _ops.SIGNATURES[(_ops.NAMESPACE, op_name)]
    backward_name = op_name + "_backward"
    if name == "triton":
        from . import _triton

        fn = _triton.compiled_signature(op_name)
        backward = _ops.SIGNATURES.get((_ops.TRITON_NAMESPACE, backward_name))
        found = Impl(sig, fn, fn, backward.op if backward else None)
    else:
        ns = _ops.PYTHON_NAMESPACE if name == "python" and not sig.row.composite else _ops.NAMESPACE
        fwd = _ops.SIGNATURES[(ns, op_name)]
        backward = _ops.SIGNATURES.get((ns, backward_name))
        found = Impl(fwd, fwd.op, fwd.op, backward.op if backward else None)
    _IMPLS[key] = found
    return found


def make_impls(names=("cpu", "python")) -> None:
    for op_name in {
        n for (ns, n), sig in _ops.SIGNATURES.items() if ns == _ops.NAMESPACE and not sig.backward
    }:
        for name in names:
            if name != "triton" or not _ops.SIGNATURES[(_ops.NAMESPACE, op_name)].row.composite:
                _make_impl(op_name, name)


def backends() -> Dict[str, dict]:
    """Each backend: whether it is available on this machine, and the reasons when not."""
    cuda_dev = torch.device("cuda")
    out = {}
    for name in BACKENDS:
        dev = torch.device("cpu") if name in ("cpu", "reference", "python") else cuda_dev
        reasons = not_supported_reasons(name, dev)
        if name in ("cuda", "triton") and not torch.cuda.is_available():
            reasons = reasons + ["no CUDA device is visible"]
        out[name] = {"available": not reasons, "reasons": reasons}
    return out


make_impls(("cpu", "python"))  # "cuda" shares the compiled namespace's Impl: the device picks
