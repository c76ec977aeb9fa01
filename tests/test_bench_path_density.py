"""benchmarks/bench_path_density.py: the spread and agreement it reports, against hand computations."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_path_density")


def test_relative_sd_is_the_root_summed_variance_over_the_reference_norm():
    # two seeds, one example of two elements: variances (1-3)²/2 = 2 and (2-2)²/2 = 0; ‖reference‖ = 5
    estimates = torch.tensor([[[1.0, 2.0]], [[3.0, 2.0]]], dtype=torch.float64)
    reference = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(bench.relative_sd(estimates, reference),
                               torch.tensor([math.sqrt(2.0) / 5], dtype=torch.float64))


def test_largest_z_is_the_difference_of_means_over_its_standard_error():
    a = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=torch.float64)  # means 1, 1; variances 2, 0
    b = torch.tensor([[4.0, 1.0], [6.0, 1.0]], dtype=torch.float64)  # means 5, 1; variances 2, 0
    # element 0: |1 − 5| / sqrt(2/2 + 2/2) = 4 / √2; element 1: no difference and no spread, z = 0
    assert bench.largest_z(a, b) == pytest.approx(4 / math.sqrt(2))
