"""The transform matrix: every public op under every autograd transform, on every backend that runs
here, against the derivatives of the reference formula (concrete_ext.reference, composite PyTorch,
float64).

op x {double backward, forward-mode AD (torch.func.jvp and forward_ad), grad, jacrev, jacfwd,
hessian, vmap, vmap(grad), vmap randomness modes, torch.export, torch.compile} x backend
{cpu (compiled kernels), python (the Python kernels), triton (interpreted on the CPU), reference;
cuda where a GPU is visible}. torch.export and torch.compile trace one function that calls every
op (one compilation per backend keeps the suite short); the other transforms run per op.

Derivatives are checked against the same transform applied to the reference, and the double
backward also numerically (gradgradcheck) where the op's gradient is the true one (not for the
straight-through estimator, whose gradient is by design that of the soft sample).
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import concrete_ext as ce
from concrete_ext import reference as ref
from concrete_ext.testing import CUDA, make_logits, make_temperature

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

D = torch.float64
BACKENDS = ["cpu", "python", "triton", "reference"] + (["cuda"] if CUDA else [])


def _available(name: str) -> str:
    device = "cuda" if name == "cuda" else "cpu"
    reasons = ce._backend.not_supported_reasons(name, torch.device(device))
    return "; ".join(reasons)


def backend_param(name):
    marks = [pytest.mark.triton] if name == "triton" else []
    why = _available(name)
    if why:
        marks.append(pytest.mark.skip(reason=why))
    return pytest.param(name, marks=marks, id=name)


def _inputs(device):
    a = make_logits((3, 5), seed=0, dtype=D).to(device)
    a[0, 1] = -float("inf")  # a masked category
    t = make_temperature((3,), seed=1, dtype=D).to(device)
    # Points of the supports away from their edges (numerical differentiation must not cross them)
    y = (0.5 * make_logits((3, 5), seed=11, dtype=D)).masked_fill(
        a.cpu() == -float("inf"), -float("inf")
    )
    y = y.log_softmax(-1).to(device)
    z = make_logits((3, 5), seed=12, dtype=D).to(device)
    return {
        "a": a,
        "t": t,
        "y": y,
        "x": y.exp(),
        "ab": a.clamp(min=-3),
        "tb": t[:, None],
        "z": z,
        "b": torch.sigmoid(z),
        "p": (0.4 * a).clamp(min=-3),
        "tp": 1.3 * t,
    }


# op -> (names of its differentiable inputs in _inputs, f(module, *inputs) -> output(s)); module
# is concrete_ext or concrete_ext.reference (the same call, the reference formula).
OPS = {
    "exp_concrete_sample": (("a", "t"), lambda m, a, t: m.exp_concrete_sample(a, t, seed=3)),
    "concrete_sample": (("a", "t"), lambda m, a, t: m.concrete_sample(a, t, seed=3)),
    "gumbel_softmax": (("a", "t"), lambda m, a, t: m.gumbel_softmax(a, t, seed=3)),
    "gumbel_softmax_hard": (("a", "t"), lambda m, a, t: m.gumbel_softmax(a, t, True, seed=3)),
    "exp_concrete_log_prob": (("y", "a", "t"), lambda m, y, a, t: m.exp_concrete_log_prob(y, a, t)),
    "concrete_log_prob": (("x", "a", "t"), lambda m, x, a, t: m.concrete_log_prob(x, a, t)),
    "relaxed_kl_sample": (
        ("a", "t", "p", "tp"),
        lambda m, a, t, p, tp: m.relaxed_kl_sample(a, t, p, tp, seed=5),
    ),
    "logit_binary_concrete_sample": (
        ("ab", "tb"),
        lambda m, a, t: m.logit_binary_concrete_sample(a, t, seed=4),
    ),
    "binary_concrete_sample": (
        ("ab", "tb"),
        lambda m, a, t: m.binary_concrete_sample(a, t, seed=4),
    ),
    "logit_binary_concrete_log_prob": (
        ("z", "ab", "tb"),
        lambda m, z, a, t: m.logit_binary_concrete_log_prob(z, a, t),
    ),
    "binary_concrete_log_prob": (
        ("b", "ab", "tb"),
        lambda m, b, a, t: m.binary_concrete_log_prob(b, a, t),
    ),
}
STRAIGHT_THROUGH = {"gumbel_softmax_hard"}


def _class_case(cls, value):
    """A distribution class: its rsample (a fixed generator) and log_prob at a fixed point; the
    reference is the same class on the reference backend."""

    def f(m, a, t):
        d = cls(t, logits=a)
        return d.rsample(generator=torch.Generator().manual_seed(6)), d.log_prob(value)

    return f


def _class_ops(inp):
    dist = ce.distributions
    return {
        "Concrete": (("a", "tb"), _class_case(dist.Concrete, inp["x"])),
        "ExpConcrete": (("a", "tb"), _class_case(dist.ExpConcrete, inp["y"])),
        "BinaryConcrete": (("ab", "tb"), _class_case(dist.BinaryConcrete, inp["b"])),
        "LogitBinaryConcrete": (("ab", "tb"), _class_case(dist.LogitBinaryConcrete, inp["z"])),
    }


CLASS_OPS = _class_ops(_inputs("cpu"))


def _module(backend):
    return ref if backend == "reference" else ce


def _call(op, backend, *xs):
    if op in CLASS_OPS:
        with ce.backend(backend):
            return CLASS_OPS[op][1](None, *xs)
    fn = OPS[op][1]
    if backend == "reference":
        return fn(ref, *xs)
    with ce.backend(backend):
        return fn(ce, *xs)


def _finite(out):
    """Outputs with their non-finite entries (masked categories: -inf, 0 gradient) set to 0, as one
    tuple: what the derivative checks differentiate."""
    outs = out if isinstance(out, tuple) else (out,)
    return tuple(
        torch.where(torch.isfinite(o), o, torch.zeros((), dtype=o.dtype, device=o.device))
        for o in outs
    )


def _loss(outs):
    """A fixed weighted sum of every output: the scalar grad, hessian and vmap(grad) take."""
    total = 0.0
    for i, o in enumerate(outs):
        w = torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype, device=o.device).reshape(o.shape)
        total = total + (o * w * (i + 1)).sum()
    return total


def _fns(op, backend):
    """(ours, reference) as functions of the op's differentiable inputs, outputs made finite."""
    return (
        lambda *xs: _finite(_call(op, backend, *xs)),
        lambda *xs: _finite(_call(op, "reference", *xs)),
    )


def _args(op, device="cpu"):
    inp = _inputs(device)
    return tuple(inp[n] for n in (CLASS_OPS if op in CLASS_OPS else OPS)[op][0])


def _close(ours, theirs, what, atol=1e-9, rtol=1e-9):
    ours = ours if isinstance(ours, (tuple, list)) else (ours,)
    theirs = theirs if isinstance(theirs, (tuple, list)) else (theirs,)
    assert len(ours) == len(theirs), what
    for o, t in zip(ours, theirs):
        if isinstance(o, (tuple, list)):
            _close(o, t, what, atol, rtol)
            continue
        torch.testing.assert_close(
            o, t, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{what}: {m}"
        )


def _device(backend):
    return "cuda" if backend == "cuda" else "cpu"


backends = pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
ops = pytest.mark.parametrize("op", sorted(OPS))
# the distribution classes too, where a fixed generator makes them deterministic (not under vmap)
ops_and_classes = pytest.mark.parametrize("op", sorted(OPS) + sorted(CLASS_OPS))


# ---- double backward ---------------------------------------------------------------------------
@backends
@ops_and_classes
def test_double_backward(op, backend):
    ours, theirs = _fns(op, backend)
    xs = tuple(x.detach().requires_grad_() for x in _args(op, _device(backend)))
    if op not in STRAIGHT_THROUGH:
        assert torch.autograd.gradgradcheck(ours, xs, nondet_tol=1e-12)
    # The second derivatives equal the reference's: a Hessian-vector product of the weighted loss.
    hv = []
    for fn in (ours, theirs):
        g = torch.autograd.grad(_loss(fn(*xs)), xs, create_graph=True)
        v = [
            torch.linspace(-1, 1, x.numel(), dtype=D, device=x.device).reshape(x.shape) for x in xs
        ]
        hv.append(torch.autograd.grad(g, xs, v, allow_unused=True))
    _close(hv[0], hv[1], f"{op} Hessian-vector product")


# ---- forward mode ------------------------------------------------------------------------------
@backends
@ops_and_classes
def test_jvp(op, backend):
    ours, theirs = _fns(op, backend)
    xs = _args(op, _device(backend))
    vs = tuple(
        torch.randn(x.shape, dtype=D, generator=torch.Generator().manual_seed(i)).to(x.device)
        for i, x in enumerate(xs)
    )
    out_o, tan_o = jvp(ours, xs, vs)
    out_t, tan_t = jvp(theirs, xs, vs)
    _close(out_o, out_t, f"{op} primal under jvp")
    _close(tan_o, tan_t, f"{op} tangent")
    assert any(t.abs().sum() > 0 for t in tan_o), "the tangent must not be silently zero"
    # The forward_ad API gives the same tangents.
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        duals = [fwAD.make_dual(x, v) for x, v in zip(xs, vs)]
        tan_d = tuple(fwAD.unpack_dual(o).tangent for o in ours(*duals))
    _close(tan_d, tan_t, f"{op} forward_ad tangent")


# ---- torch.func reverse mode -------------------------------------------------------------------
@backends
@ops_and_classes
def test_grad_vjp_jacrev_jacfwd_hessian(op, backend):
    ours, theirs = _fns(op, backend)
    xs = _args(op, _device(backend))
    argnums = tuple(range(len(xs)))
    transforms = [("grad", lambda f: grad(lambda *x: _loss(f(*x)), argnums))]
    if op not in CLASS_OPS:  # jacrev / jacfwd vmap, where a generator's draw raises (as torch's)
        transforms += [
            ("jacrev", lambda f: jacrev(f, argnums)),
            ("jacfwd", lambda f: jacfwd(f, argnums)),
            ("hessian", lambda f: hessian(lambda *x: _loss(f(*x)), argnums)),
        ]
    for name, transform in transforms:
        _close(transform(ours)(*xs), transform(theirs)(*xs), f"{op} {name}")
    out, pullback = vjp(ours, *xs)
    out_r, pullback_r = vjp(theirs, *xs)
    cot = tuple(torch.ones_like(o) for o in out)
    _close(pullback(cot), pullback_r(cot), f"{op} vjp")


# ---- vmap --------------------------------------------------------------------------------------
def _batched(op, device):
    """Two members: the inputs and a second set (logits scaled, temperatures shifted)."""
    xs = _args(op, device)
    second = tuple(
        (0.7 * x if n in ("a", "ab", "p") else x * 1.1 if n in ("t", "tb", "tp") else x)
        for n, x in zip(OPS[op][0], xs)
    )
    return tuple(torch.stack([x, y]) for x, y in zip(xs, second))


@backends
@ops
def test_vmap_equals_the_loop(op, backend):
    """Densities and random ops with an explicit seed: vmap equals the loop over members, bit for
    bit on the fused kernels. The Python kernels and the reference are composite PyTorch, whose CPU
    kernels round an element differently (by an ulp) in their vectorised body and in their scalar
    tail, so a batch and a member can differ in the last bit there."""
    ours, _ = _fns(op, backend)
    xs = _batched(op, _device(backend))
    batched = vmap(ours)(*xs)
    loop = [ours(*(x[i] for x in xs)) for i in range(2)]
    for k, b in enumerate(batched):
        expect = torch.stack([m[k] for m in loop])
        if backend in ("python", "reference"):
            torch.testing.assert_close(b, expect, rtol=2e-15, atol=2e-15)
        else:
            assert torch.equal(b, expect), f"{op} output {k}"


@backends
@ops
def test_vmap_of_grad(op, backend):
    ours, theirs = _fns(op, backend)
    xs = _batched(op, _device(backend))
    argnums = tuple(range(len(xs)))
    per_example = vmap(grad(lambda *x: _loss(ours(*x)), argnums))(*xs)
    loop = [grad(lambda *x: _loss(theirs(*x)), argnums)(*(x[i] for x in xs)) for i in range(2)]
    for k, g in enumerate(per_example):
        _close(g, torch.stack([m[k] for m in loop]), f"{op} per-example grad of input {k}")


RANDOM = {
    "concrete_sample": lambda a: ce.concrete_sample(a, 0.5),
    "exp_concrete_sample": lambda a: ce.exp_concrete_sample(a, 0.5),
    "gumbel_softmax_hard": lambda a: ce.gumbel_softmax(a, 0.5, True),
    "gumbel_max_sample": lambda a: ce.gumbel_max_sample(a),
    "relaxed_kl_sample": lambda a: ce.relaxed_kl_sample(a, 0.5, a, 0.7)[0],
    "binary_concrete_sample": lambda a: ce.binary_concrete_sample(a, 0.5),
    "logit_binary_concrete_sample": lambda a: ce.logit_binary_concrete_sample(a, 0.5),
    "noise": lambda a: ce.noise("gumbel", a.shape, dtype=a.dtype) + a,
    "categorical_sample": lambda a: ce.categorical_sample(a, 0.5)[:, None].expand(a.shape),
    "gumbel_top_k": lambda a: ce.gumbel_top_k(a, a.shape[-1]),
}


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS if b != "reference"])
@pytest.mark.parametrize("op", sorted(RANDOM))
@pytest.mark.usefixtures("fresh_default_generator")
def test_vmap_randomness_modes(op, backend):
    """torch's randomness modes: "error" raises, "different" gives every member its own noise,
    "same" the same noise, whether the logits are batched or not."""
    device = _device(backend)
    why = ce._backend.not_supported_reasons(
        backend, torch.device(device), "noise_like" if op == "noise" else op
    )
    if why:
        pytest.skip("; ".join(why))
    fn = RANDOM[op]
    torch.manual_seed(0)  # the draws of "different" and "same" come from the default generator
    a = make_logits((16, 6), seed=2, dtype=torch.float32).to(device)  # one-hots rarely coincide
    batch = torch.stack([a, a, a])
    with ce.backend(backend):
        with pytest.raises(RuntimeError, match="randomness"):
            vmap(fn)(batch)
        members = torch.zeros(3, 1, 1, device=device)  # batches nothing the op reads
        for name, f in (
            ("batched logits", lambda m, x: fn(x)),
            ("shared logits", lambda m, x: fn(a) + m),
        ):
            different = vmap(f, randomness="different")(members, batch)
            same = vmap(f, randomness="same")(members, batch)
            assert different.shape == same.shape == (3, 16, 6)
            assert not torch.equal(different[0], different[1]), f"{op}, {name}: shared noise"
            assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2]), (op, name)


def test_vmap_of_grad_straight_through_under_each_randomness_mode():
    """Per-example straight-through gradients with fresh noise: the backward regenerates each
    member's own soft sample (its own [seed, offset])."""
    a = make_logits((4, 3, 6), seed=3, dtype=D)
    w = torch.arange(6, dtype=D)

    def f(x):
        return (ce.gumbel_softmax(x, 0.5, hard=True) * w).sum()

    for mode in ("different", "same"):
        g = vmap(grad(f), randomness=mode)(a)
        assert g.shape == a.shape and torch.isfinite(g).all()
        assert torch.allclose(g.sum(-1), torch.zeros((), dtype=D), atol=1e-12)  # softmax Jacobian


# ---- torch.export and torch.compile: one function calling every op --------------------------------
def _all_ops(backend, xs):
    outs = []
    for op in sorted(OPS):
        args = [xs[n] for n in OPS[op][0]]
        outs.extend(_finite(OPS[op][1](_module(backend), *args)))
    return outs


@backends
def test_export(backend):
    device = _device(backend)
    inp = _inputs(device)
    names = sorted(inp)

    class Every(torch.nn.Module):
        def forward(self, *values):
            xs = dict(zip(names, values))
            if backend == "reference":
                return tuple(_all_ops(backend, xs))
            with ce.backend(backend):
                return tuple(_all_ops(backend, xs))

    values = tuple(inp[n] for n in names)
    program = torch.export.export(Every(), values)
    for k, (o, e) in enumerate(zip(program.module()(*values), Every()(*values))):
        assert torch.equal(o, e), f"exported output {k} differs"


@pytest.mark.parametrize(
    "backend",
    [
        backend_param(b)
        if b != "reference"
        else pytest.param(
            b,
            marks=pytest.mark.skip(
                reason="the reference is plain PyTorch: inductor compiles its int64 Philox for minutes, "
                "and what it checks is torch's own compiler"
            ),
        )
        for b in BACKENDS
    ],
)
def test_compile_fullgraph_forward_and_backward(backend):
    torch._dynamo.reset()
    device = _device(backend)
    inp = _inputs(device)
    names = ("a", "t", "p", "tp", "ab", "tb")

    def loss(*values):
        return _loss(_all_ops(backend, dict(inp, **dict(zip(names, values)))))

    def grads(fn):
        xs = [inp[n].detach().clone().requires_grad_() for n in names]
        if backend == "reference":
            value = fn(*xs)
        else:
            with ce.backend(backend):  # chosen outside: the choice is read while tracing
                value = fn(*xs)
        return (value, *torch.autograd.grad(value, xs, allow_unused=True))

    _close(grads(torch.compile(loss, fullgraph=True)), grads(loss), f"compiled {backend}")


# ---- clear errors instead of silent zeros ------------------------------------------------------
def test_ops_called_directly_under_forward_mode_raise():
    """torch.library autograd cannot serve forward-mode AD: an op called directly raises (the
    public functions support it)."""
    a = make_logits((3, 5), seed=1, dtype=D)
    t = torch.tensor(0.5, dtype=D)
    with pytest.raises(RuntimeError, match="public function concrete_ext.concrete_sample"):
        jvp(lambda a: torch.ops.concrete_ext.concrete_sample(a, t, -1, 1, 0, None), (a,), (a,))
    with pytest.raises(RuntimeError, match="public function"):
        grad(lambda a: torch.ops.concrete_ext.exp_concrete_log_prob(a, a, t, -1).sum())(a)


def test_backward_kernels_raise_when_differentiated():
    a = make_logits((3, 5), seed=1, dtype=D).requires_grad_()
    t = torch.tensor(0.5, dtype=D)
    s = torch.ops.concrete_ext.concrete_sample(a, t, -1, 1, 0, None)
    ga, _ = torch.ops.concrete_ext.concrete_sample_backward(torch.ones_like(s), s, t, -1, False)
    with pytest.raises(RuntimeError, match="backward kernel and is not differentiable"):
        ga.sum().backward()


@pytest.mark.parametrize("op", ["exp_concrete_sample", "exp_concrete_log_prob"])
def test_direct_ops_are_differentiable_twice(op):
    """torch.ops.concrete_ext.<op> itself (classic autograd) is differentiable to second order."""
    a = make_logits((3, 5), seed=4, dtype=D).requires_grad_()
    t = make_temperature((3,), seed=2, dtype=D).requires_grad_()
    if op == "exp_concrete_sample":
        f = functools.partial(
            torch.ops.concrete_ext.exp_concrete_sample, dim=-1, seed=2, offset=0, generator=None
        )
        assert torch.autograd.gradgradcheck(lambda a, t: f(a, t), (a, t))
    else:
        y = ref.exp_concrete_sample(a.detach(), t.detach(), seed=4)
        f = torch.ops.concrete_ext.exp_concrete_log_prob
        assert torch.autograd.gradgradcheck(lambda a, t: f(y, a, t, -1), (a, t))
