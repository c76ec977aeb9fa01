"""benchmarks/bench_auto_chunk_growth.py: both variants stop at the same counts; the report gives growing / fixed."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
tta = pytest.importorskip("bench_time_to_accuracy")
bench = pytest.importorskip("bench_auto_chunk_growth")


def test_a_quick_row_runs_both_variants_and_leaves_the_library_as_it_was():
    workload = next(w for w in tta.build_workloads(True) if w.name == "mlp")
    statistic = next(s for s in tta.STATISTICS if s.key == "sg")
    row = bench.measure_row(workload, statistic, 0.05, pairs=1, quick=True)  # raises if the stops differ
    assert row["samples"] >= 16 and len(row["ratios"]) == 1
    assert 1 <= row["chunks"]["growing"] <= row["chunks"]["fixed"]
    assert bench.ChunkPlan.examples_left is bench.GROWING and bench.ChunkPlan.next.__name__ == "next"


def test_the_report_gives_the_ratio_of_the_pairs():
    row = {"workload": "resnet", "statistic": "SmoothGrad, signed", "tol": 0.05, "batch": 4, "samples": 212.4,
           "times": {"growing": [0.8, 0.9, 1.0], "fixed": [1.0, 1.0, 1.0]}, "ratios": [0.8, 0.9, 1.0],
           "chunks": {"growing": 20.0, "fixed": 54.5}}
    report = bench.report([row], bench.argparse.Namespace(pairs=3), "cmd")
    assert "| resnet | SmoothGrad, signed | 5% | 4 | 212 | 20.0; 54.5 | 900.0 | 1000.0 | 0.900 [0.80–1.00] |" in report
