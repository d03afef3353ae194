"""Data-parallel training and sharded evaluation (distributed.py) on 2 CPU processes with gloo.

The ranks are started as torchrun starts them (RANK, WORLD_SIZE, ... in the environment), one
torch thread each, by this module (ddp_worker.py) or by torchrun itself; every launch has a
timeout (generous: a busy machine can take minutes) and kills what it started, so a test never
hangs. Timing checks are measured from the event they time (a rank's exit or hang, whose time the
test hook prints), not from the launch, whose start-up a busy machine can stretch at will.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from ddp_worker import eval_inputs, small_dataset

from concrete_ext.zoo import runs
from concrete_ext.zoo.distributed import FAULT_ENV
from concrete_ext.zoo.evaluate import estimate_bound
from concrete_ext.zoo.train import TrainConfig, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_worker.py")

BASE = dict(
    dataset="mnist-sample",
    arch="16H~8H~784V",
    steps=8,
    batch_size=16,
    lr=3e-3,
    log_every=4,
    eval_every=4,
    eval_m=8,
    eval_n=20,
    checkpoint_every=4,
)
RUNS = {  # a two-layer model (centering), each estimator, n-ary layers, uneven shards (7 + 8)
    "concrete": dict(BASE, estimator="concrete", m=2),
    "concrete4": dict(BASE, estimator="concrete", m=1, arity=4, batch_size=15),
    "vimco": dict(BASE, estimator="vimco", m=3),
    "nvil": dict(BASE, estimator="nvil", m=1),
}
EVAL = dict(arch="6H~5H~12V", arity=2, seed=7, n=9, m=50, rows=16)  # 36 units of 16 draws


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        CONCRETE_EXT_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    env.update(extra)
    return env


def launch(args, world: int = 2, timeout: float = 600, wait=None, ended=None, **env):
    """``python ARGS`` on ``world`` ranks with torchrun's variables; [(output, returncode)] of the
    ranks in ``wait`` (default all); the others are killed once those have ended, and their
    output so far is put in ``ended`` (a dict: rank -> output) when given, with the time the
    waited-for ranks had all ended under the key "time"."""
    port, procs = _free_port(), []
    try:
        for r in range(world):
            procs.append(
                subprocess.Popen(
                    [sys.executable, *args],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=_env(
                        RANK=str(r),
                        LOCAL_RANK=str(r),
                        WORLD_SIZE=str(world),
                        LOCAL_WORLD_SIZE=str(world),
                        MASTER_ADDR="127.0.0.1",
                        MASTER_PORT=str(port),
                        **env,
                    ),
                )
            )
        deadline = time.time() + timeout
        results = []
        waited = list(range(world)) if wait is None else wait
        for r in waited:
            output = procs[r].communicate(timeout=max(1.0, deadline - time.time()))[0]
            results.append((output, procs[r].returncode))
        if ended is not None:
            ended["time"] = time.time()
        return results
    finally:
        for r, p in enumerate(procs):  # never leave a rank behind
            if p.poll() is None:
                p.kill()
                output = p.communicate()[0]
                if ended is not None:
                    ended[r] = output


def _train(fields, run_dir, data, steps=None) -> Trainer:
    config = TrainConfig(**dict(fields, steps=steps or fields["steps"]))
    trainer = Trainer(config, run_dir, progress=False, dataset=data)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Two ranks train RUNS, resume a 1-process run (r1to2), start one that a single process
    resumes (r2to1) and evaluate; the same runs on one process, for reference."""
    out = tmp_path_factory.mktemp("ddp")
    data = small_dataset()
    _train(RUNS["concrete"], str(out / "r1to2"), data, steps=4)
    spec = {
        "train": {**RUNS, "r2to1": dict(RUNS["concrete"], steps=4)},
        "resume": {"r1to2": 8},
        "refuse": ["vimco"],
        "eval": EVAL,
    }
    (out / "spec.json").write_text(json.dumps(spec))
    results = launch([WORKER, str(out)])
    for r, (output, code) in enumerate(results):
        assert code == 0, f"rank {r} failed:\n{output}"
    reference = {
        name: _train(fields, str(out / "one" / name), data) for name, fields in RUNS.items()
    }
    return out, reference, data


def _load(out, name, rank):
    return torch.load(str(out / f"{name}.rank{rank}.pt"), weights_only=True)


def _close(a, b, what):
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=f"{what} {k}")


@pytest.mark.parametrize("name", sorted(RUNS) + ["r1to2", "r2to1"])
def test_parameters_identical_across_ranks(ddp, name):
    out = ddp[0]
    a, b = _load(out, name, 0), _load(out, name, 1)
    for part in ("model", "estimator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert a["best"] == b["best"] and a["step"] == b["step"]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_ranks_train_like_one(ddp, name):
    """Same global batches, same noise per example, global centering / NVIL statistics: the
    2-rank run equals the 1-process run up to floating-point rounding (matmuls over 8 rows
    instead of 16, gradients summed in another order)."""
    out, reference, _ = ddp
    two, one = _load(out, name, 0), reference[name]
    _close(two["model"], one.model.state_dict(), f"{name} model")
    _close(two["estimator"], one.estimator.state_dict(), f"{name} estimator")
    assert two["best"] == pytest.approx(one.best, abs=1e-4)
    # rank 0 alone wrote the run folder: one metrics line per event, and the same events
    lines = runs.read_jsonl(str(out / name / runs.METRICS))
    ref = runs.read_jsonl(str(out / "one" / name / runs.METRICS))
    assert [(r["kind"], r["step"]) for r in lines] == [(r["kind"], r["step"]) for r in ref]
    for r, s in zip(lines, ref):
        for k in ("loss", "objective", "bound"):
            if k in r:
                assert r[k] == pytest.approx(s[k], rel=1e-4, abs=1e-3), (r, s)
    saved = runs.load_checkpoint(str(out / name / runs.CHECKPOINT))
    _close(saved["model"], one.model.state_dict(), f"{name} checkpoint")
    assert torch.equal(saved["noise_gen"], one.noise_gen.get_state())
    assert torch.equal(saved["data_gen"], one.data_gen.get_state())


def test_resume_on_a_different_number_of_ranks(ddp):
    out, reference, data = ddp
    one = reference["concrete"].model.state_dict()
    # 1 process for 4 steps, then 2 ranks to step 8
    _close(_load(out, "r1to2", 0)["model"], one, "1 -> 2 ranks")
    # 2 ranks for 4 steps, then 1 process to step 8
    resumed = Trainer(None, str(out / "r2to1"), resume=True, progress=False, dataset=data)
    assert resumed.step == 4
    resumed.config.steps = 8
    resumed.run()
    _close(resumed.model.state_dict(), one, "2 ranks -> 1")


def test_rank0_decides_and_every_rank_raises(ddp):
    """Rank 0 alone looks at the run folder; its verdict (a new run over a checkpoint) is raised on
    every rank, with its type and message, so no rank waits for the others forever."""
    out = ddp[0]
    errors = [json.loads((out / f"refuse.vimco.rank{r}.json").read_text()) for r in range(2)]
    assert errors[0] == errors[1] and "already holds a checkpoint" in errors[0], errors


def test_close_joins_the_process_group_threads(ddp):
    """World.close() frees the process group before the interpreter exits: none of its threads
    (gloo's workers, the store's) is left to release work while Python finalizes, the race that
    aborted one rank in about 80 runs ("terminate called without an active exception")."""
    out = ddp[0]
    for r in range(2):
        t = json.loads((out / f"threads.rank{r}.json").read_text())
        assert t["during"] > t["before"], t  # the group runs threads of its own
        assert t["after"] == t["before"], t


def test_two_rank_evaluation_equals_one_process(ddp):
    """The units' noise depends on (seed, block, chunk) only and the table of unit log-sums is
    combined in a fixed order: the sharded estimate is the one-process one, bit for bit."""
    out = ddp[0]
    model, x = eval_inputs(EVAL)
    one = estimate_bound(
        model, x, EVAL["m"], seed=EVAL["seed"], rows=EVAL["rows"], progress=False
    ).per_example
    for r in range(2):
        assert np.array_equal(np.load(str(out / f"eval.rank{r}.npy")), one)


CLI_TRAIN = [
    "train",
    "--dataset",
    "mnist-sample",
    "--arch",
    "12H-784V",
    "--estimator",
    "vimco",
    "--m",
    "2",
    "--steps",
    "6",
    "--batch-size",
    "8",
    "--log-every",
    "2",
    "--eval-every",
    "3",
    "--eval-m",
    "4",
    "--eval-n",
    "10",
    "--checkpoint-every",
    "2",
    "--quiet",
]


def test_cli_under_torchrun(tmp_path):
    """torchrun starts 2 ranks of `train` then of `eval`; rank 0 alone writes; the 2-rank
    evaluation equals a one-process one."""
    run = str(tmp_path / "run")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "concrete_ext.zoo",
        "--",
    ]
    done = subprocess.run(
        torchrun + CLI_TRAIN + ["--run-dir", run],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("done at step 6") == 1, done.stdout  # rank 0 reports
    assert "2 ranks (gloo, cpu)" in done.stderr
    steps = [
        r["step"] for r in runs.read_jsonl(os.path.join(run, runs.METRICS)) if r["kind"] == "train"
    ]
    assert steps == [2, 4, 6]
    done = subprocess.run(
        torchrun + ["eval", run, "--m", "20", "--n", "12", "--quiet"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    two = runs.read_json(os.path.join(run, runs.EVAL))["test@20/n12s0"]
    from concrete_ext.zoo.data import load_dataset, random_subset
    from concrete_ext.zoo.train import load_model

    model, config, _ = load_model(os.path.join(run, runs.BEST))
    x = load_dataset("mnist-sample").binary("test")
    x = x[random_subset(len(x), 12, 0)]
    one = estimate_bound(model, x, 20, seed=0, progress=False)
    assert two["mean"] == one.mean and two["n"] == 12


def test_a_dead_rank_fails_the_job_quickly(tmp_path):
    """Rank 1 exits abruptly at step 3 (test hook): rank 0 stops with a clear message within
    seconds (gloo sees the connection drop; --dist-timeout bounds a silent hang), and the last
    checkpoint (step 2) is there to resume."""
    run = str(tmp_path / "run")
    ended = {}
    results = launch(
        ["-m", "concrete_ext.zoo"] + CLI_TRAIN + ["--dist-timeout", "30", "--run-dir", run],
        timeout=180,
        ended=ended,
        **{FAULT_ENV: "1:3"},
    )
    (out0, code0), (out1, code1) = results
    assert code1 == 3 and "exiting at step 3" in out1, out1
    assert code0 == 1, out0
    assert "error: rank 0 of 2: communication with the other ranks failed" in out0, out0
    assert "continue with --resume, on any number of ranks" in out0
    assert "Traceback" not in out0
    # measured from rank 1's exit, not from the launch: start-up on a busy machine takes long
    after = ended["time"] - _fault_time(out1)
    assert after < 25, after  # well within the 30 s timeout: the dropped connection is seen
    assert runs.load_checkpoint(os.path.join(run, runs.CHECKPOINT))["step"] == 2


def _fault_time(output: str) -> float:
    """The time the test hook printed ("... at step 3 (time T)")."""
    import re

    found = re.search(r"at step \d+ \(time ([0-9.]+)\)", output)
    assert found, output
    return float(found.group(1))


def test_a_hanging_rank_fails_the_job_after_the_timeout(tmp_path):
    """Rank 1 stops answering at step 3 (test hook): rank 0 gives up after --dist-timeout (20 s;
    the same timeout bounds the start-up rendezvous, so not much less on a busy machine) with
    the same clear message: not before the timeout, and not long after it."""
    run = str(tmp_path / "run")
    args = ["-m", "concrete_ext.zoo"] + CLI_TRAIN + ["--dist-timeout", "20", "--run-dir", run]
    ended = {}
    [(out0, code0)] = launch(args, timeout=180, wait=[0], ended=ended, **{FAULT_ENV: "1:3:hang"})
    assert code0 == 1, out0
    assert "error: rank 0 of 2: communication with the other ranks failed" in out0, out0
    assert "Traceback" not in out0
    after = ended["time"] - _fault_time(ended[1])  # measured from the hang, not the launch
    assert 15 < after < 60, after
