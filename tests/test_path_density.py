"""path_density="adaptive": the joint estimator draws α from a density a pilot fitted; unbiased, keyed, bounded."""

import math
import random

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from hypothesis import example as pinned_example
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import ForwardCounter, Recorder, make_mlp
from noisegrad import NoiseTunnel
from noisegrad.estimators.joint_ig import joint_integrated_gradients
from noisegrad.estimators.path_density import EDGES, PILOT_PER_BIN, UNIFORM_SHARE, PathDensity, fit_path_density
from noisegrad.sampling.seeding import SampleSeeds

X = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
WIDTHS = np.diff(np.array(EDGES))


def layer_norm_first(seed=0):
    """A LayerNorm on the input: from a zero baseline nearly all of IG's mass lies at α below about 10⁻³."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()


def exact_ig(model, x, target):
    """IG from a zero baseline without noise, by the trapezoid rule on 40 000 log-spaced points of α, by hand."""
    alphas = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-14, 0, 40_000, dtype=torch.float64)])
    total = torch.zeros_like(x)
    previous = None
    for start in range(0, len(alphas), 4000):
        a = alphas[start:start + 4000]
        points = (a[:, None, None] * x).reshape(-1, x.shape[1]).requires_grad_()
        (g,) = torch.autograd.grad(model(points)[:, target].sum(), points)
        g = g.reshape(len(a), *x.shape)
        if previous is not None:  # the interval between chunks
            total += (a[0] - previous[0]) * (g[0] + previous[1]) / 2
        total += ((a[1:] - a[:-1])[:, None, None] * (g[1:] + g[:-1]) / 2).sum(0)
        previous = (a[-1], g[-1])
    return total * x


def test_on_a_layer_norm_first_model_adaptive_is_unbiased_and_needs_far_fewer_gradients():
    """σ = 0: both designs estimate the exact integral; the adaptive one with a small fraction of the variance."""
    model, target = layer_norm_first(), 1
    exact = exact_ig(model, X, target)
    torch.testing.assert_close(exact.sum(1), (model(X) - model(torch.zeros_like(X)))[:, target].detach(),
                               rtol=1e-4, atol=1e-6)  # the reference is complete
    runs = {
        density: torch.stack([joint_integrated_gradients(
            IntegratedGradients(model), X, nt_samples=32, stdevs=0.0, target=target, seed=s, path_density=density)
            for s in range(150)])
        for density in ("uniform", "adaptive")
    }
    adaptive = runs["adaptive"]
    z = (adaptive.mean(0) - exact) / (adaptive.std(0) / math.sqrt(len(adaptive)))
    assert float(z.abs().max()) < 4.5
    spread = {d: float(r.var(0).sum()) for d, r in runs.items()}
    assert spread["adaptive"] < spread["uniform"] / 50


def test_with_noise_the_mean_over_seeds_is_the_nested_estimate_with_many_steps():
    """Unbiased for E_ε[IG(x + ε)] on a smooth model too, within 4.5 measured Monte-Carlo standard errors."""
    ig = IntegratedGradients(make_mlp())
    nested_kwargs = dict(nt_samples=6000, nt_samples_batch_size=3000, stdevs=0.3, target=1, n_steps=24, seed=1)
    nested = NoiseTunnel(ig).attribute(X, **nested_kwargs)
    nested_se = (NoiseTunnel(ig).attribute(X, nt_type="vargrad", **nested_kwargs) / 6000).sqrt()
    runs = torch.stack([
        NoiseTunnel(ig).attribute(X, nt_samples=8, joint="antithetic", path_density="adaptive", stdevs=0.3,
                                  target=1, seed=s)
        for s in range(300)
    ])
    z = (runs.mean(0) - nested) / ((runs.std(0) / 300**0.5) ** 2 + nested_se**2).sqrt()
    assert float(z.abs().max()) < 4.5


def test_reported_stderr_matches_the_spread_over_seeds():
    """Standard errors of weighted samples: the collapsed strata, which may only err on the large side."""
    estimates = [
        joint_integrated_gradients(IntegratedGradients(layer_norm_first()), X, nt_samples=16, stdevs=0.3, target=1,
                                   seed=s, path_density="adaptive", return_stderr=True)
        for s in range(200)
    ]
    spread = torch.stack([e.attributions for e in estimates]).std(0)
    reported = torch.stack([e.stderr for e in estimates]).square().mean(0).sqrt()
    assert 0.8 < float((reported / spread).median()) < 2.0


# --------------------------------------------------------------------------- the density and its pilot


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=len(WIDTHS), max_size=len(WIDTHS)))
# found by hypothesis in a full run: the last bin's weight is 3197, which multiplies the cumulative sum's rounding
@pinned_example([1.0, 1.890361368622191, 1.635805049408789, 1.0, 1.78125, 1.97241634391645, 1.2397478820130061,
                 59.33333333333333, 100.0, 3.00001, 1.0089787305214628, 78.904296875, 3.0, 0.010000000000000002])
def test_alpha_is_a_change_of_variables_whose_derivative_is_the_weight(masses):
    """α(u) runs monotonically from 0 to 1 with dα/du = weight, so E_u[weight · h(α(u))] = ∫₀¹ h(α) dα for
    every h: the estimate is unbiased whatever the (positive) density."""
    q = torch.tensor(masses, dtype=torch.float64)
    q = (q / q.sum()).unsqueeze(0)
    density = PathDensity(q)
    u = torch.linspace(0, 1 - 1e-12, 100_001, dtype=torch.float64).unsqueeze(1)
    alpha, weight = density.transform(u)
    a, w = alpha[:, 0].numpy(), weight[:, 0].numpy()
    # at u = 1 − 1e-12, α is 1e-12 · weight below 1, give or take the cumulative sum's rounding (a sum of 14
    # terms: at most 14 ulps of 1) times the same weight
    end_slack = (1e-12 + len(WIDTHS) * np.finfo(np.float64).eps) * w[-1] + 1e-12
    assert a[0] == 0 and abs(a[-1] - 1) <= end_slack and np.all(np.diff(a) >= 0)
    bins = np.searchsorted(np.array(EDGES), a, side="right") - 1
    np.testing.assert_allclose(w, WIDTHS[bins] / q[0].numpy()[bins], rtol=1e-12)  # 1 / the density at α
    same_bin = bins[1:] == bins[:-1]
    slope = np.diff(a) / np.diff(u[:, 0].numpy())
    np.testing.assert_allclose(slope[same_bin], w[:-1][same_bin], rtol=1e-6)


def test_the_pilot_puts_the_mass_where_the_contributions_are_and_bounds_every_weight():
    """A contribution that lives in one bin gets 3/4 of the probability there, the rest spread uniformly."""
    inner = 4  # [1e-3, 1e-2)
    calls = []

    def contributions(noisy, alphas, n):
        calls.append(n)
        inside = (alphas >= EDGES[inner]) & (alphas < EDGES[inner + 1])
        return [noisy[0].reshape(n, 2, 5) * inside.unsqueeze(2).to(noisy[0].dtype)]

    density = fit_path_density(contributions, (X,), (torch.tensor(0.1, dtype=torch.float64),), torch.arange(2),
                               SampleSeeds(0), samples_per_chunk=5)
    expected = UNIFORM_SHARE * WIDTHS
    expected[inner] += 1 - UNIFORM_SHARE
    np.testing.assert_allclose(density.probabilities.numpy(), np.stack([expected] * 2), rtol=1e-12)
    assert sum(calls) == len(WIDTHS) * PILOT_PER_BIN and max(calls) == 5  # the pilot, in the chunks it was given
    _, weight = density.transform(torch.rand(1000, 2, dtype=torch.float64))
    assert float(weight.max()) <= 1 / UNIFORM_SHARE + 1e-12


def test_the_pilot_draws_noise_of_its_own():
    """A density fitted on the estimate's own noise would correlate with it (a bias): no pilot point may lie on
    the noisy path of one of the estimate's samples (from a zero baseline: no point parallel to its end)."""
    model, n = Recorder(layer_norm_first()), 8
    joint_integrated_gradients(IntegratedGradients(model), X, nt_samples=n, stdevs=0.3, target=0, seed=2,
                               path_density="adaptive")
    pilot = torch.cat(model.seen[:-1]).reshape(-1, 2, 5)
    assert pilot.shape[0] == len(WIDTHS) * PILOT_PER_BIN
    main = model.seen[-1].reshape(n, 2, 5)
    for example in range(2):
        p = nn.functional.normalize(pilot[:, example], dim=1)
        m = nn.functional.normalize(main[:, example], dim=1)
        assert float((p @ m.T).abs().max()) < 1 - 1e-6


def test_a_pilot_that_sees_nothing_keeps_the_uniform_density():
    flat = nn.Sequential(nn.Linear(5, 3)).double()
    nn.init.zeros_(flat[0].weight)
    attr = joint_integrated_gradients(IntegratedGradients(flat), X, nt_samples=8, stdevs=0.3, target=0, seed=0,
                                      path_density="adaptive")
    assert torch.equal(attr, torch.zeros_like(X))
    nothing = fit_path_density(lambda noisy, alphas, n: [torch.zeros(n, 2, 5, dtype=torch.float64)], (X,),
                               (torch.tensor(0.1, dtype=torch.float64),), torch.arange(2), SampleSeeds(0), 7)
    np.testing.assert_allclose(nothing.probabilities.numpy(), np.stack([WIDTHS] * 2), rtol=1e-12)


# --------------------------------------------------------------------------- keyed, chunk-free, the user's state


@settings(max_examples=15, deadline=None)
@given(batch_size=st.integers(1, 13), seed=st.integers(0, 2**63))
def test_results_stderr_and_delta_do_not_depend_on_the_chunk_size(batch_size, seed):
    ig = IntegratedGradients(layer_norm_first())
    run = lambda size: joint_integrated_gradients(  # noqa: E731
        ig, X, nt_samples=12, nt_samples_batch_size=size, stdevs=0.3, target=2, seed=seed, sampler="antithetic",
        path_density="adaptive", return_convergence_delta=True, return_stderr=True,
    )
    whole, chunked = run(None), run(batch_size)
    for ours, theirs in [(chunked.attributions, whole.attributions), (chunked.stderr, whole.stderr),
                         (chunked.delta, whole.delta)]:
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_an_example_gets_the_same_result_alone_as_in_its_batch_and_global_rngs_are_untouched():
    ig = IntegratedGradients(layer_norm_first())
    common = dict(nt_samples=10, stdevs=0.3, target=0, seed=4, path_density="adaptive")
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    both = joint_integrated_gradients(ig, X, **common)
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    alone = joint_integrated_gradients(ig, X[1:], example_ids=[1], **common)
    torch.testing.assert_close(alone, both[1:], rtol=1e-12, atol=1e-14)
    assert torch.equal(joint_integrated_gradients(ig, X, **common), both)
    assert not torch.equal(joint_integrated_gradients(ig, X, **dict(common, seed=5)), both)


def test_layer_ig_on_an_identity_layer_at_the_input_equals_input_ig():
    model = nn.Sequential(nn.Identity(), layer_norm_first())
    common = dict(nt_samples=8, stdevs=0.2, target=1, seed=6, path_density="adaptive")
    by_input = joint_integrated_gradients(IntegratedGradients(model), X, **common)
    by_layer = joint_integrated_gradients(LayerIntegratedGradients(model, model[0]), X, **common)
    torch.testing.assert_close(by_layer, by_input, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- errors at the door


@pytest.mark.parametrize("kwargs, message", [
    (dict(joint=True, path_density="log"), r"path_density must be one of \('uniform', 'adaptive'\), got 'log'"),
    (dict(joint=True, path_density=None), "path_density must be one of"),
    (dict(path_density="adaptive"), r"path_density='adaptive' applies to joint sampling"),
])
def test_bad_path_densities_are_named_before_any_forward_pass(kwargs, message):
    model = make_mlp()
    counter = ForwardCounter(model)
    with pytest.raises(ValueError, match=message):
        NoiseTunnel(IntegratedGradients(model)).attribute(X, nt_samples=4, target=0, **kwargs)
    assert counter.calls == 0
