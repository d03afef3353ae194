"""Triton binary ops against the float64 reference: BinConcrete samples (on (0, 1) and in logit
form) and log-densities, values and gradients, per-element and scalar temperatures."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from concrete_ext import _ops  # noqa: E402
from concrete_ext import reference as ref
from concrete_ext._triton import KERNELS  # noqa: E402
from concrete_ext._triton import common as cm
from concrete_ext.testing import (
    assert_low_precision,
    compare,
    make_logits,
    make_temperature,  # noqa: E402
)

pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

SHAPES = [(1,), (3,), (7,), (4, 33), (2, 3, 129)]
SAMPLES = ["logit_binary_concrete_sample", "binary_concrete_sample"]
LOG_PROBS = ["logit_binary_concrete_log_prob", "binary_concrete_log_prob"]


def _temperatures(shape):
    return {
        "scalar": torch.tensor(0.6, dtype=torch.float64),
        "per_element": make_temperature(shape, seed=3),
        "broadcast": make_temperature(shape[-1:], seed=4),
    }


@pytest.mark.parametrize("tau", ["scalar", "per_element", "broadcast"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sample(name, shape, tau, dtype, device):
    inputs = {
        "logits": make_logits(shape, seed=len(shape), masked=False),
        "temperature": _temperatures(shape)[tau],
    }
    kernel = lambda logits, temperature: KERNELS[name](logits, temperature, 77, 5, None)
    reference = lambda logits, temperature: getattr(ref, name)(
        logits, temperature, seed=77, offset=5
    )
    with cm.launch_config(block=64):  # several programs even at these sizes
        compare(
            kernel,
            reference,
            inputs,
            dtype,
            device,
            ["logits", "temperature"],
            factor=2,
            grad_factor=2,
        )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LOG_PROBS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_prob(name, shape, dtype, device):
    logits = make_logits(shape, seed=2, masked=False)
    y = ref.logit_binary_concrete_sample(make_logits(shape, seed=5, masked=False), 0.9, seed=3)
    value = y if name.startswith("logit") else torch.sigmoid(y)
    inputs = {"value": value, "logits": logits, "temperature": make_temperature(shape, seed=6)}
    kernel = lambda value, logits, temperature: KERNELS[name](value, logits, temperature)
    reference = lambda value, logits, temperature: getattr(ref, name)(value, logits, temperature)
    compare(
        kernel,
        reference,
        inputs,
        dtype,
        device,
        ["value", "logits", "temperature"],
        factor=4,
        grad_factor=4,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype, device):
    a = make_logits((4, 33), seed=1, masked=False).to(dtype)
    t = make_temperature((33,), seed=2).to(dtype)
    for name in SAMPLES:
        out = KERNELS[name](a.to(device), t.to(device), 5, 0, None)
        assert out.dtype == dtype
        with ref.noise_as(dtype):
            expected = getattr(ref, name)(a.double(), t.double(), seed=5)
        assert_low_precision(out, expected, getattr(ref, name)(a, t, seed=5), name)
    x = ref.binary_concrete_sample(a, 2.0, seed=9)  # away from 0 and 1 in low precision
    out = KERNELS["binary_concrete_log_prob"](x.to(device), a.to(device), t.to(device))
    assert_low_precision(
        out,
        ref.binary_concrete_log_prob(x.double(), a.double(), t.double()),
        ref.binary_concrete_log_prob(x, a, t),
        "binary_concrete_log_prob",
    )


def test_saturated_sample_has_zero_gradient(device):
    # Logits of +-60 at temperature 0.1 saturate x to exactly 0 or 1 in fp32: no gradient, no NaN.
    a = torch.tensor([60.0, -60.0, 0.3], device=device, requires_grad=True)
    t = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    x = KERNELS["binary_concrete_sample"](a, t, 1, 0, None)
    assert x[0] == 1 and x[1] == 0
    ga, gt = torch.autograd.grad(x.sum(), (a, t))
    assert torch.equal(ga[:2], torch.zeros(2, device=device))
    assert torch.isfinite(gt) and torch.isfinite(ga).all()


def test_sample_of_infinite_logits(device):
    a = torch.tensor([float("inf"), float("-inf"), 0.0], device=device, requires_grad=True)
    y = KERNELS["logit_binary_concrete_sample"](
        a, torch.tensor(0.5, dtype=torch.float64), 2, 0, None
    )
    assert y[0] == float("inf") and y[1] == float("-inf")
    g, gt = KERNELS["logit_binary_concrete_sample_backward"](
        torch.ones_like(y), y, torch.tensor(0.5), True
    )
    assert gt[:2].tolist() == [0.0, 0.0] and torch.isfinite(gt).all()


@pytest.mark.parametrize("name", SAMPLES + LOG_PROBS)
def test_agrees_with_cpu_kernels(name, device):
    if not _ops.has_compiled("cpu"):
        pytest.skip("the compiled CPU kernels are not built")
    a = make_logits((5, 17), seed=1, masked=False, dtype=torch.float32)
    t = make_temperature((5, 17), seed=2, dtype=torch.float32)
    if name in SAMPLES:
        args = (a, t, 123, 4, None)
        with ref.noise_as(torch.float32):
            expected = getattr(ref, name)(a.double(), t.double(), seed=123, offset=4)
    else:
        v = torch.sigmoid(make_logits((5, 17), seed=3, masked=False, dtype=torch.float32))
        v = v if name.startswith("binary") else torch.logit(v)
        args = (v, a, t)
        expected = getattr(ref, name)(v.double(), a.double(), t.double())
    cpu = getattr(torch.ops.concrete_ext, name)(*args)
    tri = KERNELS[name](*[x.to(device) if isinstance(x, torch.Tensor) else x for x in args]).cpu()
    if not torch.allclose(cpu.double(), expected, rtol=1e-4, atol=1e-5):
        pytest.xfail(
            f"the compiled CPU {name} disagrees with the reference (the log1m sign of "
            "philox.h in the logistic noise, fixed on another branch)"
        )
    torch.testing.assert_close(tri, cpu, rtol=2e-6, atol=2e-6)


def test_gradcheck_binary(device):
    a = make_logits((2, 3), seed=1, masked=False).to(device).requires_grad_()
    t = make_temperature((2, 3), seed=2).to(device).requires_grad_()
    x = torch.sigmoid(make_logits((2, 3), seed=3, masked=False)).to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, t: KERNELS["binary_concrete_sample"](a, t, 8, 0, None), (a, t)
    )
    assert torch.autograd.gradcheck(
        lambda x, a, t: KERNELS["binary_concrete_log_prob"](x, a, t), (x, a, t)
    )
