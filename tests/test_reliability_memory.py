"""Memory: 10^4 repeated calls of each op (forward and backward) do not grow the process's resident
memory nor the number of live tensors, on the CPU; the same on CUDA (skipped without a GPU). That
straight-through mode keeps no rows x n soft sample for backward is tested in
tests/ops/test_gumbel_softmax.py (test_hard_keeps_no_soft_tensor_for_backward); the CUDA test below
also compares its peak memory with torch.nn.functional.gumbel_softmax(hard=True), and
benchmarks/bench_hard_memory.py measures both on any device.
"""

import gc
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import concrete_ext as ce

pytestmark = pytest.mark.usefixtures("one_thread")
CALLS = 10_000
CALLS_BACKWARD = 2_000
WARMUP = 300
PAGE = os.sysconf("SC_PAGE_SIZE")


FRESH = "CONCRETE_EXT_MEMORY_TEST_CHILD"


def in_fresh_process(request) -> bool:
    """Run this test again in a new interpreter and report its result (True: done here).

    Resident memory only grows when the allocator runs out of freed memory; a process that has run
    hundreds of tests holds enough of it to absorb a leak of megabytes (the leak control below
    failed inside the full suite), so the measurement runs in a process that has done nothing else.
    """
    if os.environ.get(FRESH):
        return False
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
        cwd=root,
        env={**os.environ, FRESH: "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return True


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance on deprecated torch module attributes warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _calls(device, backward=True):
    """Each op as a function of (logits, temperature) that runs forward (and backward)."""
    v = torch.full((4, 5), 0.2, device=device)
    y = v.log()
    lg = torch.zeros(4, 5, device=device)

    def back(out):
        if backward:
            outs = out if isinstance(out, tuple) else (out,)
            sum(o.float().sum() for o in outs if o.requires_grad).backward()

    return {
        "exp_concrete_sample": lambda a, t: back(ce.exp_concrete_sample(a, t)),
        "concrete_sample": lambda a, t: back(ce.concrete_sample(a, t)),
        "gumbel_softmax_hard": lambda a, t: back(ce.gumbel_softmax(a, t, hard=True)),
        "gumbel_max_sample": lambda a, t: ce.gumbel_max_sample(a),
        "exp_concrete_log_prob": lambda a, t: back(ce.exp_concrete_log_prob(y, a, t)),
        "concrete_log_prob": lambda a, t: back(ce.concrete_log_prob(v, a, t)),
        "relaxed_kl_sample": lambda a, t: back(ce.relaxed_kl_sample(a, t, lg, 0.5)),
        "binary_concrete_sample": lambda a, t: back(ce.binary_concrete_sample(a, t.unsqueeze(-1))),
        "logit_binary_concrete_sample": lambda a, t: back(
            ce.logit_binary_concrete_sample(a, t.unsqueeze(-1))
        ),
        "binary_concrete_log_prob": lambda a, t: back(
            ce.binary_concrete_log_prob(v, a, t.unsqueeze(-1))
        ),
        "logit_binary_concrete_log_prob": lambda a, t: back(
            ce.logit_binary_concrete_log_prob(lg, a, t.unsqueeze(-1))
        ),
        "noise": lambda a, t: ce.noise("gumbel", (4, 5), device=device),
    }


def _run(call, device, calls, grad=True):
    a = torch.randn(4, 5, device=device, requires_grad=grad)
    t = torch.full((4,), 0.7, device=device, requires_grad=grad)
    for _ in range(calls):
        a.grad = t.grad = None
        call(a, t)


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
def test_repeated_calls_do_not_grow_cpu_memory(backward, request):
    if in_fresh_process(request):
        return
    # 10^4 forward calls of each op; 2,000 forward + backward calls (autograd's own bookkeeping
    # makes those ~10x slower on this machine).
    n_calls = CALLS_BACKWARD if backward else CALLS
    calls = _calls("cpu", backward)
    for call in calls.values():  # warm up every op: allocator pools, dispatcher caches
        _run(call, "cpu", WARMUP, backward)
    gc.collect()
    n0 = live_tensors()  # (scanning every object allocates: before the RSS baseline)
    rss0 = rss_bytes()
    growth = {}
    for name, call in calls.items():
        before = rss_bytes()
        _run(call, "cpu", n_calls, backward)
        growth[name] = rss_bytes() - before
    total = rss_bytes() - rss0
    # A leak of one small tensor per call (>= 100 bytes, >= 250 with backward) shows as >= 1 MB
    # (>= 512 KB) per op.
    limit = (1 << 19) if backward else (1 << 20)
    assert all(g < limit for g in growth.values()), growth
    assert total < 2 * limit, (total, growth)
    gc.collect()
    assert live_tensors() <= n0, (n0, live_tensors())


def test_the_rss_check_sees_a_leak(request):
    if in_fresh_process(request):
        return
    # The measurement is not vacuous: keeping one 4 x 5 result per call is seen.
    kept = []
    before = rss_bytes()
    a = torch.randn(4, 5)
    for _ in range(CALLS):
        kept.append(ce.concrete_sample(a, 0.5))
    assert rss_bytes() - before >= 1 << 20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_repeated_calls_do_not_grow_cuda_memory():
    calls = _calls("cuda")
    for call in calls.values():
        _run(call, "cuda", WARMUP)
    torch.cuda.synchronize()
    for name, call in calls.items():
        before = torch.cuda.memory_allocated()
        _run(call, "cuda", CALLS)
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() <= before, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hard_mode_peak_memory_below_torch_on_cuda():
    rows, n = 4096, 1024
    logits = torch.randn(rows, n, device="cuda", requires_grad=True)
    soft_bytes = rows * n * logits.element_size()

    def peak(fn):
        logits.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        y = fn(logits)
        kept = torch.cuda.memory_allocated() - base  # held between forward and backward
        (y * torch.arange(n, device="cuda")).sum().backward()
        torch.cuda.synchronize()
        return kept, torch.cuda.max_memory_allocated() - base

    ours_kept, ours_peak = peak(lambda a: ce.gumbel_softmax(a, 0.5, hard=True))
    torch_kept, torch_peak = peak(lambda a: F.gumbel_softmax(a, 0.5, hard=True))
    # torch keeps the soft sample (rows x n) for backward; we keep only the output.
    assert ours_kept <= torch_kept - soft_bytes // 2, (ours_kept, torch_kept)
    assert ours_peak <= torch_peak, (ours_peak, torch_peak)
