"""Model zoo: Sections 5.2 and 5.3 of Maddison, Mnih & Teh, "The Concrete Distribution" (ICLR 2017).

Sigmoid-belief-network VAEs in the paper's notation ("200H~200H~784V"), with binary or n-ary
stochastic layers, trained on L_m (Eq. 8) with the Concrete relaxation (the package's fused ops),
VIMCO (m > 1) or NVIL (m = 1), and evaluated on the discrete model with streamed L_m; and the
structured output prediction of Section 5.3 (bottom half of a digit given its top half, L_m^SP).

    python -m concrete_ext.zoo demo                 # offline, a minute or two on a CPU
    python -m concrete_ext.zoo train --arch 200H~784V --estimator concrete --m 5
    python -m concrete_ext.zoo eval runs/<run> --m 5000 --split test,train
    python -m concrete_ext.zoo table runs/
    python -m concrete_ext.zoo plot runs/ --out curves.png
    python -m concrete_ext.zoo train --task sp --estimator vimco --m 5   # Section 5.3
    python -m concrete_ext.zoo temperature --out fig4                    # Figure 4 (right)

Modules: data (datasets, checksums, download), arch (notation), layers (stochastic layers),
model (SBN, ConditionalSBN), estimators (Concrete, VIMCO, NVIL), evaluate (streamed L_m),
train (training loop, checkpoints), runs (run folders, atomic files), report (tables, plots),
sweep (the temperature study of Figure 4), paper (published numbers), demo, cli, distributed
(several processes under torchrun). See docs/ZOO.md.
"""

from __future__ import annotations

from .arch import Arch, parse_arch
from .data import load_dataset
from .estimators import NVIL, VIMCO, Concrete, make_estimator
from .evaluate import estimate_bound
from .model import SBN, ConditionalSBN, make_model
from .train import TrainConfig, Trainer, load_model

__all__ = [
    "Arch",
    "parse_arch",
    "load_dataset",
    "SBN",
    "ConditionalSBN",
    "make_model",
    "Concrete",
    "VIMCO",
    "NVIL",
    "make_estimator",
    "estimate_bound",
    "TrainConfig",
    "Trainer",
    "load_model",
]
