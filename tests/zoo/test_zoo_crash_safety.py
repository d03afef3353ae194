"""Crash safety of the zoo (docs/RELIABILITY.md): a training process killed with SIGKILL, twice,
and resumed ends with the same parameters as an uninterrupted run; a kill leaves the last good
checkpoint readable; truncated, corrupt (a flipped bit), foreign or mismatched checkpoints are
refused with a message naming the file; a damaged data sample is refused.

(tests/zoo/test_zoo_train.py already covers an in-process crash, exact in-process resumption and
resuming with a changed configuration; tests/zoo/test_zoo_data.py the data files' checksums.)
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from concrete_ext.zoo import cli, data, runs
from concrete_ext.zoo.train import TrainConfig, Trainer, load_model

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRAIN = [
    "train",
    "--dataset",
    "mnist-sample",
    "--arch",
    "20H~784V",
    "--steps",
    "400",
    "--lr",
    "3e-3",
    "--batch-size",
    "32",
    "--log-every",
    "50",
    "--eval-every",
    "100000",
    "--eval-m",
    "5",
    "--eval-n",
    "50",
    "--checkpoint-every",
    "20",
    "--quiet",
    "--threads",
    "1",
]


def _start(run_dir, *extra) -> subprocess.Popen:
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        CONCRETE_EXT_OFFLINE="1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "concrete_ext.zoo", *TRAIN, "--run-dir", str(run_dir), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def _checkpoint_step(path) -> int:
    return runs.load_checkpoint(str(path))["step"] if os.path.exists(path) else -1


def _kill_after_next_checkpoint(proc, ckpt, timeout=120.0) -> int:
    """SIGKILL `proc` as soon as checkpoint.pt holds a newer step than now; returns that step."""
    before = _checkpoint_step(ckpt)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            step = _checkpoint_step(ckpt)
        except runs.CheckpointError:  # replaced between exists() and load: never torn
            pytest.fail("a checkpoint was read torn")
        if step > before:
            os.kill(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0].decode()
            assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{out}"
            return step
        assert proc.poll() is None, proc.communicate()[0].decode()
        time.sleep(0.005)
    proc.kill()
    pytest.fail("no checkpoint appeared")


def _finish(proc):
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out


def test_sigkill_twice_then_resume_equals_uninterrupted(tmp_path):
    straight = _start(tmp_path / "a")  # runs alongside the interrupted one
    ckpt = tmp_path / "b" / runs.CHECKPOINT
    first = _kill_after_next_checkpoint(_start(tmp_path / "b"), ckpt)
    assert _checkpoint_step(ckpt) >= first  # the last good checkpoint is readable
    second = _kill_after_next_checkpoint(_start(tmp_path / "b", "--resume"), ckpt)
    assert first < second < 400
    _finish(_start(tmp_path / "b", "--resume"))
    _finish(straight)
    a = runs.load_checkpoint(str(tmp_path / "a" / runs.CHECKPOINT))
    b = runs.load_checkpoint(str(ckpt))
    assert a["step"] == b["step"] == 400
    for part in ("model", "estimator"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(a["noise_gen"], b["noise_gen"]) and torch.equal(a["data_gen"], b["data_gen"])
    # checkpoints get the permissions of any new file (mkstemp alone would give 0600)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(ckpt).st_mode) == 0o666 & ~mask


# ---- damaged checkpoints -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        dataset="mnist-sample",
        arch="20H~784V",
        steps=6,
        lr=3e-3,
        log_every=3,
        eval_every=3,
        eval_m=5,
        eval_n=20,
        checkpoint_every=3,
    )
    Trainer(config, str(run), progress=False).run()
    return run


def _damaged(finished_run, tmp_path, how):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    path = run / runs.CHECKPOINT
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "empty":
        raw = bytearray()
    elif how == "flipped bit":  # torch.load itself does not notice this one
        state = torch.load(path, weights_only=True)
        w = max(state["model"].values(), key=lambda t: t.numel())  # a weight matrix
        needle = w.reshape(-1)[100:104].numpy().tobytes()
        i = raw.find(needle)
        assert i > 0
        raw[i] ^= 0x01
    elif how == "garbage":
        raw = bytearray(np.random.default_rng(0).bytes(4096))
    elif how == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
        raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw))
    return run, path


@pytest.mark.parametrize("how", ["truncated", "empty", "flipped bit", "garbage", "foreign"])
def test_damaged_checkpoint_is_refused(finished_run, tmp_path, how, capsys):
    run, path = _damaged(finished_run, tmp_path, how)
    with pytest.raises(runs.CheckpointError, match=str(path)):
        runs.load_checkpoint(str(path))
    with pytest.raises(runs.CheckpointError):
        Trainer(None, str(run), resume=True, progress=False)
    with pytest.raises(runs.CheckpointError):
        load_model(str(path))
    # the CLI says so in one line and exits with status 1
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(path) in err and "Traceback" not in err


def test_mismatched_checkpoint_is_refused(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    path = str(run / runs.CHECKPOINT)
    state = runs.load_checkpoint(path)
    # a checkpoint whose weights do not fit the architecture of its own configuration
    runs.save_checkpoint({**state, "config": {**state["config"], "arch": "30H~784V"}}, path)
    with pytest.raises(runs.CheckpointError, match="does not fit"):
        Trainer(None, str(run), resume=True, progress=False)
    with pytest.raises(runs.CheckpointError, match="does not fit"):
        load_model(path)
    # a checkpoint missing an entry, and one of another format
    runs.save_checkpoint({k: v for k, v in state.items() if k != "optimizer"}, path)
    with pytest.raises(runs.CheckpointError, match="lacks the entry 'optimizer'"):
        Trainer(None, str(run), resume=True, progress=False)
    runs.save_checkpoint({**state, "format": 99}, path)
    with pytest.raises(runs.CheckpointError, match="format 99"):
        Trainer(None, str(run), resume=True, progress=False)


def test_checkpoint_without_digest_still_loads(finished_run, tmp_path):
    # files written before checkpoints carried a digest (plain atomic_save) load unchecked
    path = str(tmp_path / "old.pt")
    state = runs.load_checkpoint(str(finished_run / runs.CHECKPOINT))
    runs.atomic_save(state, path)
    assert runs.load_checkpoint(path)["step"] == state["step"]
    model, config, step = load_model(path)
    assert step == 6 and config.arch == "20H~784V"


def test_digest_covers_every_entry():
    s = {"format": 1, "a": torch.arange(4.0), "b": [1, 2.5, None], "c": {"x": "y"}}
    d = runs.state_digest(s)
    assert runs.state_digest({**s}) == d
    for changed in (
        {**s, "a": torch.arange(4.0).double()},
        {**s, "a": torch.arange(4.0)[:3]},
        {**s, "b": [1, 2.5000001, None]},
        {**s, "c": {"x": "z"}},
        {**s, "format": 2},
    ):
        assert runs.state_digest(changed) != d


# ---- data ----------------------------------------------------------------------------------------
def test_damaged_data_sample_is_refused(tmp_path):
    with np.load(data.SAMPLE_PATH) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["test"][0, 0] ^= 1  # one pixel of one image
    tampered = str(tmp_path / "sample.npz")
    np.savez_compressed(tampered, **arrays)
    with pytest.raises(data.ChecksumError, match="not the shipped sample"):
        data.load_mnist_sample(tampered)
    truncated = str(tmp_path / "truncated.npz")
    with open(data.SAMPLE_PATH, "rb") as f:
        raw = f.read()
    with open(truncated, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(data.ChecksumError, match="truncated.npz"):
        data.load_mnist_sample(truncated)
