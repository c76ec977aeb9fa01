"""Where an nt_samples="auto" call's time goes, against Captum's default call with as many gradients.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python benchmarks/bench_auto_phases.py --out benchmarks/AUTO_PHASES.md    # ~6 min on 2 cores, idle

bench_time_to_accuracy.py finds, on its SmoothGrad-type rows, noisegrad slower per sample than Captum's
all-samples-in-one-forward default. This script splits such a call. For each of those rows (the workloads, batches,
σ and targets of bench_time_to_accuracy.py), noisegrad's front-end with ``nt_samples="auto"`` and ``tol`` = the
target (seeded, a new seed per call) runs with its phases timed from inside (bench_call_phases.py's clock):

* **noise**: the noisy copies (``noisy_copies``: keyed noise, σ, the inputs);
* **wrapped call**: forward and backward (``call_wrapped``: Captum's ``Saliency.attribute``);
* **statistics**: merging each chunk into the grouped moments (``Tally.add``);
* **checks**: the stopping rule's reads (``Tally.stderrs``, ``Tally.values``, ``StoppingRule.check``), and the
  result's;
* **other**: validation, state guards, set-up and finish, and the loop itself.

It alternates with Captum's ``NoiseTunnel(Saliency)`` at its defaults (every sample in one forward) at
``nt_samples`` = the mean count noisegrad's examples stopped at, rounded up, so that both make about as many
gradients (Captum's count is in the table). Every number is a median over the calls, in ms per call.
"""

import argparse
import math
import os
import statistics
import sys
import warnings
from typing import List, Optional

import torch
from captum.attr import NoiseTunnel as CaptumNoiseTunnel
from captum.attr import Saliency

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_call_phases import Clock, alternate, instrument  # noqa: E402
from bench_time_to_accuracy import FRONTENDS, setting_inputs, smoothgrad_type_rows  # noqa: E402
from bench_tunnel import command_line, publish, report_header  # noqa: E402
from noisegrad.stats.stopping import StoppingRule  # noqa: E402
from noisegrad.stats.tally import Tally  # noqa: E402

#: Phases as the table shows them; bench_call_phases' clock phases not listed here are "other".
SHOWN = ("noise", "wrapped call", "statistics", "checks")


def instrument_auto(clock: Clock) -> None:
    """bench_call_phases' phases, and the stopping rule's reads as "checks"."""
    instrument(clock)
    clock.wrap(Tally, "stderrs", "checks")
    clock.wrap(Tally, "values", "checks")
    clock.wrap(StoppingRule, "check", "checks")


def measure_row(workload, statistic, tol: float, repeats: int, clock: Clock, quick: bool) -> dict:
    x, target, sigma = setting_inputs(workload, statistic, quick)
    kwargs = {"absolute": statistic.absolute} if statistic.nt_type == "smoothgrad" else {}
    seeds = iter(range(10**6))

    def noisegrad_call():
        with warnings.catch_warnings():  # an example that stops at max_samples: its count shows in the table
            warnings.simplefilter("ignore", RuntimeWarning)
            return FRONTENDS[statistic.nt_type](workload.model, x, target=target, nt_samples="auto", tol=tol,
                                                stdevs=sigma, seed=next(seeds), **kwargs)

    samples = [float(noisegrad_call().nt_samples.double().mean()) for _ in range(2)]  # also the warm-up
    n = math.ceil(statistics.mean(samples))
    captum = CaptumNoiseTunnel(Saliency(workload.model))

    def captum_call():
        return captum.attribute(x, nt_type=statistic.nt_type, nt_samples=n, stdevs=sigma, target=target,
                                abs=statistic.absolute)

    captum_call()
    times = alternate({"noisegrad": noisegrad_call, "captum": captum_call}, repeats, clock, SHOWN, "other")
    return {"workload": workload.name, "statistic": statistic.name, "tol": tol, "batch": x.shape[0],
            "samples": statistics.mean(samples), "captum_samples": n, "times": times}


def report(rows: List[dict], args: argparse.Namespace, command: str) -> str:
    ms = lambda seconds: 1e3 * statistics.median(seconds)  # noqa: E731
    lines = [
        *report_header("Where an nt_samples=\"auto\" call's time goes, against Captum's default call", command),
        f"- bench_time_to_accuracy.py's SmoothGrad-type rows (its workloads, batches, σ = 15 % of the range, "
        f"targets); noisegrad's front-end with nt_samples=\"auto\", tol = the target, seeded; Captum's NoiseTunnel "
        f"(Saliency) at its defaults with nt_samples = the mean count noisegrad stopped at, rounded up; "
        f"{args.repeats} calls of each, alternating; medians in ms per call; phases as bench_auto_phases.py's "
        "docstring defines them; \"overhead\" is noisegrad's time outside the wrapped call, in % of its whole call",
        "",
        "| workload | statistic | target | batch | samples (noisegrad mean; Captum) | noisegrad ms | noise | wrapped call "
        "| statistics | checks | other | overhead | Captum ms | Captum / noisegrad |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ng, cp = row["times"]["noisegrad"], row["times"]["captum"]
        whole = ms(ng["whole"])
        outside = whole - ms(ng["wrapped call"])
        phases = " | ".join(f"{ms(ng[phase]):.1f}" for phase in SHOWN + ("other",))
        lines.append(f"| {row['workload']} | {row['statistic']} | {row['tol']:.0%} | {row['batch']} "
                     f"| {row['samples']:.0f}; {row['captum_samples']} | {whole:.1f} | {phases} "
                     f"| {100 * outside / whole:.0f} % | {ms(cp['whole']):.1f} | {ms(cp['whole']) / whole:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="calls of each variant per row")
    parser.add_argument("--workloads", default="cnn,resnet,mlp,transformer")
    parser.add_argument("--quick", action="store_true", help="half batches, 2 calls, the 10 %% target only")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    command = command_line(argv)
    clock = Clock()
    instrument_auto(clock)
    torch.manual_seed(0)
    rows = []
    for workload, statistic, tol in smoothgrad_type_rows(args.quick, args.workloads.split(",")):
        row = measure_row(workload, statistic, tol, args.repeats, clock, args.quick)
        ng, cp = (statistics.median(row["times"][k]["whole"]) for k in ("noisegrad", "captum"))
        print(f"{workload.name:12s} {statistic.name:22s} {tol:.0%}  noisegrad {1e3 * ng:8.1f} ms  "
              f"Captum {1e3 * cp:8.1f} ms", flush=True)
        rows.append(row)
    publish(report(rows, args, command), args.out)


if __name__ == "__main__":
    main()
