"""The op layer: schemas (defined once, here), fake kernels, autograd, and loading of ``_C``.

Every op is ``torch.ops.concrete_ext.<name>``. Kernels are registered per dispatch key: the CPU and
CUDA ones by the compiled extension ``_C`` (``TORCH_LIBRARY_IMPL`` in csrc/ops/register_*), the
Triton ones by ``concrete_ext._triton``. When ``_C`` could not be built, the CPU key falls back to the
plain-PyTorch reference (so the ops still exist and still follow the random-number contract), and
the CUDA key to Triton when it is importable. Backward is an op of its own
(``<name>_backward``) wired with ``torch.library.register_autograd``; every op has a fake kernel,
so ``torch.compile(fullgraph=True)`` and ``torch.export`` trace through it.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from . import reference as ref

NAMESPACE = "concrete_ext"
_RANDOM = (torch.Tag.nondeterministic_seeded,)
_RNG = "int? seed, int offset, Generator? generator"

SCHEMAS = {
    # categorical, reduce nothing
    "exp_concrete_sample": (f"(Tensor logits, Tensor temperature, int dim, {_RNG}) -> Tensor", _RANDOM),
    "concrete_sample": (f"(Tensor logits, Tensor temperature, int dim, {_RNG}) -> Tensor", _RANDOM),
    "exp_concrete_sample_backward": (
        "(Tensor grad, Tensor sample, Tensor temperature, int dim, bool temperature_grad)"
        " -> (Tensor, Tensor)", ()),
    "concrete_sample_backward": (
        "(Tensor grad, Tensor sample, Tensor temperature, int dim, bool temperature_grad)"
        " -> (Tensor, Tensor)", ()),
    "gumbel_softmax_hard": (
        f"(Tensor logits, Tensor temperature, int dim, {_RNG}) -> (Tensor, Tensor)", _RANDOM),
    "gumbel_softmax_hard_backward": (
        "(Tensor grad, Tensor logits, Tensor temperature, Tensor rng_state, int dim,"
        " bool temperature_grad) -> (Tensor, Tensor)", ()),
    "gumbel_max_sample": (f"(Tensor logits, int dim, {_RNG}) -> Tensor", _RANDOM),
    # categorical log-densities, reduce dim
    "exp_concrete_log_prob": (
        "(Tensor value, Tensor logits, Tensor temperature, int dim) -> Tensor", ()),
    "concrete_log_prob": ("(Tensor value, Tensor logits, Tensor temperature, int dim) -> Tensor", ()),
    "exp_concrete_log_prob_backward": (
        "(Tensor grad, Tensor value, Tensor logits, Tensor temperature, int dim,"
        " bool[3] output_mask) -> (Tensor, Tensor, Tensor)", ()),
    "concrete_log_prob_backward": (
        "(Tensor grad, Tensor value, Tensor logits, Tensor temperature, int dim,"
        " bool[3] output_mask) -> (Tensor, Tensor, Tensor)", ()),
    "relaxed_kl_sample": (
        f"(Tensor q_logits, Tensor q_temperature, Tensor p_logits, Tensor p_temperature, int dim,"
        f" {_RNG}) -> (Tensor, Tensor, Tensor)", _RANDOM),
    "relaxed_kl_sample_backward": (
        "(Tensor? grad_sample, Tensor? grad_log_q, Tensor? grad_log_p, Tensor sample,"
        " Tensor q_logits, Tensor q_temperature, Tensor p_logits, Tensor p_temperature, int dim,"
        " bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)", ()),
    # binary, elementwise
    "logit_binary_concrete_sample": (f"(Tensor logits, Tensor temperature, {_RNG}) -> Tensor", _RANDOM),
    "binary_concrete_sample": (f"(Tensor logits, Tensor temperature, {_RNG}) -> Tensor", _RANDOM),
    "logit_binary_concrete_sample_backward": (
        "(Tensor grad, Tensor sample, Tensor temperature, bool temperature_grad) -> (Tensor, Tensor)", ()),
    "binary_concrete_sample_backward": (
        "(Tensor grad, Tensor sample, Tensor temperature, bool temperature_grad) -> (Tensor, Tensor)", ()),
    "logit_binary_concrete_log_prob": ("(Tensor value, Tensor logits, Tensor temperature) -> Tensor", ()),
    "binary_concrete_log_prob": ("(Tensor value, Tensor logits, Tensor temperature) -> Tensor", ()),
    "logit_binary_concrete_log_prob_backward": (
        "(Tensor grad, Tensor value, Tensor logits, Tensor temperature, bool[3] output_mask)"
        " -> (Tensor, Tensor, Tensor)", ()),
    "binary_concrete_log_prob_backward": (
        "(Tensor grad, Tensor value, Tensor logits, Tensor temperature, bool[3] output_mask)"
        " -> (Tensor, Tensor, Tensor)", ()),
    # noise shaped like `self`: int64 draws for kind "bits", else self's dtype
    "noise_like": (f"(Tensor self, str kind, {_RNG}) -> Tensor", _RANDOM),
}

_lib = torch.library.Library(NAMESPACE, "DEF")
for _name, (_schema, _tags) in SCHEMAS.items():
    _lib.define(_name + _schema, tags=_tags)


def op(name: str):
    return getattr(getattr(torch.ops, NAMESPACE), name)


# ---- loading the compiled kernels ----------------------------------------------------------------
_C = None
C_IMPORT_ERROR: Optional[str] = None
try:
    from . import _C  # noqa: F401  (registers CPU/CUDA kernels on import)
except ImportError as e:  # pragma: no cover - exercised only without a build
    C_IMPORT_ERROR = f"{type(e).__name__}: {e}"


# Read once at import: the build does not change while the process runs, and a pybind call in the
# dispatch path (backend selection) would make torch.compile(fullgraph=True) graph-break.
_COMPILED_INFO: dict = (dict(_C.build_info()) if _C is not None
                        else {"cpu": False, "cuda": False, "error": C_IMPORT_ERROR})
_HAS_COMPILED = {"cpu": bool(_COMPILED_INFO.get("cpu", False)),
                 "cuda": bool(_COMPILED_INFO.get("cuda", False))}


def compiled_info() -> dict:
    """build_info() of _C, or a dict saying why it is missing."""
    return dict(_COMPILED_INFO)


def has_compiled(device_type: str) -> bool:
    return _HAS_COMPILED.get(device_type, False)


# ---- fake kernels ---------------------------------------------------------------------------------
def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _wrap(dim: int, ndim: int) -> int:
    if ndim < 1:
        raise ValueError("logits must have at least one dimension (the categories)")
    if not -ndim <= dim < ndim:
        raise IndexError(f"dim {dim} is out of range for a tensor with {ndim} dimensions")
    return dim % ndim


def empty_rows_like(t: Tensor, dim: int, dtype=None) -> Tensor:
    """Empty tensor shaped like t, contiguous with `dim` moved last, viewed in t's dim order.

    The kernels allocate their row outputs the same way, so fake and real strides agree.
    """
    d = _wrap(dim, t.dim())
    shape = list(t.shape)
    n = shape.pop(d)
    return t.new_empty(shape + [n], dtype=dtype or t.dtype).movedim(-1, d)


def _batch_shape(t: Tensor, dim: int) -> List[int]:
    d = _wrap(dim, t.dim())
    return [s for i, s in enumerate(t.shape) if i != d]


def _per_row(t: Tensor, dim: int, wanted: bool) -> Tensor:
    shape = _batch_shape(t, dim) if wanted else [0]
    return t.new_empty(shape, dtype=_acc(t.dtype))


def _register_fakes():
    fake = functools.partial(torch.library.register_fake, lib=_lib)

    def sample(logits, temperature, dim, seed, offset, generator):
        return empty_rows_like(logits, dim)

    fake(f"{NAMESPACE}::exp_concrete_sample")(sample)
    fake(f"{NAMESPACE}::concrete_sample")(sample)

    def sample_backward(grad, sample, temperature, dim, temperature_grad):
        return empty_rows_like(sample, dim), _per_row(sample, dim, temperature_grad)

    fake(f"{NAMESPACE}::exp_concrete_sample_backward")(sample_backward)
    fake(f"{NAMESPACE}::concrete_sample_backward")(sample_backward)

    @fake(f"{NAMESPACE}::gumbel_softmax_hard")
    def _(logits, temperature, dim, seed, offset, generator):
        return empty_rows_like(logits, dim), logits.new_empty([2], dtype=torch.int64)

    @fake(f"{NAMESPACE}::gumbel_softmax_hard_backward")
    def _(grad, logits, temperature, rng_state, dim, temperature_grad):
        return empty_rows_like(logits, dim), _per_row(logits, dim, temperature_grad)

    @fake(f"{NAMESPACE}::gumbel_max_sample")
    def _(logits, dim, seed, offset, generator):
        return empty_rows_like(logits, dim)

    def log_prob(value, logits, temperature, dim):
        return logits.new_empty(_batch_shape(logits, dim))

    fake(f"{NAMESPACE}::exp_concrete_log_prob")(log_prob)
    fake(f"{NAMESPACE}::concrete_log_prob")(log_prob)

    def log_prob_backward(grad, value, logits, temperature, dim, output_mask):
        # A gradient not asked for is an empty tensor of its own (outputs must not alias).
        return (empty_rows_like(logits, dim) if output_mask[0] else logits.new_empty([0]),
                empty_rows_like(logits, dim) if output_mask[1] else logits.new_empty([0]),
                _per_row(logits, dim, output_mask[2]))

    fake(f"{NAMESPACE}::exp_concrete_log_prob_backward")(log_prob_backward)
    fake(f"{NAMESPACE}::concrete_log_prob_backward")(log_prob_backward)

    @fake(f"{NAMESPACE}::relaxed_kl_sample")
    def _(q_logits, q_temperature, p_logits, p_temperature, dim, seed, offset, generator):
        b = _batch_shape(q_logits, dim)
        return empty_rows_like(q_logits, dim), q_logits.new_empty(b), q_logits.new_empty(b)

    @fake(f"{NAMESPACE}::relaxed_kl_sample_backward")
    def _(grad_sample, grad_log_q, grad_log_p, sample, q_logits, q_temperature, p_logits,
          p_temperature, dim, output_mask):
        none = q_logits.new_empty  # a fresh empty tensor per output: outputs must not alias
        return (empty_rows_like(q_logits, dim) if output_mask[0] else none([0]),
                _per_row(q_logits, dim, output_mask[1]),
                empty_rows_like(q_logits, dim) if output_mask[2] else none([0]),
                _per_row(q_logits, dim, output_mask[3]))

    def binary_sample(logits, temperature, seed, offset, generator):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    fake(f"{NAMESPACE}::logit_binary_concrete_sample")(binary_sample)
    fake(f"{NAMESPACE}::binary_concrete_sample")(binary_sample)

    def binary_sample_backward(grad, sample, temperature, temperature_grad):
        gt = sample.new_empty(sample.shape if temperature_grad else [0], dtype=_acc(sample.dtype))
        return torch.empty_like(sample, memory_format=torch.contiguous_format), gt

    fake(f"{NAMESPACE}::logit_binary_concrete_sample_backward")(binary_sample_backward)
    fake(f"{NAMESPACE}::binary_concrete_sample_backward")(binary_sample_backward)

    def binary_log_prob(value, logits, temperature):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    fake(f"{NAMESPACE}::logit_binary_concrete_log_prob")(binary_log_prob)
    fake(f"{NAMESPACE}::binary_concrete_log_prob")(binary_log_prob)

    def binary_log_prob_backward(grad, value, logits, temperature, output_mask):
        none = logits.new_empty  # a fresh empty tensor per output: outputs must not alias
        full = torch.empty_like(logits, memory_format=torch.contiguous_format)
        return (full if output_mask[0] else none([0]),
                torch.empty_like(full) if output_mask[1] else none([0]),
                logits.new_empty(logits.shape if output_mask[2] else [0], dtype=_acc(logits.dtype)))

    fake(f"{NAMESPACE}::logit_binary_concrete_log_prob_backward")(binary_log_prob_backward)
    fake(f"{NAMESPACE}::binary_concrete_log_prob_backward")(binary_log_prob_backward)

    @fake(f"{NAMESPACE}::noise_like")
    def _(self, kind, seed, offset, generator):
        return self.new_empty(self.shape, dtype=torch.int64 if kind == "bits" else self.dtype)


_register_fakes()


# ---- autograd -------------------------------------------------------------------------------------
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
    -inf: their sample is NaN). Otherwise such a row made the gradient of a shared temperature NaN
    even when its outputs were not used (ExpConcrete and relaxed-KL kernels; the Concrete kernel
    already leaves those rows out)."""
    if grad is None or grad.numel() == 0 or sample.numel() == 0:
        return grad
    undefined = sample.select(dim, 0).isnan()
    return torch.where(undefined.to(grad.device), torch.zeros((), dtype=grad.dtype,
                                                              device=grad.device), grad)


def _register_autograd():
    reg = functools.partial(torch.library.register_autograd, lib=_lib)

    # Sampling: backward needs the saved sample only (never the noise).
    for name in ("exp_concrete_sample", "concrete_sample"):
        bw = op(name + "_backward")

        def setup(ctx, inputs, output):
            ctx.save_for_backward(output, inputs[1])
            ctx.dim = inputs[2]

        def backward(ctx, grad, _bw=bw):
            sample, temperature = ctx.saved_tensors
            want_t = ctx.needs_input_grad[1]
            ga, gt = _bw(grad, sample, temperature, ctx.dim, want_t)
            if want_t:
                gt = without_undefined_rows(gt, sample, ctx.dim)
            return (ga if ctx.needs_input_grad[0] else None,
                    reduce_temperature_grad(gt, temperature) if want_t else None,
                    None, None, None, None)

        reg(f"{NAMESPACE}::{name}", backward, setup_context=setup)

    # Straight-through Gumbel-softmax: keeps (logits, temperature, rng_state), no rows x n soft
    # tensor; backward recomputes the soft sample from the saved (seed, offset).
    def setup_hard(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1], output[1])
        ctx.dim = inputs[2]
        ctx.mark_non_differentiable(output[1])

    def backward_hard(ctx, grad, _grad_state):
        logits, temperature, state = ctx.saved_tensors
        if grad is None:
            return None, None, None, None, None, None
        want_t = ctx.needs_input_grad[1]
        ga, gt = op("gumbel_softmax_hard_backward")(grad, logits, temperature, state, ctx.dim, want_t)
        return (ga if ctx.needs_input_grad[0] else None,
                reduce_temperature_grad(gt, temperature) if want_t else None,
                None, None, None, None)

    reg(f"{NAMESPACE}::gumbel_softmax_hard", backward_hard, setup_context=setup_hard)

    # Gumbel-max and noise are piecewise constant / independent of any input: no gradient.
    def setup_const(ctx, inputs, output):
        ctx.mark_non_differentiable(output)
        ctx.n_inputs = len(inputs)

    def backward_const(ctx, *grads):
        return (None,) * ctx.n_inputs

    reg(f"{NAMESPACE}::gumbel_max_sample", backward_const, setup_context=setup_const)
    reg(f"{NAMESPACE}::noise_like", backward_const, setup_context=setup_const)

    # Categorical log-densities.
    for name in ("exp_concrete_log_prob", "concrete_log_prob"):
        bw = op(name + "_backward")

        def setup_lp(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], inputs[1], inputs[2])
            ctx.dim = inputs[3]

        def backward_lp(ctx, grad, _bw=bw):
            value, logits, temperature = ctx.saved_tensors
            mask = list(ctx.needs_input_grad[:3])
            gv, ga, gt = _bw(grad, value, logits, temperature, ctx.dim, mask)
            return (gv if mask[0] else None, ga if mask[1] else None,
                    reduce_temperature_grad(gt, temperature) if mask[2] else None, None)

        reg(f"{NAMESPACE}::{name}", backward_lp, setup_context=setup_lp)

    # Relaxed KL.
    def setup_kl(ctx, inputs, output):
        ctx.save_for_backward(output[0], inputs[0], inputs[1], inputs[2], inputs[3])
        ctx.dim = inputs[4]

    def backward_kl(ctx, gy, glq, glp):
        y, ql, qt, pl, pt = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:4])
        gql, gqt, gpl, gpt = op("relaxed_kl_sample_backward")(gy, glq, glp, y, ql, qt, pl, pt,
                                                              ctx.dim, mask)
        gqt = without_undefined_rows(gqt, y, ctx.dim) if mask[1] else gqt
        gpt = without_undefined_rows(gpt, y, ctx.dim) if mask[3] else gpt
        return (gql if mask[0] else None,
                reduce_temperature_grad(gqt, qt) if mask[1] else None,
                gpl if mask[2] else None,
                reduce_temperature_grad(gpt, pt) if mask[3] else None,
                None, None, None, None)

    reg(f"{NAMESPACE}::relaxed_kl_sample", backward_kl, setup_context=setup_kl)

    # Binary sampling and log-densities (elementwise; temperature gradients per element).
    for name in ("logit_binary_concrete_sample", "binary_concrete_sample"):
        bw = op(name + "_backward")

        def setup_bs(ctx, inputs, output):
            ctx.save_for_backward(output, inputs[1])

        def backward_bs(ctx, grad, _bw=bw):
            sample, temperature = ctx.saved_tensors
            want_t = ctx.needs_input_grad[1]
            ga, gt = _bw(grad, sample, temperature, want_t)
            return (ga if ctx.needs_input_grad[0] else None,
                    reduce_temperature_grad(gt, temperature) if want_t else None,
                    None, None, None)

        reg(f"{NAMESPACE}::{name}", backward_bs, setup_context=setup_bs)

    for name in ("logit_binary_concrete_log_prob", "binary_concrete_log_prob"):
        bw = op(name + "_backward")

        def setup_blp(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        def backward_blp(ctx, grad, _bw=bw):
            value, logits, temperature = ctx.saved_tensors
            mask = list(ctx.needs_input_grad[:3])
            gv, ga, gt = _bw(grad, value, logits, temperature, mask)
            return (gv if mask[0] else None, ga if mask[1] else None,
                    reduce_temperature_grad(gt, temperature) if mask[2] else None)

        reg(f"{NAMESPACE}::{name}", backward_blp, setup_context=setup_blp)


_register_autograd()


# ---- Python fallback kernels when _C is missing ---------------------------------------------------
def _register_reference_cpu():
    """CPU kernels from reference.py (forward ops only compute values; their backward ops are
    computed with autograd on the reference)."""
    impl = functools.partial(torch.library.impl, lib=_lib)
    from . import _fallback

    for name, fn in _fallback.KERNELS.items():
        impl(f"{NAMESPACE}::{name}", "CPU")(fn)


if _C is None:  # pragma: no cover - exercised only without a build
    _register_reference_cpu()


def _register_triton_cuda():
    """Without compiled CUDA kernels, the Triton kernels serve the ops' CUDA dispatch key."""
    if has_compiled("cuda") or not torch.cuda.is_available():
        return
    try:
        from . import _triton

        _triton.register_cuda_fallback()
    except Exception:  # noqa: BLE001 - concrete_ext.backends() reports why Triton is unavailable
        pass


_register_triton_cuda()
