"""Structured output prediction (Section 5.3): the conditional model, L_m^SP, its estimators, its
training runs and the CLI, including the temperature study of Figure 4.

The estimators are checked as in test_zoo_estimators.py (see its docstring for the method and the
5-standard-error tolerance): VIMCO and NVIL against the gradient of the exactly enumerated
E[L_m^SP], the Concrete relaxation against the gradient of the relaxed objective by quadrature.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from zoo_helpers import (
    Z_MAX,
    assert_resume_is_exact,
    assert_unbiased,
    exact_conditional_log_likelihood,
    exact_sp_bound,
    flat_grad,
    linear64,
    log_logistic,
    mc_gradient,
    perturbed,
    quadrature_log_mean,
    z_scores,
)

from concrete_ext.zoo import cli, runs
from concrete_ext.zoo.data import Dataset, load_mnist_sample
from concrete_ext.zoo.estimators import NVIL, VIMCO, Concrete
from concrete_ext.zoo.evaluate import estimate_bound
from concrete_ext.zoo.model import SBN, ConditionalSBN, bernoulli_log_prob, bound, make_model
from concrete_ext.zoo.noise import NoiseSource
from concrete_ext.zoo.train import TrainConfig, Trainer

# top half 3 pixels, bottom half 3 pixels
X6 = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])


# ---- the model -----------------------------------------------------------------------------------
def test_conditional_model_structure():
    model = make_model("392V-240H-240H-392V")
    assert isinstance(model, ConditionalSBN) and isinstance(make_model("200H-784V"), SBN)
    assert model.input_size == 784 and (model.context_size, model.target_size) == (392, 392)
    sizes = [(392, 240), (240, 240), (240, 392)]
    assert sum(p.numel() for p in model.parameters()) == sum(a * b + b for a, b in sizes)
    assert model.temperature == pytest.approx(2 / 3)  # D.5's posterior temperature, binary
    assert make_model("392V-240H-240H-392V", 4).temperature == 1.0
    with pytest.raises(ValueError, match="not a density model"):
        SBN("392V-240H-240H-392V")
    with pytest.raises(ValueError, match="not a conditional model"):
        ConditionalSBN("200H-784V")
    with pytest.raises(ValueError, match="784 pixels, got 700"):
        model.log_weights_discrete(torch.zeros(2, 700), 1, NoiseSource(seed=0))
    mean = np.linspace(0.1, 0.9, 784)
    model.set_output_bias(mean)  # all pixels given: the bottom half's means are used
    b = model.gen[-1][-1].bias.double()
    torch.testing.assert_close(torch.sigmoid(b), torch.as_tensor(mean[392:]), atol=1e-6, rtol=0)


def test_conditional_weights_shapes_and_gradients():
    model = make_model("4V-4H~4H-3V", 4)
    x = torch.tensor([[1.0, 0, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 1, 0]])
    w = model.log_weights_discrete(x, 5, NoiseSource(seed=0))
    assert w.log_w.shape == w.log_q.shape == (2, 5)
    torch.testing.assert_close(w.log_p - w.log_q, w.log_w)
    r = model.log_weights_relaxed(x, 5, NoiseSource(seed=0))
    assert r.log_w.shape == (2, 5) and torch.equal(r.log_q, torch.zeros(2, 5))
    r.log_w.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    acts = model.relaxed_activities(x, 3, NoiseSource(seed=1))
    assert [a.shape for a in acts] == [(2, 3, 4), (2, 3, 4)]
    assert all(a.abs().max() < 1 for a in acts)


# ---- L_m^SP identities ---------------------------------------------------------------------------
def ignore_z(model: ConditionalSBN) -> ConditionalSBN:
    """The output layer's weights zero: p(x_bottom | z) = p(x_bottom), whatever z."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in model.gen:
            for mod in net:
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=g))
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g))
        model.gen[-1][-1].weight.zero_()
    return model.eval()


@pytest.mark.parametrize("arch,arity", [("4V-4H-3V", 2), ("4V-4H~4H-3V", 4), ("4V-6H-3V", 8)])
@pytest.mark.parametrize("m", [1, 5, 50])
def test_decoder_ignoring_z_gives_conditional_log_likelihood(arch, arity, m):
    model = ignore_z(make_model(arch, arity))
    x = torch.tensor([[1.0, 0, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 1, 0]])
    b = model.gen[-1][-1].bias
    log_px = bernoulli_log_prob(x[:, 4:], b)
    for relaxed in (False, True):
        fn = model.log_weights_relaxed if relaxed else model.log_weights_discrete
        torch.testing.assert_close(
            bound(fn(x, m, NoiseSource(seed=1)).log_w), log_px, atol=1e-5, rtol=0
        )
    est = estimate_bound(model, x.numpy(), m, seed=3, rows=3, progress=False)
    np.testing.assert_allclose(est.per_example, log_px.detach().double().numpy(), atol=1e-5, rtol=0)


def test_streamed_sp_bound_converges_to_exact_conditional_log_likelihood():
    model = perturbed(make_model("3V-3H-2H-3V"), seed=21)
    exact = [exact_sp_bound(model, X6, m).item() for m in (1, 2, 3)]
    log_p = exact_conditional_log_likelihood(model, X6).item()
    assert exact[0] < exact[1] < exact[2] < log_p
    est = estimate_bound(model, X6.unsqueeze(0).numpy(), 20000, seed=0, progress=False)
    assert abs(est.mean - log_p) < 0.02, (est.mean, log_p)
    # E[L_1^SP] by Monte Carlo agrees with the enumeration
    w = model.log_weights_discrete(X6.expand(20000, -1), 1, NoiseSource(seed=2)).log_w
    assert abs(w.mean().item() - exact[0]) < 5 * w.std().item() / math.sqrt(20000)


# ---- estimators against exact gradients ----------------------------------------------------------
def exact_sp_gradient(model, m):
    params = list(model.parameters())
    return flat_grad(-exact_sp_bound(model, X6, m), params)


@pytest.mark.parametrize(
    "arch,arity,m",
    [("3V-2H-3V", 2, 3), ("3V-2H-2H-3V", 2, 2), ("3V-2H-3V", 4, 3), ("3V~2H-3V", 2, 2)],
)
def test_vimco_unbiased_for_sp_objective(arch, arity, m):
    model = perturbed(make_model(arch, arity), seed=1)
    params = list(model.parameters())
    est = VIMCO()
    mean, se = mc_gradient(lambda x, nz: est(model, x, m, nz).loss, params, X6, n=5000)
    assert_unbiased(mean, se, exact_sp_gradient(model, m), f"VIMCO SP {arch} n={arity} m={m}")


@pytest.mark.parametrize("arch,arity", [("3V-2H-3V", 2), ("3V-2H-2H-3V", 2), ("3V-2H-3V", 4)])
def test_nvil_unbiased_for_sp_objective(arch, arity):
    model = perturbed(make_model(arch, arity), seed=2)
    params = list(model.parameters())
    est = NVIL(6, hidden=4)  # the baseline sees the whole image: it does not depend on z
    perturbed(est, seed=3)
    est.signal_mean.fill_(-2.0)
    est.signal_var.fill_(0.5)  # max(1, std) = 1: not rescaled
    est.started.fill_(True)
    mean, se = mc_gradient(lambda x, nz: est(model, x, 1, nz).loss, params, X6, n=5000)
    assert_unbiased(mean, se, exact_sp_gradient(model, 1), f"NVIL SP {arch} n={arity}")


def test_sp_gradient_without_score_term_is_detected():
    """Negative control: the pathwise term alone misses the gradient through the proposal p(z |
    x_top), which here is the model itself."""
    model = perturbed(make_model("3V-2H-3V"), seed=1)
    params = list(model.parameters())

    def biased(x, nz):
        return -bound(model.log_weights_discrete(x, 3, nz).log_w).mean()

    mean, se = mc_gradient(biased, params, X6, n=5000)
    assert z_scores(mean, se, exact_sp_gradient(model, 3)).max() > 3 * Z_MAX


def relaxed_sp_quadrature(model, x, m, half_width=40.0, points=801):
    """E over y_1..y_m ~ logistic node at the model's temperature (prior logits from the top half)
    of log mean_i p(x_bottom | 2 sigmoid(y_i) - 1); one binary unit, trapezoid rule (m in 1, 2)."""
    t = model.temperature
    y = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    dy = (y[1] - y[0]).item()
    top, bottom = x[: model.context_size].double(), x[model.context_size :].double()
    log_g = log_logistic(y, linear64(model.gen[0], top).squeeze(), t)
    act = (2 * torch.sigmoid(y) - 1).unsqueeze(-1)
    log_w = bernoulli_log_prob(bottom, linear64(model.gen[1], act))
    assert abs((torch.exp(log_g) * dy).sum().item() - 1) < 1e-9  # resolved on the grid
    return quadrature_log_mean(log_g, log_w, dy, m)


@pytest.mark.parametrize("m", [1, 2])
def test_concrete_unbiased_for_relaxed_sp_objective(m):
    x = torch.tensor([1.0, 0.0, 1.0, 0.0])
    model = perturbed(make_model("2V-1H-2V"), seed=4)
    params = list(model.parameters())
    exact = flat_grad(-relaxed_sp_quadrature(model, x, m), params).float()
    mean, se = mc_gradient(
        lambda xs, nz: Concrete()(model, xs, m, nz).loss, params, x, n=4000, seed=5
    )
    assert_unbiased(mean, se, exact, f"Concrete SP m={m}")


def test_concrete_sp_gradient_is_biased_for_discrete_objective():
    """Negative control: the relaxed gradient is detectably not the discrete one."""
    model = perturbed(make_model("3V-2H-3V"), seed=1)
    params = list(model.parameters())
    mean, se = mc_gradient(lambda x, nz: Concrete()(model, x, 2, nz).loss, params, X6, n=5000)
    assert z_scores(mean, se, exact_sp_gradient(model, 2)).max() > 3 * Z_MAX


# ---- training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small() -> Dataset:
    s = load_mnist_sample()
    return Dataset("mnist-sample", s.train[:600], s.valid[:200], s.test[:200])


def _config(**kw) -> TrainConfig:
    base = dict(
        dataset="mnist-sample",
        arch="392V-30H-392V",
        estimator="concrete",
        m=1,
        steps=20,
        lr=3e-3,
        log_every=5,
        eval_every=10,
        eval_m=10,
        eval_n=50,
        checkpoint_every=5,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("estimator,m", [("concrete", 1), ("vimco", 5), ("nvil", 1)])
def test_short_sp_training_improves_the_bound(tmp_path, small, estimator, m):
    config = _config(
        estimator=estimator,
        m=m,
        steps=200,
        eval_every=200,
        log_every=50,
        checkpoint_every=200,
        eval_n=200,
    )
    trainer = Trainer(config, str(tmp_path), progress=False, dataset=small)
    assert trainer.config.task == "sp"
    initial = trainer.validate()
    trainer.run()
    final = [r for r in runs.read_jsonl(str(tmp_path / runs.METRICS)) if r["kind"] == "valid"]
    assert final[-1]["bound"] > initial + 5, (initial, final[-1]["bound"])


@pytest.mark.parametrize("estimator,m,arity", [("concrete", 2, 2), ("vimco", 3, 4), ("nvil", 1, 2)])
def test_resumed_sp_run_matches_uninterrupted(tmp_path, small, estimator, m, arity):
    config = _config(
        estimator=estimator,
        m=m,
        arity=arity,
        arch="392V-12H~8H-392V",
        steps=24,
        checkpoint_every=7,
        batch_size=32,
    )
    assert_resume_is_exact(tmp_path, config, small, stop_at=14)


# ---- the CLI -------------------------------------------------------------------------------------
def test_cli_sp_train_resume_eval_table(tmp_path, capsys):
    run = str(tmp_path / "run")
    args = [
        "train",
        "--task",
        "sp",
        "--dataset",
        "mnist-sample",
        "--estimator",
        "score",
        "--m",
        "1",
        "--steps",
        "8",
        "--eval-every",
        "4",
        "--eval-m",
        "5",
        "--eval-n",
        "20",
        "--log-every",
        "4",
        "--checkpoint-every",
        "4",
        "--run-dir",
        run,
        "--quiet",
    ]
    assert cli.main(args) == 0
    config = json.load(open(os.path.join(run, "config.json")))
    assert (config["arch"], config["estimator"]) == ("392V-240H-240H-392V", "nvil")
    assert cli.main(["train", "--run-dir", run, "--resume", "--steps", "10", "--quiet"]) == 0
    assert runs.load_checkpoint(os.path.join(run, runs.CHECKPOINT))["step"] == 10
    assert cli.main(["eval", run, "--split", "test,train", "--n", "30", "--quiet"]) == 0
    evals = json.load(open(os.path.join(run, "eval.json")))
    assert set(evals) == {"test@100/n30s0", "train@100/n30s0"}  # L^SP_100 by default
    assert 0 < evals["test@100/n30s0"]["nll"] < 392 * math.log(2)
    capsys.readouterr()
    assert cli.main(["table", str(tmp_path)]) == 0
    assert "test L^SP_100 on 30" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "train",
                "--task",
                "density",
                "--arch",
                "392V-20H-392V",
                "--dataset",
                "mnist-sample",
                "--quiet",
            ]
        )
        == 1
    )
    assert "does not match" in capsys.readouterr().err


def test_table_beside_figure4(tmp_path, capsys):
    for est, m in (("concrete", 1), ("vimco", 50)):
        run = tmp_path / f"{est}{m}"
        run.mkdir()
        config = TrainConfig(dataset="mnist", arch="392V-240H-240H-392V", estimator=est, m=m)
        runs.write_json(str(run / runs.CONFIG), config.resolved().to_dict())
        runs.write_json(
            str(run / runs.EVAL),
            {"test@100": {"split": "test", "m": 100, "n": 10000, "nll": 60.0, "sem": 0.2}},
        )
    assert cli.main(["table", str(tmp_path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| 392V-240H-240H-392V | 2 | 1 | Concrete | - | - | 60.00 ± 0.20 | 58.5 |" in out
    assert "| 392V-240H-240H-392V | 2 | 50 | VIMCO | - | - | 60.00 ± 0.20 | 51.8 |" in out


def test_cli_temperature_study(tmp_path):
    out = str(tmp_path / "fig4")
    args = [
        "temperature",
        "--dataset",
        "mnist-sample",
        "--arch",
        "392V-16H-16H-392V",
        "--temperatures",
        "0.3,3",
        "--steps",
        "6",
        "--eval-every",
        "6",
        "--eval-m",
        "5",
        "--eval-n",
        "20",
        "--n",
        "40",
        "--draws",
        "2",
        "--eval-bound-m",
        "10",
        "--out",
        out,
        "--quiet",
    ]
    assert cli.main(args) == 0
    result = json.load(open(os.path.join(out, "fig4.json")))
    recs = result["records"]
    assert [r["temperature"] for r in recs] == [0.3, 3.0] and result["n"] == 40
    assert all(r["step"] == 6 and r["continuous_loss"] > 0 and r["discrete_loss"] > 0 for r in recs)
    # hotter relaxed units sit nearer the midpoint
    assert recs[1]["median_abs"] < recs[0]["median_abs"] and recs[1]["interior"]
    with open(os.path.join(out, "fig4.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("temperature,") and len(lines) == 3
    with open(os.path.join(out, "fig4.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # finished runs are kept, not retrained: the same numbers again
    metrics = open(os.path.join(out, "T0.3", runs.METRICS)).read()
    assert cli.main(args) == 0
    assert open(os.path.join(out, "T0.3", runs.METRICS)).read() == metrics
    assert (
        json.load(open(os.path.join(out, "fig4.json")))["records"][0]["discrete_loss"]
        == recs[0]["discrete_loss"]
    )
