"""What the training monitor costs: a training loop with and without ``AttributionMonitor``, timed in one run.

    python benchmarks/bench_monitor.py --out benchmarks/MONITOR.md     # ~2 min on 2 idle cores
    python benchmarks/bench_monitor.py --quick                         # ~30 s smoke run

The loop trains the shapes CNN of the demo (``noisegrad.app.shapes.make_cnn``) from scratch with Adam, batch 64,
on CPU; the monitor explains a probe batch of 8 held-out images (with their shape masks) every 50 steps with its
defaults (SmoothGrad of the plain gradient, 8 antithetic samples, σ = 15 % of each image's range, a figure at
every 10th snapshot). Variants, run round-robin so that load from other processes falls on all of them:

* ``off``:      no monitor (the reference);
* ``memory``:   the monitor with no destination (records kept in ``monitor.history``);
* ``folder``:   the monitor writing ``metrics.jsonl``, ``histograms.jsonl`` and PNGs to a temporary folder;
* ``figures``:  the folder, with a figure at every snapshot (``figures_every=1``).

Overhead = (variant's time − off's time) / off's time, per round, median and range over rounds; the monitor's own
``seconds`` (the time it measured spending) as a share of off's time, for comparison.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch
from captum.attr import Saliency

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from noisegrad import AttributionMonitor  # noqa: E402
from noisegrad.app.shapes import make_cnn, make_shapes, test_generator  # noqa: E402

VARIANTS = ("off", "memory", "folder", "figures")


def run(variant: str, steps: int, every: int, images, labels, probe) -> Dict[str, float]:
    """One training run; returns its wall time and the monitor's own seconds."""
    torch.manual_seed(0)
    model = make_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor: Optional[AttributionMonitor] = None
    with tempfile.TemporaryDirectory() as folder:
        if variant != "off":
            x, y, masks = probe
            monitor = AttributionMonitor(Saliency(model), x, y, masks=masks, every=every,
                                         log_dir=None if variant == "memory" else folder,
                                         **({"figures_every": 1} if variant == "figures" else {}))
        model.train()
        start = time.perf_counter()
        for step in range(steps):
            batch = torch.randint(images.shape[0], (64,))
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if monitor is not None:
                monitor.step(step)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "monitor": monitor.seconds if monitor else 0.0,
            "snapshots": len(monitor.history) if monitor else 0}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="100 steps, 2 rounds")
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args(argv)
    steps, repeats = (100, 2) if args.quick else (args.steps, args.repeats)
    images, labels, _ = make_shapes(4096, torch.Generator().manual_seed(0))
    probe = make_shapes(8, test_generator(0))

    results: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
    for round_ in range(repeats):
        for variant in VARIANTS:
            results[variant].append(run(variant, steps, args.every, images, labels, probe))
        print(f"round {round_ + 1}/{repeats}: " + ", ".join(f"{v} {results[v][-1]['seconds']:.2f} s"
                                                            for v in VARIANTS), file=sys.stderr)

    rows = ["| variant | training time (s), median | overhead vs off, median (min–max) | monitor's own seconds "
            "/ off's time, median | snapshots |", "|---|---:|---:|---:|---:|"]
    for variant in VARIANTS:
        times = [r["seconds"] for r in results[variant]]
        if variant == "off":
            rows.append(f"| off | {statistics.median(times):.2f} | — | — | 0 |")
            continue
        overheads = [r["seconds"] / off["seconds"] - 1 for r, off in zip(results[variant], results["off"])]
        own = [r["monitor"] / off["seconds"] for r, off in zip(results[variant], results["off"])]
        rows.append(f"| {variant} | {statistics.median(times):.2f} | {100 * statistics.median(overheads):+.1f} % "
                    f"({100 * min(overheads):+.1f} to {100 * max(overheads):+.1f} %) | "
                    f"{100 * statistics.median(own):.1f} % | {int(results[variant][0]['snapshots'])} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = [
        "# What the training monitor costs",
        "",
        f"`python benchmarks/bench_monitor.py{' --quick' if args.quick else ''}`, {datetime.date.today()}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, load average {load:.1f} at the end. The shapes CNN trained with Adam, batch 64, {steps} steps; "
        f"a snapshot of 8 probe images every {args.every} steps with the monitor's defaults; {repeats} rounds, "
        "variants round-robin.",
        "",
    ]
    text = "\n".join(header + rows) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
