"""What does noise keyed by the example cost, against torch.randn and against noise keyed by position?

    python benchmarks/bench_noise.py --baseline /tmp/old --out benchmarks/NOISE.md   # ~3 min on 2 cores
    python benchmarks/bench_noise.py --quick                                         # ~30 s

1. **The generator.** Filling a buffer of a chunk's size with standard normals:
   noisegrad's counter-based generator (``noisegrad.sampling.keyed``: a hash of
   seed, stream, example id, sample and element), ``torch.randn`` into the same
   buffer (``normal_``, the floor), and the obvious way to key noise by example
   with torch's own generator: re-seeding it for every (sample, example) row.
   Variants are timed interleaved in one process; the goal is keyed / randn at
   most 1.5.
2. **The noise's share of a call.** For the workloads of ``bench_tunnel.py``
   (Saliency, ``nt_samples`` = 32, all samples in one chunk), the time of one
   seeded ``NoiseTunnel.attribute`` call and of making its noisy copies
   alone. With ``--baseline PATH`` (a checkout of an older noisegrad, e.g.
   ``git worktree add /tmp/old 1a882c9``), the same is measured for that code
   in alternating subprocesses, so both shares come from the same minutes.
"""

import argparse
import datetime
import inspect
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tunnel import ForeignLoad, build_workloads, cpu_model, noisegrad_revision, publish, time_interleaved  # noqa: E402

import noisegrad  # noqa: E402

NT_SAMPLES = 32
GOAL = 1.5
#: (label, examples, example shape, samples per chunk)
SIZES = [
    ("cnn chunk", 16, (3, 32, 32), 32),
    ("mlp chunk", 1024, (64,), 32),
    ("transformer chunk", 32, (16, 32), 32),
    ("issue's example", 1024, (3, 32, 32), 16),
    ("large images", 8, (3, 224, 224), 8),
]


def generator_table(repeats: int, quick: bool) -> List[str]:
    from noisegrad.sampling.keyed import row_keys, standard_normal

    load = ForeignLoad()
    lines = [
        "| buffer | elements | keyed (ms) | torch.randn (ms) | re-seed per row (ms) | keyed / randn | min–max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for label, batch, shape, samples in SIZES[:2] if quick else SIZES:
        out = torch.empty((samples, batch) + shape)
        keys = row_keys(0, 1, torch.arange(batch), torch.arange(samples))
        generator = torch.Generator()

        def reseeded() -> torch.Tensor:
            for k in range(samples):
                for i in range(batch):
                    generator.manual_seed(k * 1_000_003 + i)
                    out[k, i].normal_(generator=generator)
            return out

        variants = {
            "keyed": lambda: standard_normal(keys, shape, out),
            "randn": lambda: out.normal_(),
            "reseed": reseeded,
        }
        timings = time_interleaved(variants, repeats, warmup=1, load=load).used()
        ratios = [a / b for a, b in zip(timings["keyed"], timings["randn"])]
        median = {name: statistics.median(t) * 1e3 for name, t in timings.items()}
        ratio = statistics.median(ratios)
        worst = max(worst, ratio)
        lines.append(
            f"| {label}: {samples} × {batch} × {'×'.join(map(str, shape))} | {out.numel():,} | {median['keyed']:.1f} "
            f"| {median['randn']:.1f} | {median['reseed']:.0f} | {ratio:.2f} | {min(ratios):.2f}–{max(ratios):.2f} |"
        )
    lines += ["", f"Worst median keyed / randn: **{worst:.2f}** (goal ≤ {GOAL}: {'met' if worst <= GOAL else 'not met'})."]
    return lines


def share_measurement(repeats: int, quick: bool) -> Dict[str, Tuple[float, float]]:
    """Median seconds of (a call, its noisy copies) per workload, for the noisegrad on sys.path."""
    from captum.attr import Saliency

    from noisegrad.perturb.inputs import noisy_copies

    old_api = "generator" in inspect.signature(noisy_copies).parameters
    load, results = ForeignLoad(), {}
    for workload in build_workloads(quick):
        if workload.name == "resnet":
            continue
        x, sigma = workload.inputs, torch.tensor(0.1)
        nt = noisegrad.NoiseTunnel(Saliency(workload.model))

        def noise() -> torch.Tensor:
            extra = (0, torch.Generator()) if old_api else ()
            return noisy_copies(x, sigma, range(NT_SAMPLES), noisegrad.SampleSeeds(0), *extra)

        def call() -> torch.Tensor:
            return nt.attribute(x, nt_samples=NT_SAMPLES, stdevs=0.1, target=workload.target, seed=0)

        seconds = time_interleaved({"call": call, "noise": noise}, repeats, warmup=1, load=load).used()
        results[workload.name] = (statistics.median(seconds["call"]), statistics.median(seconds["noise"]))
    return results


def share_table(repeats: int, quick: bool, baseline: str) -> List[str]:
    rounds = 1 if quick else 3
    runs: Dict[str, List[Dict[str, List[float]]]] = {"now": [], "baseline": []}
    here = os.path.dirname(os.path.dirname(os.path.abspath(noisegrad.__file__)))
    for _ in range(rounds):
        for name, path in (("now", here), ("baseline", baseline)):
            if not path:
                continue
            env = dict(os.environ, PYTHONPATH=path)
            command = [sys.executable, os.path.abspath(__file__), "--share-json", "--repeats", str(repeats)]
            command += ["--quick"] if quick else []
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    header = "| workload | call (ms) | noise (ms) | noise's share |"
    rule = "|---|---:|---:|---:|"
    if baseline:
        header += " baseline call (ms) | baseline noise (ms) | baseline share | call now / baseline |"
        rule += "---:|---:|---:|---:|"
    lines = [header, rule]
    for workload in runs["now"][0]:
        def med(name: str, column: int) -> float:
            return statistics.median(run[workload][column] for run in runs[name]) * 1e3

        call, noise = med("now", 0), med("now", 1)
        line = f"| {workload} | {call:.1f} | {noise:.2f} | {noise / call:.1%} |"
        if baseline:
            old_call, old_noise = med("baseline", 0), med("baseline", 1)
            line += f" {old_call:.1f} | {old_noise:.2f} | {old_noise / old_call:.1%} | {call / old_call:.2f} |"
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", default="", help="a checkout of older noisegrad code to compare shares with")
    parser.add_argument("--out", default="")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    parser.add_argument("--generator-only", action="store_true", help="skip part 2 (the share of a call)")
    parser.add_argument("--share-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.share_json:
        print(json.dumps(share_measurement(repeats, args.quick)))
        return
    command = "python benchmarks/bench_noise.py " + " ".join(sys.argv[1:])
    report = [
        "# Noise keyed by the example: what it costs",
        "",
        f"`{command}` — {datetime.date.today()}, noisegrad {noisegrad_revision()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {cpu_model()}. Medians of {repeats} interleaved repetitions "
        "(repetitions disturbed by other processes redone).",
        "",
        "## 1. The generator: normals for one chunk of noisy copies",
        "",
        *generator_table(repeats, args.quick),
        "",
    ]
    if not args.generator_only:
        report += [f"## 2. The noise's share of a call (Saliency, nt_samples = {NT_SAMPLES}, one chunk)", "",
                   *share_table(repeats, args.quick, args.baseline), ""]
    text = "\n".join(report)
    publish(text, args.out)


if __name__ == "__main__":
    main()
