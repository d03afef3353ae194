"""``python -m concrete_ext.zoo`` (also the ``concrete-zoo`` console script).

    demo    train a small Concrete VAE on the shipped MNIST sample for a minute or two (offline),
            print its test bound and write a plot
    train   train a model of Section 5.2 (progress bar, JSON-lines metrics, atomic checkpoints,
            --resume continues exactly)
    eval    L_m of the discrete model (streamed, m up to 50,000) on test / train / valid
    table   results of runs beside the paper's Table 1 / Table 2 / Figure 4, and paired
            differences
    compare one run against another on the same images (paired standard error)
    plot    training curves of runs as PNG
    temperature  Figure 4 (right): structured prediction trained at a range of temperatures,
            continuous and discrete objectives (PNG, JSON, CSV)
    lr-sweep  choose the learning rate of VIMCO / NVIL by validation after a fixed number of
            steps (lrsweep.py)
    campaign  the 10^6-step reproduction of Concrete against NVIL (campaign.py): continue it

Structured prediction (Section 5.3) is chosen by an architecture with a leading observed layer,
e.g. ``--arch 392V-240H-240H-392V``, or by ``--task sp`` (whose default arch that is).

``python -m concrete_ext.zoo <command> --help`` lists each command's options. ``train`` and ``eval``
also run on several processes: ``torchrun --nproc_per_node=N -m concrete_ext.zoo train ...``
(distributed.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import List, Optional

__all__ = ["main", "build_parser"]

DEFAULT_EVAL_M = 5000
SP_EVAL_M = 100  # L^SP_100, Section 5.3
SP_DEFAULT_ARCH = "392V-240H-240H-392V"
THREADS_HELP = (
    "torch CPU threads (default 1: the networks are small, and on a busy machine idle "
    "OpenMP threads spinning on shared cores slow training tenfold)"
)
PAPER_EVAL_M = 50000
COMPILE_AUTO_STEPS = 10_000  # --compile auto: compile runs at least this long


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS
    from .estimators import ESTIMATORS
    from .train import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("model and objective")
    g.add_argument("--dataset", choices=sorted(DATASETS), help=f"data (default {d.dataset})")
    g.add_argument(
        "--task",
        choices=("density", "sp"),
        help="density estimation (Section 5.2) "
        "or structured prediction of the bottom half of an image from its top half "
        f"(Section 5.3; default arch {SP_DEFAULT_ARCH}); inferred from --arch",
    )
    g.add_argument(
        "--arch",
        help=f"the paper's notation (default {d.arch}; a leading V layer "
        "means structured prediction)",
    )
    g.add_argument(
        "--arity", type=int, choices=(2, 4, 8), help="states per stochastic node (default 2)"
    )
    g.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        help="concrete (default), vimco (m > 1), nvil (m = 1), or score: vimco or nvil by m",
    )
    g.add_argument("--m", type=int, help="samples in the objective L_m (default 1)")
    g.add_argument(
        "--posterior-temperature",
        type=float,
        help="lambda_1 (default by arity, D.5; "
        "structured prediction: the temperature of the whole relaxed graph)",
    )
    g.add_argument("--prior-temperature", type=float, help="lambda_2 (default by arity, D.5)")
    g.add_argument(
        "--nvil-hidden",
        type=int,
        help=f"tanh units of NVIL's baseline network (default {d.nvil_hidden})",
    )
    g.add_argument(
        "--inference-width",
        choices=("mirror", "input"),
        help="tanh width of a '~' "
        "inference link: the size of the layer it infers, as the generative link "
        "(mirror, default), or of its input layer (input); docs/ZOO.md",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help=f"training steps (default {d.steps})")
    g.add_argument("--minutes", type=float, help="stop after this much training time")
    g.add_argument("--paper", action="store_true", help="the paper's 10^7 steps")
    g.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    g.add_argument(
        "--lr",
        type=float,
        help="Adam learning rate (default D.5: 3e-4 linear, 1e-4 non-linear models)",
    )
    g.add_argument(
        "--weight-decay",
        type=float,
        help="L2 weight decay of the model's parameters "
        "(default D.5: 0 for density estimation, 1e-3 for structured prediction)",
    )
    g.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        help="run the training step "
        "through torch.compile (one CPU process; the same step up to floating-point "
        "rounding, 1.1-1.5x faster on the CPU measured in docs/BENCHMARKS.md, seconds "
        "to a minute of compiling at the start); auto (default): on for runs of "
        f"{COMPILE_AUTO_STEPS:,} steps or more",
    )
    g.add_argument("--seed", type=int, help="default 0")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log-every", type=int, help=f"steps per metrics line (default {d.log_every})")
    g.add_argument(
        "--eval-every", type=int, help=f"steps between validation bounds (default {d.eval_every})"
    )
    g.add_argument("--eval-m", type=int, help=f"m of the validation bound (default {d.eval_m})")
    g.add_argument("--eval-n", type=int, help=f"validation images used (default {d.eval_n})")
    g.add_argument("--checkpoint-every", type=int, help=f"default {d.checkpoint_every}")
    g.add_argument(
        "--data-root",
        help="folder holding the data files (else $CONCRETE_EXT_DATA, the cache, or a download)",
    )


def _train_config(args, saved=None):
    """A TrainConfig from the options given (others: the saved config's, else the defaults)."""
    from .train import PAPER_STEPS, TrainConfig

    base = saved or TrainConfig()
    values = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "compile":
            continue
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if getattr(args, "paper", False):
        values["steps"] = PAPER_STEPS
    comp = getattr(args, "compile", None)
    if comp in ("on", "off"):
        values["compile"] = comp == "on"
    elif comp == "auto" or (comp is None and saved is None):  # a resumed run keeps its choice
        values["compile"] = values.get("steps", base.steps) >= COMPILE_AUTO_STEPS
    task = getattr(args, "task", None)
    if task == "sp" and "arch" not in values and saved is None:
        values["arch"] = SP_DEFAULT_ARCH
    config = dataclasses.replace(base, **values)
    if task and config.task != task:
        raise ValueError(
            f"--task {task} does not match --arch {config.arch} (structured "
            "prediction needs a leading V layer, density estimation none)"
        )
    return config


def _default_run_dir(c) -> str:
    return os.path.join("runs", f"{c.dataset}_{c.arch}_{c.arity}ary_{c.estimator}_m{c.m}_s{c.seed}")


def _add_world_args(p: argparse.ArgumentParser) -> None:
    from .distributed import DEFAULT_TIMEOUT_S

    g = p.add_argument_group("several processes (under torchrun; docs/ZOO.md)")
    g.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="default: cuda:LOCAL_RANK with NCCL "
        "under torchrun when CUDA is available, else the CPU (gloo)",
    )
    g.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds a rank waits for the others before failing (default {DEFAULT_TIMEOUT_S:g})",
    )


def _world(args):
    """This process's World (distributed.from_env), kept on args for main() to close."""
    from .distributed import from_env

    args.world = from_env(args.device, args.dist_timeout)
    return args.world


def _threads(n: Optional[int]) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_train(args) -> int:
    from . import runs
    from .train import TrainConfig, Trainer

    _threads(args.threads)
    if args.resume and not args.run_dir:
        print("--resume needs --run-dir", file=sys.stderr)
        return 2
    world = _world(args)
    if args.resume:  # rank 0 reads the run folder
        saved = world.from_main(lambda: runs.read_json(os.path.join(args.run_dir, runs.CONFIG)))
        config = _train_config(args, TrainConfig.from_dict(saved))
    else:
        config = _train_config(args).resolved()
    run_dir = args.run_dir or _default_run_dir(config)
    trainer = Trainer(config, run_dir, resume=args.resume, progress=not args.quiet, world=world)
    c = trainer.config
    n_params = sum(p.numel() for p in trainer.model.parameters())
    ranks = (
        f", {world.size} ranks ({world.backend}, {world.device.type})" if world.distributed else ""
    )
    temps = (
        f"temperature {c.posterior_temperature:.4g}"
        if c.task == "sp"
        else f"temperatures {c.posterior_temperature:.4g}/{c.prior_temperature:.4g}"
    )
    if world.is_main:
        print(
            f"{run_dir}: {c.arch} ({c.task}) arity {c.arity}, {c.estimator} m={c.m}, "
            f"lr {c.lr:g}, {temps}, {n_params} parameters, from step {trainer.step} to "
            f"{c.steps}{ranks}",
            file=sys.stderr,
        )
    summary = trainer.run()
    best = summary["best_valid"]
    best = "none yet" if best is None else f"{best:.2f}"
    if world.is_main:
        print(
            f"{summary['status']} at step {summary['step']} after {summary['elapsed_s'] / 60:.1f} "
            f"min; best validation L_{c.eval_m}: {best}; checkpoint in {run_dir}"
            + ("; continue with --resume" if summary["status"] != "done" else "")
        )
    return 130 if summary["status"] == "interrupted" else 0


def cmd_eval(args) -> int:
    import numpy as np

    from . import runs
    from .data import load_dataset, random_subset
    from .evaluate import estimate_bound
    from .train import load_model

    _threads(args.threads)
    world = _world(args)
    for run_dir in runs.run_dirs(args.runs):
        path = runs.latest(run_dir, args.checkpoint)
        if path is None:
            print(f"{run_dir}: no checkpoint", file=sys.stderr)
            return 1
        model, config, step = load_model(path)
        model.to(world.device)
        sp = config.task == "sp"
        if args.paper:
            m = SP_EVAL_M if sp else PAPER_EVAL_M
        else:
            m = args.m or (SP_EVAL_M if sp else DEFAULT_EVAL_M)
        name = f"L^SP_{m}" if sp else f"L_{m}"
        data = load_dataset(config.dataset, args.data_root or config.data_root)
        results = runs.read_json(os.path.join(run_dir, runs.EVAL), {})
        for split in args.split.split(","):
            x = data.binary(split)
            subset = None
            indices = np.arange(len(x))
            if args.n and args.n < len(x):
                subset = f"{args.n} of {len(x)} images drawn with seed {args.subset_seed}"
                indices = random_subset(len(x), args.n, args.subset_seed)
                x = x[indices]
            est = estimate_bound(
                model,
                x,
                m,
                seed=args.seed,
                rows=args.rows,
                world=world,
                progress=not args.quiet and world.is_main,
                desc=f"{split} {name}",
            )
            if not world.is_main:  # rank 0 writes and reports
                continue
            key = f"{split}@{m}" + (f"/n{args.n}s{args.subset_seed}" if subset else "")
            rec = {
                **est.summary(),
                "split": split,
                "step": step,
                "checkpoint": os.path.basename(path),
                "dataset": config.dataset,
                "subset": subset,
                "per_image": runs.save_per_image(run_dir, key, est.per_example, indices),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            results[key] = rec
            runs.write_json(os.path.join(run_dir, runs.EVAL), results)
            print(
                f"{run_dir} ({os.path.basename(path)}, step {step}): {split} {name} = "
                f"{est.mean:.2f} +- {est.sem:.2f} (NLL {est.nll:.2f}) on {est.n} images, "
                f"{est.seconds:.0f} s"
            )
    return 0


def cmd_table(args) -> int:
    from .report import collect, format_paired, format_table, paired_differences

    rows = collect(args.runs)
    if not rows:
        print(f"no runs found in {args.runs}", file=sys.stderr)
        return 1
    print(format_table(rows, markdown=args.markdown))
    print(
        "\nNLL = -L_m of the discrete model (lower is better; structured prediction: -L^SP_m, "
        "the bottom half given the top half); 'paper': Maddison et al. (2017), Table 1 "
        "(binary; VIMCO column for vimco/nvil) or Table 2 (n-ary, Concrete), after 10^7 steps, "
        "L_50000; Figure 4's table for 392V-... models (L^SP_100; VIMCO column for vimco/nvil)."
    )
    pairs = paired_differences(args.runs)
    if pairs:
        print(
            "\nPaired differences (the same images and noise seeds; s.e. of the per-image "
            "difference):\n"
        )
        print(format_paired(pairs, markdown=args.markdown))
    return 0


def cmd_compare(args) -> int:
    from .report import compare_runs

    rows = compare_runs(args.run_a, args.run_b)
    if not rows:
        print(
            f"{args.run_a} and {args.run_b} share no evaluation of the same images with "
            "per-image values (eval both with the same --split, --m, --n and --subset-seed)",
            file=sys.stderr,
        )
        return 1
    for r in rows:
        print(
            f"{r['key']}: NLL {r['a_nll']:.2f} (step {r['step_a']}) - {r['b_nll']:.2f} (step "
            f"{r['step_b']}) = {r['diff']:+.2f} +- {r['sem']:.2f} (paired s.e.; unpaired "
            f"{r['unpaired_sem']:.2f}) on {r['n']} images"
        )
    return 0


def cmd_plot(args) -> int:
    from .report import plot_curves, plot_log_curves

    if args.log_steps:
        fits = plot_log_curves(args.runs, args.out, args.title, args.extrapolate or None)
        for run_dir, fit in fits.items():
            if fit:
                print(
                    f"{run_dir}: {fit['slope']:+.2f} nats per decade over steps "
                    f"{fit['from_step']:.0f}-{fit['to_step']:.0f}; extrapolated to "
                    f"{fit['at']:.0e} steps: {fit['value']:.2f} (an extrapolation)"
                )
    else:
        plot_curves(args.runs, args.out, args.title)
    print(args.out)
    return 0


def cmd_temperature(args) -> int:
    from .sweep import temperature_sweep
    from .train import TrainConfig

    _threads(args.threads)
    try:
        temps = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError:
        print(
            f"--temperatures must be numbers separated by commas, got {args.temperatures!r}",
            file=sys.stderr,
        )
        return 2
    base = _train_config(
        args, TrainConfig(arch="392V-240H-240H-240H-392V", estimator="concrete", m=1, steps=2000)
    )
    result = temperature_sweep(
        args.out,
        temps,
        base,
        split=args.split,
        n=args.n,
        subset_seed=args.subset_seed,
        draws=args.draws,
        eval_m=args.eval_bound_m,
        progress=not args.quiet,
    )
    print(os.path.join(args.out, "fig4.png"))
    return 0 if result["records"] else 1


def cmd_lr_sweep(args) -> int:
    from .lrsweep import RATES, lr_sweep
    from .train import TrainConfig

    _threads(args.threads)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()] if args.rates else RATES
    except ValueError:
        print(f"--rates must be numbers separated by commas, got {args.rates!r}", file=sys.stderr)
        return 2
    if args.lr is not None:
        print("lr-sweep chooses the learning rate: give --rates, not --lr", file=sys.stderr)
        return 2
    if args.task == "sp" and not args.arch:
        args.arch = SP_DEFAULT_ARCH
    base = _train_config(
        args, TrainConfig(estimator="score", steps=20000, eval_every=5000, eval_m=100, eval_n=1000)
    )
    if args.compile is None:
        base = dataclasses.replace(base, compile=base.steps >= COMPILE_AUTO_STEPS)
    try:
        result = lr_sweep(args.out, base, rates, progress=not args.quiet)
    except KeyboardInterrupt as e:
        print(f"stopped ({e}); run the same command to continue", file=sys.stderr)
        return 130
    for r in result["records"]:
        print(
            f"lr {r['lr']:g}: validation L_{r['valid_m']} = {r['valid_bound']:.2f} +- "
            f"{r['valid_sem']:.2f} on {r['valid_n']} images after {r['step']} steps"
        )
    margin = result["margin_over_runner_up"]
    extra = ""
    if margin:
        extra = (
            f" ({margin['difference']:+.2f} +- {margin['paired_sem']:.2f} nats over lr "
            f"{margin['runner_up_lr']:g}, paired)"
        )
    print(f"chosen: lr {result['chosen_lr']:g}{extra}; {os.path.join(args.out, 'sweep.json')}")
    return 0


def cmd_campaign(args) -> int:
    from . import campaign

    _threads(args.threads)
    plan = dataclasses.replace(campaign.PLAN, total=args.total, stage=args.stage)
    if args.status:
        print(campaign.format_status(campaign.status(args.root, plan), plan.total))
        return 0
    if args.export:
        copied = campaign.export(args.root, args.export, plan)
        print(f"{len(copied)} files copied to {args.export}")
        return 0
    result = campaign.run_campaign(args.root, plan, progress=args.progress)
    print(campaign.format_status(campaign.status(args.root, plan), plan.total))
    return 0 if result == "done" else 130


def cmd_demo(args) -> int:
    from .demo import run_demo

    _threads(args.threads)
    run_demo(
        args.out,
        minutes=args.minutes,
        arch=args.arch,
        seed=args.seed,
        eval_m=args.eval_m,
        progress=not args.quiet,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .evaluate import DEFAULT_ROWS

    parser = argparse.ArgumentParser(
        prog="python -m concrete_ext.zoo",
        description="Density estimation (Section 5.2) and structured output prediction "
        "(Section 5.3) with discrete latent variables (Maddison, Mnih & Teh, ICLR "
        "2017): Concrete relaxation vs VIMCO / NVIL.",
        epilog="Start with: python -m concrete_ext.zoo demo   (offline, about 2 minutes). "
        "Details: docs/ZOO.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model of Section 5.2")
    _add_train_args(p)
    p.add_argument("--run-dir", help="output folder (default runs/<dataset>_<arch>_...)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_world_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="L_m of the discrete model on test / train / valid")
    p.add_argument("runs", nargs="+", help="run folders (or folders of run folders)")
    p.add_argument(
        "--m",
        type=int,
        help=f"default {DEFAULT_EVAL_M} (structured prediction: "
        f"{SP_EVAL_M}, the paper's L^SP_{SP_EVAL_M})",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help=f"the paper's m = {PAPER_EVAL_M} (structured prediction: {SP_EVAL_M})",
    )
    p.add_argument("--split", default="test", help="comma-separated: test,train,valid")
    p.add_argument(
        "--n",
        type=int,
        help="a random subset of n images of each split (the splits' "
        "orders are not random: the first 500 binarized-MNIST test images have 20%% "
        "more pixels on than the average)",
    )
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the --n subset")
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best validation (early stopping, D.5; default) or the last checkpoint",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="draws per work unit (memory)")
    p.add_argument("--data-root")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true")
    _add_world_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("table", help="results beside the paper's Tables 1 and 2 and Figure 4")
    p.add_argument("runs", nargs="+")
    p.add_argument("--markdown", action="store_true")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser(
        "compare",
        help="NLL of one run minus another's on the same images, with the paired standard error",
    )
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("plot", help="training curves as PNG")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="curves.png")
    p.add_argument("--title")
    p.add_argument("--log-steps", action="store_true", help="validation bound against log(steps)")
    p.add_argument(
        "--extrapolate",
        type=float,
        default=1e7,
        help="with --log-steps: continue a "
        "line fitted to each run's last decade of steps to this step, labelled as an "
        "extrapolation (default 1e7; 0: none)",
    )
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "temperature",
        help="Figure 4 (right): structured prediction trained on "
        "L_1^SP at several temperatures; continuous and discrete objectives",
        description="Trains one Concrete run per temperature in OUT/T<lambda> "
        "(resumable; finished runs are kept), then writes OUT/fig4.png, fig4.json "
        "and fig4.csv. Defaults: --arch 392V-240H-240H-240H-392V, --m 1, "
        "--steps 2000; training options as for train.",
    )
    _add_train_args(p)
    p.add_argument(
        "--temperatures",
        default="0.1,0.25,0.5,0.67,1,2,4",
        help="comma-separated training temperatures (default 0.1,0.25,0.5,0.67,1,2,4)",
    )
    p.add_argument("--out", default="fig4", help="output folder (default fig4)")
    p.add_argument("--split", default="test", help="split the objectives are measured on")
    p.add_argument("--n", type=int, default=500, help="random images of the split (default 500)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the images and the noise")
    p.add_argument("--draws", type=int, default=10, help="draws per image for E[L_m] (default 10)")
    p.add_argument(
        "--eval-bound-m",
        type=int,
        default=SP_EVAL_M,
        help=f"m of the extra discrete L^SP_m column (default {SP_EVAL_M})",
    )
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_temperature)

    p = sub.add_parser(
        "lr-sweep",
        help="choose a learning rate (VIMCO / NVIL) by validation after a fixed number of steps",
        description="Trains the configuration at each rate of --rates for --steps "
        "steps in OUT/lr<rate> (resumable), scores each final model by its "
        "validation L_{--eval-m} and writes OUT/sweep.json with the chosen rate. "
        "Defaults: --estimator score (VIMCO if m > 1, else NVIL), --steps 20000, "
        "--eval-m 100, --eval-n 1000, --rates 1e-4,3e-4,1e-3.",
    )
    _add_train_args(p)
    p.add_argument("--rates", help="comma-separated learning rates (default 1e-4,3e-4,1e-3)")
    p.add_argument("--out", required=True, help="sweep folder")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_lr_sweep)

    p = sub.add_parser(
        "campaign",
        help="the 10^6-step reproduction of pairs a-c (Concrete "
        "against NVIL): continue whatever is left (campaign.py)",
        description="Sweeps NVIL's learning rate, trains the six runs round-robin "
        "in stages and evaluates them (docs/RESULTS.md); each call continues "
        "where the last one stopped (Ctrl-C / SIGTERM stop it cleanly).",
    )
    p.add_argument(
        "--root",
        default=os.path.join("runs", "campaign"),
        help="folder of the campaign's runs (default runs/campaign)",
    )
    p.add_argument("--status", action="store_true", help="print where each run stands")
    p.add_argument(
        "--export", metavar="DIR", help="copy the small result files (no checkpoints) to DIR"
    )
    p.add_argument("--total", type=int, default=1_000_000, help="steps per run (default 10^6)")
    p.add_argument(
        "--stage", type=int, default=100_000, help="steps per run and round (default 100,000)"
    )
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.set_defaults(func=cmd_campaign)

    p = sub.add_parser("demo", help="a small Concrete VAE on the shipped sample (offline)")
    p.add_argument("--out", default="zoo-demo", help="run folder (default zoo-demo)")
    p.add_argument("--minutes", type=float, default=1.5)
    p.add_argument("--arch", default="200H~784V")
    p.add_argument("--eval-m", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # a collective failed: another rank stopped (distributed.py)
        from .distributed import failure_message

        message = failure_message(e, getattr(args, "run_dir", None))
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    finally:
        if getattr(args, "world", None) is not None:
            args.world.close()
