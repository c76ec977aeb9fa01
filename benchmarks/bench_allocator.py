"""What re-faulting freed memory costs a CPU call, and the two environment variables that stop it (Linux, glibc).

    python benchmarks/bench_allocator.py --out benchmarks/ALLOCATOR.md    # ~12 min on 2 cores, idle

A forward and backward allocate their activations anew at every call. glibc's
``malloc`` hands large blocks back to the kernel when they are freed (an
``munmap``, or trimming the top of the heap), so the next call's blocks are
fresh pages, and the kernel zeroes each one at its first touch: a minor page
fault per 4 KiB. Setting

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296

(see ``man mallopt``) keeps blocks below 4 GiB on the heap and the freed heap in
the process: the next call reuses pages it already has. The process's resident
memory then stays at its peak instead of shrinking between calls. The variables
must be set before Python starts; setting only one of them makes things worse:
``MALLOC_TRIM_THRESHOLD_`` alone also fixes the mmap threshold at 128 KiB, so
every activation is mapped afresh (measured once, on 2026-12-01, the ResNet
Saliency row: Captum 206 ms a call and 150 thousand faults, against 62 ms and
17 thousand with neither variable set and 48 ms and none with both).

Each workload of bench_tunnel.py (its stock batch, VarGrad, 16 samples in chunks
of 8) runs in pairs of fresh processes, one with the default allocator and one
with both variables set, the order alternating from pair to pair. Each process
warms up, then times the four variants of bench_tunnel.py interleaved (Captum's
NoiseTunnel, noisegrad seeded and unseeded, the minimal loop) and counts the
minor page faults of each call. A pair gives one ratio per variant: the median
call with the variables over the median call without. The table reports the
median ratio over the pairs with its min–max.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import (  # noqa: E402
    Config, build_workloads, command_line, cpu_model, make_variants, noisegrad_revision, publish, worker_result,
)
from glibc_malloc import KEEP_FREED_MEMORY, allocator_environment  # noqa: E402
VARIANTS = ("captum", "noisegrad", "unseeded", "minimal")
LABELS = {"captum": "Captum", "noisegrad": "noisegrad (seeded)", "unseeded": "noisegrad (unseeded)",
          "minimal": "minimal loop"}


def _worker(row: str, repeats: int, warmup: int) -> None:
    """One process: per variant, the wall time and the minor page faults of each call, as JSON on stdout."""
    workload_name, method = row.split(",")
    cfg = Config()
    workload = next(w for w in build_workloads(False) if w.name == workload_name)
    variants = make_variants(workload, method, cfg, cfg.nt_type, cfg.nt_samples)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    seconds: Dict[str, List[float]] = {name: [] for name in VARIANTS}
    faults: Dict[str, List[int]] = {name: [] for name in VARIANTS}
    for rep in range(repeats):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]
        for name in order:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - start)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"seconds": seconds, "faults": faults}))


def _run_process(row: str, args: argparse.Namespace, keep: bool) -> dict:
    env = allocator_environment(keep)  # nothing of the parent's own malloc settings, in either process
    command = [sys.executable, os.path.abspath(__file__), "--worker", row, "--repeats", str(args.repeats),
               "--warmup", str(args.warmup)]
    return worker_result(command, env, f"worker ({row}, {'kept' if keep else 'default'} allocator)")


def measure(row: str, args: argparse.Namespace) -> dict:
    """``args.pairs`` pairs of processes for one (workload, method): per variant, the ratios and the medians."""
    ratios: Dict[str, List[float]] = {name: [] for name in VARIANTS}
    ms: Dict[str, Dict[bool, List[float]]] = {name: {False: [], True: []} for name in VARIANTS}
    faults: Dict[str, Dict[bool, List[float]]] = {name: {False: [], True: []} for name in VARIANTS}
    for pair in range(args.pairs):
        runs = {}
        for keep in ((False, True) if pair % 2 == 0 else (True, False)):
            runs[keep] = _run_process(row, args, keep)
        for name in VARIANTS:
            medians = {keep: statistics.median(runs[keep]["seconds"][name]) for keep in runs}
            ratios[name].append(medians[True] / medians[False])
            for keep in runs:
                ms[name][keep].append(1e3 * medians[keep])
                faults[name][keep].append(statistics.median(runs[keep]["faults"][name]))
    return {"ratios": ratios, "ms": ms, "faults": faults}


def report(results: Dict[str, dict], args: argparse.Namespace, command: str, revision: str) -> str:
    lines = [
        "# Re-faulted memory: what glibc's default costs a CPU call, and what keeping freed memory saves",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}; noisegrad {revision}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, glibc {platform.libc_ver()[1] or 'unknown'}; CPU: {cpu_model()}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}; load average (1 min) at the end: "
        f"{os.getloadavg()[0]:.2f}",
        "- setting: " + " ".join(f"`{k}={v}`" for k, v in KEEP_FREED_MEMORY.items()) + " in the environment of "
        "the process, against none of them",
        f"- the calls of bench_tunnel.py (VarGrad, 16 samples in chunks of 8, σ = 0.1); {args.pairs} pairs of fresh "
        f"processes per row, the order alternating; each process: {args.warmup} warm-up calls per variant, then "
        f"{args.repeats} repetitions of the four variants interleaved. \"kept / default\" is, per pair, the median "
        "call with the setting over the median call without: the median over the pairs [min–max]. Faults: minor "
        "page faults per call, the median over the pairs of each process's median.",
        "",
        "| workload | method | variant | default ms | kept ms | kept / default | faults per call, default → kept |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for row, result in results.items():
        workload, method = row.split(",")
        for name in VARIANTS:
            r = result["ratios"][name]
            default_ms, kept_ms = (statistics.median(result["ms"][name][k]) for k in (False, True))
            default_faults, kept_faults = (statistics.median(result["faults"][name][k]) for k in (False, True))
            lines.append(f"| {workload} | {method} | {LABELS[name]} | {default_ms:.1f} | {kept_ms:.1f} | "
                         f"{statistics.median(r):.2f} [{min(r):.2f}–{max(r):.2f}] | "
                         f"{default_faults:.0f} → {kept_faults:.0f} |")
    every = [x for result in results.values() for name in VARIANTS for x in [statistics.median(result["ratios"][name])]]
    lines += ["", f"Median ratios over all rows and variants: {min(every):.2f}–{max(every):.2f}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4, help="pairs of processes (default, kept) per row")
    parser.add_argument("--repeats", type=int, default=8, help="interleaved repetitions per process")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls per variant and process")
    parser.add_argument("--workloads", default="cnn,resnet,mlp,transformer")
    parser.add_argument("--methods", default="Saliency,InputXGradient,IntegratedGradients")
    parser.add_argument("--out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        _worker(args.worker, args.repeats, args.warmup)
        return
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        raise SystemExit("the setting measured here is glibc's: run this on Linux with glibc")
    revision = noisegrad_revision()
    results = {}
    for workload in args.workloads.split(","):
        for method in args.methods.split(","):
            row = f"{workload},{method}"
            results[row] = measure(row, args)
            print(row, {name: round(statistics.median(r), 3) for name, r in results[row]["ratios"].items()},
                  flush=True)
    publish(report(results, args, command_line(argv), revision), args.out)


if __name__ == "__main__":
    main()
