#!/usr/bin/env bash
# The first run on a machine with a CUDA GPU: the CUDA tests, then the tunnel and time-to-accuracy benchmarks on
# the GPU, every table written into one folder, in under 10 minutes.
#
#     bash benchmarks/gpu_run.sh                 # results in gpu_results/<date>-<time>/
#     bash benchmarks/gpu_run.sh path/to/folder    # relative to where you call it from
#     PYTHON=/path/to/python bash benchmarks/gpu_run.sh
#
# The folder gets: environment.txt (nvidia-smi, torch, CUDA), cuda_tests.txt (pytest's report; a CUDA test that
# skips is a failure here), RESULTS_cuda.md (bench_tunnel.py: noisegrad vs Captum vs a minimal loop) and
# TIME_TO_ACCURACY_cuda.md (bench_time_to_accuracy.py). Without a GPU, or with a Python that cannot import
# torch, it stops at once with exit status 2.
set -euo pipefail
# A folder, or a Python path, given relative to where the script was called from stays there, after the cd to the
# repository (a bare command name such as python is looked up on PATH).
case "${1:-}" in
  "") OUT="" ;;
  /*) OUT=$1 ;;
  *) OUT="$PWD/$1" ;;
esac
PY=${PYTHON:-python}
case "$PY" in
  /*) ;;
  */*) PY="$PWD/$PY" ;;
esac
cd "$(dirname "$0")/.."

OUT=${OUT:-gpu_results/$(date +%Y%m%d-%H%M%S)}

if ! "$PY" -c 'import torch' > /dev/null 2>&1; then
  echo "gpu_run.sh: $PY cannot import torch: run it with the Python that has noisegrad's dependencies" \
       "(PYTHON=/path/to/python bash benchmarks/gpu_run.sh)." >&2
  exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_run.sh: no CUDA GPU: torch.cuda.is_available() is False for $PY" \
       "(torch $("$PY" -c 'import torch; print(torch.__version__, "built for CUDA", torch.version.cuda)'))." >&2
  echo "Run it on a machine with an NVIDIA GPU, its driver, and a CUDA build of torch." >&2
  exit 2
fi

mkdir -p "$OUT"
started=$SECONDS
run() { echo "+ $*" >&2; local start=$SECONDS; "$@"; echo "  ($((SECONDS - start)) s)" >&2; }

{
  nvidia-smi || echo "nvidia-smi not found"
  "$PY" -c 'import torch, captum; print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN",
torch.backends.cudnn.version(), "captum", captum.__version__, "device", torch.cuda.get_device_name())'
  git rev-parse HEAD 2>/dev/null || true
} > "$OUT/environment.txt" 2>&1

# 1. Every test that needs CUDA (they skip on a CPU-only machine): placement, pinned memory, out-of-memory
#    halving on a real CUDA error, no host synchronisation per chunk, the keyed generator's bits (~1 min).
if ! run "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda tests/test_cuda.py tests/test_tunnel.py \
    tests/test_keyed_noise.py 2>&1 | tee "$OUT/cuda_tests.txt"; then
  echo "gpu_run.sh: CUDA tests failed (see $OUT/cuda_tests.txt)" >&2; exit 1
fi
if grep -qi "skipped" "$OUT/cuda_tests.txt"; then
  echo "gpu_run.sh: some CUDA tests skipped although a GPU is present (see $OUT/cuda_tests.txt)" >&2; exit 1
fi

# 2. noisegrad vs Captum vs the minimal loop, time and peak GPU memory (~2 min).
run "$PY" benchmarks/bench_tunnel.py --device cuda --repeats 10 --out "$OUT/RESULTS_cuda.md" > "$OUT/bench_tunnel.log"

# 3. Time to an accurate map (~5 min): shorter sweeps and calls than the CPU run, which a GPU does not need.
run "$PY" benchmarks/bench_time_to_accuracy.py --device cuda --sweep-seconds 6 --call-cap 2 --repeats 3 \
  --memory-cap-gb 4 --out "$OUT/TIME_TO_ACCURACY_cuda.md" > "$OUT/bench_time_to_accuracy.log"

elapsed=$((SECONDS - started))
echo "gpu_run.sh: done in $elapsed s; tables in $OUT" >&2
if ((elapsed > 600)); then echo "gpu_run.sh: took over 10 minutes; lower --sweep-seconds or --call-cap" >&2; fi
