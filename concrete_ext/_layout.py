"""The output layout rule of every op, in one place.

Row ops see a tensor as (rows, n) with the category dim moved last and allocate their row outputs
contiguous in that moved layout, then view them in the caller's dim order (the compiled kernels do
the same in csrc/include/concrete_ext/host.h), so an output is one contiguous block however `dim`
is chosen. The fake kernels, the Python kernels and the Triton host code all allocate through
``make_output`` from the layouts named in the op table (``_table.LAYOUTS``), so fake and real
strides agree on every backend.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The math type of an op on `dtype`: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def wrap_dim(dim: int, ndim: int) -> int:
    if ndim < 1:
        raise ValueError("logits must have at least one dimension (the categories)")
    if not -ndim <= dim < ndim:
        raise IndexError(f"dim {dim} is out of range for a tensor with {ndim} dimensions")
    return dim % ndim


def batch_shape(t: Tensor, dim: int) -> List[int]:
    d = wrap_dim(dim, t.dim())
    return [s for i, s in enumerate(t.shape) if i != d]


def empty_rows_like(t: Tensor, dim: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """Empty tensor shaped like t, contiguous with `dim` moved last, viewed in t's dim order."""
    d = wrap_dim(dim, t.dim())
    shape = list(t.shape)
    n = shape.pop(d)
    return t.new_empty(shape + [n], dtype=dtype or t.dtype).movedim(-1, d)


def _flag(flag: str, args: Mapping[str, object]) -> bool:
    if flag.endswith("]"):
        name, index = flag[:-1].split("[")
        return bool(args[name][int(index)])
    return bool(args[flag])


def make_output(spec: str, args: Mapping[str, object]) -> Tensor:
    """An empty output of layout `spec` ("<layout>:<input>[?<flag>]", see _table.LAYOUTS) for a
    call with arguments `args` (by name). An output its flag does not ask for is an empty tensor
    of its own: outputs never alias."""
    layout, _, rest = spec.partition(":")
    name, _, flag = rest.partition("?")
    t = args[name]
    acc = acc_dtype(t.dtype)
    if flag and not _flag(flag, args):
        return t.new_empty([0], dtype=acc if layout in ("trows", "telems") else t.dtype)
    if layout == "rows":
        return empty_rows_like(t, args["dim"])
    if layout == "batch":
        return t.new_empty(batch_shape(t, args["dim"]))
    if layout == "trows":
        return t.new_empty(batch_shape(t, args["dim"]), dtype=acc)
    if layout == "like":
        return torch.empty_like(t, memory_format=torch.contiguous_format)
    if layout == "telems":
        return t.new_empty(t.shape, dtype=acc)
    if layout == "state":
        return t.new_empty([2], dtype=torch.int64)
    if layout == "index":
        return t.new_empty(batch_shape(t, args["dim"]), dtype=torch.int64)
    if layout == "topk":
        return t.new_empty(batch_shape(t, args["dim"]) + [args["k"]], dtype=torch.int64)
    if layout == "noise":
        return t.new_empty(t.shape, dtype=torch.int64 if args["kind"] == "bits" else t.dtype)
    raise ValueError(f"unknown output layout {layout!r}")


def into_layout(spec: str, args: Mapping[str, object], value: Optional[Tensor]) -> Tensor:
    """`value` copied into an output of layout `spec` (None for an output not asked for)."""
    out = make_output(spec, args)
    if value is not None and out.numel():
        out.copy_(value)
    return out
