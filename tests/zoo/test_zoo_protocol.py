"""The protocol of the comparisons (Appendix D.5 and what the paper leaves open) and the compiled
training step: structured-prediction weight decay, the learning-rate sweep of VIMCO / NVIL, the
two readings of the inference network's width, per-image evaluations and paired differences, the
progress line of a time-budgeted run, and a compiled step that computes what the eager one does."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os

import numpy as np
import pytest
import torch
from zoo_helpers import assert_resume_is_exact

from concrete_ext.zoo import cli, runs
from concrete_ext.zoo.data import Dataset, load_mnist_sample
from concrete_ext.zoo.lrsweep import lr_sweep
from concrete_ext.zoo.model import SBN
from concrete_ext.zoo.noise import DefaultGeneratorNoise, NoiseSource, generator_as_default
from concrete_ext.zoo.progress import Progress
from concrete_ext.zoo.train import SP_WEIGHT_DECAY, TrainConfig, Trainer


@pytest.fixture(scope="module")
def small() -> Dataset:
    s = load_mnist_sample()
    return Dataset("mnist-sample", s.train[:600], s.valid[:200], s.test[:200])


def _config(**kw) -> TrainConfig:
    base = dict(
        dataset="mnist-sample",
        arch="20H~784V",
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


# ---- weight decay (D.5) ---------------------------------------------------------------------------
def test_structured_prediction_decays_weights_by_default(tmp_path, small):
    assert (
        TrainConfig(arch="392V-240H-240H-392V").resolved().weight_decay == SP_WEIGHT_DECAY == 1e-3
    )
    assert TrainConfig(arch="200H~784V").resolved().weight_decay == 0.0
    assert TrainConfig(arch="392V-240H-240H-392V", weight_decay=0.0).resolved().weight_decay == 0
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(weight_decay=-1.0).resolved()
    # NVIL: the model's parameters decay, the baseline network's do not
    t = Trainer(
        _config(arch="392V-12H-392V", estimator="nvil", steps=2),
        str(tmp_path / "nvil"),
        progress=False,
        dataset=small,
    )
    groups = t.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [1e-3, 0.0]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in t.model.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in t.estimator.parameters()}
    # the decay acts: the same run without it ends elsewhere
    a = Trainer(
        _config(arch="392V-12H-392V", steps=5), str(tmp_path / "a"), progress=False, dataset=small
    )
    b = Trainer(
        _config(arch="392V-12H-392V", steps=5, weight_decay=0.0),
        str(tmp_path / "b"),
        progress=False,
        dataset=small,
    )
    assert len(a.optimizer.param_groups) == 1  # Concrete has no estimator parameters
    for t in (a, b):
        t.run()
    w_a, w_b = a.model.gen[0][0].weight, b.model.gen[0][0].weight
    assert not torch.equal(w_a, w_b)
    assert w_a.norm() < w_b.norm()
    # a density model without decay keeps one group: checkpoints keep their layout
    d = Trainer(
        _config(estimator="nvil", steps=2), str(tmp_path / "d"), progress=False, dataset=small
    )
    assert len(d.optimizer.param_groups) == 1


# ---- inference network width --------------------------------------------------------------------
def test_inference_width_readings():
    mirror = SBN("30H~20H~784V")
    wide = SBN("30H~20H~784V", inference_width="input")
    # inf[1] infers the 20 units from the 784 pixels; inf[0] the 30 units from the 20
    assert [m.out_features for m in mirror.inf[1] if isinstance(m, torch.nn.Linear)] == [20, 20, 20]
    assert [m.out_features for m in wide.inf[1] if isinstance(m, torch.nn.Linear)] == [784, 784, 20]
    assert [m.out_features for m in mirror.inf[0] if isinstance(m, torch.nn.Linear)] == [30, 30, 30]
    assert [m.out_features for m in wide.inf[0] if isinstance(m, torch.nn.Linear)] == [20, 20, 30]
    # the generative network does not change
    for a, b in zip(mirror.gen.parameters(), wide.gen.parameters()):
        assert a.shape == b.shape
    assert TrainConfig(inference_width="input").resolved().inference_width == "input"
    with pytest.raises(ValueError, match="inference_width"):
        TrainConfig(inference_width="output").resolved()
    with pytest.raises(ValueError, match="inference width reading"):
        SBN("30H~784V", inference_width="wide")


# ---- learning-rate sweep --------------------------------------------------------------------------
def test_lr_sweep_picks_the_best_validation_bound_after_fixed_steps(tmp_path, small):
    base = _config(estimator="nvil", steps=40, eval_every=20, eval_n=60, eval_m=10)
    out = str(tmp_path / "sweep")
    result = lr_sweep(out, base, (1e-4, 3e-3, 3e-2), progress=False, dataset=small)
    records = result["records"]
    assert [r["lr"] for r in records] == [1e-4, 3e-3, 3e-2]
    assert all(r["step"] == 40 and r["valid_n"] == 60 and r["valid_m"] == 10 for r in records)
    best = max(records, key=lambda r: r["valid_bound"])
    assert result["chosen_lr"] == best["lr"]
    assert best["lr"] != 1e-4  # 40 steps at 1e-4 barely move from the initial model
    # each record is the run's own validation bound at step 40 (same images and noise seeds)
    for r in records:
        valid = [
            v
            for v in runs.read_jsonl(os.path.join(out, r["run"], runs.METRICS))
            if v["kind"] == "valid" and v["step"] == 40
        ]
        assert valid and valid[-1]["bound"] == pytest.approx(r["valid_bound"], abs=1e-9)
        assert runs.read_json(os.path.join(out, r["run"], runs.CONFIG))["lr"] == r["lr"]
    margin = result["margin_over_runner_up"]
    runner = sorted(records, key=lambda r: -r["valid_bound"])[1]
    assert margin["runner_up_lr"] == runner["lr"]
    assert margin["difference"] == pytest.approx(best["valid_bound"] - runner["valid_bound"])
    assert margin["paired_sem"] > 0
    assert json.load(open(os.path.join(out, "sweep.json")))["chosen_lr"] == best["lr"]
    # a rerun keeps the finished runs and gives the same answer
    stamp = os.path.getmtime(os.path.join(out, "lr0.003", runs.CHECKPOINT))
    again = lr_sweep(out, base, (1e-4, 3e-3, 3e-2), progress=False, dataset=small)
    assert again["chosen_lr"] == result["chosen_lr"]
    assert os.path.getmtime(os.path.join(out, "lr0.003", runs.CHECKPOINT)) == stamp


def test_cli_lr_sweep(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert (
        cli.main(
            [
                "lr-sweep",
                "--dataset",
                "mnist-sample",
                "--arch",
                "12H-784V",
                "--m",
                "2",
                "--steps",
                "6",
                "--eval-every",
                "3",
                "--eval-n",
                "20",
                "--eval-m",
                "4",
                "--rates",
                "1e-3,1e-2",
                "--out",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "chosen: lr" in text
    sweep = json.load(open(os.path.join(out, "sweep.json")))
    assert sweep["settings"]["estimator"] == "vimco"  # score with m = 2
    assert [r["lr"] for r in sweep["records"]] == [1e-3, 1e-2]
    assert cli.main(["lr-sweep", "--lr", "1e-3", "--out", out, "--quiet"]) == 2


# ---- per-image evaluation and paired differences ------------------------------------------------
def test_eval_keeps_per_image_values_and_table_pairs_them(tmp_path, capsys):
    common = [
        "--dataset",
        "mnist-sample",
        "--arch",
        "16H-784V",
        "--m",
        "1",
        "--steps",
        "8",
        "--eval-every",
        "4",
        "--eval-m",
        "4",
        "--eval-n",
        "20",
        "--log-every",
        "4",
        "--checkpoint-every",
        "4",
        "--quiet",
    ]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main(["train", "--estimator", "concrete", "--run-dir", a] + common) == 0
    assert cli.main(["train", "--estimator", "nvil", "--run-dir", b, "--lr", "1e-3"] + common) == 0
    last = ["--checkpoint", "last", "--quiet"]  # (best.pt may still be the shared initial model)
    for run in (a, b):
        assert cli.main(["eval", run, "--m", "30", "--n", "40"] + last) == 0
    assert cli.main(["eval", a, "--m", "300", "--n", "40"] + last) == 0
    ev_a = runs.read_json(os.path.join(a, runs.EVAL))["test@30/n40s0"]
    ev_b = runs.read_json(os.path.join(b, runs.EVAL))["test@30/n40s0"]
    va, ia = runs.load_per_image(a, ev_a["per_image"])
    vb, ib = runs.load_per_image(b, ev_b["per_image"])
    assert len(va) == 40 and np.array_equal(ia, ib) and len(set(ia)) == 40
    assert va.mean() == pytest.approx(ev_a["mean"]) and vb.mean() == pytest.approx(ev_b["mean"])
    capsys.readouterr()
    assert cli.main(["table", str(tmp_path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "Paired differences" in out
    d = vb - va  # NLL(Concrete) - NLL(NVIL) per image
    line = [s for s in out.splitlines() if "Concrete (lr 0.0003)" in s and "NVIL (lr 0.001)" in s]
    assert len(line) == 1, out
    assert abs(d.mean()) > 0.01  # different models
    assert f"{d.mean():+.2f} ± {d.std(ddof=1) / math.sqrt(40):.2f}" in line[0]
    # the bias of the smaller m on the same images
    big = runs.read_json(os.path.join(a, runs.EVAL))["test@300/n40s0"]
    v300, _ = runs.load_per_image(a, big["per_image"])
    bias = [s for s in out.splitlines() if "Concrete L_30" in s and "L_300" in s]
    assert len(bias) == 1
    e = v300 - va  # NLL_30 - NLL_300 = L_300 - L_30 per image
    assert f"{e.mean():+.2f} ± {e.std(ddof=1) / math.sqrt(40):.2f}" in bias[0]
    assert e.mean() > 0  # L_m grows with m
    # compare: any two runs on the evaluations they share
    assert cli.main(["compare", a, b]) == 0
    text = capsys.readouterr().out
    assert text.count("test@30/n40s0") == 1 and "test@300" not in text
    assert f"= {d.mean():+.2f} +- {d.std(ddof=1) / math.sqrt(40):.2f} (paired s.e." in text
    assert cli.main(["compare", a, str(tmp_path)]) == 1


# ---- progress line --------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_progress_line_of_a_time_budget(monkeypatch):
    """A time-budgeted run shows its time against the budget (no invented total or ETA) and
    prints only at the interval, also past any count."""
    import concrete_ext.zoo.progress as progress

    clock = _Clock()
    monkeypatch.setattr(progress.time, "time", clock)
    err = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", err)
    bar = Progress(10**7, "train", unit="step", interval=5.0, budget_s=90.0)
    for step in range(1, 2101):
        clock.t += 0.01  # 100 steps/s, 21 s in all
        bar.update(1, elapsed=step * 0.01)
    lines = err.getvalue().splitlines()
    assert len(lines) == 4, lines  # at 5, 10, 15, 20 s
    assert lines[0].startswith("train step 50") and "time 00:05/01:30" in lines[0]
    assert "time 00:20/01:30" in lines[3]
    bar.close()  # where the run ended, once
    lines = err.getvalue().splitlines()
    assert len(lines) == 5 and lines[4].startswith("train step 2100 time 00:21/01:30")
    bar.close()
    assert len(err.getvalue().splitlines()) == 5
    assert all("10000000" not in s and "ETA" not in s for s in lines)
    # a known total: the final count is shown once, not once per step past it
    err.truncate(0)
    err.seek(0)
    bar = Progress(100, "eval", unit="draws", interval=5.0)
    for _ in range(130):
        clock.t += 0.001
        bar.update(1)
    assert len(err.getvalue().splitlines()) == 1


def test_demo_like_run_prints_time_against_budget(tmp_path, small, capfd):
    config = _config(
        steps=10**7, minutes=0.05, eval_every=10**6, log_every=10**6, checkpoint_every=10**6
    )
    Trainer(config, str(tmp_path), progress=True, dataset=small).run()
    err = capfd.readouterr().err
    lines = [s for s in err.splitlines() if s.startswith("train ")]
    assert lines and all("/00:03" in s and "10000000" not in s for s in lines), err
    assert len(lines) <= 2, lines  # every 5 s of a 3 s budget (with validation), and the end


# ---- the compiled step ----------------------------------------------------------------------------
def _steps(config, data, tmp_path, name, steps=4):
    t = Trainer(config, str(tmp_path / name), progress=False, dataset=data)
    losses = [t.train_step()["loss"] for _ in range(steps)]
    return t, losses


@pytest.mark.parametrize(
    "fields",
    [
        dict(arch="12H~8H~784V", estimator="concrete", m=2),  # two layers: centering, two ops
        dict(arch="12H~8H~784V", estimator="vimco", m=3),  # two discrete noise draws: their order
        dict(arch="392V-8H-392V", estimator="nvil", m=1),  # NVIL's running statistics, weight decay
    ],
    ids=["concrete", "vimco", "nvil"],
)
def test_compiled_step_computes_the_eager_step(tmp_path, small, fields):
    """The same seed gives the same losses (to float rounding), parameters, statistics and
    generator states with and without torch.compile."""
    eager, l_e = _steps(_config(**fields, batch_size=32), small, tmp_path, "eager")
    comp, l_c = _steps(_config(**fields, batch_size=32, compile=True), small, tmp_path, "comp")
    assert comp.compiled is not None and eager.compiled is None
    np.testing.assert_allclose(l_c, l_e, rtol=2e-5)
    for (k, a), b in zip(eager.model.state_dict().items(), comp.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-5, msg=k)
    for (k, a), b in zip(
        eager.estimator.state_dict().items(), comp.estimator.state_dict().values()
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-5, msg=k)
    assert torch.equal(eager.noise_gen.get_state(), comp.noise_gen.get_state())


def test_compiled_noise_needs_the_generator_swap(small, tmp_path):
    """The control: the compiled forward without ``generator_as_default`` draws other noise
    (so the test above would see a wrong swap), and the default generator is left alone."""
    config = _config(arch="12H~784V", m=2, batch_size=32)
    t = Trainer(config, str(tmp_path), progress=False, dataset=small)
    x = t.train_x[:32]
    gen_state = t.noise_gen.get_state()
    default_state = torch.get_rng_state()
    want = t.objective(x, NoiseSource(t.noise_gen)).loss
    t.noise_gen.set_state(gen_state)
    with generator_as_default(t.noise_gen):
        got = t.objective(x, DefaultGeneratorNoise()).loss
    assert torch.equal(got, want)
    assert torch.equal(torch.get_rng_state(), default_state)
    other = t.objective(x, DefaultGeneratorNoise()).loss  # the default generator's own noise
    assert not torch.allclose(other, want)


def test_compiled_run_resumes_exactly(tmp_path, small):
    config = _config(
        arch="12H-8H~784V",
        estimator="concrete",
        m=2,
        steps=12,
        checkpoint_every=5,
        batch_size=32,
        compile=True,
    )
    assert_resume_is_exact(tmp_path, config, small, stop_at=5)


# ---- the 10^6-step campaign, on a tiny plan ----------------------------------------------------
def test_campaign_continues_what_is_left(tmp_path, capsys, monkeypatch):
    """Sweeps, stages round-robin, interim and final evaluations; a stopped campaign continues,
    and a finished one does nothing more."""
    from concrete_ext.zoo import campaign

    # Each stage starts with a fresh compile cache: one process trains many models, and past
    # dynamo's recompile limit the compiled step would fall back to eager.
    resets = []
    real_reset = torch._dynamo.reset
    monkeypatch.setattr(torch._dynamo, "reset", lambda: (resets.append(1), real_reset())[1])

    plan = campaign.Plan(
        pairs={"s": "392V-6H-392V", "d": "8H-784V"},
        common=dict(
            dataset="mnist-sample",
            m=1,
            seed=0,
            batch_size=16,
            eval_every=4,
            eval_m=4,
            eval_n=20,
            log_every=4,
            checkpoint_every=4,
        ),
        sweep=dict(steps=4, eval_every=4, checkpoint_every=4),
        rates=(1e-3, 1e-2),
        evals={
            ("sp", "interim"): [("test", 4, None, 0)],
            ("sp", "final"): [("test", 4, None, 0), ("train", 4, 30, 0)],
            ("density", "interim"): [("test", 8, 30, 0)],
            ("density", "final"): [("test", 8, 30, 0), ("test", 32, 10, 1), ("test", 8, 10, 1)],
        },
        total=8,
        stage=4,
    )
    root = str(tmp_path / "c")
    # a stop in the middle of the second stage: the trainer's signal flag, set at step 6
    from concrete_ext.zoo import train as train_module

    real = train_module.Trainer.train_step

    def stop_at_6(self):
        out = real(self)
        if self.step == 6 and self.config.arch == "8H-784V" and self.config.estimator == "nvil":
            self._stop = True
        return out

    train_module.Trainer.train_step = stop_at_6
    try:
        assert campaign.run_campaign(root, plan) == "stopped"
    finally:
        train_module.Trainer.train_step = real
    rows = {r["run"]: r for r in campaign.status(root, plan)}
    assert {k: r["step"] for k, r in rows.items()} == {
        "s_concrete": 8,
        "s_nvil": 8,
        "d_concrete": 8,
        "d_nvil": 6,
    }
    # round-robin: every run reached the first stage, and was evaluated at once, before any went on
    err = capsys.readouterr().err
    order = [
        line.split(":")[0].split()[-1] for line in err.splitlines() if "training from step" in line
    ]
    assert order == ["s_concrete", "s_nvil", "d_concrete", "d_nvil"] * 2, order
    assert len(resets) == len(order)
    assert (
        err.index("s_concrete: training from step 0")
        < err.index("s_concrete: interim")
        < err.index("s_nvil: training from step 0")
    )
    assert err.index("d_nvil: interim evaluation") < err.index("s_concrete: training from step 4")
    assert all(r["interim_eval"] for r in rows.values())
    assert not any(r["final_eval"] for r in rows.values())
    for pair in plan.pairs:
        sweep = json.load(open(os.path.join(root, "lr", pair, "sweep.json")))
        assert [r["lr"] for r in sweep["records"]] == [1e-3, 1e-2]
        nvil = runs.read_json(os.path.join(root, f"{pair}_nvil", runs.CONFIG))
        assert nvil["lr"] == sweep["chosen_lr"]
    assert runs.read_json(os.path.join(root, "s_concrete", runs.CONFIG))["lr"] == 3e-4  # D.5
    # continue: everything finishes and is evaluated
    assert campaign.run_campaign(root, plan) == "done"
    rows = {r["run"]: r for r in campaign.status(root, plan)}
    assert all(r["step"] == 8 and r["final_eval"] for r in rows.values()), rows
    evals = runs.read_json(os.path.join(root, "d_nvil", runs.EVAL))
    assert {"test@8/n30s0", "test@32/n10s1", "test@8/n10s1"} <= set(evals)
    assert set(runs.read_json(os.path.join(root, "s_concrete", runs.EVAL))) == {
        "test@4",
        "train@4/n30s0",
    }
    # the stopped and continued run logged each step once
    steps = [
        r["step"]
        for r in runs.read_jsonl(os.path.join(root, "d_nvil", runs.METRICS))
        if r["kind"] == "train"
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 8
    # nothing left: a third call trains and evaluates nothing
    stamp = os.path.getmtime(os.path.join(root, "d_nvil", runs.EVAL))
    assert campaign.run_campaign(root, plan) == "done"
    assert os.path.getmtime(os.path.join(root, "d_nvil", runs.EVAL)) == stamp
    # an interim evaluation added to the plan is done for the runs that lack it
    evals = dict(plan.evals)
    evals[("density", "interim")] = evals[("density", "interim")] + [("test", 16, 10, 1)]
    more = dataclasses.replace(plan, evals=evals)
    assert not campaign.status(root, more)[2]["interim_eval"]
    assert campaign.run_campaign(root, more) == "done"
    assert all(r["interim_eval"] for r in campaign.status(root, more))
    milestones = os.path.join(root, "d_nvil", "milestones")
    assert any(
        "test@16/n10s1" in runs.read_json(os.path.join(milestones, d, runs.EVAL))
        for d in os.listdir(milestones)
    )
    copied = campaign.export(root, str(tmp_path / "export"), plan)
    assert "d_nvil/metrics.jsonl" in copied and "lr/s/sweep.json" in copied
    assert not [c for c in copied if c.endswith(".pt")]
    assert any(c.startswith("d_concrete/milestones/") for c in copied)
    assert any(c.endswith(".npz") for c in copied)
    assert not [c for c in copied if c.endswith(".npz") and "/train@" in c]
    capsys.readouterr()
