"""Does the order of the noisy rows change the model's own time? Example-major (Captum) against sample-major (noisegrad).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python benchmarks/bench_row_order.py --out benchmarks/ROW_ORDER.md    # ~20 s on 2 cores, idle

Captum's NoiseTunnel and the minimal loop of bench_tunnel.py repeat each example
``k`` times in a row (``repeat_interleave``: example-major); noisegrad's chunks
hold copy 0 of every example, then copy 1, ... (sample-major), so that each
sample's noise is written into one contiguous slice. The rows are the same, only
permuted, and every model here treats rows independently. This script times
one forward and one ``autograd.grad`` of the summed target outputs (Saliency's
work) on one chunk of bench_tunnel.py (the stock batch, 8 copies per example)
in both orders, interleaved, at the stock noise σ = 0.1 (about 1.5 % of the
range of the standard normal inputs) and at σ = 1.0 (about 15 %, SmoothGrad's
recommended 10–20 %). Ratios are per repetition: sample-major over
example-major, the median [min–max].

Run it with the two glibc variables above (benchmarks/ALLOCATOR.md): without
them, page faults add a noise of their own.
"""

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import (  # noqa: E402
    build_workloads, command_line, publish, report_header,
)

COPIES = 8
ORDERS = ("example-major", "sample-major")


def rows_in_both_orders(x: Tensor, sigma: float, generator: torch.Generator) -> Dict[str, Tensor]:
    """One chunk of ``COPIES`` noisy copies per example, as example-major and as sample-major rows (the same rows)."""
    example_major = x.repeat_interleave(COPIES, 0)
    example_major += sigma * torch.randn(example_major.shape, generator=generator)
    sample_major = example_major.view((x.shape[0], COPIES) + x.shape[1:]).transpose(0, 1).reshape(example_major.shape)
    return {"example-major": example_major, "sample-major": sample_major.contiguous()}


def gradient_call(model: torch.nn.Module, rows: Tensor, targets: Tensor) -> Callable[[], Tensor]:
    def call() -> Tensor:
        leaf = rows.detach().requires_grad_()
        (grad,) = torch.autograd.grad(model(leaf).gather(1, targets[:, None]).sum(), leaf)
        return grad
    return call


def measure(repeats: int, warmup: int, sigmas: List[float]) -> List[dict]:
    results = []
    for workload in build_workloads(False):
        x, target = workload.inputs, workload.target
        for sigma in sigmas:
            rows = rows_in_both_orders(x, sigma, torch.Generator().manual_seed(0))
            targets = {"example-major": target.repeat_interleave(COPIES), "sample-major": target.repeat(COPIES)}
            calls = {order: gradient_call(workload.model, rows[order], targets[order]) for order in ORDERS}
            for _ in range(warmup):
                for call in calls.values():
                    call()
            seconds: Dict[str, List[float]] = {order: [] for order in ORDERS}
            for rep in range(repeats):
                for order in (ORDERS if rep % 2 == 0 else ORDERS[::-1]):
                    start = time.perf_counter()
                    calls[order]()
                    seconds[order].append(time.perf_counter() - start)
            ratios = [s / e for s, e in zip(seconds["sample-major"], seconds["example-major"])]
            results.append({"workload": workload.name, "rows": rows["sample-major"].shape[0], "sigma": sigma,
                            "ms": {order: 1e3 * statistics.median(seconds[order]) for order in ORDERS},
                            "ratios": ratios})
            print(f"{workload.name:12s} σ={sigma:<4} sample/example {statistics.median(ratios):.3f}", flush=True)
    return results


def report(results: List[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        *report_header("Row order: the model's own time on Captum's example-major rows and on noisegrad's "
                       "sample-major rows", command),
        f"- one chunk of bench_tunnel.py's stock batch, {COPIES} copies per example; a forward and an autograd.grad "
        f"of the summed target outputs; {args.warmup} warm-up calls, then {args.repeats} repetitions of both orders, "
        "alternating; the ratio is per repetition, the median [min–max]",
        "",
        "| workload | rows | σ | example-major ms | sample-major ms | sample / example |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ratios = r["ratios"]
        lines.append(f"| {r['workload']} | {r['rows']} | {r['sigma']} | {r['ms']['example-major']:.2f} | "
                     f"{r['ms']['sample-major']:.2f} | {statistics.median(ratios):.3f} "
                     f"[{min(ratios):.3f}–{max(ratios):.3f}] |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sigmas", default="0.1,1.0", help="noise levels, comma-separated")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    results = measure(args.repeats, args.warmup, [float(s) for s in args.sigmas.split(",")])
    publish(report(results, args, command_line(argv)), args.out)


if __name__ == "__main__":
    main()
