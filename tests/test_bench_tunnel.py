"""benchmarks/bench_tunnel.py: what its worker processes hand back, and how a failing one is reported."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_tunnel")


@pytest.fixture(autouse=True)
def _glibcs_default_allocator(monkeypatch):
    """The suite may run in a shell that exported the README's allocator tip: each test sets what it needs."""
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                 "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)


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


def test_the_interval_resamples_processes_and_the_table_says_how_many_gave_repetitions():
    # one slow process among fast ones: resampling processes widens the interval beyond the repetitions' own
    ratios_by_process = [[1.0, 1.01, 0.99, 1.0]] * 3 + [[1.3, 1.31, 1.29, 1.3]]
    numerator = [r for part in ratios_by_process for r in part]
    processes = [i for i, part in enumerate(ratios_by_process) for _ in part]
    flat = bench.ratio_stats(numerator, [1.0] * len(numerator))
    clustered = bench.ratio_stats(numerator, [1.0] * len(numerator), processes)
    assert flat[0] == clustered[0] and clustered[4] - clustered[3] > flat[4] - flat[3]
    timings = bench.Timings({"a": numerator}, [p != 3 for p in processes], processes)
    assert set(timings.used_processes()) == {0, 1, 2}  # the repetitions of process 3 were all disturbed
    stats = (1.0, 1.0, 1.0, 1.0, 1.0)
    row = {"workload": "mlp", "method": "Saliency", "batch": 4, "reps": (12, 12, 16), "processes": 3,
           "times": {k: [0.01] for k in ("captum", "noisegrad", "unseeded", "minimal")},
           "peaks": {k: 1 for k in ("captum", "noisegrad", "minimal")},
           "vs_captum": stats, "vs_minimal": stats, "unseeded_vs_minimal": stats}
    time_lines, _ = bench.build_rows([row])
    assert "| 12 in 3 processes |" in time_lines[-1]


def _captured_worker_environments(monkeypatch, argv, environ):
    args = bench.parse_args(argv)  # before the parent's environment is set: parse_args refuses some of it
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    seen = []

    def worker(command, env=None, **kwargs):
        seen.append((command, env))
        return subprocess.CompletedProcess(command, 0, stdout='{"times": {"a": [1.0]}, "clean": [true]}\n', stderr="")

    monkeypatch.setattr(bench.subprocess, "run", worker)
    bench.time_in_processes("mlp", "Saliency", args)
    return seen


def test_keep_freed_memory_starts_the_workers_with_both_glibc_thresholds(monkeypatch):
    # one of the two alone is worse than neither (MALLOC_TRIM_THRESHOLD_ alone pins the mmap threshold at 128 KiB)
    seen = _captured_worker_environments(monkeypatch, ["--quick", "--processes", "2", "--keep-freed-memory"], {})
    assert len(seen) == 2
    for _, env in seen:
        assert env["MALLOC_MMAP_THRESHOLD_"] == env["MALLOC_TRIM_THRESHOLD_"] == str(4 * 2**30)


def test_without_keep_freed_memory_the_workers_get_glibcs_defaults_whatever_the_parent_has(monkeypatch):
    seen = _captured_worker_environments(monkeypatch, ["--quick", "--processes", "2"],
                                         {"MALLOC_TRIM_THRESHOLD_": "1", "SOMETHING_ELSE": "kept"})
    for _, env in seen:
        assert "MALLOC_TRIM_THRESHOLD_" not in env and "MALLOC_MMAP_THRESHOLD_" not in env
        assert env["SOMETHING_ELSE"] == "kept"


def test_the_workers_draw_the_noise_sigma_they_are_given(monkeypatch):
    seen = _captured_worker_environments(monkeypatch, ["--quick", "--processes", "1", "--keep-freed-memory",
                                                       "--stdevs", "1.0"], {})
    command = seen[0][0]
    assert bench.parse_args(command[2:]).stdevs == 1.0


def test_the_printed_command_carries_glibcs_thresholds_when_they_were_set(monkeypatch):
    monkeypatch.setattr(bench.sys, "argv", ["benchmarks/bench_row_order.py", "--out", "x.md"])
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert bench.command_line() == "python benchmarks/bench_row_order.py --out x.md"
    for name, value in bench.KEEP_FREED_MEMORY.items():
        monkeypatch.setenv(name, value)
    assert bench.command_line() == ("MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 "
                                    "python benchmarks/bench_row_order.py --out x.md")


def test_a_default_worker_gets_none_of_glibcs_other_malloc_settings_either(monkeypatch):
    # any of the four (or their GLIBC_TUNABLES names) also pins the mmap threshold: not glibc's default any more
    seen = _captured_worker_environments(monkeypatch, ["--quick", "--processes", "2"], {
        "MALLOC_TOP_PAD_": "1", "MALLOC_MMAP_MAX_": "0",
        "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.rtld.nns=2:glibc.malloc.mmap_threshold=9"})
    for _, env in seen:
        assert "MALLOC_TOP_PAD_" not in env and "MALLOC_MMAP_MAX_" not in env
        assert env["GLIBC_TUNABLES"] == "glibc.rtld.nns=2"


def test_the_kept_workers_get_the_two_thresholds_and_nothing_else_of_the_parents_allocator(monkeypatch):
    seen = _captured_worker_environments(monkeypatch, ["--quick", "--processes", "1", "--keep-freed-memory"],
                                         {"MALLOC_TOP_PAD_": "1", "GLIBC_TUNABLES": "glibc.malloc.top_pad=1"})
    env = seen[0][1]
    assert "MALLOC_TOP_PAD_" not in env and "GLIBC_TUNABLES" not in env
    assert all(env[k] == v for k, v in bench.KEEP_FREED_MEMORY.items())


@pytest.mark.parametrize("environ, expected", [
    ({}, "no (glibc's default)"),
    (bench.KEEP_FREED_MEMORY, "yes"),
    ({"MALLOC_TRIM_THRESHOLD_": "4294967296"}, "no, and not glibc's default either: MALLOC_TRIM_THRESHOLD_=4294967296"),
    ({**bench.KEEP_FREED_MEMORY, "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
     "no, and not glibc's default either: GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072 "
     "MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296"),
])
def test_the_reports_say_whether_glibc_keeps_freed_memory_and_never_call_a_partial_setting_the_default(
        environ, expected):
    # MALLOC_TRIM_THRESHOLD_ alone (the worst case measured) used to be reported as "no (its default)"
    assert bench.freed_memory_kept(environ) == expected


def test_timing_workers_of_a_parent_with_glibc_settings_is_refused_without_keep_freed_memory(monkeypatch):
    # the workers start with glibc's default, while the printed command showed the parent's settings
    for name, value in bench.KEEP_FREED_MEMORY.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        bench.parse_args(["--processes", "2"])
    assert bench.parse_args(["--processes", "2", "--keep-freed-memory"]).keep_freed_memory
    assert bench.parse_args(["--processes", "1"]).processes == 1  # timed in this process, as its command says


def _means(reference, other, variance):
    variants = {name: (lambda t=t: t) for name, t in
                (("captum", reference), ("noisegrad", other), ("unseeded", other), ("minimal", other))}
    return variants, lambda: variance


def test_the_sanity_check_allows_the_difference_two_independent_runs_have_at_any_noise_level():
    # 16 samples of per-element variance 0.5: two independent means differ by sqrt(2 * 100 * 0.5 / 16) = 2.5 in L2;
    # a difference of 3.0 (30 % of the mean's norm 10, beyond the old fixed 20 %) is Monte Carlo noise at a large σ
    reference = torch.ones(100)
    variants, variance = _means(reference, reference + 0.3, torch.full((100,), 0.5))
    result = bench.sanity_check(variants, variance, samples=16)
    assert result["ok"]
    assert result["rel"]["noisegrad"] == pytest.approx(0.3)
    assert result["noise"] == pytest.approx(0.25)


def test_the_sanity_check_catches_a_bias_far_beyond_the_monte_carlo_noise():
    # variance 1e-4 over 16 samples: independent means differ by 0.035 in L2; a bias of 1.0 (10 %) is no noise
    reference = torch.ones(100)
    variants, variance = _means(reference, reference + 0.1, torch.full((100,), 1e-4))
    assert not bench.sanity_check(variants, variance, samples=16)["ok"]


def test_the_printed_command_carries_every_malloc_setting_of_the_process(monkeypatch):
    # MALLOC_TOP_PAD_ or a glibc.malloc tunable also moves glibc off its default: the command must show it
    monkeypatch.setattr(bench.sys, "argv", ["benchmarks/bench_row_order.py"])
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    assert bench.command_line() == ("MALLOC_TOP_PAD_=1 GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072 "
                                    "python benchmarks/bench_row_order.py")


def test_a_worker_process_that_prints_no_result_is_reported_with_its_stderr(monkeypatch):
    # it raised a bare IndexError from the empty output (bench_allocator's workers already said so)
    def silent(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="Killed\n")

    monkeypatch.setattr(bench.subprocess, "run", silent)
    args = bench.parse_args(["--quick", "--processes", "2"])
    with pytest.raises(SystemExit, match=r"worker process 1 of 2 \(mlp, Saliency\) printed no result[\s\S]*Killed"):
        bench.time_in_processes("mlp", "Saliency", args)
