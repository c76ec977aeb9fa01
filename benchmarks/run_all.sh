#!/usr/bin/env bash
# Regenerate every published number and plot: the tables in benchmarks/*.md and docs/*.md, their PNGs, and the
# README figures in docs/figures/. Run from anywhere on an otherwise idle machine (the timing benchmarks redo
# repetitions disturbed by other processes, so a busy machine makes them slow, not wrong):
#
#     bash benchmarks/run_all.sh            # everything, about 140 minutes on 2 cores
#     bash benchmarks/run_all.sh --quick    # smoke run of the same scripts, written to a temporary folder
#
# Each step prints the command it runs; the first failure stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."

# The published files say which allocator they ran under; those not run with ${KEEP[@]} below are glibc's default,
# also in a shell that exported the README's tip (any of these four turns glibc's dynamic thresholds off).
unset MALLOC_MMAP_THRESHOLD_ MALLOC_TRIM_THRESHOLD_ MALLOC_TOP_PAD_ MALLOC_MMAP_MAX_
if [[ "${GLIBC_TUNABLES:-}" == *glibc.malloc.* ]]; then
  echo "GLIBC_TUNABLES=$GLIBC_TUNABLES sets glibc's allocator: unset its glibc.malloc entries first" >&2
  exit 2
fi

QUICK="" B=benchmarks D=docs F=docs/figures
if [[ "${1:-}" == "--quick" ]]; then
  QUICK="--quick" B=$(mktemp -d) D=$B F=$B
  echo "quick run: outputs go to $B, the published files are left alone" >&2
fi

run() { echo "+ $*" >&2; local start=$SECONDS; "$@"; echo "  ($((SECONDS - start)) s)" >&2; }

# Timing and memory: noisegrad vs Captum vs a minimal loop, each row over 16 fresh processes (~18 min).
if [[ -z "$QUICK" ]]; then PROCESSES=16 REPEATS=80; else PROCESSES=1 REPEATS=5; fi  # a smoke run stays in one process
run python benchmarks/bench_tunnel.py --repeats $REPEATS --processes $PROCESSES --out $B/RESULTS.md $QUICK
# The same with glibc keeping freed memory: no page faults between calls, so the 5 % target is decided (~8 min).
if [[ -z "$QUICK" ]]; then PROCESSES=4 REPEATS=40; fi
run python benchmarks/bench_tunnel.py --keep-freed-memory --repeats $REPEATS --processes $PROCESSES \
  --out $B/RESULTS_KEPT_MEMORY.md $QUICK
# What keeping freed memory saves Captum, noisegrad and the minimal loop (~12 min; no quick mode).
if [[ -z "$QUICK" ]]; then run python benchmarks/bench_allocator.py --out $B/ALLOCATOR.md; fi
# These five run in this process: glibc must keep freed memory from the start (~5 min, ~6 min, ~3 min, ~20 s and ~2 min).
KEEP=(env MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296)
# Where a stock call's time goes beyond the minimal loop's (no quick mode).
if [[ -z "$QUICK" ]]; then run "${KEEP[@]}" python benchmarks/bench_call_phases.py --out $B/CALL_PHASES.md; fi
# Where an nt_samples="auto" call's time goes, against Captum's default with as many gradients (~6 min).
run "${KEEP[@]}" python benchmarks/bench_auto_phases.py --out $B/AUTO_PHASES.md $QUICK
# Under nt_samples="auto": chunks that grow as inputs leave, against a fixed sample count (~3 min).
run "${KEEP[@]}" python benchmarks/bench_auto_chunk_growth.py --out $B/AUTO_CHUNK_GROWTH.md $QUICK
# Does the row order (Captum's example-major, noisegrad's sample-major) change the model's own time?
run "${KEEP[@]}" python benchmarks/bench_row_order.py --out $B/ROW_ORDER.md ${QUICK:+--repeats 5}
# Channels-last noisy copies against contiguous ones: a chunk's forward and backward, and whole calls (~2 min).
run "${KEEP[@]}" python benchmarks/bench_layout.py --out $B/LAYOUT.md ${QUICK:+--quick --repeats 3}
# Time to a map within 10 % / 5 % relative error: noisegrad's defaults vs Captum's (~30 min).
run python benchmarks/bench_time_to_accuracy.py --out $B/TIME_TO_ACCURACY.md $QUICK
# The same with freed memory kept, where Captum's all-at-once default no longer faults (~20 min).
run "${KEEP[@]}" python benchmarks/bench_time_to_accuracy.py --out $B/TIME_TO_ACCURACY_KEPT_MEMORY.md $QUICK
# Where a batch-1 call's fixed cost goes (~1 min).
run python benchmarks/bench_fixed_cost.py --out $B/FIXED_COST.md
# Chunk sizes: the sweep, "auto", Captum's default (~10 min).
run python benchmarks/bench_chunks.py --repeats 5 --out $B/CHUNKS.md $QUICK
# Weight noise: batched draws vs a deep copy per draw, vmap vs a loop (~8 min).
run python benchmarks/bench_weights.py --repeats 10 --out $B/WEIGHTS.md $QUICK
# The training monitor's overhead on a training loop (~2 min).
run python benchmarks/bench_monitor.py --out $B/MONITOR.md $QUICK
# Several outputs at once against one run per output (~3 min).
run python benchmarks/bench_outputs.py --repeats 9 --out $B/OUTPUTS.md $QUICK
# Cost model: FLOPs and bytes per noisy sample (~2 min).
run python benchmarks/perf_model.py --out $D/performance_table.md $QUICK
if [[ -z "$QUICK" ]]; then
  # Accuracy per gradient evaluation; these have no quick mode (~2, ~3 and ~1 min).
  run python benchmarks/bench_joint.py
  run python benchmarks/bench_samplers.py
  # Other stratified designs for absolute-gradient SmoothGrad (~1 min).
  run python benchmarks/bench_abs_designs.py
  # The joint estimator's path fraction, uniform or adaptive: gradients counted, not timed (~1 min).
  run python benchmarks/bench_path_density.py --out $B/PATH_DENSITY.md
fi
# Ground-truth localisation by method and noise level (~1-2 min).
run python benchmarks/bench_localisation.py --out $D/localisation.md --figure $F/localisation.png
# The same question for a small transformer on token ids, noise at the word embedding (~2 min).
run python benchmarks/bench_text.py --out $D/text.md --figure $F/text_localisation.png
# The README's figures (~30 s).
run python tutorials/make_figures.py --out $F
echo "done: git status shows what changed" >&2
