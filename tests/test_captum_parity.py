"""Given identical noise, noisegrad's NoiseTunnel returns what Captum's NoiseTunnel returns.

Captum's noise is replaced by noisegrad's own noisy copies (patched into
``captum.attr.NoiseTunnel._add_noise_to_input``), drawn for the same chunk plan,
so any difference comes from expansion, attribution or reduction.
"""

import random

import numpy as np
import pytest
import torch
from captum.attr import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerConductance,
    LayerIntegratedGradients,
    NeuronGradient,
    NoiseTunnel as CaptumNoiseTunnel,
    Occlusion,
    Saliency,
)

from conftest import as_tuple, make_cnn, make_mlp, make_two_input
from noisegrad import NoiseTunnel, SampleSeeds, plan_chunks
from noisegrad.perturb.inputs import noisy_copies, resolve_stdevs

NT_TYPES = ["smoothgrad", "smoothgrad_sq", "vargrad"]
SEED = 123


def example_major(rows, n):
    """noisegrad's sample-major rows in Captum's example-major order."""
    rest = tuple(rows.shape[1:])
    return rows.reshape((n, -1) + rest).transpose(0, 1).reshape((-1,) + rest)


def captum_with_our_noise(monkeypatch, method, inputs, nt_samples, batch_size, stdevs, **kwargs):
    """Run Captum's NoiseTunnel with the noise noisegrad draws for ``seed=SEED``."""
    inputs_tuple = inputs if isinstance(inputs, tuple) else (inputs,)
    sigmas = resolve_stdevs(stdevs, inputs_tuple)
    seeds = SampleSeeds(SEED)
    queue = [
        example_major(noisy_copies(x, sigma, ids, seeds, stream), len(ids))
        for ids in plan_chunks(nt_samples, batch_size)
        for stream, (x, sigma) in enumerate(zip(inputs_tuple, sigmas))
    ]

    original = CaptumNoiseTunnel._add_noise_to_input

    def injected(input, stdev, nt_samples_partition):
        if not any(input is x for x in inputs_tuple):  # GradientShap's own inner tunnel
            return original(input, stdev, nt_samples_partition)
        noisy = queue.pop(0)
        assert noisy.shape[0] == input.shape[0] * nt_samples_partition
        return noisy.clone()

    monkeypatch.setattr(CaptumNoiseTunnel, "_add_noise_to_input", staticmethod(injected))
    # Wrapped methods that draw from the global RNGs (GradientShap) see the
    # same state noisegrad gives them under seed=SEED.
    derived = seeds.derived(0)
    torch.manual_seed(derived)
    np.random.seed(derived % 2**32)
    random.seed(derived)
    result = CaptumNoiseTunnel(method).attribute(
        inputs, nt_samples=nt_samples, nt_samples_batch_size=batch_size, stdevs=1.0, **kwargs
    )
    assert not queue, "Captum drew a different number of noisy chunks"
    return result


def assert_same(ours, theirs, scale=None):
    """Equal up to the rounding of the attribution dtype (Captum reduces in it, noisegrad in float64).

    ``scale``: the magnitude rounding errors are relative to; for VarGrad that
    is E[a²], because Captum computes E[a²] − E[a]².
    """
    ours, theirs = as_tuple(ours), as_tuple(theirs)
    scale = theirs if scale is None else as_tuple(scale)
    assert len(ours) == len(theirs)
    for a, b, c in zip(ours, theirs, scale):
        assert a.shape == b.shape and a.dtype == b.dtype
        eps = torch.finfo(a.dtype).eps
        torch.testing.assert_close(a, b, rtol=64 * eps, atol=64 * eps * float(c.abs().max()))


def second_moment_scale(method, x, nt_type, **kwargs):
    """E[a²] for VarGrad's tolerance, else None."""
    if nt_type != "vargrad":
        return None
    return NoiseTunnel(method).attribute(x, nt_type="smoothgrad_sq", seed=SEED, **kwargs)


CASES = {
    "saliency": (lambda m: Saliency(m), {"target": 1}),
    "saliency_signed": (lambda m: Saliency(m), {"target": 2, "abs": False}),
    "input_x_gradient": (lambda m: InputXGradient(m), {"target": [0, 2, 1]}),
    "integrated_gradients": (lambda m: IntegratedGradients(m), {"target": 0, "n_steps": 7}),
    "ig_baseline_tensor": (
        lambda m: IntegratedGradients(m),
        {"target": torch.tensor([1, 0, 2]), "baselines": torch.full((3, 5), 0.3, dtype=torch.float64)},
    ),
    "deeplift": (lambda m: DeepLift(m), {"target": 1}),
    "guided_backprop": (lambda m: GuidedBackprop(m), {"target": 1}),
    "deconvolution": (lambda m: Deconvolution(m), {"target": 1}),
    "feature_ablation": (
        lambda m: FeatureAblation(m),
        {"target": 2, "feature_mask": torch.tensor([[0, 0, 1, 1, 2]])},
    ),
    "feature_ablation_mask_per_example": (
        lambda m: FeatureAblation(m),
        {"target": 2, "feature_mask": torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, 2, 2], [0, 1, 2, 3, 4]])},
    ),
    "occlusion": (lambda m: Occlusion(m), {"target": 0, "sliding_window_shapes": (2,)}),
    "layer_conductance": (lambda m: LayerConductance(m, m[1]), {"target": 1, "n_steps": 5}),
    "layer_integrated_gradients": (lambda m: LayerIntegratedGradients(m, m[0]), {"target": 1, "n_steps": 5}),
    "neuron_gradient": (lambda m: NeuronGradient(m, m[1]), {"neuron_selector": 3}),
    # Captum's tunnel accepts a baseline distribution only with one row per example.
    # (GradientShap draws its own random numbers per row, so it is checked by hand below.)
    "deeplift_shap": (
        lambda m: DeepLiftShap(m),
        {"target": 1, "baselines": torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))},
    ),
}


@pytest.mark.parametrize("nt_type", NT_TYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_captum_given_the_same_noise(monkeypatch, case, nt_type):
    make_method, kwargs = CASES[case]
    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theirs = captum_with_our_noise(monkeypatch, make_method(model), x, 7, 3, 0.2, nt_type=nt_type, **kwargs)
    common = dict(nt_samples=7, nt_samples_batch_size=3, stdevs=0.2, **kwargs)
    ours = NoiseTunnel(make_method(model)).attribute(x, nt_type=nt_type, seed=SEED, **common)
    assert_same(ours, theirs, second_moment_scale(make_method(model), x, nt_type, **common))


@pytest.mark.parametrize("nt_type", NT_TYPES)
def test_tuple_inputs_targets_and_additional_forward_args_match_captum(monkeypatch, nt_type):
    model = make_two_input()
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 4, dtype=torch.float64, generator=gen), torch.randn(2, 3, dtype=torch.float64, generator=gen)
    scale = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    kwargs = dict(nt_type=nt_type, target=[(1,), (2,)], additional_forward_args=(scale,), n_steps=4)
    theirs = captum_with_our_noise(monkeypatch, IntegratedGradients(model), (a, b), 5, 2, (0.1, 0.3), **kwargs)
    common = dict(nt_samples=5, nt_samples_batch_size=2, stdevs=(0.1, 0.3), **kwargs)
    ours = NoiseTunnel(IntegratedGradients(model)).attribute((a, b), seed=SEED, **common)
    assert isinstance(ours, tuple) and len(ours) == 2
    del common["nt_type"]
    assert_same(ours, theirs, second_moment_scale(IntegratedGradients(model), (a, b), nt_type, **common))


def test_cnn_in_float32_matches_captum_to_float32_rounding(monkeypatch):
    model = make_cnn(torch.float32)
    x = torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(4))
    for nt_type in NT_TYPES:
        theirs = captum_with_our_noise(monkeypatch, Saliency(model), x, 6, 4, 0.05, nt_type=nt_type, target=3)
        common = dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.05, target=3)
        ours = NoiseTunnel(Saliency(model)).attribute(x, nt_type=nt_type, seed=SEED, **common)
        assert_same(ours, theirs, second_moment_scale(Saliency(model), x, nt_type, **common))


@pytest.mark.parametrize("batch_size", [None, 1, 3, 4])
def test_delta_none_is_captums_delta_in_captums_order(monkeypatch, batch_size):
    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    kwargs = dict(target=1, n_steps=3, return_convergence_delta=True)
    _, theirs = captum_with_our_noise(monkeypatch, IntegratedGradients(model), x, 7, batch_size, 0.5, **kwargs)
    _, ours = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=7, nt_samples_batch_size=batch_size, stdevs=0.5, seed=SEED, delta_reduction="none", **kwargs
    )
    assert ours.shape == theirs.shape == (3 * 7,)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch_size", [None, 2, 3])
def test_delta_mean_is_the_mean_over_each_inputs_noisy_copies(monkeypatch, batch_size):
    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    kwargs = dict(target=0, n_steps=3, return_convergence_delta=True)
    _, per_copy = captum_with_our_noise(monkeypatch, IntegratedGradients(model), x, 7, batch_size, 0.5, **kwargs)
    # Captum's rows run (chunk, example, copy): regroup them per example by hand.
    expected, start = torch.zeros(3, dtype=torch.float64), 0
    for ids in plan_chunks(7, batch_size):
        rows = per_copy[start : start + 3 * len(ids)].reshape(3, len(ids))
        expected += rows.sum(dim=1)
        start += 3 * len(ids)
    expected /= 7
    _, ours = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=7, nt_samples_batch_size=batch_size, stdevs=0.5, seed=SEED, **kwargs
    )
    assert ours.shape == (3,)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-15)


def by_hand(method, x, nt_samples, batch_size, sigma, nt_type, global_seed=None, **kwargs):
    """The wrapped method applied chunk by chunk to noisegrad's noisy copies, reduced in float64."""
    if global_seed is not None:
        torch.manual_seed(global_seed)
        np.random.seed(global_seed % 2**32)
        random.seed(global_seed)
    samples = []
    for ids in plan_chunks(nt_samples, batch_size):
        noisy = noisy_copies(x, torch.tensor(sigma, dtype=x.dtype), ids, SampleSeeds(SEED), 0)
        samples.append(method.attribute(noisy.requires_grad_(), **kwargs).detach())
    samples = torch.cat(samples).reshape((nt_samples,) + tuple(x.shape)).double()
    return {
        "smoothgrad": samples.mean(0),
        "smoothgrad_sq": (samples**2).mean(0),
        "vargrad": samples.var(0, correction=0),
    }[nt_type]


@pytest.mark.parametrize("nt_type", NT_TYPES)
def test_a_baseline_distribution_of_any_size_is_passed_through_unchanged(nt_type):
    """Captum's tunnel rejects 4 baselines for 3 examples; the reference is the wrapped method per chunk."""
    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    baselines = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    expected = by_hand(DeepLiftShap(model), x, 6, 4, 0.3, nt_type, baselines=baselines, target=1)
    ours = NoiseTunnel(DeepLiftShap(model)).attribute(
        x, nt_type=nt_type, nt_samples=6, nt_samples_batch_size=4, stdevs=0.3, seed=SEED, baselines=baselines, target=1
    )
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("nt_type", NT_TYPES)
def test_gradient_shap_draws_its_own_randomness_per_sample_from_the_seeded_global_rng(nt_type):
    """Sample k is GradientShap on noisy copy k with the global RNGs seeded for k alone (by hand: one call each)."""
    from noisegrad.sampling.streams import Purpose, stream

    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    baselines = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    kwargs = dict(baselines=baselines, target=2, n_samples=3)
    samples = []
    for k in range(5):
        global_seed = SampleSeeds(SEED)(stream(Purpose.GLOBAL_RNG), k) & (2**63 - 1)
        torch.manual_seed(global_seed)
        np.random.seed(global_seed % 2**32)
        random.seed(global_seed)
        noisy = noisy_copies(x, torch.tensor(0.2, dtype=x.dtype), range(k, k + 1), SampleSeeds(SEED), 0)
        samples.append(GradientShap(model).attribute(noisy.requires_grad_(), **kwargs).detach())
    samples = torch.stack(samples).double()
    expected = {"smoothgrad": samples.mean(0), "smoothgrad_sq": (samples**2).mean(0),
                "vargrad": samples.var(0, correction=0)}[nt_type]
    for batch_size in (1, 2, 5):  # what GradientShap draws follows the sample, so the chunk cannot change it
        ours = NoiseTunnel(GradientShap(model)).attribute(
            x, nt_type=nt_type, nt_samples=5, nt_samples_batch_size=batch_size, stdevs=0.2, seed=SEED, **kwargs
        )
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


def test_noisegrad_is_a_captum_attribution_with_captums_surface(mlp):
    from captum.attr import Attribution

    nt = NoiseTunnel(IntegratedGradients(mlp, multiply_by_inputs=False))
    assert isinstance(nt, Attribution)
    assert nt.has_convergence_delta() is True
    assert nt.multiplies_by_inputs is False
    assert NoiseTunnel(Saliency(mlp)).has_convergence_delta() is False
    with pytest.raises(NotImplementedError):
        nt.attribute_future()


class GridOutput(torch.nn.Module):
    """(N, 3, 4) outputs scaled by a per-example tensor and a Python number: targets are tuples, both args forwarded."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.linear = torch.nn.Linear(5, 12).double()

    def forward(self, x, scale, power):
        return torch.tanh(self.linear(x)).reshape(-1, 3, 4) * scale.reshape(-1, 1, 1) ** power


@pytest.mark.parametrize("target", [(1, 2), [(0, 1), (2, 3), (1, 0)]])
@pytest.mark.parametrize("internal_batch_size", [None, 6])
def test_integrated_gradients_of_a_multi_dimensional_output_matches_captum(monkeypatch, target, internal_batch_size):
    """The path noisegrad builds for a plain IntegratedGradients: Captum's NoiseTunnel's attributions and deltas."""
    model = GridOutput()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    kwargs = dict(target=target, additional_forward_args=(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), 2),
                  baselines=0.2, n_steps=3, internal_batch_size=internal_batch_size, return_convergence_delta=True)
    theirs, their_delta = captum_with_our_noise(monkeypatch, IntegratedGradients(model), x, 4, 2, 0.3, **kwargs)
    ours, delta = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_samples=4, nt_samples_batch_size=2, stdevs=0.3, seed=SEED, delta_reduction="none", **kwargs)
    assert_same(ours, theirs)
    torch.testing.assert_close(delta, their_delta, rtol=0, atol=1e-12)
