"""Channels-last noisy copies against contiguous ones: a chunk's forward and backward, and whole noisegrad calls.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python benchmarks/bench_layout.py --out benchmarks/LAYOUT.md    # ~6 min on 2 cores, idle

noisegrad hands a convolutional model's float32 image batches on the CPU over
channels-last (noisegrad/_layout.py). Part 1 times what the layout changes,
one forward and one ``autograd.grad`` of the summed target outputs
(Saliency's work) on one chunk of noisy copies, in both layouts, alternating
in one process: bench_tunnel.py's CNN and ResNet-style net (their stock
batch, 8 copies per example, σ = 1.0), in float32 and in float64, and a wider
net of 64 and 128 channels on 16 images of 224×224. Part 2 times
whole ``noisegrad.smoothgrad`` calls (32 samples, σ = 15 % of the range,
seeded) with the layout as the library chooses it and with contiguous copies
forced, alternating. Ratios are per repetition, channels-last over
contiguous: the median [min–max].
"""

import argparse
import os
import statistics
import sys
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_call_phases as call_phases  # noqa: E402
from bench_tunnel import build_workloads, command_line, publish, report_header  # noqa: E402

import noisegrad  # noqa: E402
from noisegrad import _layout  # noqa: E402

COPIES = 8
LAYOUTS = ("contiguous", "channels-last")


def wide_net() -> nn.Module:
    """64 and 128 channels at 224×224 input: closer to an ImageNet model's first stages than the benchmarks' nets."""
    torch.manual_seed(0)

    def block(c: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                             nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())

    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1), block(64),
                         nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), block(128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, 10)).eval()


def alternate(calls: Dict[str, Callable[[], object]], repeats: int, warmup: int) -> Dict[str, List[float]]:
    """Seconds of each call per repetition, after ``warmup`` calls of each; bench_call_phases' alternation (each
    repetition starts with the next call: for two, the order reversed every other repetition)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times = call_phases.alternate(calls, repeats, call_phases.Clock(), (), "rest")
    return {name: times[name]["whole"] for name in calls}


def chunk_calls(model: nn.Module, rows: Tensor, targets: Tensor) -> Dict[str, Callable[[], Tensor]]:
    def call(memory_format: torch.memory_format) -> Callable[[], Tensor]:
        def run() -> Tensor:
            leaf = rows.contiguous(memory_format=memory_format).requires_grad_()
            (grad,) = torch.autograd.grad(model(leaf).gather(1, targets[:, None]).sum(), leaf)
            return grad
        return run
    return {"contiguous": call(torch.contiguous_format), "channels-last": call(torch.channels_last)}


def row(kind: str, name: str, dtype: str, rows: int, seconds: Dict[str, List[float]]) -> dict:
    ratios = [c / a for c, a in zip(seconds["channels-last"], seconds["contiguous"])]
    result = {"kind": kind, "name": name, "dtype": dtype, "rows": rows, "ratios": ratios,
              "ms": {layout: 1e3 * statistics.median(seconds[layout]) for layout in LAYOUTS}}
    print(f"{kind:6s} {name:12s} {dtype:8s} channels-last / contiguous {statistics.median(ratios):.3f}", flush=True)
    return result


def measure_chunks(repeats: int, warmup: int, quick: bool) -> List[dict]:
    results = []
    for workload in build_workloads(quick):
        if workload.inputs.dim() != 4:
            continue
        for dtype in (torch.float32, torch.float64):
            model = workload.model.to(dtype)
            x = workload.inputs.to(dtype).repeat_interleave(COPIES, 0)
            x += torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
            seconds = alternate(chunk_calls(model, x, workload.target.repeat_interleave(COPIES)), repeats, warmup)
            results.append(row("chunk", workload.name, str(dtype).replace("torch.", ""), x.shape[0], seconds))
        workload.model.float()
    images = 4 if quick else 16
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(images, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(dtype)
        seconds = alternate(chunk_calls(wide_net().to(dtype), x, torch.arange(images) % 10), max(2, repeats // 6), 1)
        results.append(row("chunk", "wide 224×224", str(dtype).replace("torch.", ""), images, seconds))
    return results


def measure_calls(repeats: int, warmup: int, quick: bool) -> List[dict]:
    results = []
    chooses = _layout.channels_last
    for workload in build_workloads(quick):
        if workload.inputs.dim() != 4:
            continue
        x, target = workload.inputs[:8], workload.target[:8]
        flat = x.flatten(1)
        sigma = 0.15 * float((flat.max(1).values - flat.min(1).values).mean())

        def call(contiguous: bool) -> Callable[[], Tensor]:
            def run() -> Tensor:
                _layout.channels_last = (lambda inputs, forward_func: False) if contiguous else chooses
                try:
                    return noisegrad.smoothgrad(workload.model, x, target=target, nt_samples=32, stdevs=sigma,
                                                seed=0)
                finally:
                    _layout.channels_last = chooses
            return run

        seconds = alternate({"contiguous": call(True), "channels-last": call(False)}, repeats, warmup)
        results.append(row("call", workload.name, "float32", x.shape[0], seconds))
    return results


def report(results: List[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        *report_header("Channels-last noisy copies against contiguous ones", command),
        f"- chunk: one forward and one autograd.grad of the summed target outputs on {COPIES} noisy copies per example "
        "of bench_tunnel.py's stock batch (σ = 1.0), or on 16 images of 224×224 for the wide net "
        f"({max(2, args.repeats // 6)} repetitions); call: noisegrad.smoothgrad, 32 samples of 8 examples, σ = 15 % "
        "of the range, seeded, the library's layout against contiguous copies forced; "
        f"{args.warmup} warm-up call(s), then {args.repeats} repetitions of both, alternating; the ratio is per "
        "repetition, the median [min–max]",
        "",
        "| what | model | dtype | rows / examples | contiguous ms | channels-last ms | channels-last / contiguous |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        ratios = r["ratios"]
        lines.append(f"| {r['kind']} | {r['name']} | {r['dtype']} | {r['rows']} | {r['ms']['contiguous']:.1f} "
                     f"| {r['ms']['channels-last']:.1f} | {statistics.median(ratios):.2f} "
                     f"[{min(ratios):.2f}–{max(ratios):.2f}] |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small workloads, for a smoke test")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    results = measure_chunks(args.repeats, args.warmup, args.quick) + measure_calls(args.repeats, args.warmup,
                                                                                      args.quick)
    publish(report(results, args, command_line(argv)), args.out)


if __name__ == "__main__":
    main()
