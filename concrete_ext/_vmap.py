"""vmap rules of every op, generated from its table row (``torch.library.register_vmap``).

The rules treat the vmapped dimension as one more batch dimension of the op ("fold"): it is moved
to the front of every tensor, tensors that are not batched are expanded to it (their values are
shared), the temperature is aligned so that it broadcasts over the new batch, and ``dim`` is
shifted. The op then runs once. Which tensors play which part follows from the argument names:
``*temperature`` broadcasts to the batch shape (row ops) or the full shape (elementwise ops), a
``grad*`` argument is shaped like the forward output it is the gradient of, ``rng_state`` is the
int64 [seed, offset] of a random call, every other tensor is shaped like the logits.

Random ops follow torch's randomness modes. With ``randomness="error"`` they raise (unless an
explicit ``seed=`` makes them deterministic). ``"different"`` folds, so every member gets its own
noise. ``"same"`` gives every member the noise of one draw: the op runs once per member with one
explicit seed (members are numbered alike, so they draw alike). A call with an explicit seed also
runs once per member, so that it equals the loop over members bit for bit. An op that reads a
random call's ``rng_state`` (the straight-through backward, the Triton random ops) runs once per
member with that member's state; the straight-through forward in ``"different"`` mode draws one
state per member for that reason.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch._C._functorch import (
    TransformType,
    _add_batch_dim,
    is_batchedtensor,
    maybe_get_level,
    peek_interpreter_stack,
)
from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter

from . import reference as ref
from ._ops import NAMESPACE, Signature
from ._table import ROW

RANDOMNESS_ERROR = (
    "vmap: called random operation while in randomness error mode. Please either use the 'same' "
    "or 'different' randomness flags on vmap or perform the randomness operation out of vmap"
)


def _role(sig: Signature, name: str) -> str:
    if name.endswith("temperature"):
        return "temperature"
    if name == "rng_state":
        return "state"
    if name.startswith("grad"):
        index = {"grad": 0, "grad_sample": 0, "grad_log_q": 1, "grad_log_p": 2}[name]
        layout = sig.row.outputs[index].partition(":")[0]
        return "batch" if layout == "batch" else "full"
    return "full"


def _logical_ndim(t: Tensor, bdim: Optional[int]) -> int:
    return t.dim() - (bdim is not None)


class _Call:
    """The arguments of one batched call, by position, with their batch dims."""

    def __init__(self, sig: Signature, info, in_dims: Sequence[Optional[int]], args: tuple):
        self.sig, self.size, self.args, self.dims = sig, info.batch_size, list(args), list(in_dims)
        self.roles = [_role(sig, a.name) if a.tensor else a.name for a in sig.args]

    def batched(self, roles=("full", "batch", "temperature", "state")) -> bool:
        return any(d is not None and r in roles for d, r in zip(self.dims, self.roles))

    def batch_ndim(self) -> int:
        """The logical ndim of the op's batch (of `dim`'s complement, for row ops)."""
        for a, d, r in zip(self.args, self.dims, self.roles):
            if r == "full" and isinstance(a, Tensor):
                return _logical_ndim(a, d) - (self.sig.row.kind == ROW)
        return 0

    def folded(self) -> List[object]:
        """The arguments with the vmapped dim folded into the batch (see the module docstring)."""
        out, nb = [], self.batch_ndim()
        for a, d, r in zip(self.args, self.dims, self.roles):
            if not isinstance(a, Tensor):
                if r == "dim":
                    a = a + 1 if a >= 0 else a
                out.append(a)
                continue
            if r in ("full", "batch"):
                a = a.movedim(d, 0) if d is not None else a.expand(self.size, *a.shape)
            elif r == "temperature" and d is not None:
                a = a.movedim(d, 0)
                a = a.reshape((self.size,) + (1,) * (nb - a.dim() + 1) + tuple(a.shape[1:]))
            out.append(a)
        return out

    def member(self, b: int) -> List[object]:
        """The arguments of member b (unbatched tensors as they are)."""
        return [
            a.select(d, b) if isinstance(a, Tensor) and d is not None else a
            for a, d in zip(self.args, self.dims)
        ]


def _stack(results: List[object], shared: Sequence[bool]) -> Tuple[object, object]:
    """Stack per-member outputs along a new dim 0; outputs flagged `shared` are the same for every
    member and are returned once, unbatched."""
    first = results[0]
    if isinstance(first, tuple):
        outs = tuple(
            first[i] if shared[i] else torch.stack([r[i] for r in results])
            for i in range(len(first))
        )
        return outs, tuple(None if s else 0 for s in shared)
    return (first, None) if shared[0] else (torch.stack(results), 0)


def _out_dims(sig: Signature, value) -> object:
    n = len(sig.outputs)
    return 0 if n == 1 else (0,) * n


def _loop(call: _Call, override=None, shared_state: bool = True):
    """Run the op once per member; `override(b, args)` may change a member's arguments."""
    results = []
    for b in range(call.size):
        args = call.member(b)
        if override is not None:
            args = override(b, args)
        results.append(call.sig.op(*args))
    shared = [s.startswith("state") and shared_state for s in call.sig.outputs]
    return _stack(results, shared)


def _draw_seed(generator, like: Tensor) -> int:
    """One fresh seed from `generator` (default: the device's), as a signed int64."""
    s, _ = ref.resolve_seed(None, 0, generator, like.device)
    return s - 2**64 if s >= 2**63 else s


def batch_for_randomness(sig: Signature, args: tuple) -> tuple:
    """The arguments of a random op called inside vmap, made to follow the randomness mode when
    none of them is batched at the current vmap level (where no rule would run): "error" raises,
    "different" batches the first logits-shaped tensor (expanded, so the rule folds it and every
    member draws its own noise), "same" and an explicit seed need nothing."""
    if peek_interpreter_stack() is None:
        return args
    interp = retrieve_current_functorch_interpreter()
    if interp.key() != TransformType.Vmap:
        return args
    level = interp.level()
    if any(
        isinstance(a, Tensor) and is_batchedtensor(a) and maybe_get_level(a) == level for a in args
    ):
        return args
    names = sig.names
    if args[names.index("seed")] is not None or interp.randomness() == "same":
        return args
    if interp.randomness() == "error":
        raise RuntimeError(RANDOMNESS_ERROR)
    out = list(args)
    i = next(i for i, a in enumerate(sig.args) if a.tensor and _role(sig, a.name) == "full")
    out[i] = _add_batch_dim(args[i].expand(interp.batch_size(), *args[i].shape), 0, level)
    return tuple(out)


def rule(sig: Signature):
    """The vmap rule of one op (see the module docstring)."""
    names = sig.names
    seeded = sig.random and sig.namespace != "concrete_ext_triton"
    reads_state = "rng_state" in names

    def fold(call: _Call):
        out = sig.op(*call.folded())
        return out, _out_dims(sig, out)

    def vmap_rule(info, in_dims, *args):
        call = _Call(sig, info, in_dims, args)
        if reads_state:  # one call per member, each with its own (or the shared) state
            if not call.batched():
                out = sig.op(*args)
                return out, (None,) * len(sig.outputs) if len(sig.outputs) > 1 else None
            state_batched = in_dims[names.index("rng_state")] is not None
            return _loop(call, shared_state=not state_batched)
        if not seeded:
            return fold(call)
        i_seed = names.index("seed")
        seed, generator = args[i_seed], args[names.index("generator")]
        if seed is None and info.randomness == "error":
            raise RuntimeError(RANDOMNESS_ERROR)
        if seed is not None or info.randomness == "same":
            if not call.batched():
                out = sig.op(*args)
                return out, (None,) * len(sig.outputs) if len(sig.outputs) > 1 else None
            if seed is None:
                like = next(a for a in args if isinstance(a, Tensor))
                seed = _draw_seed(generator, like)

            def with_seed(b, member_args):
                member_args[i_seed] = seed
                member_args[names.index("generator")] = None
                return member_args

            return _loop(call, with_seed)
        # "different": independent noise for every member
        if any(s.startswith("state") for s in sig.outputs):
            return _loop(call, shared_state=False)
        return fold(call)

    vmap_rule.__name__ = f"vmap_{sig.name}"
    return vmap_rule


__all__ = ["rule", "RANDOMNESS_ERROR", "NAMESPACE"]
