"""Time to an accurate map: the wall time each approach needs to reach a relative error, side by side.

    python benchmarks/bench_time_to_accuracy.py --out benchmarks/TIME_TO_ACCURACY.md   # full, ~30 min on 2 cores
    python benchmarks/bench_time_to_accuracy.py --quick                                # smoke run, a few minutes
    python benchmarks/bench_time_to_accuracy.py --device cuda --out TIME_TO_ACCURACY_cuda.md  # benchmarks/gpu_run.sh

What a user pays for is the time to a map that is accurate enough, not the time per sample. For every workload
of bench_tunnel.py (CNN, ResNet-style, MLP at batch 64, transformer; random-init models in eval mode) and
statistic (SmoothGrad of the signed and of the absolute gradient, SmoothGrad², IG + SmoothGrad, VarGrad), and
for every target error (10 % and 5 %; VarGrad 10 % only), three approaches are compared:

* ``captum``:      Captum's NoiseTunnel with its defaults: all samples in one forward
                   (``nt_samples_batch_size=None``), i.i.d. noise, IntegratedGradients with n_steps=50;
* ``captum-best``: the same with the fastest chunk size of a sweep;
* ``noisegrad``:   noisegrad's front-ends with their defaults (the measured best sampler, ``"auto"`` chunks)
                   and ``nt_samples="auto"`` with ``tol`` = the target error; for IG + SmoothGrad, which has no
                   front-end and no ``"auto"`` mode, ``NoiseTunnel(IntegratedGradients).attribute(joint=JOINT,
                   path_density=PATH_DENSITY, nt_samples_batch_size="auto")`` at the samples a sweep finds, as
                   for Captum (the adaptive density's 28 pilot gradients per example are in its time, not in its
                   samples).

Relative error (the same for every approach): for example i and seed s, e(i, s) = ‖A(i, s) − R(i)‖₂ / ‖R(i)‖₂
over all elements of the example's attribution, in float64, where R is a long reference run (its own seed);
the error of an approach at a setting is the median of e(i, s) over the examples of the batch and the seeds.

Samples needed (Captum, and noisegrad's IG): the error as a function of nt_samples is measured on repeated
seeds, doubling nt_samples until the median error is at or below the target (or the sweep's time budget is
spent), and interpolated log-log between the two counts around the target; beyond the sweep it is extrapolated
with the Monte-Carlo law error ∝ n^(−1/2) from the last count (marked ~). A call with that many samples is then
timed. noisegrad's "auto" needs no sweep: it stops each example at ‖stderr‖ / ‖attribution‖ ≤ tol, and its
achieved median error is measured on the same seeds. Where it ends above the target, its time is scaled by
(achieved / target)² (the cost of the missing samples, as error² ∝ 1/n); it is never scaled down.

Timing: the three approaches are called interleaved, round-robin, in one process (bench_tunnel's
``time_interleaved``: repetitions that other processes disturbed are redone and left out). A call whose
predicted time exceeds ``--call-cap`` seconds, or whose all-at-once forward would need more than
``--memory-cap-gb`` of activations, is timed at fewer samples and its time scaled linearly (marked ~): this
favours Captum, whose all-at-once call only grows slower with more rows.
"""

import argparse
import dataclasses
import datetime
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import captum
import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from captum.attr import NoiseTunnel as CaptumNoiseTunnel
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noisegrad  # noqa: E402
from bench_tunnel import (  # noqa: E402
    command_line,
    ForeignLoad, build_workloads, cpu_model, device_description, noisegrad_revision, publish, time_interleaved,
)
from glibc_malloc import freed_memory_kept  # noqa: E402
from noisegrad import NoiseTunnel  # noqa: E402
from noisegrad.plan import activation_bytes_per_row  # noqa: E402

GOAL = 3.0  # noisegrad at least this many times faster than Captum's defaults to the same error
TOLS = (0.10, 0.05)
NOISE_FRACTION = 0.15  # σ = 15 % of the batch's mean per-example range, one float for every approach
JOINT = "lhs"  # IG + SmoothGrad: the joint design that needed the fewest gradients on the CNN (benchmarks/JOINT.md)
#: ... and where its path fractions go: a median of 1/110 of uniform's gradients for 10 % on the transformer, whose
#: IG mass lies below α ≈ 10⁻³; as many on the CNN; 1.3–1.9 times as many on the ResNet and MLP, whose calls need
#: under 200 gradients, the 28-gradient pilot included (benchmarks/PATH_DENSITY.md)
PATH_DENSITY = "adaptive"
CAPTUM_IG_STEPS = 50  # Captum's default n_steps
REFERENCE_SEED = 10**6
FIRST_COUNT = 4
#: Examples per call: (SmoothGrad-type statistics, IG + SmoothGrad); the MLP at batch 64, as the issue asks.
BATCHES = {"cnn": (8, 4), "resnet": (4, 2), "mlp": (64, 64), "transformer": (16, 8)}
#: Reference samples per example (full mode; quick: a sixteenth): about 16 × what the 5 % target needs.
REFERENCE_SAMPLES = {"cnn": 16384, "resnet": 4096, "mlp": 32768, "transformer": 16384}


@dataclass
class Statistic:
    key: str  # for --statistics
    name: str
    nt_type: str
    absolute: bool  # Saliency's abs (SmoothGrad-type statistics only)
    ig: bool  # IG + SmoothGrad
    tols: Tuple[float, ...]


STATISTICS = [
    Statistic("sg", "SmoothGrad, signed", "smoothgrad", False, False, TOLS),
    Statistic("sg-abs", "SmoothGrad, absolute", "smoothgrad", True, False, TOLS),
    Statistic("sg2", "SmoothGrad²", "smoothgrad_sq", False, False, TOLS),
    Statistic("ig-sg", "IG + SmoothGrad", "smoothgrad", False, True, TOLS),
    Statistic("vargrad", "VarGrad", "vargrad", False, False, (0.10,)),
]
FRONTENDS = {"smoothgrad": noisegrad.smoothgrad, "smoothgrad_sq": noisegrad.smoothgrad_sq, "vargrad": noisegrad.vargrad}


@dataclass
class Budget:
    seeds: int
    sweep_seconds: float  # per curve
    call_cap: float  # seconds a timed call may take
    memory_cap: float  # bytes of activations an all-at-once forward may need
    repeats: int
    warmup: int
    max_samples: int  # noisegrad's nt_samples="auto" cap
    reference_divisor: int


# --------------------------------------------------------------------------- errors


def relative_errors(estimate: Tensor, reference: Tensor) -> np.ndarray:
    """e(i) = ‖A(i) − R(i)‖₂ / ‖R(i)‖₂ per example, float64."""
    diff = (estimate.double() - reference.double()).flatten(1).norm(dim=1)
    return (diff / reference.double().flatten(1).norm(dim=1)).cpu().numpy()


@dataclass
class Curve:
    """Errors (seeds × examples) per nt_samples, and seconds per sample from the sweep's own calls."""

    errors: Dict[int, np.ndarray] = field(default_factory=dict)
    seconds_per_sample: float = 0.0

    def needed(self, tol: float, per_example: bool = False) -> Tuple[np.ndarray, bool]:
        """Samples to reach ``tol`` (median over seeds and examples, or per example); whether extrapolated."""
        counts = sorted(self.errors)
        medians = np.array([np.median(self.errors[n], axis=0) if per_example else np.median(self.errors[n])
                            for n in counts])  # (counts,) or (counts, examples)
        medians = medians.reshape(len(counts), -1)
        result, extrapolated = [], False
        for column in medians.T:
            below = np.nonzero(column <= tol)[0]
            if len(below) == 0:  # beyond the sweep: error ∝ n^(−1/2) from the last count
                result.append(counts[-1] * (column[-1] / tol) ** 2)
                extrapolated = True
            elif below[0] == 0:
                result.append(float(counts[0]))
            else:
                k = below[0]
                n0, n1, e0, e1 = counts[k - 1], counts[k], column[k - 1], column[k]
                t = (math.log(e0) - math.log(tol)) / (math.log(e0) - math.log(e1))
                result.append(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))
        return np.array(result), extrapolated


def sweep(estimate: Callable[[int, int], Tensor], reference: Tensor, tol: float, seeds: Sequence[int],
          seconds: float, unit: int = 1) -> Curve:
    """Double nt_samples from FIRST_COUNT until the median error is ≤ ``tol`` or ``seconds`` would be exceeded."""
    curve = Curve()
    n, spent = max(FIRST_COUNT, unit), 0.0
    while True:
        start = time.perf_counter()
        curve.errors[n] = np.stack([relative_errors(estimate(n, seed), reference) for seed in seeds])
        elapsed = time.perf_counter() - start
        spent += elapsed
        curve.seconds_per_sample = elapsed / (n * len(seeds))
        if np.median(curve.errors[n]) <= tol or spent + 2 * elapsed > seconds:
            return curve
        n *= 2


# --------------------------------------------------------------------------- approaches


@dataclass
class Setting:
    """One workload and statistic: the model, the examples, σ and the reference."""

    workload: str
    statistic: Statistic
    model: torch.nn.Module
    x: Tensor
    target: Tensor
    sigma: float
    reference: Tensor
    reference_error: float  # median over examples of the reference's own relative standard error
    bytes_per_row: int
    captum_bias: Optional[float] = None  # IG: Captum's quadrature error, relative to the reference (captum_ig_bias)

    def captum(self, n: int, chunk: Optional[int]) -> Tensor:
        s = self.statistic
        if s.ig:
            nt = CaptumNoiseTunnel(IntegratedGradients(self.model))
            return nt.attribute(self.x, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=chunk,
                                stdevs=self.sigma, target=self.target)
        nt = CaptumNoiseTunnel(Saliency(self.model))
        return nt.attribute(self.x, nt_type=s.nt_type, nt_samples=n, nt_samples_batch_size=chunk, stdevs=self.sigma,
                            target=self.target, abs=s.absolute)

    def captum_seeded(self, n: int, seed: int, chunk: Optional[int] = 64) -> Tensor:
        torch.manual_seed(seed)  # Captum draws from the global RNG; the chunk does not change the error
        return self.captum(n, chunk)

    def noisegrad_ig(self, n: int, seed: int) -> Tensor:
        nt = NoiseTunnel(IntegratedGradients(self.model))
        return nt.attribute(self.x, nt_samples=n, joint=JOINT, path_density=PATH_DENSITY, nt_samples_batch_size="auto",
                            stdevs=self.sigma,
                            target=self.target, seed=seed)

    def noisegrad_auto(self, tol: float, seed: int, max_samples: int):
        s = self.statistic
        kwargs = {"absolute": s.absolute} if s.nt_type == "smoothgrad" else {}
        with warnings.catch_warnings():  # an example that stops at max_samples shows in the achieved error
            warnings.simplefilter("ignore", RuntimeWarning)
            return FRONTENDS[s.nt_type](self.model, self.x, target=self.target, nt_samples="auto", tol=tol,
                                        max_samples=max_samples, stdevs=self.sigma, seed=seed, **kwargs)

    def rows_per_sample(self) -> int:
        return self.x.shape[0] * (CAPTUM_IG_STEPS if self.statistic.ig else 1)


def setting_inputs(workload, statistic: Statistic, quick: bool) -> Tuple[Tensor, Tensor, float]:
    """The examples, their targets and σ of a setting: the workload's first examples, σ a fraction of their range."""
    batch = BATCHES[workload.name][1 if statistic.ig else 0]
    if quick:
        batch = max(1, batch // 2)
    x, target = workload.inputs[:batch], workload.target[:batch]
    flat = x.flatten(1)
    return x, target, NOISE_FRACTION * float((flat.max(1).values - flat.min(1).values).mean())


def smoothgrad_type_rows(quick: bool, workloads: Sequence[str]) -> Iterator[Tuple[Any, Statistic, float]]:
    """(workload, statistic, target) of the SmoothGrad-type rows (no IG), in the table's order: the rows that
    bench_auto_phases.py and bench_auto_chunk_growth.py measure; ``quick``: half batches, the 10 % target only."""
    for workload in [w for w in build_workloads(quick) if w.name in workloads]:
        for statistic in [s for s in STATISTICS if not s.ig]:
            for tol in statistic.tols[:1] if quick else statistic.tols:
                yield workload, statistic, tol


def make_setting(workload, statistic: Statistic, budget: Budget, quick: bool) -> Setting:
    x, target, sigma = setting_inputs(workload, statistic, quick)
    samples = REFERENCE_SAMPLES[workload.name] // budget.reference_divisor
    nt_method = IntegratedGradients(workload.model) if statistic.ig else Saliency(workload.model)
    common = dict(nt_samples=samples, nt_samples_batch_size="auto", stdevs=sigma, target=target,
                  seed=REFERENCE_SEED, return_stderr=True)
    if statistic.ig:
        result = NoiseTunnel(nt_method).attribute(x, joint="antithetic", path_density="adaptive", **common)
    else:
        sampler = "iid" if statistic.nt_type == "vargrad" else "antithetic"
        result = NoiseTunnel(nt_method).attribute(x, nt_type=statistic.nt_type, sampler=sampler,
                                                  abs=statistic.absolute, **common)
    per_row = activation_bytes_per_row(workload.model, (x,), None) or 4 * x[:1].numel()
    reference = result.attributions.detach()
    bias = captum_ig_bias(workload.model, x, target, sigma, reference) if statistic.ig else None
    return Setting(workload.name, statistic, workload.model, x, target, sigma, reference,
                   float(result.relative_stderr.median()), per_row, bias)


#: Path points of the quadrature that stands in for the exact integral in captum_ig_bias.
FINE_IG_STEPS = 8 * CAPTUM_IG_STEPS


def captum_ig_bias(model: torch.nn.Module, x: Tensor, target: Tensor, sigma: float, reference: Tensor,
                   nt_samples: int = 16) -> float:
    """Captum's IG quadrature error: the median over examples of ‖A₅₀ − A₄₀₀‖ / ‖R‖, A_k being
    NoiseTunnel(IG) with k Gauss–Legendre steps on the same noise (the same global seed), so that the noise
    cancels in the difference. Captum's error cannot fall much below it; the n^(−1/2) extrapolation (~) assumes it can."""
    runs = []
    for steps in (CAPTUM_IG_STEPS, FINE_IG_STEPS):
        torch.manual_seed(REFERENCE_SEED + 1)
        nt = CaptumNoiseTunnel(IntegratedGradients(model))
        runs.append(nt.attribute(x, nt_type="smoothgrad", nt_samples=nt_samples, nt_samples_batch_size=1,
                                 stdevs=sigma, target=target, n_steps=steps, internal_batch_size=4096).detach())
    difference = (runs[0].double() - runs[1].double()).flatten(1).norm(dim=1)
    return float(np.median((difference / reference.double().flatten(1).norm(dim=1)).cpu().numpy()))


def best_captum_chunk(setting: Setting, n: int, memory_cap: float) -> int:
    """The fastest nt_samples_batch_size among powers of 4 up to ``n`` (the faster of two calls each)."""
    candidates = [c for c in (1, 4, 16, 64, 256, 1024) if c <= n] or [n]
    candidates = [c for c in candidates if c * setting.rows_per_sample() * setting.bytes_per_row <= memory_cap] or [1]
    setting.captum_seeded(min(n, candidates[0] * 2), 0, candidates[0])
    times: Dict[int, float] = {}
    for _ in range(2):
        for chunk in candidates:
            start = time.perf_counter()
            setting.captum_seeded(n, 0, chunk)
            times[chunk] = min(times.get(chunk, math.inf), time.perf_counter() - start)
    return min(times, key=times.get)


# --------------------------------------------------------------------------- one row


@dataclass
class Row:
    workload: str
    statistic: str
    tol: float
    batch: int
    captum_needed: float
    captum_needed_examples: Tuple[float, float]
    captum_extrapolated: bool
    captum_chunk: int
    ng_approach: str
    ng_samples: float  # median over examples and seeds
    ng_samples_examples: Tuple[float, float]
    ng_error: float
    ng_extrapolated: bool
    times: Dict[str, List[float]]  # seconds per call as timed (before scaling)
    scale: Dict[str, float]  # factor from the timed call to the time at the target
    reps: Tuple[int, int, int]
    reference_error: float
    captum_bias: Optional[float] = None

    def seconds(self, name: str) -> float:
        return statistics.median(self.times[name]) * self.scale[name]

    def ratio(self, name: str) -> Tuple[float, float, float]:
        """Per repetition: time of ``name`` / noisegrad's, both at the target; median, min, max."""
        values = [a * self.scale[name] / (b * self.scale["noisegrad"])
                  for a, b in zip(self.times[name], self.times["noisegrad"])]
        return statistics.median(values), min(values), max(values)


def capped(n: float, seconds_per_sample: float, call_cap: float, rows_per_sample: int = 0,
           bytes_per_row: int = 0, memory_cap: float = math.inf) -> Tuple[int, float]:
    """The samples to time (at most what fits ``call_cap`` seconds and ``memory_cap``) and the factor to ``n``."""
    wanted = max(1, math.ceil(n))
    most = max(1, int(call_cap / max(seconds_per_sample, 1e-9)))
    if rows_per_sample and bytes_per_row:
        most = min(most, max(1, int(memory_cap / (rows_per_sample * bytes_per_row))))
    timed = min(wanted, most)
    return timed, wanted / timed


def measure_rows(setting: Setting, budget: Budget, load: ForeignLoad) -> List[Row]:
    s, seeds = setting.statistic, range(budget.seeds)
    hardest = min(s.tols)
    captum_curve = sweep(setting.captum_seeded, setting.reference, hardest, seeds, budget.sweep_seconds)
    ig_curve = sweep(setting.noisegrad_ig, setting.reference, hardest, seeds, budget.sweep_seconds) if s.ig else None
    chunk = None
    rows = []
    for tol in s.tols:
        needed_examples, _ = captum_curve.needed(tol, per_example=True)
        needed, extrapolated = captum_curve.needed(tol)
        n_captum = float(needed[0])
        if chunk is None:  # the chunk sweep once per setting, at the first (loosest) target
            chunk = best_captum_chunk(setting, min(math.ceil(n_captum), 1024), budget.memory_cap)
        per_sample = captum_curve.seconds_per_sample
        n_default, scale_default = capped(n_captum, per_sample, budget.call_cap, setting.rows_per_sample(),
                                          setting.bytes_per_row, budget.memory_cap)
        n_best, scale_best = capped(n_captum, per_sample, budget.call_cap)
        counter = iter(range(10**9))
        if s.ig:
            ng_needed, ng_extrapolated = ig_curve.needed(tol)
            ng_examples, _ = ig_curve.needed(tol, per_example=True)
            n_ng, scale_ng = capped(float(ng_needed[0]), ig_curve.seconds_per_sample, budget.call_cap)
            ng_samples, ng_range, ng_error = float(ng_needed[0]), (ng_examples.min(), ng_examples.max()), tol
            approach = (f'NoiseTunnel(IG), joint="{JOINT}", path_density="{PATH_DENSITY}", nt_samples={n_ng}, '
                        'chunks "auto"')
            ng_call = lambda: setting.noisegrad_ig(n_ng, next(counter))  # noqa: E731
        else:
            results = [setting.noisegrad_auto(tol, seed, budget.max_samples) for seed in seeds]
            errors = np.stack([relative_errors(r.attributions, setting.reference) for r in results])
            used = np.stack([r.nt_samples.cpu().numpy() for r in results]).astype(float)
            ng_samples, ng_error, ng_extrapolated = float(np.median(used)), float(np.median(errors)), False
            per_example = np.median(used, axis=0)
            ng_range = (per_example.min(), per_example.max())
            scale_ng = max(1.0, (ng_error / tol) ** 2)
            sampler = noisegrad.frontends.AUTO_SAMPLER[(s.nt_type, s.absolute)]  # what the front-ends take with "auto"
            sampler = "lhs (blocks of 4)" if sampler == "lhs" else sampler
            approach = f'{FRONTENDS[s.nt_type].__name__}(nt_samples="auto", tol={tol}), sampler {sampler}'
            ng_call = lambda: setting.noisegrad_auto(tol, next(counter), budget.max_samples)  # noqa: E731
        variants = {
            "captum": lambda: setting.captum(n_default, None),
            "captum-best": lambda: setting.captum(n_best, min(chunk, n_best)),
            "noisegrad": ng_call,
        }
        timings = time_interleaved(variants, budget.repeats, budget.warmup, load)
        times = timings.used()
        row = Row(setting.workload, s.name, tol, setting.x.shape[0], n_captum,
                  (needed_examples.min(), needed_examples.max()), extrapolated, chunk, approach, ng_samples,
                  ng_range, ng_error, ng_extrapolated, times,
                  {"captum": scale_default, "captum-best": scale_best, "noisegrad": scale_ng},
                  (len(times["captum"]), sum(timings.clean), len(timings.clean)), setting.reference_error,
                  setting.captum_bias)
        rows.append(row)
        print(f"{row.workload:12s} {row.statistic:22s} {tol:.0%}  captum n={n_captum:7.1f}{'~' if extrapolated else ' '}"
              f" {row.seconds('captum'):8.3f} s  best {row.seconds('captum-best'):8.3f} s  noisegrad "
              f"n={ng_samples:7.1f} err={ng_error:.3f} {row.seconds('noisegrad'):8.3f} s  "
              f"captum/ng {row.ratio('captum')[0]:6.2f}", flush=True)
    return rows


# --------------------------------------------------------------------------- report


def fmt_seconds(seconds: float, approximate: bool) -> str:
    text = f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
    return ("~" if approximate else "") + text


def table(rows: List[Row]) -> List[str]:
    lines = [
        "| workload | statistic | target | batch | Captum samples [min–max per example] | Captum default | "
        "Captum best chunk | noisegrad | noisegrad samples [min–max per example] | noisegrad error | "
        "noisegrad time | Captum default / ng [min–max] | Captum best / ng [min–max] | goal ≥ 3× |",
        "|---|---|---:|---:|---|---:|---:|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        low, high = r.captum_needed_examples
        ng_low, ng_high = r.ng_samples_examples
        default, best = r.ratio("captum"), r.ratio("captum-best")
        lines.append(
            f"| {r.workload} | {r.statistic} | {r.tol:.0%} | {r.batch} "
            f"| {'~' if r.captum_extrapolated else ''}{r.captum_needed:.0f} [{low:.0f}–{high:.0f}] "
            f"| {fmt_seconds(r.seconds('captum'), r.scale['captum'] > 1)} "
            f"| {fmt_seconds(r.seconds('captum-best'), r.scale['captum-best'] > 1)} (chunk {r.captum_chunk}) "
            f"| {r.ng_approach} | {'~' if r.ng_extrapolated else ''}{r.ng_samples:.0f} [{ng_low:.0f}–{ng_high:.0f}] "
            f"| {r.ng_error:.3f} | {fmt_seconds(r.seconds('noisegrad'), r.scale['noisegrad'] > 1)} "
            f"| {default[0]:.2f} [{default[1]:.2f}–{default[2]:.2f}] | {best[0]:.2f} [{best[1]:.2f}–{best[2]:.2f}] "
            f"| {'met' if default[0] >= GOAL else '**not met**'} |"
        )
    return lines


#: Why a row misses the goal: each cause, the rule that finds it in a row's numbers, and the plan, in the order the
#: plans should be worked on (the first helps the most rows). Written after reading the first idle run.
CAUSES = {
    "first check": (
        "The first check came too late",
        "noisegrad stopped at its first check with an error well under the target: Captum needed fewer samples "
        "than noisegrad's floor. The first check comes after 16 samples"
        " (8 standard-error groups of one antithetic pair or two i.i.d. samples: the same 7 degrees of "
        "freedom), with the median achieved error still within 25 % of tol (tests/test_convergence.py). "
        "Even then a call that Captum finishes with about 10 samples in one forward cannot be 3× faster: noisegrad "
        "would have to need a third of Captum's samples at a per-sample cost no higher than one forward of all of "
        "them. For such rows the goal is out of reach by design; the plan is to match Captum (ratio ≥ 1).",
    ),
    "few samples saved": (
        "The sampler saves few samples under \"auto\"",
        "noisegrad needed about as many samples as Captum (ratio under 1.5). Under nt_samples=\"auto\" the front-ends "
        "draw antithetic pairs (signed SmoothGrad), i.i.d. noise (VarGrad) or consecutive "
        "Latin hypercubes of 4 samples (absolute SmoothGrad, SmoothGrad²), which need 6–9 % fewer samples than "
        "antithetic pairs (benchmarks/AUTO_LHS.md), far from the 0.4–0.6 of i.i.d.'s samples that one fixed-size "
        "hypercube needs in benchmarks/SAMPLERS.md: a hypercube of 4 stratifies each dimension into 4 strata only. "
        "Hypercubes of 8 saved the most samples × error² in AUTO_LHS.md but their first check at 64 samples is too "
        "late for cheap targets. Plan: blocks that grow once the first check has projected the count (4 up to "
        "the first check, then blocks of 16 or more, switched at a whole round of the 8 groups so that every "
        "group holds the same mix of block sizes); for VarGrad and SmoothGrad², a control variate (the clean "
        "gradient and its square, whose noisy means are known to second order), to be measured in "
        "bench_samplers.py first.",
    ),
    "per-sample cost": (
        "Per sample, noisegrad is not faster than Captum's default",
        "time per sample, Captum's default / noisegrad's, under 1.5: on the MLP and the transformer Captum's "
        "all-samples-in-one-forward default is already as fast as its best chunk, so the speed-up has to come "
        "from samples. benchmarks/AUTO_PHASES.md splits these auto calls: the forward and backward cost about "
        "what Captum's whole call does; the rest is noise, statistics and checks, a few ms on the CNN and "
        "ResNet, and on the MLP and the transformer a chunk and a check after every hypercube block or pair while "
        "a batch's examples converge one by one (each check at least 1/8 after the last). Sparser checks were tried "
        "and left: a schedule from activation bytes saved 11–29 % on the MLP and cost 2–14 % on the transformer; a "
        "least growth of 1/4, 1/√n or 2/√n (n the samples so far) instead of 1/8 moved calls by −20 to +10 %, "
        "the CNN and ResNet rows as often slower as faster (an in-process A/B of 9 rows, 9 calls per variant, "
        "measured once, December 2026): what a check saves is what its extra samples cost. Done since: the "
        "examples left get as many more samples per chunk as keep its copies (the ResNet's SmoothGrad rows took "
        "0.84–0.94 of their time, benchmarks/AUTO_CHUNK_GROWTH.md). Simulated and left: one chunk spanning several "
        "checks, each check read from the chunk's first samples (the same stops), saved at most 11 % on the "
        "transformer's 5 % rows and moved the MLP's by −17 to +15 % (an offline simulation from logged checks and a "
        "chunk cost fitted per workload, a fixed part plus one per row; not committed). Plan: cut a chunk's own "
        "fixed cost on small models (noise set-up, the check's statistics), which every schedule pays; the "
        "per-sample items themselves (noise, statistics) are near Captum's own now.",
    ),
    "IG path": (
        "One path point per noise sample is the wrong design here",
        "the joint estimator (one random path point per noise sample, drawn from the adaptive path density) needed "
        "far more gradients than Captum's nested Gauss–Legendre quadrature (50 points per noise sample). Before the "
        "adaptive density this was the transformer, whose IG mass lies below α ≈ 10⁻³ (benchmarks/PATH_DENSITY.md); "
        "stratifying k path points per noise draw did not help there (k = 1–32 at a fixed budget, measured once). "
        "Plan: profile the integrand along the path (where its mass lies, how much it varies across noise) and "
        "compare the joint estimator's spread with the nested one's at equal gradients.",
    ),
}


#: The sample count of nt_samples="auto"'s second check (16 → 18): a median below it stopped at the first.
SECOND_CHECK = math.ceil(noisegrad.tunnel._AUTO_MIN_SAMPLES * (1 + noisegrad.stats.stopping.LEAST_GROWTH))


def causes(r: Row) -> List[str]:
    """The causes (keys of CAUSES) that a row below the goal shows in its numbers."""
    samples = r.captum_needed / max(r.ng_samples, 1e-9)
    per_sample = r.ratio("captum")[0] / samples
    found = []
    if "IG" in r.statistic and samples < 0.2:
        found.append("IG path")
    if "IG" not in r.statistic and r.ng_samples < SECOND_CHECK and r.ng_error < 0.9 * r.tol:
        found.append("first check")
    if "IG" not in r.statistic and samples < 1.5:
        found.append("few samples saved")
    if per_sample < 1.5:
        found.append("per-sample cost")
    return found


def plans(rows: List[Row]) -> List[str]:
    """Per row below the goal: the facts that decide it and the causes found in them; then each cause's plan."""
    lines = []
    for r in rows:
        ratio = r.ratio("captum")[0]
        if ratio >= GOAL:
            continue
        samples = r.captum_needed / max(r.ng_samples, 1e-9)
        per_sample = ratio / samples  # speed-up = (samples ratio) × (Captum's time per sample / noisegrad's)
        found = causes(r)
        lines += [
            f"### {r.workload} / {r.statistic} / {r.tol:.0%}: {ratio:.2f}× (goal {GOAL:.0f}×)",
            "",
            f"- samples: Captum {r.captum_needed:.0f}, noisegrad {r.ng_samples:.0f} (Captum / noisegrad = {samples:.2f}); "
            f"time per sample at those counts: Captum's default / noisegrad's = {per_sample:.2f}",
            f"- noisegrad's achieved error {r.ng_error:.3f} for a target of {r.tol:.2f}"
            + (f" (time scaled by {r.scale['noisegrad']:.2f} for the missing samples)" if r.scale["noisegrad"] > 1
               else ""),
            "- plan: " + ("; ".join(f"{CAUSES[c][0][0].lower() + CAUSES[c][0][1:]} (below)" for c in found) if found
                          else "_no cause found by the rules in causes(): read this row_"),
            "",
        ]
    if not lines:
        return ["Every row meets the goal.", ""]
    lines += ["## Causes and plans", ""]
    for name, (title, text) in CAUSES.items():
        hits = [f"{r.workload} / {r.statistic} / {r.tol:.0%}" for r in rows
                if r.ratio("captum")[0] < GOAL and name in causes(r)]
        if hits:
            lines += [f"### {title} ({len(hits)} rows)", "", text, "", "Rows: " + "; ".join(hits) + ".", ""]
    return lines


def report(rows: List[Row], args: argparse.Namespace, budget: Budget, elapsed: float) -> str:
    met = sum(r.ratio("captum")[0] >= GOAL for r in rows)
    lines = [
        "# Time to an accurate map: noisegrad vs Captum's NoiseTunnel",
        "",
        f"- command: `{args.command}`",
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}, {elapsed / 60:.1f} min; torch {torch.__version__}, "
        f"captum {captum.__version__}, noisegrad {noisegrad.__version__} ({args.revision}), "
        f"Python {platform.python_version()}",
        f"- {device_description(torch.device(args.device))}"
        + ("" if args.device == "cpu" else f"; CPU: {cpu_model()}") + f", torch.get_num_threads() = {torch.get_num_threads()}"
        + (" (set by --threads)" if args.threads else " (torch's default)") + "; load average (1 min) before / "
        f"after: {args.load[0][0]:.2f} / {args.load[1][0]:.2f}; glibc keeps freed memory: "
        + freed_memory_kept()
        + ("; **quick mode: smoke run, not for publication**" if args.quick else ""),
        f"- seeds per setting: {budget.seeds}; timing: {budget.warmup} warm-up call(s), then {budget.repeats} "
        "repetitions interleaved round-robin (bench_tunnel's time_interleaved; disturbed repetitions redone and "
        "left out)",
        "",
        "**Relative error** (every approach alike): for example i and seed s, "
        "e(i, s) = ‖A(i, s) − R(i)‖₂ / ‖R(i)‖₂ over all elements of example i's attribution, in float64; the error "
        "of an approach is the median of e(i, s) over the batch's examples and the seeds. R is a reference run of "
        "noisegrad's NoiseTunnel with many samples and a seed of its own (antithetic noise for SmoothGrad and "
        "SmoothGrad², i.i.d. for VarGrad, the joint antithetic estimator with the adaptive path density for IG + "
        "SmoothGrad, whose exact-integral "
        f"estimand leaves Captum's {CAPTUM_IG_STEPS}-step Gauss–Legendre discretisation in Captum's error); its own "
        "median relative standard error is listed per setting below.",
        "",
        f"**Noise**: σ = {NOISE_FRACTION:.0%} of the batch's mean per-example range, one float for every approach. "
        "**Samples needed** (Captum; noisegrad's IG): nt_samples doubled from "
        f"{FIRST_COUNT} on the seeds until the median error is at or below the target, interpolated log-log; ~ = "
        "extrapolated beyond the sweep with error ∝ n^(−1/2). noisegrad's front-ends stop on their own "
        '(`nt_samples="auto"`, `tol` = the target, `max_samples` = '
        f"{budget.max_samples}); their samples are the median over examples and seeds. Times marked ~ were "
        "measured at fewer samples and scaled linearly (a call over "
        f"{budget.call_cap:g} s, or an all-at-once forward over {budget.memory_cap / 2**30:.1f} GiB of "
        "activations), or, for noisegrad, scaled by (achieved error / target)² where it ended above the target.",
        "",
        f"Goal: Captum's default / noisegrad ≥ {GOAL:.0f}× on every row — met in {met}/{len(rows)} rows.",
        "",
        "## Time to the target error",
        "",
    ]
    lines += table(rows)
    lines += ["", "## Plans for rows below the goal", ""] + plans(rows)
    lines += ["## The references' own error, and Captum's quadrature's", "",
              f"Captum's IG error has a floor besides its noise: its {CAPTUM_IG_STEPS}-step Gauss–Legendre quadrature. "
              f"The last column is the median over examples of ‖A₍{CAPTUM_IG_STEPS}₎ − A₍{FINE_IG_STEPS}₎‖ / ‖R‖, "
              f"Captum's NoiseTunnel(IG) with {CAPTUM_IG_STEPS} and {FINE_IG_STEPS} steps on the same noise "
              "(captum_ig_bias). Where it approaches a target, the ~ sample counts of Captum's IG rows, extrapolated "
              "with error ∝ n^(−1/2), are too small, and the ratios favour Captum.", "",
              "| workload | statistic | median relative stderr | Captum's quadrature error (IG) |", "|---|---|---:|---:|"]
    seen = set()
    for r in rows:
        if (r.workload, r.statistic) not in seen:
            seen.add((r.workload, r.statistic))
            bias = "" if r.captum_bias is None else f"{r.captum_bias:.4f}"
            lines.append(f"| {r.workload} | {r.statistic} | {r.reference_error:.4f} | {bias} |")
    return "\n".join(lines + [""])


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="markdown file to write (e.g. benchmarks/TIME_TO_ACCURACY.md)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the 10 %% targets only, half batches, short references and sweeps, 2 seeds")
    parser.add_argument("--workloads", default="cnn,resnet,mlp,transformer")
    parser.add_argument("--statistics", default=",".join(s.key for s in STATISTICS),
                        help="comma-separated: " + ", ".join(f"{s.key} ({s.name})" for s in STATISTICS))
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 4; quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 5; quick 2)")
    parser.add_argument("--sweep-seconds", type=float, default=None, help="time budget of one error sweep")
    parser.add_argument("--call-cap", type=float, default=None, help="seconds a timed call may take")
    parser.add_argument("--memory-cap-gb", type=float, default=2.0, help="activations of an all-at-once forward")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU (models and inputs moved there)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    args.command = command_line(argv)
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    quick = args.quick
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(
        seeds=args.seeds or (2 if quick else 4),
        sweep_seconds=args.sweep_seconds or (1.0 if quick else 25.0),
        call_cap=args.call_cap or (0.2 if quick else 5.0),
        memory_cap=args.memory_cap_gb * 2**30,
        repeats=args.repeats or (1 if quick else 5),
        warmup=1,
        max_samples=512 if quick else 16384,
        reference_divisor=16 if quick else 1,
    )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA GPU (torch {torch.__version__})")
    args.revision = noisegrad_revision()
    load, load_before, started = ForeignLoad(), os.getloadavg(), time.perf_counter()
    wanted_workloads = set(args.workloads.split(","))
    wanted_statistics = set(args.statistics.split(","))
    rows: List[Row] = []
    for workload in build_workloads(quick=False, device=args.device):
        if workload.name not in wanted_workloads:
            continue
        for statistic in STATISTICS:
            if statistic.key not in wanted_statistics:
                continue
            if quick:
                statistic = dataclasses.replace(statistic, tols=statistic.tols[:1])
            setting = make_setting(workload, statistic, budget, quick)
            rows += measure_rows(setting, budget, load)
    args.load = (load_before, os.getloadavg())
    publish(report(rows, args, budget, time.perf_counter() - started), args.out)


if __name__ == "__main__":
    main()
