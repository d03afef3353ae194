"""One rank of the data-parallel tests (test_zoo_distributed.py), started with torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) by the test.

    python ddp_worker.py OUT     reads OUT/spec.json, writes OUT/<name>.rank<r>.pt

spec: {"train": {name: TrainConfig fields}, "resume": {name: steps}, "refuse": [name],
"eval": {...}}: trains each run in OUT/<name> on all ranks, resumes each run OUT/<name> to the given
steps, tries to start a trained run again (refused), evaluates a seeded model; every rank saves
what it ended with, so the test can compare ranks with each other and with one process.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from concrete_ext.zoo import distributed
from concrete_ext.zoo.data import Dataset, load_mnist_sample
from concrete_ext.zoo.evaluate import estimate_bound
from concrete_ext.zoo.model import SBN
from concrete_ext.zoo.train import TrainConfig, Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_helpers import perturbed  # noqa: E402


def small_dataset() -> Dataset:
    s = load_mnist_sample()
    return Dataset("mnist-sample", s.train[:200], s.valid[:40], s.test[:40])


def eval_inputs(spec):
    model = perturbed(SBN(spec["arch"], spec["arity"]), seed=spec["seed"])
    x = np.random.RandomState(spec["seed"]).randint(0, 2, size=(spec["n"], model.arch.sizes[-1]))
    return model, x


def _save(trainer: Trainer, path: str) -> None:
    torch.save(
        {
            "model": trainer.model.state_dict(),
            "estimator": trainer.estimator.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "best": trainer.best,
            "step": trainer.step,
        },
        path,
    )


def _threads() -> int:
    """Threads of this process (Linux)."""
    return len(os.listdir("/proc/self/task"))


def _thread_names():
    names = []
    for t in sorted(os.listdir("/proc/self/task")):
        with open(f"/proc/self/task/{t}/comm") as f:
            names.append(f.read().strip())
    return names


def main(out: str) -> None:
    torch.set_num_threads(1)
    before = _threads()
    world = distributed.from_env(timeout_s=60)
    during = _threads()
    assert world.distributed and world.backend == "gloo", world
    with open(os.path.join(out, "spec.json")) as f:
        spec = json.load(f)
    data = small_dataset()
    for name, fields in spec.get("train", {}).items():
        trainer = Trainer(
            TrainConfig(**fields),
            os.path.join(out, name),
            progress=False,
            dataset=data,
            world=world,
        )
        trainer.run()
        _save(trainer, os.path.join(out, f"{name}.rank{world.rank}.pt"))
    for name, steps in spec.get("resume", {}).items():
        trainer = Trainer(
            None, os.path.join(out, name), resume=True, progress=False, dataset=data, world=world
        )
        trainer.config.steps = steps
        trainer.run()
        _save(trainer, os.path.join(out, f"{name}.rank{world.rank}.pt"))
    for name in spec.get("refuse", []):  # a new run over a checkpoint: refused on every rank
        try:
            Trainer(
                TrainConfig(**spec["train"][name]),
                os.path.join(out, name),
                progress=False,
                dataset=data,
                world=world,
            )
            error = None
        except FileExistsError as e:
            error = str(e)
        with open(os.path.join(out, f"refuse.{name}.rank{world.rank}.json"), "w") as f:
            json.dump(error, f)
    if "eval" in spec:
        e = spec["eval"]
        model, x = eval_inputs(e)
        est = estimate_bound(
            model, x, e["m"], seed=e["seed"], rows=e["rows"], progress=False, world=world
        )
        np.save(os.path.join(out, f"eval.rank{world.rank}.npy"), est.per_example)
    rank = world.rank
    world.close()  # the process group's worker threads are joined here, not at exit
    with open(os.path.join(out, f"threads.rank{rank}.json"), "w") as f:
        json.dump(
            {"before": before, "during": during, "after": _threads(), "names": _thread_names()}, f
        )


if __name__ == "__main__":
    main(sys.argv[1])
