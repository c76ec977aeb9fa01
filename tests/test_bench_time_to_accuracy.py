"""benchmarks/bench_time_to_accuracy.py: the rules that diagnose a row below the goal."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_time_to_accuracy")


def row(ng_samples: float, ng_error: float = 0.02, tol: float = 0.1, captum_needed: float = 10.0):
    """A SmoothGrad row whose timings are equal, so only the sample counts decide."""
    return bench.Row(
        workload="MLP", statistic="SmoothGrad", tol=tol, batch=8, captum_needed=captum_needed,
        captum_needed_examples=(captum_needed, captum_needed), captum_extrapolated=False, captum_chunk=8,
        ng_approach="auto", ng_samples=ng_samples, ng_samples_examples=(ng_samples, ng_samples), ng_error=ng_error,
        ng_extrapolated=False, times={"captum": [1.0], "noisegrad": [1.0]}, scale={"captum": 1.0, "noisegrad": 1.0},
        reps=(1, 1, 1), reference_error=0.0,
    )


def test_the_first_check_cause_is_found_only_where_auto_stopped_at_its_first_check():
    """noisegrad checks after 16 samples, then 18, 21, 24, 27, 31, ...: 31 samples are the sixth check, not the first
    (the rule said "first check" up to 34, the first check of the first run)."""
    assert "first check" in bench.causes(row(16))
    assert "first check" in bench.causes(row(17))  # the median of examples stopping at 16 and 18
    for later in (18, 21, 31):
        assert "first check" not in bench.causes(row(later)), later
    assert "first check" not in bench.causes(row(16, ng_error=0.095))  # at the target: not too early


def test_the_report_gives_the_call_cap_it_used_also_below_a_second():
    """--quick caps a timed call at 0.2 s; the report said "a call over 0 s"."""
    import argparse
    import dataclasses

    args = argparse.Namespace(command="bench", revision="git r", device="cpu", threads=1, load=((0.0,), (0.0,)),
                              quick=True)
    budget = bench.Budget(seeds=2, sweep_seconds=1.0, call_cap=0.2, memory_cap=2.0 * 2**30, repeats=1, warmup=1,
                          max_samples=512, reference_divisor=1)
    timed = dataclasses.replace(row(16), times={name: [1.0] for name in ("captum", "captum-best", "noisegrad")},
                                scale={name: 1.0 for name in ("captum", "captum-best", "noisegrad")})
    assert "(a call over 0.2 s, or an all-at-once forward over 2.0 GiB" in bench.report([timed], args, budget, 1.0)


def test_captum_ig_bias_compares_the_two_quadratures_on_the_same_noise():
    """On a linear model every quadrature is exact, so two runs differ only if their noise does: they must not.
    Where the integrand has a spike near α = 0 (a LayerNorm first, a zero baseline), 50 steps miss part of it."""
    import torch
    from captum.attr import IntegratedGradients
    from torch import nn

    torch.manual_seed(0)
    x, target = torch.randn(3, 5), torch.tensor([0, 1, 2])
    linear = nn.Linear(5, 3)
    reference = torch.ones(3, 5)
    assert bench.captum_ig_bias(linear, x, target, 0.5, reference, nt_samples=4) < 1e-6
    spiky = nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    far = 100 * x  # IG's mass below α ≈ 10⁻⁵, between the 50-step rule's nodes
    reference = IntegratedGradients(spiky).attribute(far, target=target, n_steps=bench.FINE_IG_STEPS)
    assert bench.captum_ig_bias(spiky, far, target, 0.5, reference, nt_samples=4) > 0.05
