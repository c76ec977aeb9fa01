"""Joint SmoothGrad × IG: gradients needed with a uniform path fraction versus the adaptive path density.

    python benchmarks/bench_path_density.py --out benchmarks/PATH_DENSITY.md

On each workload of bench_tunnel.py (random-init CNN, ResNet-style, MLP, transformer; the IG batches and σ of
bench_time_to_accuracy.py, 15 % of the batch's mean per-example range), noisegrad's joint estimator
(``NoiseTunnel(IntegratedGradients).attribute(joint="lhs")``, as bench_time_to_accuracy runs it) is called with
``path_density="uniform"`` and ``"adaptive"``, each over seeds of its own. Both are unbiased for the same
quantity (tests/test_path_density.py), so what separates them is their spread over seeds. For example i the
relative standard deviation is s(i) = sqrt(Σ_elements var over seeds) / ‖mean‖, the mean being the adaptive runs'
(the tighter). The two means are compared in units of their standard errors, to show they agree; on the
transformer the uniform density's errors are heavy-tailed, which makes its standard error, and that comparison,
unreliable. The gradients a design needs for a 10 % relative error are n · (s / 0.1)², plus the adaptive pilot's
28. Samples are counted, not timed: the machine's load does not change the table.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch
from captum.attr import IntegratedGradients

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
from bench_time_to_accuracy import BATCHES, NOISE_FRACTION  # noqa: E402
from bench_tunnel import build_workloads, command_line, publish, report_header  # noqa: E402
from noisegrad import NoiseTunnel  # noqa: E402
from noisegrad.estimators.path_density import PILOT_GRADIENTS  # noqa: E402

DESIGNS = ("uniform", "adaptive")
TARGET = 0.10


def runs(workload, design: str, nt_samples: int, seeds: range) -> torch.Tensor:
    """``(seeds, batch, ...)``: the joint estimate of each seed."""
    batch = BATCHES[workload.name][1]
    x, target = workload.inputs[:batch], workload.target[:batch]
    flat = x.flatten(1)
    sigma = NOISE_FRACTION * float((flat.max(1).values - flat.min(1).values).mean())
    nt = NoiseTunnel(IntegratedGradients(workload.model))
    return torch.stack([
        nt.attribute(x, nt_samples=nt_samples, joint="lhs", path_density=design, nt_samples_batch_size="auto",
                     stdevs=sigma, target=target, seed=seed).detach().double()
        for seed in seeds
    ])


def relative_sd(estimates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per example: sqrt(Σ_elements variance over seeds) / ‖reference‖."""
    spread = estimates.var(0).flatten(1).sum(1).sqrt()
    return spread / reference.flatten(1).norm(dim=1)


def largest_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |difference of the two designs' means| in units of its standard error, over all elements."""
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    z = (a.mean(0) - b.mean(0)).abs() / se.clamp_min(1e-300)
    return float(z.max())


def measure(names: List[str], nt_samples: int, seeds: int) -> List[str]:
    lines = [
        f"| workload | batch | design | relative sd at n = {nt_samples} [min–max per example] "
        f"| gradients for {TARGET:.0%} [min–max] | uniform / adaptive |",
        "|---|---:|---|---|---|---:|",
    ]
    for workload in build_workloads(quick=False):
        if workload.name not in names:
            continue
        # seeds of their own per design: the same seed draws the same noise, which would correlate the two means
        estimates = {design: runs(workload, design, nt_samples, range(k * seeds, (k + 1) * seeds))
                     for k, design in enumerate(DESIGNS)}
        reference = estimates["adaptive"].mean(0)
        needed = {}
        for design in DESIGNS:
            s = relative_sd(estimates[design], reference)
            gradients = nt_samples * (s / TARGET) ** 2 + (PILOT_GRADIENTS if design == "adaptive" else 0)
            needed[design] = gradients
            lines.append(
                f"| {workload.name} | {BATCHES[workload.name][1]} | {design} | {float(s.median()):.3f} "
                f"[{float(s.min()):.3f}–{float(s.max()):.3f}] | {float(gradients.median()):,.0f} "
                f"[{float(gradients.min()):,.0f}–{float(gradients.max()):,.0f}] | "
                + (f"{float((needed['uniform'] / gradients).median()):.2f} "
                   f"[{float((needed['uniform'] / gradients).min()):.2f}–"
                   f"{float((needed['uniform'] / gradients).max()):.2f}] |" if design == "adaptive" else " |")
            )
        lines.append(f"| {workload.name} | | means agree? | largest |z| of the difference of the two means: "
                     f"{largest_z(estimates['uniform'], estimates['adaptive']):.1f} over "
                     f"{reference.numel():,} elements | | |")
        print("\n".join(lines[-3:]), flush=True)
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="markdown file to write (e.g. benchmarks/PATH_DENSITY.md)")
    parser.add_argument("--workloads", default="cnn,resnet,mlp,transformer")
    parser.add_argument("--nt-samples", type=int, default=128, help="joint samples (gradients) per call")
    parser.add_argument("--seeds", type=int, default=96, help="seeds per design (uniform's errors are heavy-tailed "
                        "on the transformer: its spread grows with them)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table = measure(args.workloads.split(","), args.nt_samples, args.seeds)
    minutes = (time.perf_counter() - started) / 60
    text = "\n".join([
        *report_header("The joint estimator's path fraction: uniform or adaptive", command_line(argv)),
        f"- {minutes:.1f} min",
        f"- {args.seeds} seeds per design, `joint=\"lhs\"`, nt_samples = {args.nt_samples}; σ and batches as in "
        "bench_time_to_accuracy.py. Samples are counted, not timed.",
        f"- gradients for {TARGET:.0%}: nt_samples × (relative sd / {TARGET})², plus {PILOT_GRADIENTS} pilot gradients for "
        "the adaptive density; the ratio is per example, its median and range over the batch.",
        "",
        *table,
        "",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
