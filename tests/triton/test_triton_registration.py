"""How the Triton kernels are exposed: KERNELS covers every op of concrete_ext with its signature,
the ops live in the concrete_ext_triton namespace with the schemas, autograd and fake kernels of the
op table, the backend choice can route the public API to them, torch.compile(fullgraph=True) and
opcheck work, and (on a GPU) CUDA-graph replay and the CUDA fallback of the concrete_ext ops."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import concrete_ext as ce  # noqa: E402
from concrete_ext import _backend, _ops, _triton  # noqa: E402
from concrete_ext import reference as ref
from concrete_ext._triton import KERNELS  # noqa: E402
from concrete_ext._triton import common as cm
from concrete_ext.testing import INTERPRET, make_logits, make_temperature  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

on_gpu = pytest.mark.skipif(INTERPRET, reason="CUDA graphs and the CUDA key need a GPU")


TABLE_OPS = sorted(
    name
    for (ns, name), sig in _ops.SIGNATURES.items()
    if ns == _ops.NAMESPACE and not sig.row.composite
)


def test_every_op_has_a_triton_kernel():
    assert set(KERNELS) == set(TABLE_OPS)
    assert all(_triton.supports(name) for name in TABLE_OPS)
    assert not _triton.supports("no_such_op")
    assert _triton.unavailable_reasons() == []


def test_ops_are_registered_in_their_namespace():
    """The Triton namespace's schemas come from the op table: the compiled op's arguments, with
    a random op's (seed, offset, generator) replaced by its rng_state tensor."""
    for name in TABLE_OPS:
        schema = str(getattr(torch.ops.concrete_ext_triton, name).default._schema)
        compiled = str(getattr(torch.ops.concrete_ext, name).default._schema)
        ours, theirs = schema[schema.index("(") :], compiled[compiled.index("(") :]
        if "Generator" in theirs:
            assert "Tensor rng_state" in ours, ours  # the seed travels as a device tensor
            theirs = theirs.replace(
                "int? seed, int offset, Generator? generator", "Tensor rng_state"
            )
        assert ours == theirs, (ours, theirs)


def test_rng_state_explicit_and_from_generator(device):
    state = cm.rng_state(-3, 2**40, None, torch.device(device))
    assert state.dtype == torch.int64 and state.tolist() == [-3, 2**40]
    gen = torch.Generator(device=device).manual_seed(4)
    s1 = cm.rng_state(None, 0, gen, torch.device(device))
    s2 = cm.rng_state(None, 0, gen, torch.device(device))
    seed, _ = ref.resolve_seed(None, 0, torch.Generator(device=device).manual_seed(4), device)
    assert s1.tolist() == [seed - 2**64 if seed >= 2**63 else seed, 0]
    assert s1[0] != s2[0] and s1.device.type == device


def test_temperature_checks(device):
    a = torch.zeros(3, 4, device=device)
    with pytest.raises(ValueError, match="does not broadcast"):
        KERNELS["concrete_sample"](a, torch.ones(4, device=device), -1, 1, 0, None)
    with pytest.raises(TypeError, match="floating"):
        KERNELS["concrete_sample"](
            a, torch.ones(3, dtype=torch.int64, device=device), -1, 1, 0, None
        )
    with pytest.raises(IndexError, match="out of range"):
        KERNELS["concrete_sample"](a, torch.tensor(1.0), 2, 1, 0, None)
    with pytest.raises(ValueError, match="no categories"):
        KERNELS["concrete_sample"](
            torch.zeros(3, 0, device=device), torch.tensor(1.0), -1, 1, 0, None
        )


def test_empty_batches(device):
    a = torch.zeros(0, 5, device=device)
    assert KERNELS["concrete_sample"](a, torch.tensor(1.0), -1, 1, 0, None).shape == (0, 5)
    assert KERNELS["exp_concrete_log_prob"](a, a, torch.tensor(1.0), -1).shape == (0,)
    assert KERNELS["binary_concrete_sample"](
        torch.zeros(0, device=device), torch.tensor(1.0), 1, 0, None
    ).shape == (0,)


def test_backend_choice_routes_the_public_api(device):
    a = make_logits((3, 6), seed=1, masked=True).to(device)
    t = make_temperature((3,), seed=2).to(device)
    assert not _backend.not_supported_reasons("triton", torch.device(device), "concrete_sample")
    with ce.backend("triton"):
        x = ce.concrete_sample(a, t, seed=9, offset=1)
        b = ce.binary_concrete_sample(a[:, 0], 0.5, seed=9)
        hard = ce.gumbel_softmax(a, 0.5, hard=True, seed=9)
    torch.testing.assert_close(x.cpu(), ref.concrete_sample(a.cpu(), t.cpu(), seed=9, offset=1))
    torch.testing.assert_close(b.cpu(), ref.binary_concrete_sample(a[:, 0].cpu(), 0.5, seed=9))
    torch.testing.assert_close(hard.cpu(), ref.gumbel_softmax(a.cpu(), 0.5, True, seed=9))


def test_backends_lists_triton():
    info = ce.backends()["triton"]
    assert set(info) == {"available", "reasons"}
    if not torch.cuda.is_available():
        assert not info["available"] and any("CUDA" in r for r in info["reasons"])


# ---- torch.compile and opcheck (the ops are opaque to tracing: their fake kernels come from the
# op table, so this runs under the interpreter too) ---------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "exp_concrete_sample",
        "concrete_sample",
        "gumbel_softmax_hard",
        "relaxed_kl_sample",
        "binary_concrete_sample",
    ],
)
def test_compile_fullgraph_matches_eager(name, device):
    torch._dynamo.reset()
    a = make_logits((6, 10), seed=3, masked=True).to(device)
    t = make_temperature((6,), seed=4).to(device).requires_grad_()
    p = make_logits((6, 10), seed=5, masked=False).to(device)

    def f(a, t):
        if name == "relaxed_kl_sample":
            y, lq, lp = KERNELS[name](a, t, p, t, -1, 7, 1, None)
            return (lq - lp).sum() + torch.where(torch.isfinite(y), y, 0).sum()
        if name == "binary_concrete_sample":
            return KERNELS[name](a[:, 0], t, 7, 1, None).sum()
        out = KERNELS[name](a, t, -1, 7, 1, None)
        out = out[0] if isinstance(out, tuple) else out
        return (torch.where(torch.isfinite(out), out, 0) * torch.arange(10, device=device)).sum()

    a1 = a.clone().requires_grad_()
    a2 = a.clone().requires_grad_()
    t2 = t.detach().clone().requires_grad_()
    eager = f(a1, t)
    eager.backward()
    compiled = torch.compile(f, fullgraph=True)(a2, t2)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(a2.grad, a1.grad)
    torch.testing.assert_close(t2.grad, t.grad)


def test_compile_draws_fresh_seeds(device):
    torch._dynamo.reset()
    a = make_logits((4, 8), seed=3, masked=True).to(device)
    f = torch.compile(
        lambda a: KERNELS["concrete_sample"](a, torch.tensor(0.5), -1, None, 0, None),
        fullgraph=True,
    )
    assert not torch.equal(f(a), f(a))


@pytest.mark.parametrize(
    "name",
    [
        "exp_concrete_sample",
        "exp_concrete_log_prob",
        "relaxed_kl_sample",
        "logit_binary_concrete_log_prob",
    ],
)
def test_opcheck(name, device):
    a = make_logits((3, 5), seed=1, masked=False).to(device).requires_grad_()
    t = make_temperature((3,), seed=2).to(device).requires_grad_()
    state = torch.tensor([3, 0], device=device)
    op = getattr(torch.ops.concrete_ext_triton, name)
    if name == "exp_concrete_sample":
        args = (a, t, -1, state)
    elif name == "exp_concrete_log_prob":
        args = (KERNELS["exp_concrete_sample"](a, t, -1, 3, 0, None).detach(), a, t, -1)
    elif name == "relaxed_kl_sample":
        args = (a, t, a.detach() * 0.5, t.detach(), -1, state)
    else:
        args = (a.detach()[:, 0] * 0.3, a[:, 0], t)
    torch.library.opcheck(op, args)


@on_gpu
def test_cuda_graph_replays_fresh_noise(device):
    a = make_logits((4, 16), seed=3, masked=True).to(device)
    t = torch.tensor(0.5)
    f = lambda: KERNELS["concrete_sample"](a, t, -1, None, 0, None)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = f()
    g.replay()
    first = out.clone()
    g.replay()
    assert not torch.equal(first, out)
    torch.testing.assert_close(out.sum(-1), torch.ones(4, device=device))


@on_gpu
def test_cuda_fallback_registration(device):
    if _ops.has_compiled("cuda"):
        pytest.skip("the compiled CUDA kernels own the CUDA key of the concrete_ext ops")
    a = make_logits((4, 9), seed=1, masked=True).to(device).requires_grad_()
    t = make_temperature((4,), seed=2).to(device).requires_grad_()
    x = torch.ops.concrete_ext.concrete_sample(a, t, -1, 3, 0, None)  # served by Triton
    torch.testing.assert_close(x, KERNELS["concrete_sample"](a, t, -1, 3, 0, None))
    ga, gt = torch.autograd.grad(x[:, 0].sum(), (a, t))
    ra, rt = torch.autograd.grad(ref.concrete_sample(a, t, -1, seed=3)[:, 0].sum(), (a, t))
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gt, rt)
