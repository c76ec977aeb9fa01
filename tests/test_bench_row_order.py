"""benchmarks/bench_row_order.py: both orders hold the same noisy rows, laid out as Captum's and as noisegrad's."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_row_order")


def test_example_major_repeats_each_example_and_sample_major_is_the_same_rows_copy_by_copy():
    x = torch.arange(3.0).view(3, 1) * 100
    rows = bench.rows_in_both_orders(x, 1.0, torch.Generator().manual_seed(0))
    k, batch = bench.COPIES, 3
    example_major, sample_major = rows["example-major"], rows["sample-major"]
    for i in range(batch):
        for j in range(k):
            # Captum's row i*k + j and noisegrad's row j*batch + i are example i's copy j
            assert torch.equal(example_major[i * k + j], sample_major[j * batch + i])
            assert abs(float(example_major[i * k + j]) - 100 * i) < 10
    assert sample_major.is_contiguous()
