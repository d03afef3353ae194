"""Training throughput of the zoo models (optimisation steps per second) with the fused ops against
the same model on the reference ops (issue 5).

The zoo (concrete_ext.zoo) is being written in parallel; until it exists this module only says that
it skipped. It will time the zoo's own training step, so it is written against the zoo's API once
that API exists rather than guessed here.
"""

from __future__ import annotations

import importlib.util
from typing import Callable


def zoo_available() -> bool:
    try:
        return importlib.util.find_spec("concrete_ext.zoo") is not None
    except (ImportError, ValueError):
        return False


def maybe_run(log: Callable[[str], None] = print) -> None:
    if not zoo_available():
        log("bench_train: skipped (concrete_ext.zoo is not in this checkout)")
        return
    log("bench_train: skipped (concrete_ext.zoo exists; the training benchmark against its API is "
        "not written yet)")


if __name__ == "__main__":
    maybe_run()
