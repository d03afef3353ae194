"""The paper's published numbers (Maddison, Mnih & Teh, ICLR 2017), transcribed for comparison.

Negative log-likelihoods in nats, estimated by the paper with -L_50000 (Section 5.2) on the discrete
model after 10^7 training steps (D.5).

* TABLE1: density estimation with binary latent variables (Table 1). Keys (arch, m); values
  {(dataset, split): (Concrete, VIMCO)} for dataset in {mnist, omniglot}, split in {test, train}.
  When m = 1, "VIMCO" is NVIL.
* TABLE2: density estimation with n-ary layers, Concrete only (Table 2, Appendix E). Keys
  (arch, arity, m); values {(dataset, split): NLL}. The Omniglot train entry of the 4-ary
  240H~784V m = 1 row reads "1002.7" in the paper, an evident typo kept as printed.
* FIGURE4: structured prediction (Section 5.3, the table in Figure 4), test / train NLL of
  L^SP_100; keys (arch, m); values {split: (Concrete, VIMCO)}; when m = 1 "VIMCO" is NVIL.
  ``paper_nll`` compares only binary runs with them (the figure's table does not name an arity).
"""

from __future__ import annotations

__all__ = ["TABLE1", "TABLE2", "FIGURE4", "paper_nll"]

_T1_ROWS = {
    # arch: {m: (mnist test C, V, mnist train C, V, omniglot test C, V, omniglot train C, V)}
    "200H-784V": {
        1: (107.3, 104.4, 107.5, 104.2, 118.7, 115.7, 117.0, 112.2),
        5: (104.9, 101.9, 104.9, 101.5, 118.0, 113.5, 115.8, 110.8),
        50: (104.3, 98.8, 104.2, 98.3, 118.9, 113.0, 115.8, 110.0),
    },
    "200H-200H-784V": {
        1: (102.1, 92.9, 102.3, 91.7, 116.3, 109.2, 114.4, 104.8),
        5: (99.9, 91.7, 100.0, 90.8, 116.0, 107.5, 113.5, 103.6),
        50: (99.5, 90.7, 99.4, 89.7, 117.0, 108.1, 113.9, 103.6),
    },
    "200H~784V": {
        1: (92.1, 93.8, 91.2, 91.5, 108.4, 116.4, 103.6, 110.3),
        5: (89.5, 91.4, 88.1, 88.6, 107.5, 118.2, 101.4, 102.3),
        50: (88.5, 89.3, 86.4, 86.5, 108.1, 116.0, 100.5, 100.8),
    },
    "200H~200H~784V": {
        1: (87.9, 88.4, 86.5, 85.8, 105.9, 111.7, 100.2, 105.7),
        5: (86.3, 86.4, 84.1, 82.5, 105.8, 108.2, 98.6, 101.1),
        50: (85.7, 85.5, 83.1, 81.8, 106.8, 113.2, 97.5, 95.2),
    },
}

TABLE1 = {
    (arch, m): {
        ("mnist", "test"): v[0:2],
        ("mnist", "train"): v[2:4],
        ("omniglot", "test"): v[4:6],
        ("omniglot", "train"): v[6:8],
    }
    for arch, rows in _T1_ROWS.items()
    for m, v in rows.items()
}

_T2_ROWS = {
    # (arch, arity): {m: (mnist test, mnist train, omniglot test, omniglot train)}
    ("240H~784V", 2): {
        1: (91.9, 90.7, 108.0, 102.2),
        5: (89.0, 87.1, 107.7, 100.0),
        50: (88.4, 85.7, 109.0, 99.1),
    },
    ("240H~784V", 4): {
        1: (91.4, 89.7, 110.7, 1002.7),
        5: (89.4, 87.0, 110.5, 100.2),
        50: (89.7, 86.5, 113.0, 100.0),
    },
    ("240H~784V", 8): {
        1: (92.5, 89.9, 119.61, 105.3),
        5: (90.5, 87.0, 120.7, 102.7),
        50: (90.5, 86.7, 121.7, 101.0),
    },
    ("240H~240H~784V", 2): {
        1: (87.9, 86.0, 106.6, 99.0),
        5: (86.6, 83.7, 106.9, 97.1),
        50: (86.0, 82.7, 108.7, 95.9),
    },
    ("240H~240H~784V", 4): {
        1: (87.4, 85.0, 106.6, 97.8),
        5: (86.7, 83.3, 108.3, 97.3),
        50: (86.7, 83.0, 109.4, 96.8),
    },
    ("240H~240H~784V", 8): {
        1: (88.2, 85.9, 111.3, 102.5),
        5: (87.4, 84.6, 110.5, 100.5),
        50: (87.2, 84.0, 111.1, 99.5),
    },
}

TABLE2 = {
    (arch, arity, m): {
        ("mnist", "test"): v[0],
        ("mnist", "train"): v[1],
        ("omniglot", "test"): v[2],
        ("omniglot", "train"): v[3],
    }
    for (arch, arity), rows in _T2_ROWS.items()
    for m, v in rows.items()
}

FIGURE4 = {
    ("392V-240H-240H-392V", 1): {"test": (58.5, 61.4), "train": (54.2, 59.3)},
    ("392V-240H-240H-392V", 5): {"test": (54.3, 54.5), "train": (49.2, 52.7)},
    ("392V-240H-240H-392V", 50): {"test": (53.4, 51.8), "train": (48.2, 49.6)},
    ("392V-240H-240H-240H-392V", 1): {"test": (56.3, 59.7), "train": (51.6, 58.4)},
    ("392V-240H-240H-240H-392V", 5): {"test": (52.7, 53.5), "train": (46.9, 51.6)},
    ("392V-240H-240H-240H-392V", 50): {"test": (52.0, 50.2), "train": (45.9, 47.9)},
}


def paper_nll(arch: str, arity: int, m: int, estimator: str, dataset: str, split: str):
    """The paper's NLL for a run, or None when the paper has no such entry.

    ``estimator``: "concrete", or "vimco" / "nvil" (the paper's VIMCO column, NVIL when m = 1).
    ``dataset``: "mnist" (the fixed binarization) or "omniglot". Structured-prediction models
    (binary, MNIST) are looked up in FIGURE4 (-L_100^SP), density models in Tables 1 and 2.
    """
    if dataset not in ("mnist", "omniglot"):
        return None
    if (arch, m) in FIGURE4:
        if arity != 2 or dataset != "mnist" or split not in FIGURE4[(arch, m)]:
            return None
        concrete, vimco = FIGURE4[(arch, m)][split]
        return concrete if estimator == "concrete" else vimco
    key = (dataset, split)
    if arity == 2 and (arch, m) in TABLE1:
        concrete, vimco = TABLE1[(arch, m)][key]
        return concrete if estimator == "concrete" else vimco
    if estimator == "concrete" and (arch, arity, m) in TABLE2:
        return TABLE2[(arch, arity, m)][key]
    return None
