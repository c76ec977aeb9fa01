"""Under nt_samples="auto": chunks that grow as inputs leave the batch, against chunks of a fixed sample count.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python benchmarks/bench_auto_chunk_growth.py --out benchmarks/AUTO_CHUNK_GROWTH.md    # ~3 min on 2 cores

When inputs reach ``tol`` and leave the batch, noisegrad gives the others as many more samples per chunk as keeps a
chunk's noisy copies (``ChunkPlan.examples_left``). Before, a chunk kept its sample count: an input running on alone
ran chunks of a whole batch's samples per input, with a fraction of the rows. This script runs both in one process,
on bench_time_to_accuracy.py's SmoothGrad-type rows (its workloads, batches, σ and targets), noisegrad's front-end
with ``nt_samples="auto"`` and ``tol`` = the target. "fixed" replaces ``examples_left`` with one that only counts
the inputs (the old behaviour); both variants run with the same seed in a pair, so they stop at the same counts
(checked) and differ only in their chunks; the pair's order alternates. Ratios are per pair; the table gives their
median and min–max.
"""

import argparse
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_time_to_accuracy import FRONTENDS, setting_inputs, smoothgrad_type_rows  # noqa: E402
from bench_tunnel import command_line, publish, report_header  # noqa: E402
from noisegrad.plan import ChunkPlan  # noqa: E402

GROWING = ChunkPlan.examples_left


def _fixed(plan: ChunkPlan, examples: int) -> None:
    """The behaviour before: the inputs left are counted, the chunk keeps its samples per input."""
    plan.examples = examples


VARIANTS: Dict[str, Callable[[ChunkPlan, int], None]] = {"growing": GROWING, "fixed": _fixed}


def measure_row(workload, statistic, tol: float, pairs: int, quick: bool) -> dict:
    x, target, sigma = setting_inputs(workload, statistic, quick)
    kwargs = {"absolute": statistic.absolute} if statistic.nt_type == "smoothgrad" else {}
    times: Dict[str, List[float]] = {name: [] for name in VARIANTS}
    samples, chunks = [], {name: [] for name in VARIANTS}
    for pair in range(pairs + 1):  # the first pair warms up
        results = {}
        for name in list(VARIANTS)[::1 if pair % 2 else -1]:
            ChunkPlan.examples_left = VARIANTS[name]
            counted = _ChunkCounter()
            try:
                with warnings.catch_warnings():  # an input stopped by max_samples: its count shows in the table
                    warnings.simplefilter("ignore", RuntimeWarning)
                    start = time.perf_counter()
                    results[name] = FRONTENDS[statistic.nt_type](
                        workload.model, x, target=target, nt_samples="auto", tol=tol, stdevs=sigma, seed=1000 + pair,
                        **kwargs)
                    seconds = time.perf_counter() - start
            finally:
                ChunkPlan.examples_left = GROWING
                counted.remove()
            if pair:
                times[name].append(seconds)
                chunks[name].append(counted.forwards)
        if not torch.equal(results["growing"].nt_samples, results["fixed"].nt_samples):
            raise AssertionError("the variants stopped at different counts: the chunks changed the checks")
        if pair:
            samples.append(float(results["growing"].nt_samples.double().mean()))
    ratios = [g / f for g, f in zip(times["growing"], times["fixed"])]
    return {"workload": workload.name, "statistic": statistic.name, "tol": tol, "batch": x.shape[0],
            "samples": statistics.mean(samples), "times": times, "ratios": ratios,
            "chunks": {name: statistics.mean(c) for name, c in chunks.items()}}


class _ChunkCounter:
    """Chunks of a call: calls of ``ChunkPlan.next``."""

    def __init__(self) -> None:
        self.forwards = 0
        self._next = ChunkPlan.next

        def counting(plan, *args, **kwargs):
            self.forwards += 1
            return self._next(plan, *args, **kwargs)

        ChunkPlan.next = counting

    def remove(self) -> None:
        ChunkPlan.next = self._next


def report(rows: List[dict], args: argparse.Namespace, command: str) -> str:
    ms = lambda seconds: 1e3 * statistics.median(seconds)  # noqa: E731
    lines = [
        *report_header("nt_samples=\"auto\": chunks that grow as inputs leave, against a fixed sample count", command),
        f"- bench_time_to_accuracy.py's SmoothGrad-type rows (its workloads, batches, σ = 15 % of the range, targets); "
        f"noisegrad's front-end with nt_samples=\"auto\", tol = the target; {args.pairs} pairs of calls per row after "
        "one warm-up pair, the same seed within a pair (the same stops, checked), a new one per pair, the order "
        "alternating; \"fixed\" is the behaviour before (bench_auto_chunk_growth.py's docstring); chunks: mean per "
        "call",
        "",
        "| workload | statistic | target | batch | samples (mean) | chunks growing; fixed | growing ms | fixed ms "
        "| growing / fixed median [min–max] |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        r = row["ratios"]
        lines.append(f"| {row['workload']} | {row['statistic']} | {row['tol']:.0%} | {row['batch']} "
                     f"| {row['samples']:.0f} | {row['chunks']['growing']:.1f}; {row['chunks']['fixed']:.1f} "
                     f"| {ms(row['times']['growing']):.1f} | {ms(row['times']['fixed']):.1f} "
                     f"| {statistics.median(r):.3f} [{min(r):.2f}–{max(r):.2f}] |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7, help="pairs of calls per row, after one warm-up pair")
    parser.add_argument("--workloads", default="cnn,resnet,mlp,transformer")
    parser.add_argument("--quick", action="store_true", help="half batches, 2 pairs, the 10 %% target only")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs = 2
    command = command_line(argv)
    torch.manual_seed(0)
    rows = []
    for workload, statistic, tol in smoothgrad_type_rows(args.quick, args.workloads.split(",")):
        row = measure_row(workload, statistic, tol, args.pairs, args.quick)
        print(f"{workload.name:12s} {statistic.name:22s} {tol:.0%}  growing / fixed "
              f"{statistics.median(row['ratios']):.3f}", flush=True)
        rows.append(row)
    publish(report(rows, args, command), args.out)


if __name__ == "__main__":
    main()
