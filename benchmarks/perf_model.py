"""A performance model of noisy-sample attribution: FLOPs and bytes per noisy sample, and the floor they imply.

    python benchmarks/perf_model.py --out docs/performance_table.md   # ~1 min on 2 cores

For each workload of ``bench_tunnel.py`` and Saliency (one forward and one
backward per noisy copy; IntegratedGradients costs ``n_steps`` times as much):

* FLOPs per noisy copy, counted with ``torch.utils.flop_counter.FlopCounterMode``
  over one forward and one input-gradient backward of a batch, divided by its rows;
* activation bytes per copy (outputs of the leaf modules, what autograd keeps),
  and parameter bytes (read once per forward, whatever the batch);
* the compute floor ``FLOPs / peak`` with ``peak`` measured here as the best
  float32 matmul throughput (a large ``torch.mm``), and the memory floor
  ``2 × activation bytes / bandwidth`` with the bandwidth of a large copy;
* the time noisegrad takes per noisy copy at ``nt_samples_batch_size="auto"``,
  and how far that is from the larger of the two floors.
"""

import argparse
import os
import statistics
import sys
import time
from typing import List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import build_workloads, cpu_model, publish  # noqa: E402

import noisegrad  # noqa: E402
from captum.attr import Saliency  # noqa: E402
from noisegrad.plan import activation_bytes_per_row  # noqa: E402

NT_SAMPLES = 32


def best_of(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_flops() -> float:
    """float32 matmul throughput of this machine (FLOP/s), the compute roof."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / best_of(lambda: torch.mm(a, b))


def bandwidth() -> float:
    """Bytes per second of a large copy (read + write), the memory roof."""
    src = torch.empty(64 * 2**20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_of(lambda: dst.copy_(src))


def flops_per_copy(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    rows = x.detach().clone().requires_grad_()
    with FlopCounterMode(display=False) as counter:
        out = model(rows).gather(1, target.unsqueeze(1)).sum()
        out.backward(inputs=[rows])  # FlopCounterMode's module hooks do not support autograd.grad
    return counter.get_total_flops() / x.shape[0]


def rows(args: argparse.Namespace) -> List[dict]:
    peak, bw = peak_flops(), bandwidth()
    results = []
    for workload in build_workloads(args.quick):
        model, x, target = workload.model, workload.inputs, workload.target
        flops = flops_per_copy(model, x, target)
        act = activation_bytes_per_row(model, (x,), None)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        nt = noisegrad.NoiseTunnel(Saliency(model))
        call = lambda: nt.attribute(x, nt_samples=NT_SAMPLES, nt_samples_batch_size="auto", stdevs=0.1,
                                    target=target, seed=0)
        seconds = statistics.median([best_of(call, 1) for _ in range(3)])
        per_copy = seconds / (x.shape[0] * NT_SAMPLES)
        floor = max(flops / peak, 2 * act / bw)
        results.append(dict(workload=workload.name, flops=flops, act=act, params=params, per_copy=per_copy,
                            compute_floor=flops / peak, memory_floor=2 * act / bw, floor=floor))
        print(f"{workload.name:12s} {flops / 1e6:8.2f} MFLOP/copy  {act / 1024:8.1f} KiB/copy  "
              f"{1e6 * per_copy:8.1f} us/copy  floor {1e6 * floor:8.1f} us", flush=True)
    return results, peak, bw


def report(results: List[dict], peak: float, bw: float, command: str) -> str:
    lines = [
        f"Measured with `{command}` on {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}: "
        f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s, copy bandwidth {bw / 1e9:.1f} GB/s. "
        f"Saliency, nt_samples={NT_SAMPLES}, nt_samples_batch_size=\"auto\".",
        "",
        "| workload | MFLOP per noisy copy (fwd + bwd) | activation KiB per copy | parameter KiB | compute floor µs/copy "
        "| memory floor µs/copy | noisegrad µs/copy | noisegrad / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['workload']} | {r['flops'] / 1e6:.2f} | {r['act'] / 1024:.1f} | {r['params'] / 1024:.0f} "
            f"| {1e6 * r['compute_floor']:.2f} | {1e6 * r['memory_floor']:.2f} | {1e6 * r['per_copy']:.2f} "
            f"| {r['per_copy'] / r['floor']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    results, peak, bw = rows(args)
    text = report(results, peak, bw, "python " + " ".join(sys.argv))
    publish(text, args.out)


if __name__ == "__main__":
    main()
