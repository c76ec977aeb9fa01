"""nt_samples="auto" with blocks of Latin hypercubes against the front-ends' fallback samplers: samples and error.

    python benchmarks/bench_auto_lhs.py --out benchmarks/AUTO_LHS.md     # about 10 min on 2 cores

With ``nt_samples="auto"`` a Latin hypercube cannot know its sample count, so it is drawn as consecutive
independent hypercubes of B samples (``noisegrad.sampling.samplers.AUTO_BLOCK``); the blocks are the units of the
standard error (8 jackknife groups); the first check comes when each group holds one block (max(16, 8 B)), or, as
noisegrad ships it for B = 4, after 16 samples (4 blocks).
For workloads and statistics of bench_time_to_accuracy.py (its models, batches, σ and long references), this
compares, at the targets 10 % and 5 % (VarGrad 10 % only), the samples each example stopped at and the error it
achieved against the reference (both medians over the examples and seeds), for B in BLOCKS and for the sampler
the front-ends fall back to without this (antithetic pairs for the SmoothGrads, i.i.d. noise for VarGrad).
Samples are counted, not timed (the machine is shared). ``efficiency`` = samples × achieved error², the samples
needed for unit error at the n^(−1/2) rate: lower is better, comparable even where the errors differ.
"""

import argparse
import os
import sys
import time
from typing import List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noisegrad.sampling.samplers as samplers  # noqa: E402
import noisegrad.tunnel as tunnel  # noqa: E402
from bench_time_to_accuracy import STATISTICS, Budget, make_setting, relative_errors  # noqa: E402
from bench_tunnel import build_workloads, command_line, noisegrad_revision, publish  # noqa: E402
from noisegrad import NoiseTunnel  # noqa: E402
from noisegrad.frontends import FALLBACK_SAMPLER  # noqa: E402
from captum.attr import Saliency  # noqa: E402

#: (B, first check): each B with its first check when every one of the 8 groups holds a block (max(16, 8 B)), and
#: B = 4 with it at 16 (4 of the 8 groups filled, 3 degrees of freedom), what noisegrad ships
#: (tunnel._first_check), for the targets that Captum reaches with about 10 samples.
VARIANTS = ((2, 16), (4, 32), (8, 64), (4, 16))
WORKLOADS = ("resnet", "mlp", "transformer")
SEEDS = 3
MAX_SAMPLES = 16384


def run(setting, sampler: str, block: Optional[int], tol: float, seed: int, first: Optional[int] = None):
    """One noisegrad call as the front-ends make it, with the given sampler (and hypercube block, first check)."""
    s = setting.statistic
    saved, saved_first = samplers.AUTO_BLOCK, tunnel._first_check
    samplers.AUTO_BLOCK = block or saved
    if first is not None:
        tunnel._first_check = lambda sampler: first
    try:
        result = NoiseTunnel(Saliency(setting.model)).attribute(
            setting.x, nt_type=s.nt_type, nt_samples="auto", tol=tol, max_samples=MAX_SAMPLES, stdevs=setting.sigma,
            sampler=sampler, target=setting.target, abs=s.absolute, seed=seed, nt_samples_batch_size="auto")
    finally:
        samplers.AUTO_BLOCK, tunnel._first_check = saved, saved_first
    errors = relative_errors(result.attributions, setting.reference)
    return result.nt_samples.cpu().numpy().astype(float), errors


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--statistics", default="sg,sg-abs,sg2,vargrad")
    parser.add_argument("--reference-divisor", type=int, default=2,
                        help="reference samples: bench_time_to_accuracy's divided by this")
    args = parser.parse_args(argv)
    budget = Budget(seeds=args.seeds, sweep_seconds=0, call_cap=0, memory_cap=0, repeats=0, warmup=0,
                    max_samples=MAX_SAMPLES, reference_divisor=args.reference_divisor)
    started, load = time.perf_counter(), os.getloadavg()
    lines = [
        "# nt_samples=\"auto\" with blocks of Latin hypercubes",
        "",
        f"- command: `{command_line(argv)}`; noisegrad {noisegrad_revision()}; torch {torch.__version__}; "
        f"load average (1 min) at start {load[0]:.2f} (a shared machine: samples are counted, nothing is timed)",
        f"- seeds: {args.seeds}; references: bench_time_to_accuracy's (its seed, σ, batches), with 1/"
        f"{args.reference_divisor} of its samples; max_samples {MAX_SAMPLES}",
        "- samples: median over examples and seeds of the count each example stopped at; error: median of "
        "‖A − R‖ / ‖R‖ per example and seed; above 1.5 × target: the share of (example, seed) errors above it; "
        "efficiency: samples × error² (lower is better). "
        "The fallback is what the front-ends used with \"auto\" before (antithetic; i.i.d. for VarGrad).",
        "",
        "| workload | statistic | target | reference error | sampler | samples | error | above 1.5 × target | "
        "efficiency |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    wanted = set(args.workloads.split(","))
    for workload in build_workloads(quick=False):
        if workload.name not in wanted:
            continue
        for statistic in STATISTICS:
            if statistic.ig or statistic.key not in args.statistics.split(","):
                continue
            setting = make_setting(workload, statistic, budget, quick=False)
            for tol in statistic.tols:
                fallback = FALLBACK_SAMPLER[statistic.nt_type]
                for sampler, block, first in [(fallback, None, None)] + [("lhs", b, f) for b, f in VARIANTS]:
                    used, errors = zip(*(run(setting, sampler, block, tol, seed, first) for seed in range(args.seeds)))
                    samples, error = float(np.median(np.stack(used))), float(np.median(np.stack(errors)))
                    above = float((np.stack(errors) > 1.5 * tol).mean())
                    name = sampler if block is None else f"lhs, B = {block}, first check {first}"
                    line = (f"| {workload.name} | {statistic.name} | {tol:.0%} | {setting.reference_error:.3f} | "
                            f"{name} | {samples:.0f} | {error:.4f} | {above:.0%} | {samples * error**2:.3f} |")
                    print(line, flush=True)
                    lines.append(line)
    lines += ["", f"{(time.perf_counter() - started) / 60:.1f} min", ""]
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
