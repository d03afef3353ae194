"""Autograd of every op, generated from its table row, and the call path of the public functions.

For a differentiable op, one ``Derivatives`` object holds what is saved (the inputs and outputs
its backward op reads, by name), the backward (the fused backward kernel, or the row's composite
vjp formula when a derivative of the backward is wanted) and the forward-mode rule (the row's jvp
formula). From it come three autograd entry points that share that code:

* ``Eager``: a classic ``autograd.Function`` (cheapest to call), for eager autograd;
* ``Transform``: a ``torch.func``-aware ``autograd.Function`` (``setup_context``, ``jvp``,
  ``generate_vmap_rule``), for ``torch.func`` transforms and forward-mode AD;
* the op's own ``Autograd`` kernel, for ``torch.ops.<namespace>.<op>`` called directly and for
  ``torch.compile`` / ``torch.export`` (which trace the op through it).

``call`` is how a public function runs an op: the op itself while compiling, ``Transform`` under
a transform, ``Eager`` when a gradient is wanted, and otherwise the kernel below the autograd
layer (no autograd cost at all for inference calls).

Second and higher derivatives: when the backward runs with grad mode on (``create_graph=True``,
``torch.func``), it computes the vjp formula in differentiable PyTorch from the saved tensors,
which stay connected to the graph (a saved output through this op's own backward), so every
derivative of every order is exact; the first-order backward of ordinary training uses the fused
kernel.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor, peek_interpreter_stack

from . import _vmap
from ._ops import Signature, parse_args


def reduce_temperature_grad(grad: Optional[Tensor], temperature: Tensor) -> Optional[Tensor]:
    """Sum a per-row (or per-element) temperature gradient down to the temperature's shape."""
    if grad is None:
        return None
    if grad.shape != temperature.shape:
        if temperature.numel() == 1:
            grad = grad.sum().reshape(temperature.shape)
        else:
            grad = grad.sum_to_size(temperature.shape)
    return grad.to(device=temperature.device, dtype=temperature.dtype)


def without_undefined_rows(grad: Optional[Tensor], sample: Tensor, dim: int) -> Optional[Tensor]:
    """A per-row temperature gradient with 0 for the rows that have no distribution (all logits
    -inf: their sample is NaN), which would otherwise make a shared temperature's gradient NaN
    even when their outputs are not used."""
    if grad is None or grad.numel() == 0 or sample.numel() == 0:
        return grad
    undefined = sample.select(dim, 0).isnan().to(grad.device)
    return torch.where(undefined, torch.zeros((), dtype=grad.dtype, device=grad.device), grad)


def transforms_active() -> bool:
    """A torch.func transform or a forward-mode AD level is active."""
    return peek_interpreter_stack() is not None or fwAD._current_level >= 0


def _wrapped_or_dual(tensors: Sequence[Tensor]) -> bool:
    for t in tensors:
        if is_functorch_wrapped_tensor(t):
            return True
    if fwAD._current_level >= 0:
        return any(fwAD.unpack_dual(t).tangent is not None for t in tensors)
    return False


_below_autograd = torch._C._AutoDispatchBelowAutograd


class Derivatives:
    """Setup, backward and jvp of one forward op of one namespace (see the module docstring).

    `forward` is the callable the Functions run (arguments of `sig`); `backward_op` is the fused
    backward kernel of the namespace."""

    def __init__(self, sig: Signature, forward, backward_op):
        row = sig.row
        names = sig.names
        self.forward = forward
        bw = row.backward
        self.row = row
        self.names = list(names)
        self.pos = {n: i for i, n in enumerate(self.names)}
        self.grads = row.grads
        self.grad_pos = [self.pos[n] for n in row.grads]
        self.backward_op = backward_op
        bw_args = [a.name for a in parse_args(bw.args)]
        tensor_inputs = {a.name for a in sig.args if a.tensor}
        saved_inputs = [n for n in bw_args if n not in bw.bind and n in tensor_inputs]
        saved_outputs = sorted({int(b[3:]) for b in bw.bind.values() if b.startswith("out")})
        extras = [n for n in bw_args if n not in bw.bind and n not in tensor_inputs]
        saved_names = saved_inputs + [f"out{i}" for i in saved_outputs]
        # What setup_context keeps: positions of the saved inputs, of the saved outputs, and of
        # the non-tensor inputs the backward reads (dim).
        self.save_in = tuple(self.pos[n] for n in saved_inputs)
        self.save_out = tuple(saved_outputs)
        self.extra_pos = tuple(self.pos[n] for n in extras)
        # How the backward builds the backward op's arguments, one (kind, key) per argument:
        # a saved tensor, a non-tensor input, the gradient of an output (required or optional),
        # whether an input needs its gradient, or the mask of all of them.
        plan = []
        for n in bw_args:
            b = bw.bind.get(n)
            if b is None:
                plan.append(
                    ("saved", saved_names.index(n))
                    if n in saved_names
                    else ("extra", extras.index(n))
                )
            elif b.startswith("grad?"):
                plan.append(("grad?", int(b[5:])))
            elif b.startswith("grad"):
                plan.append(("grad", int(b[4:])))
            elif b.startswith("out"):
                plan.append(("saved", saved_names.index(b)))
            elif b.startswith("needs:"):
                plan.append(("needs", row.grads.index(b[6:])))
            else:
                plan.append(("mask", None))
        self.plan = tuple(plan)
        # How each gradient is finished: (its input's position, the saved temperature's index or
        # None, whether undefined rows are zeroed).
        self.finish = tuple(
            (
                self.pos[n],
                saved_names.index(n) if n.endswith("temperature") else None,
                row.undefined_rows and n.endswith("temperature"),
            )
            for n in row.grads
        )
        self.out0 = saved_names.index("out0") if "out0" in saved_names else None
        self.dim_extra = extras.index("dim") if "dim" in extras else None
        self.tensor_pos = tuple(i for i, a in enumerate(sig.args) if a.tensor)
        self.other_pos = tuple(i for i, a in enumerate(sig.args) if not a.tensor)
        self.n_inputs = len(self.names)
        self.n_outputs = len(row.outputs)
        self.state_outputs = tuple(i for i, s in enumerate(row.outputs) if s.startswith("state"))
        self.make_functions()

    # ---- shared by every entry point ---------------------------------------------------------
    def setup_context(self, ctx, inputs, output, forward_ad: bool = False):
        outs = output if type(output) is tuple else (output,)
        ctx.save_for_backward(*[inputs[i] for i in self.save_in], *[outs[i] for i in self.save_out])
        ctx.extras = tuple(inputs[i] for i in self.extra_pos)
        if self.state_outputs:
            ctx.mark_non_differentiable(*[outs[i] for i in self.state_outputs])
        ctx.set_materialize_grads(False)
        if forward_ad:
            ctx.save_for_forward(*[inputs[i] for i in self.tensor_pos], *outs)
            ctx.jvp_extras = tuple(inputs[i] for i in self.other_pos)

    def backward(self, ctx, *grads):
        needs = ctx.needs_input_grad
        need = [bool(needs[i]) for i in self.grad_pos]
        if not any(need):
            return (None,) * len(needs)
        saved = ctx.saved_tensors
        extras = ctx.extras
        args = []
        for kind, key in self.plan:
            if kind == "saved":
                args.append(saved[key])
            elif kind == "extra":
                args.append(extras[key])
            elif kind == "grad":
                g = grads[key]
                if g is None:  # the output got no gradient: neither do the inputs
                    return (None,) * len(needs)
                args.append(g)
            elif kind == "grad?":
                args.append(grads[key])
            elif kind == "needs":
                args.append(need[key])
            else:
                args.append(need)
        if torch.compiler.is_compiling():
            res = self.backward_op(*args)
        elif torch.is_grad_enabled():
            res = self.row.vjp(*args)  # differentiable: a derivative of this backward is wanted
        else:
            with _below_autograd():
                res = self.backward_op(*args)
        result: List[Optional[Tensor]] = [None] * len(needs)
        for k, (pos, temperature, undefined_rows) in enumerate(self.finish):
            if not need[k]:
                continue
            g = res[k]
            if temperature is not None:
                if undefined_rows:
                    g = without_undefined_rows(g, saved[self.out0], extras[self.dim_extra])
                g = reduce_temperature_grad(g, saved[temperature])
            result[pos] = g
        return tuple(result)

    def jvp(self, ctx, *tangents):
        values = ctx.saved_tensors
        k = len(self.tensor_pos)
        inputs = {self.names[i]: v for i, v in zip(self.tensor_pos, values[:k])}
        inputs.update((self.names[i], v) for i, v in zip(self.other_pos, ctx.jvp_extras))
        outputs = tuple(values[k:])
        tans = {n: tangents[self.pos[n]] for n in self.grads}
        res = self.row.jvp(inputs, outputs, tans)
        return res[0] if self.n_outputs == 1 else tuple(res)

    # ---- the two Function classes ------------------------------------------------------------
    def make_functions(self):
        d = self

        def eager_forward(ctx, *args):
            with _below_autograd():
                out = d.forward(*args)
            d.setup_context(ctx, args, out)
            return out

        self.Eager = type(
            f"{self.row.name}_eager",
            (torch.autograd.Function,),
            {
                "forward": staticmethod(eager_forward),
                "backward": staticmethod(self.backward),
            },
        )
        self.Transform = type(
            f"{self.row.name}_transform",
            (torch.autograd.Function,),
            {
                "generate_vmap_rule": True,
                "forward": staticmethod(lambda *args: d.forward(*args)),
                "setup_context": staticmethod(
                    lambda ctx, inputs, output: d.setup_context(ctx, inputs, output, True)
                ),
                "backward": staticmethod(self.backward),
                "jvp": staticmethod(self.jvp),
            },
        )


def _direct_call_error(sig: Signature) -> RuntimeError:
    return RuntimeError(
        f"torch.ops.{sig.namespace}.{sig.name} was called directly under a torch.func transform "
        f"or forward-mode AD, which the op's autograd kernel cannot serve (torch.library autograd "
        f"does not support them): call the public function concrete_ext.{sig.row.name} (or a "
        f"concrete_ext.distributions class) instead, which supports every transform"
    )


def autograd_kernel(sig: Signature):
    """The `Autograd` dispatch kernel of one op (see the module docstring)."""
    from . import _ops

    op = sig.op
    if not sig.backward and not sig.row.grads:

        def nondifferentiable(*args):
            with _below_autograd():
                return op(*args)

        return nondifferentiable

    if sig.backward:
        # A backward kernel computes; differentiating its outputs raises (only then), since its
        # derivatives are the forward op's second-order terms: differentiate the forward op.
        message = (
            f"{sig.qualname} is a backward kernel and is not differentiable; differentiate "
            f"concrete_ext.{sig.row.name}, whose backward is differentiable to any order"
        )

        def raise_in_backward(ctx, *grads):
            raise RuntimeError(message)

        def forward(ctx, *args):
            with _below_autograd():
                return op(*args)

        Guard = type(
            f"{sig.name}_guard",
            (torch.autograd.Function,),
            {"forward": staticmethod(forward), "backward": staticmethod(raise_in_backward)},
        )

        def backward_kernel(*args):
            if _wrapped_or_dual([a for a in args if isinstance(a, Tensor)]):
                raise _direct_call_error(sig)
            if torch.is_grad_enabled() and any(
                isinstance(a, Tensor) and a.requires_grad for a in args
            ):
                return Guard.apply(*args)
            with _below_autograd():
                return op(*args)

        return backward_kernel

    bw = _ops.SIGNATURES[(sig.namespace, sig.row.name + "_backward")].op
    deriv = Derivatives(sig, op, bw)
    grad_pos = deriv.grad_pos

    def differentiable(*args):
        if _wrapped_or_dual([a for a in args if isinstance(a, Tensor)]):
            raise _direct_call_error(sig)
        if torch.is_grad_enabled() and any(
            isinstance(args[i], Tensor) and args[i].requires_grad for i in grad_pos
        ):
            return deriv.Eager.apply(*args)
        with _below_autograd():
            return op(*args)

    return differentiable


class Impl:
    """One op served by one backend, as the public functions call it: `forward` takes the
    compiled namespace's arguments (seed, offset, generator for random ops); `op` is the callable
    torch.compile traces (an op with its own autograd kernel, or an adapter around one)."""

    def __init__(self, sig: Signature, forward, op, backward_op):
        self.sig = sig
        self.forward = forward
        self.op = op
        self.differentiable = bool(sig.row.grads)
        if self.differentiable:
            self.deriv = Derivatives(sig, forward, backward_op)
            self.grad_pos: Tuple[int, ...] = tuple(self.deriv.grad_pos)


def call(impl: Impl, *args):
    """Run one op for a public function (see the module docstring)."""
    if torch.compiler.is_compiling():
        return impl.op(*args)
    if transforms_active():
        if impl.sig.random:
            args = _vmap.batch_for_randomness(impl.sig, args)
        if impl.differentiable:
            return impl.deriv.Transform.apply(*args)
        return impl.op(*args)
    if impl.differentiable and torch.is_grad_enabled():
        for i in impl.grad_pos:
            a = args[i]
            if isinstance(a, Tensor) and a.requires_grad:
                return impl.deriv.Eager.apply(*args)
    with _below_autograd():
        return impl.forward(*args)
