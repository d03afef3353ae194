"""The op layer, generated from the op table (``_table.OPS``): schemas, fake kernels, autograd,
vmap rules, and the Python kernels; loads the compiled extension ``_C``.

Three namespaces hold the same ops, one per family of kernels:

* ``concrete_ext``: the compiled CPU and CUDA kernels (``TORCH_LIBRARY_IMPL`` in
  csrc/ops/register_*); when ``_C`` could not be built, the Python kernels serve its CPU key (and
  Triton its CUDA key);
* ``concrete_ext_triton``: the Triton kernels (``_triton``), random ops taking their seed as an
  int64 device tensor ``rng_state = [seed, offset]``;
* ``concrete_ext_python``: the Python kernels, built here from each row's reference forward and
  vjp formula (``_derivatives``), on every device.

Every op, forward or backward, gets its fake kernel (``_layout.make_output`` of the row's output
layouts), an autograd kernel (``_autograd``) and a vmap rule (``_vmap``), generated from its row:
nothing about an op is written per backend.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import _layout
from ._table import OPS, Op

NAMESPACE = "concrete_ext"
TRITON_NAMESPACE = "concrete_ext_triton"
PYTHON_NAMESPACE = "concrete_ext_python"
_RNG = {
    NAMESPACE: "int? seed, int offset, Generator? generator",
    PYTHON_NAMESPACE: "int? seed, int offset, Generator? generator",
    TRITON_NAMESPACE: "Tensor rng_state",
}


@dataclasses.dataclass(frozen=True)
class Arg:
    type: str
    name: str

    @property
    def tensor(self) -> bool:
        return self.type.startswith("Tensor")


def parse_args(args: str) -> Tuple[Arg, ...]:
    return tuple(Arg(*a.strip().rsplit(" ", 1)) for a in args.split(",") if a.strip())


@dataclasses.dataclass(frozen=True)
class Signature:
    """One op (forward or backward) of one namespace, as the generated code sees it."""

    namespace: str
    name: str
    args: Tuple[Arg, ...]  # including the random-number arguments
    returns: str
    outputs: Tuple[str, ...]  # output layouts
    row: Op  # the table row it comes from
    backward: bool = False

    @property
    def qualname(self) -> str:
        return f"{self.namespace}::{self.name}"

    @property
    def schema(self) -> str:
        return "(" + ", ".join(f"{a.type} {a.name}" for a in self.args) + ") -> " + self.returns

    @property
    def names(self) -> List[str]:
        return [a.name for a in self.args]

    @property
    def random(self) -> bool:
        return self.row.random and not self.backward

    @property
    def op(self):
        return getattr(getattr(torch.ops, self.namespace), self.name).default


def signatures(row: Op, namespace: str) -> Tuple[Signature, Optional[Signature]]:
    """(forward, backward or None) of a table row in one namespace."""
    args = row.args + (", " + _RNG[namespace] if row.random else "")
    fwd = Signature(namespace, row.name, parse_args(args), row.returns, row.outputs, row)
    bw = None
    if row.backward is not None:
        bw = Signature(
            namespace,
            row.name + "_backward",
            parse_args(row.backward.args),
            row.backward.returns,
            row.backward.outputs,
            row,
            backward=True,
        )
    return fwd, bw


def op(name: str, namespace: str = NAMESPACE):
    return getattr(getattr(torch.ops, namespace), name)


# ---- loading the compiled kernels ---------------------------------------------------------------
_C = None
C_IMPORT_ERROR: Optional[str] = None
try:
    from . import _C  # noqa: F401  (registers the CPU/CUDA kernels of `concrete_ext` on import)
except ImportError as e:  # pragma: no cover - exercised only without a build
    C_IMPORT_ERROR = f"{type(e).__name__}: {e}"

# Read once at import: the build does not change while the process runs, and a pybind call in the
# dispatch path (backend selection) would make torch.compile(fullgraph=True) graph-break.
_COMPILED_INFO: dict = (
    dict(_C.build_info())
    if _C is not None
    else {"cpu": False, "cuda": False, "error": C_IMPORT_ERROR}
)
_HAS_COMPILED = {
    "cpu": bool(_COMPILED_INFO.get("cpu", False)),
    "cuda": bool(_COMPILED_INFO.get("cuda", False)),
}


def has_kernel(op_name: str, device_type: str) -> bool:
    """Whether `concrete_ext::<op_name>` has a kernel for the device type (read once per pair: a
    dispatcher query in the call path would break torch.compile's graph)."""
    key = (op_name, device_type)
    found = _KERNELS_FOUND.get(key)
    if found is None:
        found = _KERNELS_FOUND[key] = torch._C._dispatch_has_kernel_for_dispatch_key(
            f"{NAMESPACE}::{op_name}", device_type.upper()
        )
    return found


_KERNELS_FOUND: Dict[Tuple[str, str], bool] = {}


def compiled_info() -> dict:
    """build_info() of _C, or a dict saying why it is missing."""
    return dict(_COMPILED_INFO)


def has_compiled(device_type: str) -> bool:
    return _HAS_COMPILED.get(device_type, False)


# ---- the Python kernels ---------------------------------------------------------------------------
_INTEGER_LAYOUTS = ("state", "index", "topk")


def _acc_args(sig: Signature, values: tuple) -> tuple:
    """16-bit floating tensors in float32 (the math type the kernels compute in). An op whose
    outputs are all integers (indices) gets its arguments as they are: its reference computes in
    the math type itself, after rounding what the kernels round in the logits' dtype."""
    if all(o.partition(":")[0] in _INTEGER_LAYOUTS for o in sig.outputs):
        return values
    return tuple(
        v.to(torch.float32)
        if isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and v.dtype in (torch.float16, torch.bfloat16)
        and a.name != "self"
        else v
        for a, v in zip(sig.args, values)
    )


def python_kernel(sig: Signature) -> Callable:
    """The Python kernel of `sig`: the row's reference forward (or vjp formula, for a backward op)
    on the arguments in their math type, its outputs cast back and laid out as the table says."""
    row = sig.row
    fn = row.vjp if sig.backward else row.reference
    names = sig.names

    def kernel(*values):
        args = dict(zip(names, values))
        if sig.backward:
            res = fn(*values)
        elif sig.random:
            *head, seed, offset, generator = _acc_args(sig, values)
            res = fn(*head, seed=seed, offset=offset, generator=generator)
        else:
            res = fn(*_acc_args(sig, values))
        res = res if isinstance(res, tuple) else (res,)
        outs = []
        for (
            spec,
            value,
        ) in zip(sig.outputs, res):
            if value is not None and spec.startswith(("rows", "batch", "like")):
                value = value.to(args[spec.partition(":")[2].partition("?")[0]].dtype)
            outs.append(_layout.into_layout(spec, args, value))
        return outs[0] if len(outs) == 1 else tuple(outs)

    kernel.__name__ = f"python_{sig.name}"
    return kernel


def fake_kernel(sig: Signature) -> Callable:
    names = sig.names

    def fake(*values):
        args = dict(zip(names, values))
        outs = tuple(_layout.make_output(spec, args) for spec in sig.outputs)
        return outs[0] if len(outs) == 1 else outs

    return fake


# ---- registration -----------------------------------------------------------------------------------
_LIBS: Dict[str, torch.library.Library] = {}
SIGNATURES: Dict[Tuple[str, str], Signature] = {}  # (namespace, op name) -> signature


def _library(namespace: str) -> torch.library.Library:
    if namespace not in _LIBS:
        _LIBS[namespace] = torch.library.Library(namespace, "DEF")
    return _LIBS[namespace]


def _define(sig: Signature) -> None:
    lib = _library(sig.namespace)
    tags = (torch.Tag.nondeterministic_seeded,) if sig.random else ()
    lib.define(sig.name + sig.schema, tags=tags)
    torch.library.register_fake(sig.qualname, fake_kernel(sig), lib=lib)
    SIGNATURES[(sig.namespace, sig.name)] = sig


def _namespaces_of(row: Op) -> Tuple[str, ...]:
    if row.composite:
        return (NAMESPACE,)
    return (NAMESPACE, TRITON_NAMESPACE, PYTHON_NAMESPACE)


for _row in OPS:
    for _ns in _namespaces_of(_row):
        for _sig in signatures(_row, _ns):
            if _sig is not None:
                _define(_sig)


def _register_python_kernels(namespace: str, rows, key: str) -> None:
    lib = _library(namespace)
    for row in rows:
        for sig in signatures(row, NAMESPACE):
            if sig is not None:
                lib.impl(sig.name, python_kernel(sig), key)


# The Python namespace and the composite rows of the compiled namespace run the Python kernels on
# every device; without _C they also serve the compiled namespace's CPU key.
_register_python_kernels(
    PYTHON_NAMESPACE, [r for r in OPS if not r.composite], "CompositeExplicitAutograd"
)
_register_python_kernels(NAMESPACE, [r for r in OPS if r.composite], "CompositeExplicitAutograd")
if _C is None:  # pragma: no cover - exercised only without a build
    _register_python_kernels(NAMESPACE, [r for r in OPS if not r.composite], "CPU")

from . import _autograd, _vmap  # noqa: E402  (they use the signatures defined above)

for (_ns, _name), _sig in SIGNATURES.items():  # read ahead of any traced call
    if _ns == NAMESPACE:
        has_kernel(_name, "cpu"), has_kernel(_name, "cuda")

for (_ns, _name), _sig in SIGNATURES.items():
    _library(_ns).impl(_name, _autograd.autograd_kernel(_sig), "Autograd")
    torch.library.register_vmap(_sig.qualname, _vmap.rule(_sig), lib=_library(_ns))


def register_triton_kernels(kernels: Dict[str, Callable]) -> None:
    """Called when ``concrete_ext._triton`` is imported: the Triton host functions serve
    `concrete_ext_triton` on every device Triton runs on (CUDA, or the CPU through
    TRITON_INTERPRET=1) and, when no compiled CUDA kernels were built, the CUDA key of
    `concrete_ext`."""
    from . import _triton

    lib = _library(TRITON_NAMESPACE)
    for name, fn in kernels.items():
        lib.impl(name, fn, "CompositeExplicitAutograd")
    if not has_compiled("cuda") and torch.cuda.is_available():
        for name in kernels:
            _library(NAMESPACE).impl(name, _triton.compiled_signature(name), "CUDA")
            _KERNELS_FOUND[(name, "cuda")] = True


if not has_compiled("cuda") and torch.cuda.is_available():
    try:
        from . import _triton  # noqa: F401  (registers the Triton kernels)
    except Exception:  # noqa: BLE001 - concrete_ext.backends() reports why Triton is unavailable
        pass
