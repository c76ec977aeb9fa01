"""Several outputs at once: how much faster than one run per output, against the arithmetic limit?

    python benchmarks/bench_outputs.py --out benchmarks/OUTPUTS.md     # ~3 min on 2 idle cores
    python benchmarks/bench_outputs.py --quick                          # ~30 s

``outputs=range(K)`` runs one forward per chunk and takes the K gradients as one
batched vector-Jacobian product; K separate runs (``target=k``) run K forwards
and K backwards. With a forward costing F and a backward B, the limit of the
speed-up is K (F + B) / (F + K B) — one forward saved per extra output, about
1.4× for K = 10 when a backward costs two forwards. F and B are measured on the
same chunk (a no-grad forward, and a forward with one backward), so the limit
is the one this machine and model allow, for each method's own chunk (IG's
rows are its path points). Variants are timed interleaved in one process;
repetitions disturbed by other processes are redone (up to 3 × --repeats) and
the table says how many of them were clean: with fewer than 3 clean ones every
repetition is used, and the machine was busy.
"""

import argparse
import datetime
import os
import statistics
import sys
from typing import List

import torch
from captum.attr import IntegratedGradients, Saliency

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import ForeignLoad, build_workloads, cpu_model, noisegrad_revision, publish, time_interleaved  # noqa: E402

import noisegrad  # noqa: E402

K = 10
NT_SAMPLES = 16
GOAL = 0.8  # of the arithmetic limit


def forward_and_backward(model, rows, load) -> tuple:
    """Seconds of a no-grad forward and of one backward (forward with backward, minus the forward) on ``rows``."""

    def forward():
        with torch.no_grad():
            return model(rows)

    def both():
        r = rows.clone().requires_grad_()
        return torch.autograd.grad(model(r)[:, 0].sum(), r)

    seconds = time_interleaved({"forward": forward, "both": both}, 9, warmup=1, load=load).used()
    f = statistics.median(seconds["forward"])
    return f, max(statistics.median(seconds["both"]) - f, 0.0)


def chunk_rows(inputs, steps: int):
    """The rows of one chunk: every example's NT_SAMPLES copies, times IG's path points."""
    return inputs.repeat(NT_SAMPLES * steps, *([1] * (inputs.dim() - 1)))


def table(repeats: int, quick: bool) -> List[str]:
    lines = [
        "| workload | method | K outputs at once (ms) | K runs (ms) | speed-up (median, min–max) | limit K(F+B)/(F+KB) "
        "| share of the limit | clean repetitions |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    load = ForeignLoad()
    for workload in build_workloads(quick):
        if workload.name not in ("cnn", "mlp"):
            continue
        model, x = workload.model, workload.inputs
        for method, extra in ((Saliency, {}), (IntegratedGradients, {"n_steps": 8})):
            inputs = x if method is Saliency else x[: workload.ig_batch]
            f, b = forward_and_backward(model, chunk_rows(inputs, extra.get("n_steps", 1)), load)
            limit = K * (f + b) / (f + K * b)
            nt = noisegrad.NoiseTunnel(method(model))
            common = dict(nt_samples=NT_SAMPLES, stdevs=0.1, seed=0, **extra)

            def together():
                return nt.attribute(inputs, outputs=list(range(K)), **common)

            def separately():
                return [nt.attribute(inputs, target=k, **common) for k in range(K)]

            timings = time_interleaved({"together": together, "separately": separately}, repeats, warmup=1,
                                       load=load)
            seconds = timings.used()
            ratios = [s / t for s, t in zip(seconds["separately"], seconds["together"])]
            speedup = statistics.median(ratios)
            line = (
                f"| {workload.name} ({inputs.shape[0]} examples) | {method.__name__} | "
                f"{statistics.median(seconds['together']) * 1e3:.1f} | {statistics.median(seconds['separately']) * 1e3:.1f} "
                f"| {speedup:.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | {limit:.2f} | {speedup / limit:.0%} "
                f"| {sum(timings.clean)} of {len(timings.clean)} |"
            )
            print(line, flush=True)
            lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    command = "python benchmarks/bench_outputs.py " + " ".join(sys.argv[1:])
    load_before = os.getloadavg()[0]
    rows = table(repeats, args.quick)
    text = "\n".join([
        f"# {K} outputs at once against {K} runs",
        "",
        f"`{command}` — {datetime.date.today()}, noisegrad {noisegrad_revision()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {cpu_model()}, {os.cpu_count()} cores, load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after. nt_samples = {NT_SAMPLES}, one chunk; "
        f"medians of {repeats} interleaved repetitions (all repetitions when fewer than 3 were clean: the machine "
        f"was busy). The limit uses F and B measured on the same chunk; the goal is {GOAL:.0%} of it. A share "
        f"above 100 % means the K batched vector-Jacobian products cost less than K separate backward passes.",
        "",
        *rows,
        "",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
