"""Examples per second of ``noisegrad.attribute_dataset`` on 1 and on 2 processes (torchrun, gloo, CPU).

Each setting launches ``torchrun --standalone --nproc_per_node=K`` on this script's ``--worker`` mode, which
attributes a synthetic data set (3×32×32 images, a small CNN, SmoothGrad with ``--samples`` noisy copies) into a
fresh folder; rank 0 times the call (from before the manifest check to the completed manifest, shard writes
included) and the launcher reports examples per second. The cores are shared out: with K processes each gets
``cores / K`` torch threads, so 1 versus 2 processes compares one process using both cores with two using one each.

    python benchmarks/bench_dataset.py                       # 1 and 2 processes, 3 repetitions each
    python benchmarks/bench_dataset.py --examples 512 --repeats 5 --out benchmarks/DATASETS.md
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> None:
    import torch
    from torch import nn

    import noisegrad

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10)).eval()
    images = torch.rand(args.examples, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    explainer = noisegrad.SmoothGrad(model, nt_samples=args.samples, seed=0, noise_level=0.15)
    start = time.perf_counter()
    noisegrad.attribute_dataset(explainer, images, args.folder, target="pred", batch_size=args.batch_size,
                                shard_size=args.shard_size, show_progress=False)
    seconds = time.perf_counter() - start
    if os.environ.get("RANK", "0") == "0":
        Path(args.result).write_text(json.dumps({"seconds": seconds}))


def _launch(processes: int, args: argparse.Namespace) -> float:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={processes}", __file__, "--worker", "--folder", str(Path(scratch) / "out"),
                        "--result", str(result), "--examples", str(args.examples), "--samples", str(args.samples),
                        "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size)],
                       env=env, check=True, capture_output=True)
        return json.loads(result.read_text())["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    rows = []
    for processes in args.processes:
        times = [_launch(processes, args) for _ in range(args.repeats)]
        rates = sorted(args.examples / t for t in times)
        rows.append((processes, statistics.median(rates), rates[0], rates[-1]))
        print(f"{processes} process(es): {statistics.median(rates):.1f} examples/s (min {rates[0]:.1f}, "
              f"max {rates[-1]:.1f})", flush=True)
    base = rows[0][1]
    lines = [f"{args.examples} images 3×32×32, small CNN, SmoothGrad × {args.samples} samples, batch "
             f"{args.batch_size}, shards of {args.shard_size}; {os.cpu_count()} cores shared out; median of "
             f"{args.repeats} (min–max)", "",
             "| processes | examples / s | min–max | vs 1 process |", "|---|---|---|---|"]
    lines += [f"| {p} | {median:.1f} | {low:.1f}–{high:.1f} | {median / base:.2f}× |"
              for p, median, low, high in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
