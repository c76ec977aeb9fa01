"""benchmarks/bench_auto_phases.py: the phases it reports are the clock's, and the rest of the call is "other"."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
tta = pytest.importorskip("bench_time_to_accuracy")
bench = pytest.importorskip("bench_auto_phases")


def test_a_calls_phases_and_other_add_up_to_its_whole_time():
    clock = bench.Clock()

    def call():  # "statistics" and "checks" taken from inside, as the instrumented library adds them
        clock.seconds["statistics"] += 0.25
        clock.seconds["checks"] += 0.5
        clock.seconds["validation"] += 0.125  # a clock phase the table does not show: part of "other"

    times = bench.alternate({"noisegrad": call, "captum": lambda: None}, 3, clock, bench.SHOWN, "other")
    ng = times["noisegrad"]
    for rep in range(3):
        shown = sum(ng[phase][rep] for phase in bench.SHOWN)
        assert shown == 0.75 and ng["noise"][rep] == 0.0
        assert ng["other"][rep] == pytest.approx(ng["whole"][rep] - 0.75)  # the validation's 0.125 too
    assert len(times["captum"]["whole"]) == 3


def test_the_report_gives_captums_time_over_noisegrads_and_the_share_outside_the_wrapped_call():
    seconds = lambda value: [value] * 3  # noqa: E731
    times = {"noisegrad": {"whole": seconds(0.010), "noise": seconds(0.001), "wrapped call": seconds(0.006),
                           "statistics": seconds(0.001), "checks": seconds(0.001), "other": seconds(0.001)},
             "captum": {"whole": seconds(0.008)}}
    row = {"workload": "mlp", "statistic": "SmoothGrad, signed", "tol": 0.1, "batch": 64, "samples": 30.4,
           "captum_samples": 31, "times": times}
    report = bench.report([row], bench.argparse.Namespace(repeats=3), "cmd")
    assert "| mlp | SmoothGrad, signed | 10% | 64 | 30; 31 | 10.0 | 1.0 | 6.0 | 1.0 | 1.0 | 1.0 | 40 % | 8.0 | 0.80 |" in report


def test_a_quick_run_times_both_calls_on_a_tiny_workload():
    workload = next(w for w in tta.build_workloads(True) if w.name == "mlp")
    statistic = next(s for s in tta.STATISTICS if s.key == "sg-abs")
    row = bench.measure_row(workload, statistic, 0.1, repeats=1, clock=bench.Clock(), quick=True)
    assert row["captum_samples"] >= row["samples"] >= 16  # at least the first check; Captum as many, rounded up
    assert set(row["times"]) == {"noisegrad", "captum"} and all(t["whole"][0] > 0 for t in row["times"].values())
