#!/usr/bin/env bash
# The GPU check of the CuPy backend, in ONE call on a machine with an NVIDIA GPU (sm_80 or newer),
# PyTorch, transformers and CuPy (cupy-cuda12x or cupy-cuda13x) already installed; no network needed.
#
#     bash benchmarks/gpu_check.sh            # from the repository root; about 5 minutes, at most ~9
#
# Steps, each under its own time limit so that one stuck step cannot eat the others:
#   1. environment: GPU, driver, versions, a hash of the backend sources            -> env.txt
#   2. the fused kernels against their readable twins (tests/test_backend_cupy.py)  -> twins.log
#   3. throughput: ViT-B/32 batch 256 and ViT-L/14 batch 128, float16 and float32,
#      npclip on CuPy vs transformers SDPA on the same card (benchmarks/bench_gpu.py), with npclip's
#      stage times and transformers' costliest kernels for each cell (--breakdown)  -> bench.log, bench.json
#   4. the parity suite on CuPy (NPCLIP_TEST_BACKENDS=cupy, the gpu-marked cases)    -> parity.log
#   5. compute-sanitizer memcheck and racecheck on a few small kernel cases          -> sanitizer.log
# then summary.txt, also printed last. Results go to $OUT (the device tool's folder) or ./gpu-check-out.
# If the twin tests hit a CUDA error, steps 3-4 run without the tensor-core attention (NPCLIP_CUPY_DISABLE).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY="${PYTHON:-python3}"
START=$(date +%s)
step() { echo; echo "=== $1 ($(( $(date +%s) - START )) s) ==="; }

step "1. environment"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
  nvcc --version 2>&1 | tail -1
  "$PY" -c "import sys, numpy, cupy, torch, transformers; print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| cupy', cupy.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__); print('cupy sees', cupy.cuda.runtime.getDeviceCount(), 'GPU(s), compute capability', cupy.cuda.Device().compute_capability)" 2>&1
  git rev-parse HEAD 2>/dev/null || echo "no git metadata"
  sha256sum npclip/backend_cupy.py npclip/backend.py npclip/encoder.py npclip/ops.py
} | tee "$OUT/env.txt"
if ! "$PY" -m pip install --quiet --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1; then
  echo "pip install -e . failed: using PYTHONPATH" | tee -a "$OUT/env.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step "2. fused kernels against their twins"
timeout 130 "$PY" -m pytest -q -p no:cacheprovider -rfE -m gpu tests/test_backend_cupy.py 2>&1 | tee "$OUT/twins.log"
# A kernel that faults (rather than one that is only inaccurate: the benchmark prints its agreement with
# transformers) would take the benchmark down with it: then run steps 3-4 without the tensor-core attention.
if grep -iE "illegal (memory|address|instruction)|misaligned address|CUDA_ERROR_|cudaError" "$OUT/twins.log" >/dev/null; then
  export NPCLIP_CUPY_DISABLE=attention_mma
  echo "!! a CUDA error in the twin tests: steps 3-4 run with NPCLIP_CUPY_DISABLE=attention_mma" | tee -a "$OUT/twins.log"
fi

step "3. throughput against transformers"
timeout 240 "$PY" benchmarks/bench_gpu.py --breakdown --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"

step "4. parity suite on CuPy"
NPCLIP_TEST_BACKENDS=cupy timeout 120 "$PY" -m pytest -q -p no:cacheprovider -rfE -m gpu \
  tests/test_text.py tests/test_vision.py tests/test_modeling.py 2>&1 | tee "$OUT/parity.log"

step "5. compute-sanitizer"
if command -v compute-sanitizer >/dev/null; then
  CASES='(test_gpu_attention_matches_twin and (2-77-2-64-True or 1-65-1-80)) or (test_gpu_attention_gemm_matches_twin and 2-77-2-64-True) or (test_gpu_layer_norm_matches_twin and 2x5x42) or (test_gpu_bias_act_matches_twin and 7-37 and gelu)'
  for tool in memcheck racecheck; do
    timeout 30 compute-sanitizer --tool "$tool" --print-limit 20 --target-processes all \
      "$PY" -m pytest -q -p no:cacheprovider -x tests/test_backend_cupy.py -k "$CASES" 2>&1 | tail -25
  done | tee "$OUT/sanitizer.log"
else
  echo "compute-sanitizer not found" | tee "$OUT/sanitizer.log"
fi

step "summary"
{
  echo "gpu_check.sh finished in $(( $(date +%s) - START )) s; NPCLIP_CUPY_DISABLE=${NPCLIP_CUPY_DISABLE:-}"
  head -2 "$OUT/env.txt"
  echo "twins:     $(grep -E '(passed|failed|error)' "$OUT/twins.log" | tail -1)"
  echo "parity:    $(grep -E '(passed|failed|error)' "$OUT/parity.log" | tail -1)"
  echo "sanitizer: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tr '\n' ' ')"
  grep -E '^FAILED|^ERROR' "$OUT/twins.log" "$OUT/parity.log" | head -20
  echo
  tail -16 "$OUT/bench.log"
} | tee "$OUT/summary.txt"
