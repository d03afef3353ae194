"""The small-call benchmark compares like with like: each case's op and its composite peer return
outputs of the same shape and dtype, and the deterministic ones (the log-densities) the same
values; one timing loop runs."""

import math

import pytest
import torch

import concrete_ext as ce
from benchmarks import bench_small

CASES = bench_small.cases(torch, ce)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("shape", bench_small.SHAPES[:2])
def test_case_matches_its_peer(case, shape):
    name, make, ours, peer = case
    inputs = make(shape, False)
    a, b = ours(inputs), peer(inputs)
    assert a.shape == b.shape and a.dtype == b.dtype
    if "log_prob" in name:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_measure_times_both_sides():
    threads = torch.get_num_threads()
    try:
        res = bench_small.measure("", rounds=1, min_ms=0.1, only="exp_concrete_log_prob")
    finally:
        torch.set_num_threads(threads)
    assert len(res) == 2 * len(bench_small.SHAPES)
    for v in res.values():
        assert 0 < v["ours"] < math.inf and 0 < v["peer"] < math.inf
