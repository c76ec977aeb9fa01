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
    monkeypatch.setattr(subprocess, "run", worker)
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


def _fake_workers(monkeypatch, results):
    """subprocess.run answering each worker with the next (seconds, faults) of ``results[keep]``."""
    environments = []
    queues = {keep: iter(runs) for keep, runs in results.items()}

    def worker(command, env=None, **kwargs):
        if command[0] != sys.executable:
            return subprocess.CompletedProcess(command, 0, stdout="", stderr="")
        environments.append(env)
        seconds, faults = next(queues["MALLOC_TRIM_THRESHOLD_" in env])
        out = {"seconds": {n: seconds for n in bench.VARIANTS}, "faults": {n: faults for n in bench.VARIANTS}}
        return subprocess.CompletedProcess(command, 0, stdout="log line\n" + json.dumps(out) + "\n", stderr="")

    monkeypatch.setattr(subprocess, "run", worker)
    return environments


def test_the_table_takes_medians_within_and_over_the_pairs_and_keeps_the_defaults_apart(monkeypatch):
    # within a process: the median call (not the mean: 1, 2, 9 → 2); over the pairs: the median [min–max] of the
    # ratios, and each column its own process's numbers
    default = [([0.001, 0.002, 0.009], [500, 400, 900]), ([0.004, 0.004, 0.004], [300, 300, 300]),
               ([0.010, 0.010, 0.010], [700, 700, 100])]
    kept = [([0.001, 0.001, 0.001], [1, 2, 30]), ([0.002, 0.002, 0.002], [0, 0, 0]),
            ([0.009, 0.009, 0.009], [5, 5, 5])]
    _fake_workers(monkeypatch, {False: default, True: kept})
    args = bench.argparse.Namespace(pairs=3, repeats=3, warmup=0)
    result = bench.measure("cnn,Saliency", args)
    # ratios per pair: 1/2 = 0.5, 2/4 = 0.5, 9/10 = 0.9; default ms 2, 4, 10 (median 4), kept 1, 2, 9 (median 2)
    assert result["ratios"]["minimal"] == pytest.approx([0.5, 0.5, 0.9])
    report = bench.report({"cnn,Saliency": result}, args, "cmd", "git 0")
    # faults: medians per process 500, 300, 700 (median 500) → 2, 0, 5 (median 2)
    assert "| cnn | Saliency | minimal loop | 4.0 | 2.0 | 0.50 [0.50–0.90] | 500 → 2 |" in report
    assert "Median ratios over all rows and variants: 0.50–0.50." in report


def test_the_default_process_gets_none_of_the_parents_malloc_settings(monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1")  # also pins glibc's mmap threshold: not its default
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    runs = [([0.001], [0])] * 2
    environments = _fake_workers(monkeypatch, {False: runs, True: runs})
    bench.measure("cnn,Saliency", bench.argparse.Namespace(pairs=1, repeats=1, warmup=0))
    for env in environments:
        assert "MALLOC_TOP_PAD_" not in env and "GLIBC_TUNABLES" not in env


def test_a_worker_that_prints_no_result_is_reported_with_its_stderr(monkeypatch):
    def silent(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="Killed\n")

    monkeypatch.setattr(subprocess, "run", silent)
    with pytest.raises(SystemExit, match=r"printed no result[\s\S]*Killed"):
        bench.measure("cnn,Saliency", bench.argparse.Namespace(pairs=1, repeats=1, warmup=0))
