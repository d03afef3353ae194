"""Training: the loss goes down, checkpoints resume exactly, crashes lose nothing, the CLI runs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from zoo_helpers import assert_resume_is_exact

from concrete_ext.zoo import cli, runs
from concrete_ext.zoo.data import Dataset, load_mnist_sample
from concrete_ext.zoo.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def sample() -> Dataset:
    return load_mnist_sample()


@pytest.fixture(scope="module")
def small(sample) -> Dataset:
    """600 training images at 784 pixels: enough to learn from in a few hundred steps."""
    return Dataset("mnist-sample", sample.train[:600], sample.valid[:200], sample.test[:200])


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


@pytest.mark.parametrize("estimator,m", [("concrete", 1), ("vimco", 5), ("nvil", 1)])
def test_short_training_improves_the_bound(tmp_path, small, estimator, m):
    """300 steps: the validation L_10 of the discrete model improves on the initial one (the
    initial model is already the best independent-pixel model, bias = logit of the pixel means)."""
    config = _config(
        estimator=estimator,
        m=m,
        steps=300,
        eval_every=300,
        log_every=50,
        checkpoint_every=300,
        eval_n=200,
    )
    trainer = Trainer(config, str(tmp_path), progress=False, dataset=small)
    initial = trainer.validate()
    trainer.run()
    records = runs.read_jsonl(str(tmp_path / runs.METRICS))
    final = [r for r in records if r["kind"] == "valid"][-1]["bound"]
    train = [r["objective"] for r in records if r["kind"] == "train"]
    assert final > initial + 8, (initial, final)
    assert train[-1] > train[0] + 8, train


@pytest.mark.parametrize(
    "estimator,m,arity", [("concrete", 2, 2), ("vimco", 3, 2), ("nvil", 1, 4), ("concrete", 1, 8)]
)
def test_resumed_run_matches_uninterrupted(tmp_path, small, estimator, m, arity):
    arch = "24H-12H~784V"
    config = _config(
        estimator=estimator,
        m=m,
        arity=arity,
        arch=arch,
        steps=24,
        checkpoint_every=7,
        batch_size=32,
    )
    # the second run stops at step 14 (a checkpoint every 7 steps), then a fresh process-like
    # Trainer resumes it; the data order crosses an epoch boundary (600 / 32 per epoch)
    assert_resume_is_exact(tmp_path, config, small, stop_at=14)
    steps_a = [
        r["step"]
        for r in runs.read_jsonl(str(tmp_path / "a" / runs.METRICS))
        if r["kind"] == "train"
    ]
    steps_b = [
        r["step"]
        for r in runs.read_jsonl(str(tmp_path / "b" / runs.METRICS))
        if r["kind"] == "train"
    ]
    assert set(steps_a) <= set(steps_b)  # plus a line where the first session ended


def test_crash_keeps_last_checkpoint_and_metrics(tmp_path, small, monkeypatch):
    trainer = Trainer(
        _config(steps=30, checkpoint_every=10), str(tmp_path), progress=False, dataset=small
    )
    real_step = trainer.train_step

    def failing_step():
        if trainer.step == 17:
            raise RuntimeError("simulated crash")
        return real_step()

    monkeypatch.setattr(trainer, "train_step", failing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    state = runs.load_checkpoint(str(tmp_path / runs.CHECKPOINT))
    assert state["step"] == 10
    assert [
        r["step"] for r in runs.read_jsonl(str(tmp_path / runs.METRICS)) if r["kind"] == "train"
    ] == [5, 10, 15]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    resumed = Trainer(None, str(tmp_path), resume=True, progress=False, dataset=small)
    assert resumed.run()["step"] == 30
    assert [
        r["step"] for r in runs.read_jsonl(str(tmp_path / runs.METRICS)) if r["kind"] == "train"
    ] == [5, 10, 15, 20, 25, 30]


def test_new_run_refuses_existing_checkpoint_and_resume_refuses_changes(tmp_path, small):
    Trainer(_config(steps=5), str(tmp_path), progress=False, dataset=small).run()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(_config(steps=5), str(tmp_path), progress=False, dataset=small)
    with pytest.raises(ValueError, match="cannot resume with a different lr"):
        Trainer(
            _config(steps=10, lr=1e-2), str(tmp_path), resume=True, progress=False, dataset=small
        )


def test_non_finite_loss_is_an_error(tmp_path, small):
    trainer = Trainer(_config(steps=5), str(tmp_path), progress=False, dataset=small)
    with torch.no_grad():
        trainer.model.prior_logits.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
        trainer.run()


def test_cli_train_eval_table_plot(tmp_path, capsys):
    run = str(tmp_path / "run")
    args = [
        "train",
        "--dataset",
        "mnist-sample",
        "--arch",
        "200H-784V",
        "--estimator",
        "score",
        "--m",
        "2",
        "--steps",
        "12",
        "--eval-every",
        "6",
        "--eval-m",
        "5",
        "--eval-n",
        "20",
        "--log-every",
        "4",
        "--checkpoint-every",
        "6",
        "--run-dir",
        run,
        "--quiet",
    ]
    assert cli.main(args) == 0
    assert json.load(open(os.path.join(run, "config.json")))["estimator"] == "vimco"
    assert cli.main(["train", "--run-dir", run, "--resume", "--steps", "16", "--quiet"]) == 0
    assert runs.load_checkpoint(os.path.join(run, runs.CHECKPOINT))["step"] == 16
    assert (
        cli.main(["eval", run, "--m", "20", "--split", "test,train", "--n", "30", "--quiet"]) == 0
    )
    evals = json.load(open(os.path.join(run, "eval.json")))
    assert {"test@20/n30s0", "train@20/n30s0"} == set(evals)
    assert evals["test@20/n30s0"]["n"] == 30 and evals["test@20/n30s0"]["nll"] > 0
    assert evals["test@20/n30s0"]["subset"] == "30 of 1000 images drawn with seed 0"
    capsys.readouterr()
    assert cli.main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "200H-784V" in out and "VIMCO" in out
    png = str(tmp_path / "curves.png")
    assert cli.main(["plot", run, "--out", png]) == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_options(capsys):
    assert (
        cli.main(
            ["train", "--estimator", "vimco", "--m", "1", "--dataset", "mnist-sample", "--quiet"]
        )
        == 1
    )
    assert "VIMCO needs m >= 2" in capsys.readouterr().err
    assert cli.main(["train", "--arch", "200X-784V", "--dataset", "mnist-sample"]) == 1


def test_table_beside_paper(tmp_path, capsys):
    """A fake finished run of a Table 1 configuration is shown next to the paper's numbers."""
    run = tmp_path / "r"
    run.mkdir()
    config = TrainConfig(dataset="mnist", arch="200H~200H~784V", estimator="concrete", m=5)
    runs.write_json(str(run / runs.CONFIG), config.resolved().to_dict())
    runs.append_jsonl(str(run / runs.METRICS), {"kind": "end", "step": 100, "elapsed_s": 60})
    runs.write_json(
        str(run / runs.EVAL),
        {"test@5000": {"split": "test", "m": 5000, "n": 10000, "nll": 99.5, "sem": 0.3}},
    )
    assert cli.main(["table", str(tmp_path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| mnist | 200H~200H~784V | 2 | 5 | Concrete | 100 | 1.0 | 99.50 ± 0.30 | 86.3 |" in out
