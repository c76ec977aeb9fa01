"""Error versus noisy samples for each noise sampler: i.i.d., antithetic, randomised QMC, Latin hypercube.

    python benchmarks/bench_samplers.py                # writes benchmarks/SAMPLERS.md and benchmarks/samplers_error.png
    python benchmarks/bench_samplers.py --skip-timing  # the same, keeping SAMPLERS.md's last overhead section

The two models of bench_joint.py (a CNN on generated 3×32×32 coloured shapes, a 64-feature MLP on a
Gaussian mixture, each trained briefly with a fixed seed) are explained with Saliency on 16 held-out
inputs, target = the true class, σ = 15 % of each input's range, in four settings:

* SmoothGrad of the signed gradient (Saliency(abs=False), nt_type="smoothgrad");
* SmoothGrad of the absolute gradient (Saliency(abs=True), Captum's default);
* SmoothGrad² (nt_type="smoothgrad_sq"; the same with abs=True or False);
* VarGrad of the signed gradient (nt_type="vargrad", abs=False).

For every sampler and nt_samples N ∈ {4, …, 128} the error of example i in the run with seed s is
‖estimate − reference‖ / ‖reference‖ over the example's elements, against a reference of 4,096 i.i.d. samples
with a seed of its own; a curve is the median of these errors over the 16 examples and seeds 0–7 (the
definition of benchmarks/bench_time_to_accuracy.py). "Samples needed to match i.i.d. at 32" interpolates a
sampler's curve log-log at the median error i.i.d. reaches with 32 samples; its 95 % confidence interval is a
percentile bootstrap over examples and seeds (both resampled with replacement, independently, the same
resample for the sampler and for i.i.d.). The independent error of the reference adds the same term to every
curve's squared error, so it cancels out of that comparison.

The QMC and LHS designs are built from R independent replicates (noisegrad.sampling.samplers.NoiseSampler):
NoiseTunnel uses one design (R = 1) unless it needs standard errors (return_stderr=True or
nt_samples="auto", R = 4). The main table shows R = 1; the script also measures R ∈ {2, 4, 8} by
constructing NoiseTunnel's sampler with another `replicates` (noisegrad itself is not changed). Last, it times nt.attribute(..., nt_samples=64) per sampler
against sampler="iid" (interleaved repetitions) and the noise drawing alone. Runs on one thread.
"""

import argparse
import contextlib
import datetime
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import captum
import matplotlib
import numpy as np
import torch
from captum.attr import Saliency

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import noisegrad.tunnel  # noqa: E402
from bench_joint import trained_models  # noqa: E402
from noisegrad import NoiseTunnel, SampleSeeds, relative  # noqa: E402
from noisegrad.perturb.inputs import noisy_copies, resolve_stdevs  # noqa: E402
from noisegrad.sampling.samplers import NoiseSampler  # noqa: E402

SEEDS = range(8)
EXAMPLES = 16
NOISE = relative(0.15)
REFERENCE_SAMPLES = 4096
REFERENCE_SEED = 10**6
SAMPLE_COUNTS = [4, 8, 16, 32, 64, 128]
MATCH_AT = (32, 64)
SAMPLERS = ("iid", "antithetic", "qmc", "lhs")
DEFAULT_REPLICATES = 1  # NoiseTunnel's choice without standard errors
STDERR_REPLICATES = 4  # its choice with them
OTHER_REPLICATES = (2, 4, 8)
CHUNK = 128
PANELS = {  # name: (nt_type, Saliency abs)
    "SmoothGrad, signed": ("smoothgrad", False),
    "SmoothGrad, absolute": ("smoothgrad", True),
    "SmoothGrad²": ("smoothgrad_sq", False),
    "VarGrad": ("vargrad", False),
}
# The most samples each setting may need to match i.i.d. at N samples, as a fraction of N (the targets);
# VarGrad's target is "never worse than i.i.d.": at most N samples needed.
TARGETS = {"SmoothGrad, signed": 0.5, "SmoothGrad, absolute": 0.5, "SmoothGrad²": 0.6}
TIMING_REPEATS = 7
BOOTSTRAP = 1000
INTERVAL = (2.5, 97.5)  # percentiles of the bootstrap: a 95 % interval


# --------------------------------------------------------------------------- estimators


@contextlib.contextmanager
def replicates(count: int):
    """NoiseTunnel builds its samplers with ``count`` QMC / LHS replicates inside the block."""
    original = noisegrad.tunnel.NoiseSampler

    class WithReplicates(NoiseSampler):
        def __init__(self, kind, seeds, nt_samples, *_default_replicates):
            super().__init__(kind, seeds, nt_samples, replicates=count)

    noisegrad.tunnel.NoiseSampler = WithReplicates
    try:
        yield
    finally:
        noisegrad.tunnel.NoiseSampler = original


def smoothed(model, x, target, panel, sampler, nt_samples, seed, chunk=CHUNK):
    nt_type, absolute = PANELS[panel]
    return NoiseTunnel(Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=nt_samples, nt_samples_batch_size=chunk, stdevs=NOISE, target=target,
        abs=absolute, sampler=sampler, seed=seed,
    )


def error(estimate, reference) -> np.ndarray:
    """The relative L2 error of every example."""
    diff = (estimate - reference).double().flatten(1).norm(dim=1)
    return (diff / reference.double().flatten(1).norm(dim=1)).numpy()


def curve(model, x, target, panel, sampler, reference):
    """Errors per (sample count, seed, example): an array of shape (len(SAMPLE_COUNTS), len(SEEDS), examples)."""
    return np.array([
        [error(smoothed(model, x, target, panel, sampler, n, seed), reference) for seed in SEEDS]
        for n in SAMPLE_COUNTS
    ])


def measure(name, model, x, target):
    """Errors per seed: {panel: {curve label: array (sample count, seed)}}."""
    start = time.perf_counter()
    curves = {}
    for panel in PANELS:
        reference = smoothed(model, x, target, panel, "iid", REFERENCE_SAMPLES, REFERENCE_SEED, chunk=512)
        with replicates(DEFAULT_REPLICATES):  # explicit: NoiseTunnel's own choice depends on return_stderr
            curves[panel] = {sampler: curve(model, x, target, panel, sampler, reference) for sampler in SAMPLERS}
        for count in OTHER_REPLICATES:
            with replicates(count):
                for sampler in ("qmc", "lhs"):
                    curves[panel][f"{sampler}, R={count}"] = curve(model, x, target, panel, sampler, reference)
        print(f"{name} / {panel}: {time.perf_counter() - start:.0f} s", flush=True)
    return curves


def samples_to_match(errors, target_error, counts=SAMPLE_COUNTS):
    """N at which the error curve reaches ``target_error`` (log-log interpolation); None if below at the first N."""
    points = list(zip(counts, errors))
    if target_error >= points[0][1]:
        return None
    for (n0, e0), (n1, e1) in zip(points, points[1:]):
        if e0 >= target_error >= e1:
            t = (math.log(e0) - math.log(target_error)) / (math.log(e0) - math.log(e1))
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    return math.inf


def median(errors):
    """The median over seeds and examples, per sample count."""
    return np.median(errors.reshape(errors.shape[0], -1), axis=1)


def needed(curves, label, at, seeds=None, examples=None):
    """Samples ``label`` needs to match i.i.d. at ``at`` samples, from the medians over ``seeds`` and ``examples``
    (indices, repeats allowed)."""
    def pick(errors):
        errors = errors if seeds is None else errors[:, seeds]
        return errors if examples is None else errors[:, :, examples]

    iid = median(pick(curves["iid"]))
    return samples_to_match(list(median(pick(curves[label]))), iid[SAMPLE_COUNTS.index(at)])


def needed_interval(curves, label, at):
    """The bootstrap interval of ``needed``: seeds and examples resampled independently, with replacement."""
    rng = np.random.default_rng(0)
    seeds, examples = curves["iid"].shape[1:]
    draws = [
        needed(curves, label, at, rng.integers(seeds, size=seeds), rng.integers(examples, size=examples))
        for _ in range(BOOTSTRAP)
    ]
    values = [SAMPLE_COUNTS[0] if n is None else min(n, 2 * SAMPLE_COUNTS[-1]) for n in draws]
    return tuple(np.percentile(values, INTERVAL))


def meets(panel, needed_by_n):
    """Whether the samples needed (at each of MATCH_AT) meet the panel's target."""
    limit = TARGETS.get(panel, 1.0)  # VarGrad: never worse than i.i.d., i.e. at most as many samples
    return all(n is None or n <= limit * at for at, n in needed_by_n.items())


# --------------------------------------------------------------------------- overhead


def overhead(model, x, target):
    """Median over interleaved repetitions of t(sampler) / t(iid) − 1, and the noise drawing's share of t."""
    kwargs = dict(nt_samples=64, nt_samples_batch_size=64)
    times = {sampler: [] for sampler in SAMPLERS}
    for repeat in range(TIMING_REPEATS + 1):
        for sampler in SAMPLERS:
            start = time.perf_counter()
            NoiseTunnel(Saliency(model)).attribute(
                x, stdevs=NOISE, target=target, abs=False, sampler=sampler, seed=repeat, **kwargs
            )
            if repeat:  # the first round warms up
                times[sampler].append(time.perf_counter() - start)
    sigma, = resolve_stdevs(NOISE, (x,))
    rows = {}
    for sampler in SAMPLERS:
        ratios = [t / base for t, base in zip(times[sampler], times["iid"])]
        drawing = []
        for repeat in range(TIMING_REPEATS):
            start = time.perf_counter()
            noisy_copies(x, sigma, range(64), NoiseSampler(sampler, SampleSeeds(repeat), 64, replicates=1), 0)
            drawing.append(time.perf_counter() - start)
        rows[sampler] = (
            float(np.median(times[sampler])), float(np.median(ratios)) - 1,
            float(np.median(drawing)), float(np.median(drawing)) / float(np.median(times[sampler])),
        )
    return rows


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-timing", action="store_true",
                        help="do not time the samplers (a busy machine); keep SAMPLERS.md's last overhead section")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    models = trained_models(EXAMPLES)
    results = {name: measure(name, model, x, target) for name, (model, x, target, _) in models.items()}
    timings = None if args.skip_timing else {
        name: overhead(model, x[:4], target[:4]) for name, (model, x, target, _) in models.items()
    }
    elapsed = time.perf_counter() - started
    write_report(models, results, timings, elapsed)
    plot(results)


def format_needed(n, at):
    if n is None:
        return f"< {SAMPLE_COUNTS[0]}"
    if math.isinf(n):
        return f"> {SAMPLE_COUNTS[-1]}"
    return f"{n:.1f} ({n / at:.2f})"


def write_report(models, results, timings, elapsed):
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    names = list(results)
    lines = [
        "# Noise samplers: error versus samples",
        "",
        f"`python benchmarks/bench_samplers.py` — {datetime.date.today()}, noisegrad {revision.stdout.strip()}, "
        f"torch {torch.__version__}, captum {captum.__version__}, Python {platform.python_version()}, "
        f"1 thread, {elapsed / 60:.1f} min.",
        "",
        f"Saliency, {EXAMPLES} held-out inputs per model, target = the true class, σ = 15 % of each input's range "
        "(`relative(0.15)`). Settings: SmoothGrad of the signed gradient (`abs=False`), SmoothGrad of the "
        "absolute gradient (`abs=True`, Captum's default), SmoothGrad² and VarGrad of the signed gradient. "
        f"Error of an example in a run = its relative L2 error against a {REFERENCE_SAMPLES:,}-sample "
        f"i.i.d. reference (its own seed); the median over the {EXAMPLES} examples and seeds "
        f"{SEEDS.start}–{SEEDS.stop - 1} is shown. "
        f"QMC and LHS run as one design (R = {DEFAULT_REPLICATES}) unless noted: noisegrad's choice, except with "
        f'`return_stderr` or `nt_samples="auto"`, where it uses R = {STDERR_REPLICATES} replicates (see the replicates table).',
        "",
        "Models (bench_joint.py's, trained with a fixed seed; held-out accuracy): "
        + ", ".join(f"{name}: {acc:.0%}" for name, (_, _, _, acc) in models.items()) + ".",
        "",
        "## Samples needed to match i.i.d. at 32 and 64",
        "",
        "Samples N a sampler needs to reach the median error of i.i.d. noise with 32 (64) samples, interpolated "
        "log-log on its curve; in brackets N / 32 (N / 64), then its 95 % confidence interval: a percentile "
        f"bootstrap ({BOOTSTRAP} resamples) over the {EXAMPLES} examples and the {len(SEEDS)} seeds, both resampled "
        "with replacement and independently, the sampler's and i.i.d.'s errors with the same resample. "
        "Targets: SmoothGrad (signed and absolute) ≤ 0.5, SmoothGrad² ≤ 0.6, VarGrad ≤ 1 "
        "(never worse than i.i.d.), at both 32 and 64, judged on the point estimate.",
        "",
        "| model | setting | sampler | needed for i.i.d. at 32 | needed for i.i.d. at 64 | target met |",
        "|---|---|---|---|---|---|",
    ]
    met = {}
    for name in names:
        for panel, curves in results[name].items():
            for label in SAMPLERS[1:]:
                by_n = {at: needed(curves, label, at) for at in MATCH_AT}
                cells = []
                for at in MATCH_AT:
                    low, high = needed_interval(curves, label, at)
                    cells.append(f"{format_needed(by_n[at], at)} [{low:.0f}–{high:.0f}]")
                met[name, panel, label] = meets(panel, by_n)
                lines.append(
                    f"| {name} | {panel} | {label} | " + " | ".join(cells)
                    + f" | {'yes' if met[name, panel, label] else '**no**'} |"
                )
    lines += ["", f"Samplers meeting each target (R = {DEFAULT_REPLICATES}):", ""]
    for panel in PANELS:
        summary = "; ".join(
            f"{name}: " + (", ".join(label for label in SAMPLERS[1:] if met[name, panel, label]) or "none")
            for name in names
        )
        lines.append(f"* {panel}: {summary}.")
    lines += ["", "## Replicates of the QMC and LHS designs", ""]
    lines += [
        "Samples needed to match i.i.d. at 32 / at 64, for R independent replicates (with R replicates a Latin hypercube of N samples has N / R strata per dimension, and the "
        "Sobol points of a replicate are its first N / R).",
        "",
        "| model | setting | " + " | ".join(f"{s}, R={r}" for s in ("qmc", "lhs") for r in (1, 2, 4, 8)) + " |",
        "|---|---|" + "---:|" * 8,
    ]
    for name in names:
        for panel, curves in results[name].items():
            cells = []
            for sampler in ("qmc", "lhs"):
                for count in (1, 2, 4, 8):
                    label = sampler if count == DEFAULT_REPLICATES else f"{sampler}, R={count}"
                    by_n = {at: needed(curves, label, at) for at in MATCH_AT}
                    mark = "" if meets(panel, by_n) else " ✗"
                    cells.append(" / ".join(format_needed(by_n[at], at).split(" (")[0] for at in MATCH_AT) + mark)
            lines.append(f"| {name} | {panel} | " + " | ".join(cells) + " |")
    counts = []
    for sampler in ("qmc", "lhs"):
        for count in (1, 2, 4, 8):
            label = sampler if count == DEFAULT_REPLICATES else f"{sampler}, R={count}"
            counts.append(sum(
                meets(panel, {at: needed(curves, label, at) for at in MATCH_AT})
                for name in names for panel, curves in results[name].items()
            ))
    lines.append(f"| targets met | of {len(names) * len(PANELS)} | " + " | ".join(str(c) for c in counts) + " |")
    lines += ["", "✗: the setting's target is missed.", ""]
    lines += ["## Median error per sample count", ""]
    for name in names:
        for panel, curves in results[name].items():
            lines += [f"**{name}, {panel}**", ""]
            lines += ["| sampler | " + " | ".join(str(n) for n in SAMPLE_COUNTS) + " |"]
            lines += ["|---|" + "---:|" * len(SAMPLE_COUNTS)]
            lines += [
                f"| {label} | " + " | ".join(f"{e:.4f}" for e in median(errors)) + " |"
                for label, errors in curves.items()
            ]
            lines += [""]
    lines += ["## Sampler overhead", ""]
    if timings is None:
        lines += overhead_kept()
    else:
        lines += overhead_lines(timings)
    lines += ["", "![error versus samples](samplers_error.png)", ""]
    (ROOT / "benchmarks" / "SAMPLERS.md").write_text("\n".join(lines))
    print("\n".join(lines))


def overhead_kept():
    """The overhead section of the SAMPLERS.md this run replaces, with a note saying where it comes from."""
    previous = (ROOT / "benchmarks" / "SAMPLERS.md").read_text()
    header = previous.splitlines()[2] if len(previous.splitlines()) > 2 else "an earlier run"
    body = previous.split("## Sampler overhead", 1)[-1].split("![error versus samples]", 1)[0].strip()
    if body.startswith("_Not timed"):  # already kept once: its note names the run it comes from
        return [body]
    return [f"_Not timed in this run (`--skip-timing`, a busy machine); kept from the run of {header.strip()}_", "",
            body]


def overhead_lines(timings):
    lines = [
        f"One `nt.attribute(x, nt_samples=64, nt_samples_batch_size=64, sampler=...)` (Saliency, 4 inputs), "
        f"{TIMING_REPEATS} interleaved repetitions after a warm-up: median time, median of the per-repetition "
        "ratio to `sampler=\"iid\"` minus 1, and the time of drawing the 64 noisy copies alone "
        "(`noise.noisy_copies`) with its share of the attribution time. Target: set-up under 5 % of the "
        "attribution time.",
        "",
        "| model | sampler | attribute time | overhead vs i.i.d. | noise drawing | share of attribute |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, rows in timings.items():
        for sampler, (seconds, extra, drawing, share) in rows.items():
            lines.append(
                f"| {name} | {sampler} | {seconds * 1e3:.1f} ms | {extra:+.1%} | {drawing * 1e3:.2f} ms | {share:.1%} |"
            )
    return lines


def plot(results):
    colours = dict(zip(SAMPLERS, ["k", "C0", "C1", "C2"]))
    fig, axes = plt.subplots(len(results), len(PANELS), figsize=(4.2 * len(PANELS), 3.8 * len(results)), squeeze=False)
    for row, (name, by_panel) in zip(axes, results.items()):
        for ax, (panel, curves) in zip(row, by_panel.items()):
            for sampler, colour in colours.items():
                label = sampler if sampler in ("iid", "antithetic") else f"{sampler} (R={DEFAULT_REPLICATES})"
                ax.plot(SAMPLE_COUNTS, median(curves[sampler]), "o-", color=colour, label=label, ms=4)
            for sampler in ("qmc", "lhs"):
                ax.plot(SAMPLE_COUNTS, median(curves[f"{sampler}, R={STDERR_REPLICATES}"]), "--",
                        color=colours[sampler], lw=1, label=f"{sampler} (R={STDERR_REPLICATES})")
            iid32 = median(curves["iid"])[SAMPLE_COUNTS.index(32)]
            ax.axhline(iid32, color="k", lw=0.6, ls=":", label="i.i.d. error at 32")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(SAMPLE_COUNTS, [str(n) for n in SAMPLE_COUNTS])
            ax.set_xlabel("nt_samples")
            ax.set_ylabel(f"median relative L2 error ({EXAMPLES} examples × {len(SEEDS)} seeds)")
            ax.set_title(f"{name}: {panel}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"Saliency + NoiseTunnel, σ = 15 % of range, reference {REFERENCE_SAMPLES:,} i.i.d. samples")
    fig.tight_layout()
    fig.savefig(ROOT / "benchmarks" / "samplers_error.png", dpi=110)


if __name__ == "__main__":
    main()
