"""Seeds: noise independent of chunking, bit-identical repeats, and the caller's RNG left alone."""

import random

import numpy as np
import torch
from captum.attr import GradientShap, IntegratedGradients, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_cnn, make_mlp
from noisegrad import NoiseTunnel, SampleSeeds, plan_chunks
from noisegrad.perturb.inputs import noisy_copies

MODEL = make_cnn(torch.float32, seed=5)
X = torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(5))


@settings(max_examples=25, deadline=None)
@given(nt_samples=st.integers(1, 24), batch_size=st.integers(1, 24), seed=st.integers(0, 2**63))
def test_noise_of_each_sample_is_bit_identical_for_any_chunk_size(nt_samples, batch_size, seed):
    x, sigma, seeds = X, torch.tensor(0.3), SampleSeeds(seed)
    whole = noisy_copies(x, sigma, range(nt_samples), seeds, 0)
    pieces = [noisy_copies(x, sigma, ids, seeds, 0) for ids in plan_chunks(nt_samples, batch_size)]
    assert torch.equal(torch.cat(pieces), whole)


@settings(max_examples=20, deadline=None)
@given(
    nt_type=st.sampled_from(["smoothgrad", "smoothgrad_sq", "vargrad"]),
    batch_size=st.integers(1, 16),
    seed=st.integers(0, 2**32),
)
def test_results_do_not_depend_on_the_chunk_size_beyond_rounding(nt_type, batch_size, seed):
    nt = NoiseTunnel(Saliency(MODEL))
    common = dict(nt_type=nt_type, nt_samples=16, stdevs=0.2, target=1, abs=False, seed=seed)
    one_chunk = nt.attribute(X, nt_samples_batch_size=None, **common)
    chunked = nt.attribute(X, nt_samples_batch_size=batch_size, **common)
    err = float((chunked.double() - one_chunk.double()).norm() / one_chunk.double().norm())
    assert err <= 1e-6


def test_same_seed_and_chunking_is_bit_identical_and_another_seed_is_not():
    nt = NoiseTunnel(IntegratedGradients(make_mlp(torch.float32)))
    x = torch.randn(3, 5)
    run = lambda seed: nt.attribute(x, nt_samples=7, nt_samples_batch_size=3, stdevs=0.3, target=1, n_steps=4, seed=seed)
    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


def test_a_generator_is_advanced_like_a_torch_draw_and_reproduces_from_its_state():
    nt = NoiseTunnel(Saliency(MODEL))
    generator = torch.Generator().manual_seed(7)
    first = nt.attribute(X, nt_samples=4, stdevs=0.2, target=0, generator=generator)
    second = nt.attribute(X, nt_samples=4, stdevs=0.2, target=0, generator=generator)
    assert not torch.equal(first, second)  # the generator moved on
    again = nt.attribute(X, nt_samples=4, stdevs=0.2, target=0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)


def global_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def assert_states_equal(a, b):
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_a_seeded_call_leaves_every_global_rng_untouched_even_if_the_method_draws_from_them():
    nt = NoiseTunnel(GradientShap(make_mlp(torch.float32)))  # draws baselines (numpy) and alphas (torch)
    baselines = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    before = global_states()
    first = nt.attribute(x, nt_samples=4, stdevs=0.1, target=0, baselines=baselines, seed=3)
    assert_states_equal(global_states(), before)
    torch.manual_seed(99), np.random.seed(99)  # a different global state changes nothing
    second = nt.attribute(x, nt_samples=4, stdevs=0.1, target=0, baselines=baselines, seed=3)
    assert torch.equal(first, second)


class DrawingModel(torch.nn.Module):
    """A model that draws from numpy's, Python's and torch's global RNGs in its forward (its own noise)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.linear, self.fail = torch.nn.Linear(5, 3), fail

    def forward(self, x):
        jitter = float(np.random.randn()) + random.random() + float(torch.rand(()))  # one legacy gaussian: odd
        if self.fail:
            raise RuntimeError("the forward failed after drawing")
        return self.linear(x) * (1 + 0.1 * jitter)


def full_global_states():
    """Every part of the global RNGs' states: numpy's position and cached gaussian too, not only its key."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return torch.get_rng_state(), (kind, key.copy(), pos, has_gauss, gauss), random.getstate()


def assert_full_states_equal(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:]
    assert a[2] == b[2]


def test_a_seeded_call_whose_forward_draws_from_every_global_rng_leaves_them_as_they_were_and_is_reproducible():
    torch.manual_seed(0)
    nt = NoiseTunnel(Saliency(DrawingModel()))
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(2))
    results = []
    for user_seed in (0, 1):
        torch.manual_seed(user_seed), np.random.seed(user_seed), random.seed(user_seed)
        np.random.randn(3)  # an odd number of legacy gaussians: numpy holds a cached one
        before = full_global_states()
        assert before[1][3] == 1
        results.append(nt.attribute(x, nt_samples=4, nt_samples_batch_size=3, stdevs=0.1, target=0, seed=5))
        assert_full_states_equal(full_global_states(), before)
    assert torch.equal(results[0], results[1])  # the forward's own draws follow the seed, not the caller's state
    assert not torch.equal(results[0], nt.attribute(x, nt_samples=4, stdevs=0.1, target=0, seed=6))


def test_a_seeded_call_that_raises_after_its_forward_drew_leaves_every_global_rng_as_it_was():
    nt = NoiseTunnel(Saliency(DrawingModel(fail=True)))
    np.random.seed(3), random.seed(3), torch.manual_seed(3)
    for cached_gaussian in (False, True):
        if cached_gaussian:
            np.random.randn(1)
        before = full_global_states()
        assert before[1][3] == int(cached_gaussian)
        try:
            nt.attribute(torch.zeros(1, 5), nt_samples=2, stdevs=0.1, target=0, seed=1)
        except RuntimeError as error:
            assert "failed after drawing" in str(error)
        else:
            raise AssertionError("the forward's error was swallowed")
        assert_full_states_equal(full_global_states(), before)


def test_an_unseeded_call_advances_the_global_rng_exactly_like_one_small_torch_draw():
    nt = NoiseTunnel(Saliency(MODEL))
    torch.manual_seed(4)
    state = torch.get_rng_state()
    numpy_before = np.random.get_state()[1].copy()
    first = nt.attribute(X, nt_samples=3, stdevs=0.2, target=0)
    after_call = torch.get_rng_state()
    torch.set_rng_state(state)
    torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)
    assert torch.equal(after_call, torch.get_rng_state())
    assert np.array_equal(np.random.get_state()[1], numpy_before)
    torch.set_rng_state(state)
    assert torch.equal(nt.attribute(X, nt_samples=3, stdevs=0.2, target=0), first)  # torch.manual_seed reproduces


def test_drawn_baselines_are_seeded_and_chunk_invariant():
    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64)
    baselines = torch.randn(10, 5, dtype=torch.float64)
    nt = NoiseTunnel(IntegratedGradients(model))
    common = dict(nt_samples=6, stdevs=0.1, target=0, n_steps=4, baselines=baselines, draw_baseline_from_distrib=True)
    whole = nt.attribute(x, nt_samples_batch_size=6, seed=1, **common)
    chunked = nt.attribute(x, nt_samples_batch_size=4, seed=1, **common)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-15)
    assert not torch.equal(nt.attribute(x, seed=2, **common), whole)
