"""The offline demo: a small Concrete VAE trained for a minute or two on the MNIST sample shipped
inside the package, evaluated with L_1000 of the discrete model on the sample's 1,000 test images.

The demo departs from the paper's settings to show progress in minutes: a learning rate of 1e-3
(D.5: 1e-4 for non-linear models) and 3,000 training images. Its numbers are not comparable to
Table 1; ``train`` / ``eval`` on the full data are.
"""

from __future__ import annotations

import os
import sys
from typing import Dict

from . import runs
from .data import load_mnist_sample
from .evaluate import estimate_bound
from .noise import NoiseSource
from .report import plot_curves
from .train import TrainConfig, Trainer, load_model

__all__ = ["run_demo", "demo_config"]


def demo_config(arch: str = "200H~784V", minutes: float = 1.5, seed: int = 0) -> TrainConfig:
    return TrainConfig(
        dataset="mnist-sample",
        arch=arch,
        arity=2,
        estimator="concrete",
        m=1,
        steps=10**7,
        minutes=minutes,
        lr=1e-3,
        seed=seed,
        log_every=50,
        eval_every=500,
        eval_m=100,
        eval_n=500,
        checkpoint_every=500,
    )


def _fresh(folder: str) -> str:
    if not os.path.exists(folder):
        return folder
    i = 2
    while os.path.exists(f"{folder}-{i}"):
        i += 1
    return f"{folder}-{i}"


def _samples_png(model, path: str, count: int = 32) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = model.generate(count, NoiseSource(seed=0)).reshape(count, 28, 28).numpy()
    fig, axes = plt.subplots(4, count // 4, figsize=(count // 4, 4.2))
    for ax, img in zip(axes.ravel(), probs):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle("p(x | z) for z drawn from the discrete generative model")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def run_demo(
    out: str = "zoo-demo",
    minutes: float = 1.5,
    arch: str = "200H~784V",
    seed: int = 0,
    eval_m: int = 1000,
    progress: bool = True,
) -> Dict:
    """Train, evaluate, plot; returns the test estimate's summary."""
    out = _fresh(out)
    data = load_mnist_sample()
    config = demo_config(arch, minutes, seed)
    print(
        f"demo: training {arch} (binary, Concrete relaxation, L_1) for {minutes:g} min on "
        f"{len(data.train)} images of binarized MNIST shipped with the package -> {out}",
        file=sys.stderr,
    )
    summary = Trainer(config, out, progress=progress, dataset=data).run()
    model, _, step = load_model(runs.latest(out, "best"))
    est = estimate_bound(
        model, data.test, eval_m, seed=0, progress=progress, desc=f"test L_{eval_m}"
    )
    result = {
        **est.summary(),
        "split": "test",
        "step": step,
        "checkpoint": "best.pt",
        "dataset": "mnist-sample",
    }
    runs.write_json(os.path.join(out, runs.EVAL), {f"test@{eval_m}": result})
    curves = plot_curves(
        [out],
        os.path.join(out, "curves.png"),
        title=f"demo: {arch}, Concrete, {summary['step']} steps",
    )
    _samples_png(model, os.path.join(out, "samples.png"))
    print(
        f"trained {summary['step']} steps in {summary['elapsed_s'] / 60:.1f} min; "
        f"test L_{eval_m} = {est.mean:.2f} nats (NLL {est.nll:.2f} +- {est.sem:.2f}) on "
        f"{est.n} test images of the sample"
    )
    print(f"plots: {curves}, {os.path.join(out, 'samples.png')}")
    return result
