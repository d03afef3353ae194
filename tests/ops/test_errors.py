"""Bad input raises the matching Python exception, with a message naming the argument, from the
functional API and from the ops themselves."""

import math

import pytest
import torch

import concrete_ext as ce

L = torch.zeros(4, 5)
T4 = torch.full((4,), 0.5)

# name -> (call with logits, temperature, dim; the temperature argument's name; has dim)
CATEGORICAL = {
    "exp_concrete_sample": (
        lambda a, t, dim=-1: ce.exp_concrete_sample(a, t, dim, seed=1),
        "temperature",
    ),
    "concrete_sample": (lambda a, t, dim=-1: ce.concrete_sample(a, t, dim, seed=1), "temperature"),
    "gumbel_softmax": (lambda a, t, dim=-1: ce.gumbel_softmax(a, t, dim=dim, seed=1), "tau"),
    "gumbel_softmax_hard": (
        lambda a, t, dim=-1: ce.gumbel_softmax(a, t, True, dim=dim, seed=1),
        "tau",
    ),
    "exp_concrete_log_prob": (
        lambda a, t, dim=-1: ce.exp_concrete_log_prob(torch.zeros(a.shape), a, t, dim),
        "temperature",
    ),
    "concrete_log_prob": (
        lambda a, t, dim=-1: ce.concrete_log_prob(torch.full(a.shape, 0.2), a, t, dim),
        "temperature",
    ),
    "relaxed_kl_q": (
        lambda a, t, dim=-1: ce.relaxed_kl_sample(a, t, torch.zeros(a.shape), 1.0, dim, seed=1),
        "q_temperature",
    ),
    # integer logits given as p_logits (q_logits valid), bad temperatures as p_temperature
    "relaxed_kl_p": (
        lambda a, t, dim=-1: ce.relaxed_kl_sample(
            a if a.is_floating_point() else torch.zeros(a.shape),
            1.0,
            a if not a.is_floating_point() else torch.zeros(a.shape),
            t,
            dim,
            seed=1,
        ),
        "p_temperature",
    ),
}
BINARY = {
    "binary_concrete_sample": (lambda a, t: ce.binary_concrete_sample(a, t, seed=1)),
    "logit_binary_concrete_sample": (lambda a, t: ce.logit_binary_concrete_sample(a, t, seed=1)),
    "binary_concrete_log_prob": (
        lambda a, t: ce.binary_concrete_log_prob(torch.full(a.shape, 0.3), a, t)
    ),
    "logit_binary_concrete_log_prob": (
        lambda a, t: ce.logit_binary_concrete_log_prob(torch.zeros(a.shape), a, t)
    ),
}


@pytest.mark.parametrize("op", CATEGORICAL)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_logits_type_error(op, dtype):
    fn, _ = CATEGORICAL[op]
    name = (
        "p_logits" if op == "relaxed_kl_p" else ("q_logits" if op == "relaxed_kl_q" else "logits")
    )
    with pytest.raises(TypeError, match=name):
        fn(torch.zeros(4, 5, dtype=dtype), 0.5)


@pytest.mark.parametrize("op", BINARY)
def test_integer_logits_type_error_binary(op):
    with pytest.raises(TypeError, match="logits"):
        BINARY[op](torch.zeros(4, 5, dtype=torch.int64), 0.5)


def test_gumbel_max_integer_logits():
    with pytest.raises(TypeError, match="logits"):
        ce.gumbel_max_sample(torch.zeros(3, 4, dtype=torch.int64), seed=1)


@pytest.mark.parametrize("op", CATEGORICAL)
@pytest.mark.parametrize("dim", [2, -3, 10])
def test_dim_out_of_range(op, dim):
    fn, _ = CATEGORICAL[op]
    with pytest.raises(IndexError, match="dim"):
        fn(L, 0.5, dim)


def test_gumbel_max_dim_out_of_range():
    with pytest.raises(IndexError, match="dim"):
        ce.gumbel_max_sample(L, 2, seed=1)


@pytest.mark.parametrize("op", CATEGORICAL)
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_python_temperature(op, bad):
    fn, name = CATEGORICAL[op]
    with pytest.raises(ValueError, match=name):
        fn(L, bad)


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("bad", [0, -0.5, math.nan, math.inf])
def test_bad_python_temperature_binary(op, bad):
    with pytest.raises(ValueError, match="temperature"):
        BINARY[op](L, bad)


@pytest.mark.parametrize("op", list(CATEGORICAL) + list(BINARY))
@pytest.mark.parametrize("bad", ["0.5", None, True, [0.5]])
def test_temperature_of_the_wrong_type(op, bad):
    fn = CATEGORICAL[op][0] if op in CATEGORICAL else BINARY[op]
    with pytest.raises(TypeError, match="temperature|tau"):
        fn(L, bad)


@pytest.mark.parametrize("op", list(CATEGORICAL) + list(BINARY))
def test_integer_temperature_tensor(op):
    fn = CATEGORICAL[op][0] if op in CATEGORICAL else BINARY[op]
    with pytest.raises(TypeError, match="temperature|tau"):
        fn(L, torch.ones(4, dtype=torch.int64))


@pytest.mark.parametrize("op", CATEGORICAL)
@pytest.mark.parametrize("shape", [(5,), (3,), (4, 2), (2, 4)])
def test_temperature_that_does_not_broadcast(op, shape):
    fn, name = CATEGORICAL[op]
    with pytest.raises(ValueError, match=name):  # the argument as the caller named it (tau)
        fn(L, torch.full(shape, 0.5))


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 4, 5)])
def test_temperature_that_does_not_broadcast_binary(op, shape):
    with pytest.raises(ValueError, match="temperature"):
        BINARY[op](L, torch.full(shape, 0.5))


@pytest.mark.parametrize(
    "fn",
    [
        ce.exp_concrete_log_prob,
        ce.concrete_log_prob,
        ce.binary_concrete_log_prob,
        ce.logit_binary_concrete_log_prob,
    ],
)
def test_value_checks(fn):
    with pytest.raises(TypeError, match="value"):
        fn(torch.full((4, 5), 0.2, dtype=torch.float64), L, 0.5)
    with pytest.raises(TypeError, match="value"):
        fn(torch.ones(4, 5, dtype=torch.int64), L, 0.5)
    with pytest.raises(ValueError, match="value"):
        fn(torch.full((3, 5), 0.2), L, 0.5)


def test_relaxed_kl_p_logits_checks():
    with pytest.raises(TypeError, match="p_logits"):
        ce.relaxed_kl_sample(L, 0.5, L.double(), 0.5, seed=1)
    with pytest.raises(ValueError, match="p_logits"):
        ce.relaxed_kl_sample(L, 0.5, torch.zeros(3, 5), 0.5, seed=1)


@pytest.mark.parametrize(
    "op", ["exp_concrete_sample", "concrete_sample", "gumbel_softmax_hard", "exp_concrete_log_prob"]
)
def test_zero_dim_logits(op):
    with pytest.raises(ValueError, match="dimension"):
        CATEGORICAL[op][0](torch.tensor(0.3), 0.5)


@pytest.mark.parametrize("fn", [ce.exp_concrete_sample, ce.binary_concrete_sample])
def test_seed_and_generator_arguments(fn):
    with pytest.raises(TypeError, match="generator"):
        fn(L, 0.5, generator=3)
    with pytest.raises(TypeError, match="seed"):
        fn(L, 0.5, seed="1")
    with pytest.raises(ValueError, match="offset"):
        fn(L, 0.5, seed=1, offset=-2)
    with pytest.raises(ValueError, match="offset"):
        fn(L, 0.5, offset=2)


def test_ops_check_their_arguments():
    ops = torch.ops.concrete_ext
    with pytest.raises(TypeError, match="logits"):
        ops.concrete_sample(torch.zeros(2, 3, dtype=torch.int64), torch.tensor(0.5), -1, 1, 0, None)
    with pytest.raises(IndexError, match="dim"):
        ops.exp_concrete_sample(L, torch.tensor(0.5), 5, 1, 0, None)
    with pytest.raises(ValueError, match="temperature"):
        ops.exp_concrete_log_prob(L, L, torch.ones(3), -1)
    with pytest.raises(TypeError, match="value"):
        ops.exp_concrete_log_prob(L.double(), L, torch.tensor(0.5), -1)
    with pytest.raises(ValueError, match="value"):
        ops.exp_concrete_log_prob(torch.zeros(2, 5), L, torch.tensor(0.5), -1)
    with pytest.raises(ValueError, match="kind"):
        ops.noise_like(L, "cauchy", 1, 0, None)
    with pytest.raises(ValueError, match="rng_state"):
        ops.gumbel_softmax_hard_backward(
            L, L, torch.tensor(0.5), torch.zeros(3, dtype=torch.int64), -1, False
        )


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        with ce.backend("tpu"):
            pass
