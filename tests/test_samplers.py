"""Noise samplers: standard normal, chunk-invariant, unbiased, and each with its own structure."""

import math

import pytest
import torch
from captum.attr import Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import make_mlp
from noisegrad import NoiseTunnel, SampleSeeds, plan_chunks
from noisegrad.sampling.samplers import AUTO_BLOCK, SAMPLERS, NoiseSampler


def draw(kind, nt_samples, shape=(3, 4), seed=0, chunk=None, replicates=4):
    sampler = NoiseSampler(kind, SampleSeeds(seed), nt_samples, replicates)
    out = torch.empty((nt_samples,) + shape, dtype=torch.float64)
    for ids in plan_chunks(nt_samples, chunk):
        sampler.fill(out[ids.start : ids.stop], ids, torch.arange(out.shape[1]), input_index=0)
    return out


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(SAMPLERS), nt_samples=st.integers(1, 20), chunk=st.integers(1, 20), seed=st.integers(0, 99))
def test_draws_do_not_depend_on_the_chunk_size(kind, nt_samples, chunk, seed):
    assert torch.equal(draw(kind, nt_samples, seed=seed, chunk=chunk), draw(kind, nt_samples, seed=seed))


@pytest.mark.parametrize("kind", SAMPLERS)
def test_every_sampler_draws_standard_normal_values(kind):
    values = draw(kind, 64, shape=(8, 50), seed=1).flatten()
    assert bool(torch.isfinite(values).all())
    n = values.numel()
    assert abs(float(values.mean())) < 4 / math.sqrt(n)
    assert abs(float(values.std()) - 1) < 0.03
    # The fraction below -1 is Φ(-1) = 0.1587 for a standard normal.
    assert abs(float((values < -1).double().mean()) - 0.1587) < 0.02


def test_antithetic_pairs_are_negatives_and_an_odd_last_sample_is_a_plain_draw():
    values = draw("antithetic", 5)
    assert torch.equal(values[1], -values[0]) and torch.equal(values[3], -values[2])
    assert not torch.equal(values[4], -values[3])


@pytest.mark.parametrize("nt_samples, replicates", [(8, 4), (13, 4), (1024, 1), (1031, 1)])
def test_latin_hypercube_uses_every_stratum_once_per_replicate_and_dimension(nt_samples, replicates):
    """Up to 1024 strata the stratum arithmetic runs in float32, beyond in int64."""
    values = draw("lhs", nt_samples, shape=(2, 6), replicates=replicates, chunk=500)
    uniforms = torch.special.ndtr(values)
    for r in range(replicates):
        rows = uniforms[r::replicates]
        m = rows.shape[0]
        strata = (rows * m).floor().long().sort(dim=0).values
        expected = torch.arange(m).view(m, 1, 1).expand_as(strata)
        assert torch.equal(strata, expected)


def draw_blocks(nt_samples, example_ids, shape=(6,), seed=0, chunk=None, dtype=torch.float64):
    """LHS as nt_samples="auto" draws it: independent hypercubes of AUTO_BLOCK samples."""
    sampler = NoiseSampler("lhs", SampleSeeds(seed), 10**6, blocks=True)  # nt_samples does not matter
    out = torch.empty((nt_samples, len(example_ids)) + shape, dtype=dtype)
    for ids in plan_chunks(nt_samples, chunk):
        sampler.fill(out[ids.start : ids.stop], ids, torch.tensor(example_ids), input_index=0)
    return out


def test_auto_hypercube_blocks_use_every_stratum_once_per_block_example_and_dimension():
    size = AUTO_BLOCK
    values = draw_blocks(5 * size + 2, [0, 1, 2], shape=(2, 7), chunk=3)  # chunks across block boundaries
    strata = (torch.special.ndtr(values) * size).floor().long()
    for block in range(5):
        rows = strata[block * size : (block + 1) * size].sort(dim=0).values
        assert torch.equal(rows, torch.arange(size).view(size, 1, 1, 1).expand_as(rows)), block
    last = strata[5 * size :]  # a partial block: distinct strata
    assert bool((last[0] != last[1]).all())
    # the blocks are randomised independently: not the same permutation in every block
    assert not torch.equal(strata[:size], strata[size : 2 * size])


def test_auto_hypercube_blocks_draw_every_affine_permutation_and_uniform_jitter_equally_often():
    """Each block's order of strata in a dimension is one of the B·B/2 affine permutations (a·i + b) mod B, all
    equally likely (a odd, b any stratum, from whole bits of its word), and the position within the stratum is
    uniform: a chi-squared test of both against the counts expected."""
    size = AUTO_BLOCK
    values = draw_blocks(64 * size, list(range(8)), shape=(40,), seed=5)  # 64 blocks × 8 examples × 40 elements
    u = torch.special.ndtr(values) * size
    strata = u.floor().long().view(64, size, 8, 40)
    first, step = strata[:, 0], (strata[:, 1] - strata[:, 0]) % size  # b and a of each block's permutation
    expected = (first.unsqueeze(1) + step.unsqueeze(1) * torch.arange(size).view(1, size, 1, 1)) % size
    assert torch.equal(strata, expected)  # affine, with an odd multiplier:
    assert bool((step % 2 == 1).all())
    counts = torch.bincount((first * size + step).flatten(), minlength=size * size)[1::2].double()  # odd steps only
    chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
    assert chi2 < 24.3, counts  # 7 degrees of freedom: p = 0.001
    within = torch.histc((u - u.floor()).flatten().double(), bins=16, min=0, max=1)
    chi2 = float(((within - within.mean()) ** 2 / within.mean()).sum())
    assert chi2 < 37.7, within  # 15 degrees of freedom: p = 0.001


@settings(max_examples=30, deadline=None)
@given(nt_samples=st.integers(1, 30), chunk=st.integers(1, 30), seed=st.integers(0, 99),
       subset=st.lists(st.integers(0, 4), min_size=1, max_size=5, unique=True))
def test_auto_hypercube_draws_do_not_depend_on_the_chunk_or_the_other_examples(nt_samples, chunk, seed, subset):
    whole = draw_blocks(nt_samples, list(range(5)), seed=seed)
    part = draw_blocks(nt_samples, subset, seed=seed, chunk=chunk)
    assert torch.equal(part, whole[:, subset])


def test_auto_hypercube_draws_are_standard_normal():
    values = draw_blocks(64, list(range(8)), shape=(50,), seed=1).flatten()
    n = values.numel()
    assert abs(float(values.mean())) < 4 / math.sqrt(n)
    assert abs(float(values.std()) - 1) < 0.03
    assert abs(float((values < -1).double().mean()) - 0.1587) < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_latin_hypercube_strata_stay_exact_with_thousands_of_samples(dtype):
    """4099 strata: the stratum arithmetic runs in int64 and must survive float32 noise."""
    sampler = NoiseSampler("lhs", SampleSeeds(3), 4099, replicates=1)
    out = torch.empty((4099, 1, 3), dtype=dtype)
    for ids in plan_chunks(4099, 1000):
        sampler.fill(out[ids.start : ids.stop], ids, torch.arange(out.shape[1]), input_index=0)
    scaled = torch.special.ndtr(out.double()) * 4099  # stratum + position inside it
    within = scaled.sort(dim=0).values - torch.arange(4099, dtype=torch.float64).view(-1, 1, 1)
    assert float(within.min()) > -0.01 and float(within.max()) < 1.01  # every stratum once


def test_qmc_replicates_are_digitally_shifted_sobol_points():
    """Un-shifting one replicate with its own first point recovers the Sobol sequence's leading bits."""
    values = draw("qmc", 16, shape=(1, 3), replicates=2)
    digits = (torch.special.ndtr(values[0::2]) * 2**30).floor().long()  # replicate 0: Sobol points 0..7
    unshifted = torch.bitwise_xor(digits, digits[0:1])  # point 0 is all zeros, so its digits are the shift
    sobol = (torch.quasirandom.SobolEngine(3, scramble=False).draw(8, dtype=torch.float64) * 2**30).long()
    # ndtri/ndtr round-trips lose the lowest bits only: compare the top 20.
    assert torch.equal(unshifted.view(8, 3) >> 10, sobol >> 10)


def test_qmc_works_beyond_the_sobol_engines_dimensions():
    dims = torch.quasirandom.SobolEngine.MAXDIM + 7
    values = draw("qmc", 2, shape=(1, dims), replicates=1)
    assert values.shape == (2, 1, dims) and bool(torch.isfinite(values).all())


class Square(nn.Module):
    """f(x) = Σ x², whose gradient 2(x + ε) is linear in the noise."""

    def forward(self, x):
        return (x**2).sum(dim=1, keepdim=True)


def test_antithetic_smoothgrad_of_a_linear_gradient_is_exact():
    x = torch.randn(3, 4, dtype=torch.float64)
    smooth = NoiseTunnel(Saliency(Square())).attribute(
        x, nt_samples=6, stdevs=0.5, sampler="antithetic", abs=False, seed=0
    )
    torch.testing.assert_close(smooth, 2 * x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", SAMPLERS)
def test_every_sampler_is_unbiased_for_smoothgrad(kind):
    """The mean over seeds approaches a long i.i.d. reference within its Monte-Carlo error."""
    model = make_mlp(seed=3)
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    nt = NoiseTunnel(Saliency(model))
    common = dict(stdevs=0.8, target=1, abs=False)
    reference = nt.attribute(x, nt_samples=20000, nt_samples_batch_size=5000, seed=12345, **common)
    estimates = torch.stack([nt.attribute(x, nt_samples=8, sampler=kind, seed=s, **common) for s in range(200)])
    mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    reference_stderr = nt.attribute(x, nt_type="vargrad", nt_samples=20000, nt_samples_batch_size=5000,
                                    seed=12345, **common).sqrt() / math.sqrt(20000)
    z = (mean - reference) / (stderr**2 + reference_stderr**2).sqrt()
    assert float(z.abs().max()) < 4.5


@pytest.mark.parametrize("kind", ["antithetic", "qmc", "lhs"])
def test_variance_reduced_samplers_beat_iid_on_a_smooth_model(kind):
    model = make_mlp(seed=4)
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    nt = NoiseTunnel(Saliency(model))
    common = dict(stdevs=0.3, target=0, abs=False)
    reference = nt.attribute(x, nt_samples=20000, nt_samples_batch_size=5000, seed=999, **common)

    def error(sampler):
        runs = [nt.attribute(x, nt_samples=16, sampler=sampler, seed=s, **common) for s in range(40)]
        return sum(float((r - reference).norm()) for r in runs) / len(runs)

    assert error(kind) < 0.8 * error("iid")


def test_an_unknown_sampler_is_rejected_before_any_forward_pass():
    with pytest.raises(ValueError, match=r"sampler must be one of \('iid', 'antithetic', 'qmc', 'lhs'\), got 'sobol'"):
        NoiseTunnel(Saliency(make_mlp())).attribute(torch.zeros(2, 5, dtype=torch.float64), target=0, sampler="sobol")


def test_auto_hypercube_blocks_are_randomised_a_slice_at_a_time(monkeypatch):
    """A chunk of many blocks of a large input is filled a slice of blocks at a time, so the per-block
    randomisation (a word, a permutation and a phase per block, example and element) stays bounded: the same
    draws, at most _BLOCK_SLICE_ELEMENTS words per slice."""
    import noisegrad.sampling.samplers as samplers

    whole = draw_blocks(4 * AUTO_BLOCK + 3, [0, 1], shape=(3, 5), chunk=None)
    sizes = []
    original = samplers.random_bits

    def recording(keys, shape, out):
        sizes.append(out.numel())
        return original(keys, shape, out)

    monkeypatch.setattr(samplers, "random_bits", recording)
    monkeypatch.setattr(samplers, "_BLOCK_SLICE_ELEMENTS", 2 * 2 * 15)  # two blocks' randomisation per slice
    for chunk in (None, 3, 7):
        sizes.clear()
        assert torch.equal(draw_blocks(4 * AUTO_BLOCK + 3, [0, 1], shape=(3, 5), chunk=chunk), whole), chunk
        assert max(sizes) <= 2 * 2 * 15, (chunk, sizes)


@pytest.mark.parametrize("size", [2, 8, 16])
def test_other_block_sizes_draw_every_affine_permutation_too(monkeypatch, size):
    """bench_auto_lhs.py measures other block sizes: each takes its permutation from its own bits (an 8-sample block
    read with a 4-sample block's split would tie its multiplier to its offset)."""
    import noisegrad.sampling.samplers as samplers

    monkeypatch.setattr(samplers, "AUTO_BLOCK", size)
    sampler = NoiseSampler("lhs", SampleSeeds(2), 10**6, blocks=True)
    values = torch.empty(400 * size, 4, 10)
    sampler.fill(values, range(0, 400 * size), torch.arange(4), input_index=0)
    strata = (torch.special.ndtr(values) * size).floor().long().view(400, size, 4, 10)
    first, step = strata[:, 0], (strata[:, 1] - strata[:, 0]) % size
    assert bool((step % 2 == 1).all())
    pairs = torch.bincount((first * size + step).flatten(), minlength=size * size)[1::2].double()
    assert int((pairs > 0).sum()) == size * size // 2  # every (b, a) pair occurs
    chi2 = float(((pairs - pairs.mean()) ** 2 / pairs.mean()).sum())  # 16000 words over size²/2 equally likely pairs
    assert chi2 < {2: 10.83, 8: 61.10, 16: 181.99}[size], pairs  # p = 0.001 at size²/2 − 1 degrees of freedom


def test_a_block_that_is_not_a_power_of_two_is_refused(monkeypatch):
    import noisegrad.sampling.samplers as samplers

    monkeypatch.setattr(samplers, "AUTO_BLOCK", 6)
    sampler = NoiseSampler("lhs", SampleSeeds(2), 10**6, blocks=True)
    with pytest.raises(ValueError, match="power of 2 up to 16 samples, got 6"):
        sampler.fill(torch.empty(6, 1, 3), range(0, 6), torch.arange(1), input_index=0)
