"""benchmarks/bench_layout.py: per-repetition ratios, channels-last over contiguous, and the library's choice timed
against contiguous copies forced."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_layout")


def test_a_row_gives_the_median_and_range_of_the_per_repetition_ratios():
    seconds = {"contiguous": [1.0, 2.0, 4.0], "channels-last": [0.5, 2.0, 1.0]}
    row = bench.row("chunk", "cnn", "float32", 128, seconds)
    assert row["ratios"] == [0.5, 1.0, 0.25] and row["ms"] == {"contiguous": 2000.0, "channels-last": 1000.0}
    report = bench.report([row], argparse.Namespace(repeats=3, warmup=1), "cmd")
    assert "| chunk | cnn | float32 | 128 | 2000.0 | 1000.0 | 0.50 [0.25–1.00] |" in report


def test_the_chunk_calls_hand_the_model_each_layout_and_the_same_gradient():
    torch.manual_seed(0)
    seen = []
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous()))
    calls = bench.chunk_calls(model, torch.rand(6, 3, 8, 8), torch.arange(6) % 5)
    contiguous, channels_last = calls["contiguous"](), calls["channels-last"]()
    assert seen == [True, False]
    torch.testing.assert_close(contiguous, channels_last, rtol=1e-5, atol=1e-6)


def test_alternate_times_every_call_once_per_repetition_after_its_warm_up():
    counts = {"contiguous": 0, "channels-last": 0}
    calls = {name: (lambda name=name: counts.__setitem__(name, counts[name] + 1)) for name in counts}
    seconds = bench.alternate(calls, repeats=3, warmup=2)
    assert counts == {"contiguous": 5, "channels-last": 5}
    assert {name: len(times) for name, times in seconds.items()} == {"contiguous": 3, "channels-last": 3}
