"""Triton categorical log-densities and the fused relaxed-KL pass against the float64 reference:
values and gradients of every input, single-pass and looped kernels, masked categories."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from concrete_ext import reference as ref  # noqa: E402
from concrete_ext._triton import KERNELS  # noqa: E402
from concrete_ext._triton import common as cm
from concrete_ext.testing import (
    INF,
    LOOPED,
    ROW_NS,
    compare,
    make_logits,
    make_temperature,  # noqa: E402
)

pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

PATHS = {"tile": {}, "looped": LOOPED}


def _point(logits, seed, log_space):
    """A sample of ExpConcrete(logits, 0.8) to evaluate the density at (x = exp(y) on the simplex)."""
    y = ref.exp_concrete_sample(logits, 0.8, -1, seed=seed)
    return y if log_space else y.exp()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", ROW_NS)
@pytest.mark.parametrize("name", ["exp_concrete_log_prob", "concrete_log_prob"])
def test_log_prob_fp64(name, n, path, device):
    logits = make_logits((5, n), seed=n, masked=True)
    inputs = {
        "value": _point(
            make_logits((5, n), seed=n + 50, masked=False).masked_fill(logits == -INF, -INF),
            n,
            name.startswith("exp"),
        ),
        "logits": logits,
        "temperature": make_temperature((5,), seed=n),
    }
    kernel = lambda value, logits, temperature: KERNELS[name](value, logits, temperature, -1)
    reference = lambda value, logits, temperature: getattr(ref, name)(
        value, logits, temperature, -1
    )
    with cm.launch_config(**PATHS[path]):
        compare(
            kernel, reference, inputs, torch.float64, device, ["value", "logits", "temperature"]
        )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["exp_concrete_log_prob", "concrete_log_prob"])
def test_log_prob_fp32_dims(name, path, device):
    # Category dim 0 of a (n, 3, 2) tensor; a scalar temperature; n = 40 (> 32: Stirling's lgamma).
    logits = make_logits((2, 3, 40), seed=3, masked=True)
    value = _point(
        make_logits((2, 3, 40), seed=4, masked=False).masked_fill(logits == -INF, -INF),
        1,
        name.startswith("exp"),
    )
    inputs = {
        "value": value.permute(2, 1, 0),
        "logits": logits.permute(2, 1, 0),
        "temperature": torch.tensor(1.3, dtype=torch.float64),
    }
    kernel = lambda value, logits, temperature: KERNELS[name](value, logits, temperature, 0)
    reference = lambda value, logits, temperature: getattr(ref, name)(value, logits, temperature, 0)
    with cm.launch_config(**PATHS[path]):
        compare(
            kernel,
            reference,
            inputs,
            torch.float32,
            device,
            ["value", "logits", "temperature"],
            factor=4,
            grad_factor=4,
        )


def test_log_prob_of_an_empty_row_is_nan(device):
    logits = make_logits((3, 5), seed=1, masked=False).to(device)
    logits[1] = -INF
    value = KERNELS["exp_concrete_sample"](
        logits, torch.tensor(1.0, dtype=torch.float64), -1, 3, 0, None
    )
    lp = KERNELS["exp_concrete_log_prob"](value, logits, torch.tensor(1.0, dtype=torch.float64), -1)
    assert lp[1].isnan() and torch.isfinite(lp[[0, 2]]).all()


@pytest.mark.parametrize(
    "mask", [[True, False, False], [False, True, False], [False, False, True], [True, True, True]]
)
def test_log_prob_backward_output_mask(mask, device):
    logits = make_logits((4, 6), seed=2, masked=True).to(device)
    value = _point(logits.cpu(), 2, True).to(device)
    t = make_temperature((4,), seed=2).to(device)
    grad = torch.linspace(-1, 1, 4, dtype=torch.float64, device=device)
    gv, ga, gt = KERNELS["exp_concrete_log_prob_backward"](grad, value, logits, t, -1, mask)
    full = KERNELS["exp_concrete_log_prob_backward"](grad, value, logits, t, -1, [True] * 3)
    for got, want, all_ in zip((gv, ga, gt), mask, full):
        assert got.numel() == (all_.numel() if want else 0)
        if want:
            assert torch.equal(got, all_)


def _kl_fns(dim=-1):
    kernel = lambda q_logits, q_temperature, p_logits, p_temperature: KERNELS["relaxed_kl_sample"](
        q_logits, q_temperature, p_logits, p_temperature, dim, 13, 6, None
    )
    reference = lambda q_logits, q_temperature, p_logits, p_temperature: ref.relaxed_kl_sample(
        q_logits, q_temperature, p_logits, p_temperature, dim, seed=13, offset=6
    )
    return kernel, reference


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", ROW_NS)
def test_relaxed_kl_fp64(n, path, device):
    inputs = {
        "q_logits": make_logits((4, n), seed=n, masked=True),
        "q_temperature": make_temperature((4,), 1),
        "p_logits": make_logits((4, n), seed=n + 1, masked=False),
        "p_temperature": torch.tensor(0.9, dtype=torch.float64),
    }
    with cm.launch_config(**PATHS[path]):
        compare(
            *_kl_fns(),
            inputs,
            torch.float64,
            device,
            ["q_logits", "q_temperature", "p_logits", "p_temperature"],
        )


@pytest.mark.parametrize("path", PATHS)
def test_relaxed_kl_fp32(path, device):
    inputs = {
        "q_logits": make_logits((3, 2, 13), seed=2, masked=True).transpose(1, 2),
        "q_temperature": make_temperature((3, 2), 3),
        "p_logits": make_logits((3, 2, 13), seed=3, masked=False).transpose(1, 2),
        "p_temperature": make_temperature((3, 1), 4),
    }
    with cm.launch_config(**PATHS[path]):
        compare(
            *_kl_fns(dim=1),
            inputs,
            torch.float32,
            device,
            ["q_logits", "q_temperature", "p_logits", "p_temperature"],
            factor=4,
            grad_factor=4,
        )


def test_relaxed_kl_density_of_the_returned_sample(device):
    # log kappa_q(y) is exp_concrete_log_prob of the returned y.
    q = make_logits((3, 9), seed=5, masked=True).to(device)
    p = make_logits((3, 9), seed=6, masked=False).to(device)
    tq, tp = make_temperature((3,), 7).to(device), torch.tensor(0.5, dtype=torch.float64)
    y, lq, lp = KERNELS["relaxed_kl_sample"](q, tq, p, tp, -1, 1, 0, None)
    torch.testing.assert_close(lq, KERNELS["exp_concrete_log_prob"](y, q, tq, -1))
    torch.testing.assert_close(y, KERNELS["exp_concrete_sample"](q, tq, -1, 1, 0, None))


@pytest.mark.parametrize("which", ["sample", "log_q", "log_p"])
def test_relaxed_kl_backward_with_missing_upstream(which, device):
    # Only one output used: the other upstream gradients arrive as None.
    q = make_logits((3, 7), seed=8, masked=True).requires_grad_()
    p = make_logits((3, 7), seed=9, masked=False).requires_grad_()
    tq = make_temperature((3,), 1).requires_grad_()
    k = {"sample": 0, "log_q": 1, "log_p": 2}[which]
    out = KERNELS["relaxed_kl_sample"](
        q.to(device),
        tq.to(device),
        p.to(device),
        0.7 * torch.ones((), dtype=torch.float64),
        -1,
        2,
        0,
        None,
    )[k]
    grads = torch.autograd.grad(
        torch.where(torch.isfinite(out), out, 0).sum(), (q, tq, p), allow_unused=True
    )
    rout = ref.relaxed_kl_sample(q, tq, p, 0.7, -1, seed=2)[k]
    rgrads = torch.autograd.grad(
        torch.where(torch.isfinite(rout), rout, 0).sum(), (q, tq, p), allow_unused=True
    )
    for g, r in zip(grads, rgrads):
        if r is None or not r.abs().any():
            assert g is None or not g.abs().any()
        else:
            torch.testing.assert_close(g.cpu(), r, rtol=1e-9, atol=1e-10)


def test_gradcheck_log_prob_and_relaxed_kl(device):
    a = make_logits((2, 4), seed=1, masked=False).to(device).requires_grad_()
    v = _point(a.detach().cpu(), 3, True).to(device).requires_grad_()
    t = make_temperature((2,), seed=2).to(device).requires_grad_()
    lp = lambda v, a, t: KERNELS["exp_concrete_log_prob"](v, a, t, -1)
    assert torch.autograd.gradcheck(lp, (v, a, t), eps=1e-6, atol=1e-6)
    p = make_logits((2, 4), seed=2, masked=False).to(device).requires_grad_()
    kl = lambda a, t, p: KERNELS["relaxed_kl_sample"](a, t, p, t, -1, 4, 0, None)
    assert torch.autograd.gradcheck(kl, (a, t, p), eps=1e-6, atol=1e-6)
