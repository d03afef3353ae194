"""Triton categorical sampling ops against the float64 reference: Concrete / ExpConcrete samples
and gradients, straight-through Gumbel-softmax, Gumbel-max; single-pass tiles and the looped
(large-n) kernels, masked categories, tensor temperatures, any dim, generators."""

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
    assert_low_precision,
    compare,
    make_logits,
    make_temperature,  # noqa: E402
)

pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

PATHS = {"tile": {}, "looped": LOOPED}


def _sample_fns(name):
    kernel = lambda logits, temperature: KERNELS[name](logits, temperature, -1, 42, 3, None)
    reference = lambda logits, temperature: getattr(ref, name)(
        logits, temperature, -1, seed=42, offset=3
    )
    return kernel, reference


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", ROW_NS)
@pytest.mark.parametrize("name", ["exp_concrete_sample", "concrete_sample"])
def test_sample_fp64(name, n, path, device):
    kernel, reference = _sample_fns(name)
    inputs = {
        "logits": make_logits((5, n), seed=n, masked=True),
        "temperature": make_temperature((5,), seed=n),
    }
    with cm.launch_config(**PATHS[path]):
        compare(kernel, reference, inputs, torch.float64, device, ["logits", "temperature"])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [3, 12, 33])
@pytest.mark.parametrize("name", ["exp_concrete_sample", "concrete_sample"])
def test_sample_fp32_scalar_temperature(name, n, path, device):
    kernel, reference = _sample_fns(name)
    inputs = {
        "logits": make_logits((4, n), seed=n + 1, masked=True),
        "temperature": torch.tensor(0.45, dtype=torch.float64),
    }
    with cm.launch_config(**PATHS[path]):
        compare(kernel, reference, inputs, torch.float32, device, ["logits", "temperature"])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["exp_concrete_sample", "concrete_sample"])
def test_sample_low_precision(name, dtype, path, device):
    # Math in fp32; the result rounded once to fp16 / bf16.
    a = make_logits((4, 33), seed=12, masked=True).to(dtype)
    t = make_temperature((4,), seed=13).to(dtype)
    with cm.launch_config(**PATHS[path]):
        out = KERNELS[name](a.to(device), t.to(device), -1, 6, 0, None)
    assert out.dtype == dtype
    with ref.noise_as(dtype):
        expected = getattr(ref, name)(a.double(), t.double(), -1, seed=6)
    assert_low_precision(out, expected, getattr(ref, name)(a, t, -1, seed=6), name)


@pytest.mark.parametrize("name", ["exp_concrete_sample", "concrete_sample"])
def test_sample_other_dims_and_broadcast_temperature(name, device):
    logits = make_logits((3, 7, 4), seed=5, masked=True).transpose(
        0, 2
    )  # (4, 7, 3), non-contiguous
    temperature = make_temperature((4, 1), seed=6)  # broadcasts to the batch (4, 3)
    kernel = lambda logits, temperature: KERNELS[name](logits, temperature, 1, 8, 0, None)
    reference = lambda logits, temperature: getattr(ref, name)(logits, temperature, 1, seed=8)
    outs, _ = compare(
        kernel,
        reference,
        {"logits": logits, "temperature": temperature},
        torch.float64,
        device,
        ["logits", "temperature"],
    )
    assert outs[0].shape == logits.shape


@pytest.mark.parametrize("path", PATHS)
def test_sample_masking(path, device):
    a = make_logits((3, 9), seed=1, masked=False).to(device)
    a[0, 2] = a[0, 7] = -INF
    a[2] = -INF  # a row with no category: NaN
    with cm.launch_config(**PATHS[path]):
        x = KERNELS["concrete_sample"](a, torch.tensor(0.5, dtype=torch.float64), -1, 1, 0, None)
        y = KERNELS["exp_concrete_sample"](
            a, torch.tensor(0.5, dtype=torch.float64), -1, 1, 0, None
        )
    assert (x[0, [2, 7]] == 0).all() and (y[0, [2, 7]] == -INF).all()
    assert x[2].isnan().all() and y[2].isnan().all()
    torch.testing.assert_close(x[:2].sum(-1), torch.ones(2, device=device, dtype=x.dtype))
    torch.testing.assert_close(y[:2].exp(), x[:2])


def test_sample_backward_ignores_upstream_at_masked(device):
    a = make_logits((2, 6), seed=3, masked=False).to(device)
    a[:, 1] = -INF
    t = torch.tensor(0.8, dtype=torch.float64)
    y = KERNELS["exp_concrete_sample"](a, t, -1, 4, 0, None)
    g = torch.ones_like(y)
    ga, gt = KERNELS["exp_concrete_sample_backward"](g, y, t, -1, True)
    g0 = g.clone()
    g0[:, 1] = 0
    ga0, gt0 = KERNELS["exp_concrete_sample_backward"](g0, y, t, -1, True)
    assert torch.equal(ga, ga0) and torch.equal(gt, gt0)
    assert (ga[:, 1] == 0).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_gumbel_softmax_hard(n, path, device):
    def kernel(logits, temperature):
        out, state = KERNELS["gumbel_softmax_hard"](logits, temperature, -1, 11, 2, None)
        assert state.tolist() == [11, 2] and state.device == logits.device
        return out

    reference = lambda logits, temperature: ref.gumbel_softmax(
        logits, temperature, True, -1, seed=11, offset=2
    )
    inputs = {
        "logits": make_logits((6, n), seed=n, masked=True),
        "temperature": make_temperature((6,), seed=2),
    }
    with cm.launch_config(**PATHS[path]):
        outs, _ = compare(
            kernel, reference, inputs, torch.float64, device, ["logits", "temperature"]
        )
    assert set(outs[0].unique().tolist()) <= {0.0, 1.0} and (outs[0].sum(-1) == 1).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", ROW_NS)
def test_gumbel_max(n, path, device):
    a = make_logits((7, n), seed=n + 3, masked=True).to(device)
    with cm.launch_config(**PATHS[path]):
        out = KERNELS["gumbel_max_sample"](a, -1, 5, 1, None)
    assert torch.equal(out.cpu(), ref.gumbel_max_sample(a.cpu(), -1, seed=5, offset=1))


@pytest.mark.parametrize("path", PATHS)
def test_gumbel_max_ties_nan_and_empty_rows(path, device):
    # Equal noise is impossible to force; equal scores are: +-inf ties and NaN never win.
    a = torch.zeros(4, 9, dtype=torch.float64)
    a[0] = -INF
    a[1, 3] = a[1, 6] = INF  # tie at +inf: the lower index
    a[2, 0] = float("nan")
    a[2, 1:] = -INF
    a[2, 5] = 0.0  # the only category that can win
    a[3, :] = float("nan")  # nothing can win: no distribution, NaN
    with cm.launch_config(**PATHS[path]):
        out = KERNELS["gumbel_max_sample"](a.to(device), -1, 1, 0, None).cpu()
    # Rows 0 (all -inf) and 3 (all NaN) have no distribution and sample NaN, as the Concrete
    # samples (and the CPU and CUDA kernels) do.
    assert out[[0, 3]].isnan().all()
    assert out[[1, 2]].argmax(-1).tolist() == [3, 5] and (out[[1, 2]].sum(-1) == 1).all()


def test_gumbel_max_has_no_gradient(device):
    a = make_logits((2, 5), seed=1, masked=True).to(device).requires_grad_()
    out = KERNELS["gumbel_max_sample"](a, -1, 5, 1, None)
    assert not out.requires_grad


@pytest.mark.parametrize("name", ["exp_concrete_sample", "concrete_sample"])
def test_generator_seed_matches_reference(name, device):
    a = make_logits((3, 6), seed=9, masked=True).to(device)
    gen = torch.Generator(device=device).manual_seed(5)
    out = KERNELS[name](a, torch.tensor(0.7, dtype=torch.float64), -1, None, 0, gen)
    expected = getattr(ref, name)(
        a, 0.7, -1, generator=torch.Generator(device=device).manual_seed(5)
    )
    torch.testing.assert_close(out.cpu(), expected.cpu(), equal_nan=True)
    # A fresh call draws a fresh seed.
    assert not torch.equal(
        out, KERNELS[name](a, torch.tensor(0.7, dtype=torch.float64), -1, None, 0, gen)
    )


def test_hard_backward_recomputes_the_soft_sample(device):
    # The hard backward from the saved rng_state equals the soft sample's backward.
    a = make_logits((4, 10), seed=2, masked=True).to(device)
    t = make_temperature((4,), seed=3).to(device)
    g = torch.randn(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = g.to(device)
    out, state = KERNELS["gumbel_softmax_hard"](a, t, -1, 21, 4, None)
    ga, gt = KERNELS["gumbel_softmax_hard_backward"](g, a, t, state, -1, True)
    x = KERNELS["concrete_sample"](a, t, -1, 21, 4, None)
    ga2, gt2 = KERNELS["concrete_sample_backward"](g, x, t, -1, True)
    torch.testing.assert_close(ga, ga2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gt, gt2, rtol=1e-12, atol=1e-12)


def test_gradcheck_exp_concrete_sample(device):
    a = make_logits((2, 5), seed=4, masked=False).to(device).requires_grad_()
    t = make_temperature((2,), seed=5).to(device).requires_grad_()
    fn = lambda a, t: KERNELS["exp_concrete_sample"](a, t, -1, 17, 0, None)
    assert torch.autograd.gradcheck(fn, (a, t), eps=1e-6, atol=1e-7)
