"""benchmarks/bench_allocator.py: which environment each process gets, and the ratio a pair of processes gives."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_allocator")


def test_a_pair_gives_the_kept_processs_median_call_over_the_default_processs(monkeypatch):
    # per variant: default calls of 10, 30, 20 ms (median 20), kept 9, 11, 10 (median 10): ratio 0.5
    default = {name: [0.010, 0.030, 0.020] for name in bench.VARIANTS}
    kept = {name: [0.009, 0.011, 0.010] for name in bench.VARIANTS}
    faults = {name: [100, 100, 100] for name in bench.VARIANTS}
    environments = []

    def worker(command, env=None, **kwargs):
        if command[0] != sys.executable:  # the report's lscpu and git
            return subprocess.CompletedProcess(command, 0, stdout="", stderr="")
        environments.append(env)
        keep = env.get("MALLOC_TRIM_THRESHOLD_") is not None
        out = {"seconds": kept if keep else default, "faults": faults}
        return subprocess.CompletedProcess(command, 0, stdout=json.dumps(out) + "\n", stderr="")

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1")  # the parent's setting never reaches a default process
    monkeypatch.setattr(bench.subprocess, "run", worker)
    args = bench.argparse.Namespace(pairs=2, repeats=3, warmup=0)
    result = bench.measure("mlp,Saliency", args)
    assert result["ratios"]["captum"] == pytest.approx([0.5, 0.5])
    kept_envs = [e for e in environments if "MALLOC_TRIM_THRESHOLD_" in e]
    default_envs = [e for e in environments if "MALLOC_TRIM_THRESHOLD_" not in e]
    assert len(kept_envs) == len(default_envs) == 2
    assert all(e["MALLOC_MMAP_THRESHOLD_"] == str(4 * 2**30) for e in kept_envs)
    assert all("MALLOC_MMAP_THRESHOLD_" not in e for e in default_envs)
    # the order alternates from pair to pair: default first, then kept first
    assert ["MALLOC_TRIM_THRESHOLD_" in e for e in environments] == [False, True, True, False]
    report = bench.report({"mlp,Saliency": result}, args, "cmd", "git 0")
    assert "| mlp | Saliency | Captum | 20.0 | 10.0 | 0.50 [0.50–0.50] | 100 → 100 |" in report
