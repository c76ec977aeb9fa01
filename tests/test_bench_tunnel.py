"""benchmarks/bench_tunnel.py: what its worker processes hand back, and how a failing one is reported."""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_tunnel")


def test_a_failing_worker_process_is_reported_with_its_own_error(monkeypatch):
    # the worker's traceback is on its stderr, captured: it used to be dropped for "returned non-zero exit status 1"
    def failing(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="Traceback ...\nRuntimeError: no such layer\n")

    monkeypatch.setattr(bench.subprocess, "run", failing)
    args = bench.parse_args(["--quick", "--processes", "2"])
    with pytest.raises(SystemExit, match=r"worker process 1 of 2 \(mlp, Saliency\) failed with exit status 1:"
                                         r"[\s\S]*RuntimeError: no such layer"):
        bench.time_in_processes("mlp", "Saliency", args)


def test_the_workers_repetitions_are_pooled_with_their_process_number(monkeypatch):
    parts = iter(['{"times": {"a": [1.0, 2.0]}, "clean": [true, false]}',
                  '{"times": {"a": [3.0]}, "clean": [true]}'])

    def worker(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="some output\n" + next(parts) + "\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", worker)
    pooled = bench.time_in_processes("mlp", "Saliency", bench.parse_args(["--quick", "--processes", "2"]))
    assert pooled.times == {"a": [1.0, 2.0, 3.0]} and pooled.clean == [True, False, True]
    assert pooled.process == [0, 0, 1]
