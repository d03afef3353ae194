#!/usr/bin/env bash
# The GPU check: build the extension from source on a CUDA machine, verify every CUDA (and Triton)
# kernel, run the CUDA tests and the benchmarks, and print a short summary table last.
#
#   bash benchmarks/gpu_check.sh [LOG_DIR]      (LOG_DIR defaults to benchmarks/results/gpu_check)
#
# Environment: GPU_CHECK_QUICK=1 shortens the verification, the Triton check and the benchmarks;
# GPU_CHECK_STEPS="build verify pytest triton bench" chooses the steps (all by default);
# TIMEOUT_BUILD=..., TIMEOUT_PYTEST=... bound each step in seconds (600 by default), so a short
# lease still prints its summary.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${1:-benchmarks/results/gpu_check}
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_check.log"
: > "$LOG"
STEPS=${GPU_CHECK_STEPS:-"build verify pytest triton bench"}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, for every script
declare -A STATUS TIMES
say() { echo "$@" | tee -a "$LOG"; }
step() {  # step NAME COMMAND...   (TIMEOUT_<NAME>=seconds bounds a step; default 600)
  local name=$1; shift
  local t0=$SECONDS
  local limit_var="TIMEOUT_${name^^}"
  local limit=${!limit_var:-600}
  say "=== $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  STATUS[$name]=$([ "$rc" = 0 ] && echo PASS || { [ "$rc" = 124 ] && echo "TIMEOUT" || echo "FAIL(rc=$rc)"; })
  TIMES[$name]=$((SECONDS - t0))
  return 0
}
has() { [[ " $STEPS " == *" $1 "* ]]; }

COMMIT=${CE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}  # the device copy has no .git: pass CE_COMMIT
say "gpu_check $(date -u +%FT%TZ) commit $COMMIT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee -a "$LOG"

if has build; then
  # One arch (the visible GPU's) keeps the build short; all cores, as the machine has the memory.
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  step build env CONCRETE_EXT_REQUIRE_CUDA=1 $PY setup.py build_ext --inplace
  $PY -c "import concrete_ext as ce; print(ce.build_info())" 2>&1 | tee -a "$LOG"
fi
if has verify; then
  step verify $PY benchmarks/gpu_verify.py ${GPU_CHECK_QUICK:+--quick} --out "$LOG_DIR/verify.json"
fi
if has pytest; then
  # The suite's CUDA cases (the CPU ones run in CI); -x stops at the first failure to save time.
  step pytest $PY -m pytest tests/ops tests/distributions -q -k "cuda" -p no:cacheprovider ${PYTEST_ARGS:-}
fi
if has triton && [ -f benchmarks/triton_check.py ]; then
  step triton $PY benchmarks/triton_check.py ${GPU_CHECK_QUICK:+--quick}
fi
if has bench; then
  if [ -f benchmarks/run.py ] && [ -z "${GPU_CHECK_QUICK:-}" ]; then
    step bench $PY -m benchmarks.run --gpu --out "$LOG_DIR"
  else
    step bench $PY benchmarks/gpu_quick_bench.py
  fi
fi

say ""
say "==== gpu_check summary ($(date -u +%FT%TZ)) ===="
for s in $STEPS; do
  [ -n "${STATUS[$s]:-}" ] && say "$(printf '%-8s %-12s %5ss' "$s" "${STATUS[$s]}" "${TIMES[$s]}")"
done
grep -h "^== gpu_verify" "$LOG" | tail -1 | tee -a /dev/null
if [ -n "${STATUS[bench]:-}" ]; then
  awk '/^dtype +n +fwd ms|^== bench summary/{p=1} p' "$LOG" | tail -45
fi
