"""Streaming statistics: equal to a float64 two-pass computation, whatever the chunking."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisegrad import Moments
from noisegrad.stats.smoothing import smooth


def two_pass(samples: torch.Tensor):
    """Reference: float64 mean, then float64 mean of squared deviations (dim 1 = samples)."""
    s = samples.double()
    mean = s.mean(dim=1)
    return mean, ((s - mean.unsqueeze(1)) ** 2).mean(dim=1)


def rel_l2(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 63), unique=True, max_size=6),
    offset=st.sampled_from([0.0, 1e2, 1e4]),
    seed=st.integers(0, 2**31 - 1),
)
def test_chunked_moments_equal_a_float64_two_pass_for_any_chunking(cuts, offset, seed):
    generator = torch.Generator().manual_seed(seed)
    samples = (offset + torch.randn(3, 64, 5, generator=generator)).float()
    edges = [0, *sorted(cuts), 64]
    moments = Moments()
    for start, stop in zip(edges, edges[1:]):
        moments.update(samples[:, start:stop])
    mean, var = two_pass(samples)
    assert moments.count == 64
    assert rel_l2(moments.mean, mean) < 1e-6
    assert rel_l2(moments.variance(), var) < 1e-5
    assert bool((moments.variance() >= 0).all())


def test_merge_of_two_accumulators_equals_one_that_saw_everything():
    samples = torch.randn(2, 30, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    left, right, whole = Moments(), Moments(), Moments()
    left.update(samples[:, :7])
    right.update(samples[:, 7:19])
    right.update(samples[:, 19:])
    whole.update(samples)
    left.merge(right)
    assert left.count == whole.count == 30
    torch.testing.assert_close(left.mean, whole.mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(left.variance(), whole.variance(), rtol=1e-12, atol=0)


def test_vargrad_of_nearly_constant_attributions_is_never_negative_and_accurate():
    """The regime where E[a²] − E[a]² in float32 fails: tiny spread around a large mean."""
    generator = torch.Generator().manual_seed(1)
    samples = (3.0 + 1e-4 * torch.randn(4, 48, 100, generator=generator)).float()
    moments = Moments()
    for start in range(0, 48, 5):
        moments.update(samples[:, start : start + 5])
    _, var = two_pass(samples)
    naive = (samples.double() ** 2).mean(1).float() - samples.mean(1) ** 2
    assert bool((naive < 0).any()), "the test's regime should break the naive formula"
    vargrad = smooth(moments, "vargrad")
    assert bool((vargrad >= 0).all())
    assert rel_l2(vargrad, var) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_chunks_are_reduced_in_float32_or_wider(dtype):
    samples = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(2)).to(dtype)
    moments = Moments()
    for start in range(0, 40, 8):
        moments.update(samples[:, start : start + 8])
    mean, var = two_pass(samples)
    assert moments.mean.dtype == torch.float64 and moments.m2.dtype == torch.float64
    assert rel_l2(moments.mean, mean) < 1e-6
    assert rel_l2(moments.variance(), var) < 1e-6


def test_mean_only_accumulator_computes_no_second_moment():
    moments = Moments(track_m2=False)
    moments.update(torch.ones(2, 3, 4))
    assert moments.m2 is None
    torch.testing.assert_close(moments.mean, torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="track_m2"):
        moments.variance()


def test_smoothgrad_sq_is_the_mean_of_squares():
    samples = torch.randn(3, 9, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    moments = Moments()
    moments.update(samples[:, :4])
    moments.update(samples[:, 4:])
    torch.testing.assert_close(smooth(moments, "smoothgrad_sq"), (samples**2).mean(1), rtol=1e-12, atol=0)
