"""Bad input: the cases tests/ops/test_errors.py and tests/distributions do not already cover
(docs/RELIABILITY.md has the full table). Every bad call raises ValueError / TypeError / IndexError
with a message naming the argument, on the compiled kernels and on the reference backend alike;
a row of all -inf logits gives its documented result (NaN); shapes past 2^31 elements go through
the fake kernels (meta tensors, nothing allocated)."""

import math

import pytest
import torch

import concrete_ext as ce
from concrete_ext.distributions import BinaryConcrete, Concrete, ExpConcrete, LogitBinaryConcrete

pytestmark = pytest.mark.usefixtures("one_thread")
INF = math.inf
L = torch.zeros(4, 5)
CATEGORICAL_DISTS = (Concrete, ExpConcrete)
BINARY_DISTS = (BinaryConcrete, LogitBinaryConcrete)


def _ops(a, t, dim=-1):
    """Every functional op as (name of its temperature argument, call(logits, temperature, dim))."""
    return {
        "exp_concrete_sample": ("temperature", lambda: ce.exp_concrete_sample(a, t, dim, seed=1)),
        "concrete_sample": ("temperature", lambda: ce.concrete_sample(a, t, dim, seed=1)),
        "gumbel_softmax": ("tau", lambda: ce.gumbel_softmax(a, t, dim=dim, seed=1)),
        "gumbel_softmax_hard": ("tau", lambda: ce.gumbel_softmax(a, t, True, dim=dim, seed=1)),
        "exp_concrete_log_prob": (
            "temperature",
            lambda: ce.exp_concrete_log_prob(torch.zeros(a.shape), a, t, dim),
        ),
        "concrete_log_prob": (
            "temperature",
            lambda: ce.concrete_log_prob(torch.full(a.shape, 0.2), a, t, dim),
        ),
        "relaxed_kl_q": (
            "q_temperature",
            lambda: ce.relaxed_kl_sample(a, t, torch.zeros(a.shape), 1.0, dim, seed=1),
        ),
        "relaxed_kl_p": (
            "p_temperature",
            lambda: ce.relaxed_kl_sample(a, 1.0, torch.zeros(a.shape), t, dim, seed=1),
        ),
    }


def _binary_ops(a, t):
    return {
        "binary_concrete_sample": lambda: ce.binary_concrete_sample(a, t, seed=1),
        "logit_binary_concrete_sample": lambda: ce.logit_binary_concrete_sample(a, t, seed=1),
        "binary_concrete_log_prob": lambda: ce.binary_concrete_log_prob(
            torch.full(a.shape, 0.3), a, t
        ),
        "logit_binary_concrete_log_prob": lambda: ce.logit_binary_concrete_log_prob(
            torch.zeros(a.shape), a, t
        ),
    }


CAT_NAMES = list(_ops(L, 1.0))
BIN_NAMES = list(_binary_ops(L, 1.0))
BACKENDS = ["cpu", "reference"]
BAD = [0.0, -1.0, math.nan, INF]


# ---- temperature tensors -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", CAT_NAMES)
@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("shape", [(), (4,)], ids=["scalar", "per_row"])
def test_bad_temperature_tensor(backend, op, bad, shape):
    t = torch.full(shape, 0.5)
    t.view(-1)[-1] = bad
    name, call = _ops(L, t)[op]
    with ce.backend(backend), pytest.raises(ValueError, match=f"{name} must be positive"):
        call()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", BIN_NAMES)
@pytest.mark.parametrize("bad", BAD)
def test_bad_temperature_tensor_binary(backend, op, bad):
    t = torch.full((4, 5), 0.5)
    t[2, 3] = bad
    with ce.backend(backend), pytest.raises(ValueError, match="temperature must be positive"):
        _binary_ops(L, t)[op]()


@pytest.mark.parametrize(
    "tau", [1e-46, 1e-40, 1e39, 10**400], ids=["1e-46", "1e-40", "1e39", "int 10^400"]
)
def test_temperature_out_of_the_op_precision(tau):
    # positive and finite as a Python number, but 0 or inf in float32, where the samples of
    # fp32/fp16/bf16 ops are computed: NaN samples before this check
    for t in (tau, torch.tensor(float(min(tau, 1e300)), dtype=torch.float64)):
        with pytest.raises(ValueError, match="temperature"):
            ce.exp_concrete_sample(L, t, seed=1)
        with pytest.raises(ValueError, match="tau"):
            ce.gumbel_softmax(L.half(), t, seed=1)
    if tau < 1e300:  # fine in float64
        assert torch.isfinite(ce.concrete_sample(L.double(), tau, seed=1)).all()


def test_temperature_dtype_is_free():
    a = torch.randn(4, 5, generator=torch.Generator().manual_seed(3)).half()
    t = torch.tensor([0.5, 0.7, 1.5, 3.0])
    for fn in (ce.concrete_sample, ce.exp_concrete_sample):
        expected = fn(a, t, seed=2)
        for other in (t.double(), t.half(), t.bfloat16()):
            other_values = other.float()  # what the fp32 math reads
            assert torch.equal(fn(a, other, seed=2), fn(a, other_values, seed=2))
        assert torch.equal(fn(a, t.double(), seed=2), expected)


def test_temperature_check_keeps_gradients_and_accepts_parameters():
    t = torch.nn.Parameter(torch.full((4,), 0.5))
    ce.concrete_sample(L.requires_grad_(False), t, seed=3).sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()
    with pytest.raises(ValueError, match="temperature"):
        ce.concrete_sample(L, torch.nn.Parameter(torch.full((4,), -0.5)), seed=3)


def test_temperature_values_on_another_device_are_not_read():
    # Reading a device tensor would be a sync: only its device, dtype and shape are checked. Meta
    # tensors stand for device tensors here (their values cannot be read at all).
    m = torch.zeros(4, 5, device="meta")
    out = ce.concrete_sample(m, torch.full((4,), -1.0, device="meta"), seed=1)
    assert out.device.type == "meta" and out.shape == (4, 5)


# ---- shapes and dims, on every backend -----------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", CAT_NAMES)
def test_reference_backend_refuses_what_the_kernels_refuse(backend, op):
    with ce.backend(backend):
        with pytest.raises(IndexError, match="dim 2 is out of range"):
            _ops(L, 0.5, 2)[op][1]()
        with pytest.raises(ValueError, match="has no categories"):
            _ops(torch.zeros(4, 0), 0.5)[op][1]()
        with pytest.raises(ValueError, match="at least one dimension"):
            _ops(torch.tensor(0.3), 0.5)[op][1]()
        name, call = _ops(L, torch.full((3,), 0.5))[op]
        with pytest.raises(ValueError, match=f"{name} of shape \\(3,\\) does not broadcast"):
            call()
        with pytest.raises(TypeError, match="dim must be an int"):
            _ops(L, 0.5, "1")[op][1]()
        with pytest.raises(TypeError, match="dim must be an int"):
            _ops(L, 0.5, True)[op][1]()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gumbel_max_shapes(backend):
    with ce.backend(backend):
        with pytest.raises(ValueError, match="logits has no categories"):
            ce.gumbel_max_sample(torch.zeros(3, 0), seed=1)
        with pytest.raises(IndexError, match="dim"):
            ce.gumbel_max_sample(L, -3, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", BIN_NAMES)
def test_binary_temperature_shape_on_every_backend(backend, op):
    with ce.backend(backend), pytest.raises(ValueError, match="temperature of shape"):
        _binary_ops(L, torch.full((3, 5), 0.5))[op]()


def test_empty_batch_with_categories_is_fine():
    out = ce.concrete_sample(torch.zeros(0, 5), torch.zeros(0) + 0.5, seed=1)
    assert out.shape == (0, 5)


# ---- devices (meta tensors stand for a second device) --------------------------------------------
def test_mismatched_devices():
    m = torch.zeros(4, 5, device="meta")
    with pytest.raises(ValueError, match="temperature is on meta"):
        ce.exp_concrete_sample(L, torch.full((4,), 0.5, device="meta"), seed=1)
    with pytest.raises(ValueError, match="value is on meta"):
        ce.exp_concrete_log_prob(m, L, 0.5)
    with pytest.raises(ValueError, match="p_logits is on meta"):
        ce.relaxed_kl_sample(L, 0.5, m, 0.5, seed=1)
    with pytest.raises(ValueError, match="value is on meta"):
        ce.binary_concrete_log_prob(m, L, 0.5)
    with pytest.raises(ValueError, match="generator is for cpu"):
        ce.concrete_sample(m, 0.5, generator=torch.Generator())
    # A single CPU value is read on the host for logits anywhere (documented, no sync).
    assert ce.concrete_sample(m, torch.tensor(0.5), seed=1).device.type == "meta"


# ---- distributions -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CATEGORICAL_DISTS + BINARY_DISTS)
def test_distribution_bad_input(cls):
    with pytest.raises(ValueError, match="temperature"):  # constraints.positive lets inf through
        cls(INF, logits=L, validate_args=True)
    with pytest.raises(ValueError, match="temperature"):
        cls(math.nan, logits=L, validate_args=True)
    with pytest.raises(ValueError, match="temperature"):
        cls(
            torch.tensor([0.5, INF, 1.0, 1.0]).reshape(4, *[1] * (cls in BINARY_DISTS)),
            logits=L,
            validate_args=True,
        )
    with pytest.raises(TypeError, match="logits"):
        cls(0.5, logits=torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="probs"):
        cls(0.5, probs=torch.ones(4, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="temperature"):
        cls(torch.ones(4, 1, dtype=torch.int64), logits=L)
    with pytest.raises(ValueError, match="temperature does not broadcast"):
        cls(torch.full((3,), 0.5), logits=L)
    with pytest.raises(ValueError, match="logits"):
        cls(0.5, logits=torch.full((4, 5), math.nan), validate_args=True)
    d = cls(0.5, logits=L, validate_args=False)
    with pytest.raises(ValueError, match="value does not broadcast"):
        d.log_prob(torch.zeros(3, 5))
    with pytest.raises(TypeError, match="value must be a torch.Tensor"):
        d.log_prob([0.2] * 5)
    # Without validation, a bad temperature still cannot sample silently: the functional layer
    # checks CPU temperatures.
    for bad in (0.0, -1.0, math.nan, INF):
        with pytest.raises(ValueError, match="temperature"):
            cls(bad, logits=L, validate_args=False).rsample()


def test_distribution_value_dtype_promotes_as_torch():
    """A float64 value on a float32 distribution gives a float64 density, as torch's does."""
    d = ExpConcrete(0.5, logits=L, validate_args=False)
    y = d.sample(generator=torch.Generator().manual_seed(0))
    lp = d.log_prob(y.double())
    assert lp.dtype == torch.float64
    torch.testing.assert_close(lp, ExpConcrete(0.5, logits=L.double()).log_prob(y.double()))


# ---- a row of all -inf logits (README: samples NaN) ----------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_all_masked_row(backend, dtype):
    a = torch.tensor([[-INF] * 4, [0.5, -INF, 1.0, -2.0], [0.0, 0.1, 0.2, 0.3]], dtype=dtype)
    a.requires_grad_()
    t = torch.tensor(0.5, requires_grad=True)  # shared by every row
    y = torch.log(torch.full((3, 4), 0.25, dtype=dtype))
    with ce.backend(backend):
        outs = {
            "concrete_sample": ce.concrete_sample(a, t, seed=4),
            "exp_concrete_sample": ce.exp_concrete_sample(a, t, seed=4),
            "gumbel_softmax_hard": ce.gumbel_softmax(a, t, hard=True, seed=4),
            "gumbel_max_sample": ce.gumbel_max_sample(a, seed=4),
            "exp_concrete_log_prob": ce.exp_concrete_log_prob(y, a, t),
            "concrete_log_prob": ce.concrete_log_prob(y.exp(), a, t),
            **dict(
                zip(
                    ("kl_sample", "kl_log_q", "kl_log_p"),
                    ce.relaxed_kl_sample(a, t, a.detach(), 2 * t, seed=4),
                )
            ),
        }
    for name, out in outs.items():
        assert out[0].isnan().all(), (name, out)
        assert not out[1:].isnan().any(), (name, out)  # the other rows are untouched
        if out.requires_grad:
            # Using only the other rows gives finite gradients, also for the shared temperature
            # (the ExpConcrete and relaxed-KL kernels made it NaN before).
            ga, gt = torch.autograd.grad(out[1:].float().sum(), (a, t), retain_graph=True)
            assert not ga[1:].isnan().any() and gt.isfinite(), (name, gt)
    # binary ops: a -inf logit is a sample of exactly 0 (-inf in logit space), not NaN
    with ce.backend(backend):
        assert (ce.binary_concrete_sample(a[0], 0.5, seed=1) == 0).all()
        assert (ce.logit_binary_concrete_sample(a[0], 0.5, seed=1) == -INF).all()


# ---- more than 2^31 elements ---------------------------------------------------------------------
BIG = (2**16, 2**15 + 1, 2)  # 2^32 + 2^17 elements; meta tensors allocate nothing


@pytest.mark.parametrize("dim", [-1, 0])
def test_more_than_2_31_elements_on_meta(dim):
    a = torch.empty(BIG, device="meta", requires_grad=True)
    bshape = [s for i, s in enumerate(BIG) if i != dim % 3]
    t = torch.empty(bshape, device="meta", requires_grad=True)
    for fn in (ce.concrete_sample, ce.exp_concrete_sample):
        out = fn(a, t, dim, seed=1)
        assert out.shape == BIG
        ga, gt = torch.autograd.grad(out, (a, t), torch.empty(BIG, device="meta"))
        assert ga.shape == BIG and gt.shape == t.shape
    hard = ce.gumbel_softmax(a, t, True, dim=dim, seed=1)
    assert hard.shape == BIG
    assert torch.autograd.grad(hard, a, torch.empty(BIG, device="meta"))[0].shape == BIG
    assert ce.gumbel_max_sample(a, dim, seed=1).shape == BIG
    assert ce.exp_concrete_log_prob(a.detach(), a, t, dim).shape == tuple(bshape)
    y, lq, lp = ce.relaxed_kl_sample(a, t, a.detach(), 0.5, dim, seed=1)
    assert y.shape == BIG and lq.shape == lp.shape == tuple(bshape)
    for fn in (ce.binary_concrete_sample, ce.logit_binary_concrete_sample):
        assert fn(a, 0.5, seed=1).shape == BIG
    assert ce.binary_concrete_log_prob(a.detach(), a, 0.5).shape == BIG


def test_expanded_stride_0_view_equals_the_materialised_tensor():
    # A stride-0 view may stand for many more elements than it stores; the op reads it as the
    # tensor it stands for (and materialises its (rows, n) copy: see docs/RELIABILITY.md).
    base = torch.randn(1, 7, generator=torch.Generator().manual_seed(0))
    view = base.expand(300, 7)
    for fn in (
        ce.concrete_sample,
        ce.exp_concrete_sample,
        lambda a, t, seed: ce.gumbel_max_sample(a, seed=seed),
    ):
        assert torch.equal(fn(view, 0.5, seed=5), fn(view.contiguous(), 0.5, seed=5))
    t = torch.tensor(0.5).expand(300, 1)
    assert torch.equal(
        ce.binary_concrete_sample(view, t, seed=2),
        ce.binary_concrete_sample(view.contiguous(), 0.5, seed=2),
    )
