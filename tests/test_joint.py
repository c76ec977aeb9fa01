"""Joint (noise, path point) sampling of SmoothGrad × IG: unbiased, reproducible, chunk-invariant, exact deltas."""

import concurrent.futures
import random
import threading

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import Counting, make_mlp, make_two_input
from noisegrad import NoiseTunnel, SampleSeeds
from noisegrad import SmoothedAttribution
from noisegrad.estimators.joint_ig import joint_integrated_gradients
from noisegrad.perturb.inputs import noisy_copies

VARIANTS = [(False, False), (True, False), (False, True), (True, True)]  # (stratify, antithetic)
X = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class PointRecorder(nn.Module):
    """A tanh MLP that records every batch it is evaluated on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_mlp()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


# --------------------------------------------------------------------------- the estimator itself


@pytest.mark.parametrize("stratify, antithetic", VARIANTS)
def test_each_sample_is_one_gradient_at_a_point_of_its_own_noisy_path(stratify, antithetic):
    """Recover (ε_k, α_k) from the points the model sees, then rebuild the estimate by hand."""
    model, n = PointRecorder(), 6
    baseline = torch.full((1, 5), 0.2, dtype=torch.float64)
    attr = joint_integrated_gradients(
        IntegratedGradients(model), X, nt_samples=n, stdevs=0.4, target=1, baselines=baseline,
        seed=3, stratify=stratify, sampler="antithetic" if antithetic else "iid",
    )
    assert len(model.seen) == 1  # one forward (and one backward) for all samples: no delta asked
    points = model.seen[0].reshape(n, 2, 5)
    noise = noisy_copies(X, torch.tensor(0.4, dtype=torch.float64), range(n), SampleSeeds(3), 0)
    noisy = noise.reshape(n, 2, 5)
    if antithetic:  # samples 2j and 2j+1 carry ε and −ε, ε being NoiseTunnel's sample j
        noisy = torch.stack([noisy[k // 2] if k % 2 == 0 else 2 * X - noisy[k // 2] for k in range(n)])
    ends = noisy - baseline
    alphas = ((points - baseline) / ends).mean(-1)  # the same α for every feature
    torch.testing.assert_close((points - baseline) / ends, alphas[..., None].expand(n, 2, 5), rtol=1e-9, atol=1e-9)
    assert bool(((alphas >= 0) & (alphas < 1)).all())
    if antithetic:
        torch.testing.assert_close(alphas[0::2], alphas[1::2], rtol=1e-12, atol=1e-12)
    if stratify:
        units = n // 2 if antithetic else n
        unit = torch.arange(n) // 2 if antithetic else torch.arange(n)
        assert bool(((alphas * units).floor() == unit[:, None].double()).all())
    grads = _by_hand_gradients(model.net, points.reshape(-1, 5), 1)
    expected = (ends * grads.reshape(n, 2, 5)).mean(0)
    torch.testing.assert_close(attr, expected, rtol=1e-12, atol=1e-14)


def _by_hand_gradients(net, points, target):
    points = points.clone().requires_grad_()
    (grad,) = torch.autograd.grad(net(points)[:, target].sum(), points)
    return grad


@pytest.mark.parametrize("stratify, sampler", [(s, "antithetic" if a else "iid") for s, a in VARIANTS]
                         + [(True, "qmc"), (True, "lhs")])
def test_mean_over_seeds_converges_to_the_nested_estimate_with_many_steps(stratify, sampler):
    """Unbiasedness: |mean of 300 joint runs − nested(6000 noise × 24 steps)| within 4.5 Monte-Carlo SEs.

    Both sides' standard errors are measured (the spread over seeds; the nested
    per-sample variance from VarGrad), not guessed.
    """
    model = make_mlp()
    ig = IntegratedGradients(model)
    nested_kwargs = dict(nt_samples=6000, nt_samples_batch_size=3000, stdevs=0.3, target=1, n_steps=24, seed=1)
    nested = NoiseTunnel(ig).attribute(X, **nested_kwargs)
    nested_se = (NoiseTunnel(ig).attribute(X, nt_type="vargrad", **nested_kwargs) / 6000).sqrt()
    runs = torch.stack([
        joint_integrated_gradients(
            ig, X, nt_samples=8, stdevs=0.3, target=1, seed=s, stratify=stratify, sampler=sampler
        )
        for s in range(300)
    ])
    joint_se = runs.std(0) / 300**0.5
    z = (runs.mean(0) - nested) / (joint_se**2 + nested_se**2).sqrt()
    assert float(z.abs().max()) < 4.5


@pytest.mark.parametrize("stratify, sampler", [(s, "antithetic" if a else "iid") for s, a in VARIANTS]
                         + [(True, "qmc"), (True, "lhs")])
def test_reported_stderr_matches_the_spread_over_seeds(stratify, sampler):
    """Unstratified: the jackknife over groups; stratified: collapsed neighbouring groups, which may only err
    on the large side; QMC / LHS: the jackknife over independently randomised replicates."""
    ig = IntegratedGradients(make_mlp())
    estimates = [
        joint_integrated_gradients(
            ig, X, nt_samples=16, stdevs=0.3, target=1, seed=s, stratify=stratify, sampler=sampler,
            return_stderr=True,
        )
        for s in range(200)
    ]
    spread = torch.stack([e.attributions for e in estimates]).std(0)
    reported = torch.stack([e.stderr for e in estimates]).square().mean(0).sqrt()
    ratio = float((reported / spread).median())
    assert (0.8 < ratio < 1.25) if not stratify else (0.8 < ratio < 2.0)
    relative = estimates[0].relative_stderr
    expected = estimates[0].stderr.norm(dim=1) / estimates[0].attributions.norm(dim=1)
    torch.testing.assert_close(relative, expected)


def test_stratified_path_removes_the_path_variance_without_noise():
    """σ = 0: stratified α is a randomised Riemann sum, orders of magnitude better than iid α."""
    ig = IntegratedGradients(make_mlp())
    exact = ig.attribute(X, target=1, n_steps=64)
    err = {
        stratify: float((joint_integrated_gradients(ig, X, nt_samples=256, stdevs=0.0, target=1, seed=0,
                                                    stratify=stratify) - exact).norm() / exact.norm())
        for stratify in (False, True)
    }
    assert err[True] < 1e-4 < err[False] < 0.1


# --------------------------------------------------------------------------- linear models: IG is exact


def test_on_a_linear_model_joint_equals_nested_given_the_same_noise_and_delta_is_zero():
    """f = w·x + c: every path point has gradient w, so both estimators give w ⊙ (x + mean ε − b)."""
    model = nn.Linear(5, 3).double()
    baselines = torch.randn(2, 5, dtype=torch.float64)
    common = dict(nt_samples=7, nt_samples_batch_size=3, stdevs=0.5, target=2, baselines=baselines, seed=4)
    nested = NoiseTunnel(IntegratedGradients(model)).attribute(X, n_steps=5, **common)
    for stratify in (False, True):
        joint, delta = joint_integrated_gradients(
            IntegratedGradients(model), X, stratify=stratify, return_convergence_delta=True, **common
        )
        torch.testing.assert_close(joint, nested, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(delta, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-13)


@pytest.mark.parametrize("stratify", [False, True])
def test_delta_is_the_completeness_gap_of_the_smoothed_estimate(stratify):
    """By hand: Σ attribution − mean_k (f(x + ε_k) − f(b)), with NoiseTunnel's noise for sample k."""
    model = make_mlp()
    baselines = torch.full((2, 5), -0.1, dtype=torch.float64)
    est = joint_integrated_gradients(
        IntegratedGradients(model), X, nt_samples=9, nt_samples_batch_size=4, stdevs=0.3, target=0,
        baselines=baselines, seed=5, stratify=stratify, return_convergence_delta=True, return_stderr=True,
    )
    noisy = noisy_copies(X, torch.tensor(0.3, dtype=torch.float64), range(9), SampleSeeds(5), 0)
    with torch.no_grad():
        gaps = model(noisy)[:, 0].reshape(9, 2) - model(baselines)[:, 0]
    expected = est.attributions.sum(1) - gaps.mean(0)
    assert abs(float(expected.abs().max())) > 1e-3  # the model is not linear: the gap is not trivially 0
    torch.testing.assert_close(est.delta, expected, rtol=1e-10, atol=1e-13)
    assert est.delta_stderr.shape == (2,) and bool((est.delta_stderr > 0).all())


def test_multiply_by_inputs_false_returns_the_mean_gradient():
    model = nn.Linear(5, 3).double()
    attr = joint_integrated_gradients(
        IntegratedGradients(model, multiply_by_inputs=False), X, nt_samples=4, stdevs=0.5, target=1, seed=0
    )
    torch.testing.assert_close(attr, model.weight[1].detach().expand(2, 5), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- baselines, tuples, layers


def test_baselines_as_number_tensor_per_example_and_single_row_agree():
    ig = IntegratedGradients(make_mlp())
    common = dict(nt_samples=6, stdevs=0.2, target=2, seed=7)
    by_number = joint_integrated_gradients(ig, X, baselines=0.3, **common)
    per_example = joint_integrated_gradients(ig, X, baselines=torch.full((2, 5), 0.3, dtype=torch.float64), **common)
    single_row = joint_integrated_gradients(ig, X, baselines=torch.full((1, 5), 0.3, dtype=torch.float64), **common)
    torch.testing.assert_close(per_example, by_number, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(single_row, by_number, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(
        joint_integrated_gradients(ig, X, **common), joint_integrated_gradients(ig, X, baselines=0, **common)
    )
    assert not torch.equal(joint_integrated_gradients(ig, X, baselines=0.0, **common), by_number)


def test_tuple_inputs_with_per_example_targets_and_additional_forward_args():
    model = make_two_input()
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 4, dtype=torch.float64, generator=gen), torch.randn(2, 3, dtype=torch.float64, generator=gen)
    scale = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    common = dict(nt_samples=6, stdevs=(0.1, 0.3), target=[1, 2], additional_forward_args=(scale,),
                  baselines=(0.5, torch.zeros(1, 3, dtype=torch.float64)), seed=2)
    (attr_a, attr_b), delta = joint_integrated_gradients(
        IntegratedGradients(model), (a, b), nt_samples_batch_size=4, return_convergence_delta=True, **common
    )
    assert attr_a.shape == a.shape and attr_b.shape == b.shape and delta.shape == (2,)
    chunked = joint_integrated_gradients(IntegratedGradients(model), (a, b), nt_samples_batch_size=1, **common)
    torch.testing.assert_close(chunked, (attr_a, attr_b), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_layer_ig_on_an_identity_layer_at_the_input_equals_input_ig(multiply_by_inputs):
    """The layer path (Captum's layer hooks) and the input path agree where the layer's value is the input."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    common = dict(nt_samples=8, nt_samples_batch_size=3, stdevs=0.3, target=1, baselines=0.1, seed=8,
                  sampler="antithetic", return_convergence_delta=True)
    by_input = joint_integrated_gradients(IntegratedGradients(model, multiply_by_inputs=multiply_by_inputs), X, **common)
    by_layer = joint_integrated_gradients(LayerIntegratedGradients(model, model[0], multiply_by_inputs=multiply_by_inputs), X, **common)
    torch.testing.assert_close(by_layer, by_input, rtol=1e-12, atol=1e-14)


def test_layer_ig_attributes_in_the_layers_shape_and_a_list_of_layers_as_captum():
    model = make_mlp()
    attr, delta = joint_integrated_gradients(
        LayerIntegratedGradients(model, model[0]), X, nt_samples=4, stdevs=0.1, target=1,
        seed=0, return_convergence_delta=True,
    )
    assert attr.shape == (2, 8) and delta.shape == (2,)
    two = make_two_input()
    inputs = (X[:, :4], X[:, :3])
    captum = LayerIntegratedGradients(two, [two.a, two.b]).attribute(inputs, target=0)
    both = joint_integrated_gradients(
        LayerIntegratedGradients(two, [two.a, two.b]), inputs, nt_samples=4, stdevs=0.1, target=0, seed=0
    )
    assert isinstance(both, list) and [t.shape for t in both] == [t.shape for t in captum] == [(2, 6), (2, 6)]


class _OtherThreadsLayerCall(nn.Module):
    """Identity that, on each forward of the attributing thread, runs ``layer`` on ``probe`` in another thread."""

    def __init__(self, layer, probe):
        super().__init__()
        self.layer, self.probe, self.seen = layer, probe, []

    def forward(self, h):
        if threading.current_thread() is threading.main_thread():
            worker = threading.Thread(target=lambda: self.seen.append(self.layer(self.probe)))
            worker.start()
            worker.join()
        return h


@pytest.mark.parametrize("to_layer_input", [False, True])
def test_layer_ig_sees_and_replaces_only_its_own_threads_layer_calls(to_layer_input):
    """A shared model's layer run by another thread during a joint layer-IG forward: that thread gets the layer's own
    output (not the path's points), and its values are not taken for this thread's (the result is unchanged)."""
    model = make_mlp(seed=2)
    layer = model[2] if to_layer_input else model[1]
    probe = torch.full((3, 8), 0.5, dtype=torch.float64)
    watcher = _OtherThreadsLayerCall(layer, probe)
    watched = nn.Sequential(model[0], model[1], model[2], watcher) if to_layer_input else \
        nn.Sequential(model[0], model[1], watcher, model[2])
    common = dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.2, target=1, seed=3,
                  attribute_to_layer_input=to_layer_input, return_convergence_delta=True)
    ours = joint_integrated_gradients(LayerIntegratedGradients(watched, layer), X, **common)
    alone = joint_integrated_gradients(LayerIntegratedGradients(model, layer), X, **common)
    expected = layer(probe)
    assert watcher.seen and all(torch.equal(seen, expected) for seen in watcher.seen)
    assert not probe.requires_grad
    torch.testing.assert_close(ours, alone, rtol=1e-12, atol=1e-14)


class _BranchesInThreads(nn.Module):
    """Two branches, each run by a worker thread of the model's own (as a thread pool over an ensemble would)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.b, self.head = nn.Linear(5, 6).double(), nn.Linear(5, 6).double(), nn.Linear(12, 3).double()

    def forward(self, x):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a, b = pool.submit(self.a, x), pool.submit(self.b, x)
            return self.head(torch.tanh(torch.cat([a.result(), b.result()], dim=1)))


def test_layer_ig_on_a_layer_the_model_runs_in_threads_of_its_own_is_hooked_in_every_thread():
    model = _BranchesInThreads()
    common = dict(nt_samples=4, stdevs=0.2, target=1, seed=3, return_convergence_delta=True)
    ours, delta = joint_integrated_gradients(LayerIntegratedGradients(model, model.a), X, **common)

    class Inline(_BranchesInThreads):  # the same model and weights, its branches in the calling thread
        def forward(self, x):
            return self.head(torch.tanh(torch.cat([self.a(x), self.b(x)], dim=1)))

    inline = Inline()
    inline.load_state_dict(model.state_dict())
    expected = joint_integrated_gradients(LayerIntegratedGradients(inline, inline.a), X, **common)
    torch.testing.assert_close((ours, delta), expected, rtol=1e-12, atol=1e-14)


class _BranchInThreadsWithGrad(_BranchesInThreads):
    """Branch ``a`` in the calling thread without gradients (the layer's values), in a worker with them."""

    def forward(self, x):
        if not torch.is_grad_enabled():
            return self.head(torch.tanh(torch.cat([self.a(x), self.b(x)], dim=1)))
        return super().forward(x)


def test_layer_ig_on_a_layer_run_elsewhere_only_in_the_gradients_forward_is_hooked_in_every_thread():
    model = _BranchInThreadsWithGrad()
    common = dict(nt_samples=4, stdevs=0.2, target=1, seed=3)
    ours = joint_integrated_gradients(LayerIntegratedGradients(model, model.a), X, **common)

    class Inline(_BranchesInThreads):
        def forward(self, x):
            return self.head(torch.tanh(torch.cat([self.a(x), self.b(x)], dim=1)))

    inline = Inline()
    inline.load_state_dict(model.state_dict())
    expected = joint_integrated_gradients(LayerIntegratedGradients(inline, inline.a), X, **common)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- seeds and chunks


@settings(max_examples=20, deadline=None)
@given(
    variant=st.sampled_from(VARIANTS),
    pairs=st.integers(2, 8),  # a standard error needs two independent units (two antithetic pairs)
    odd=st.booleans(),
    batch_size=st.integers(1, 17),
    seed=st.integers(0, 2**63),
)
def test_results_stderr_and_delta_do_not_depend_on_the_chunk_size(variant, pairs, odd, batch_size, seed):
    stratify, antithetic = variant
    nt_samples = 2 * (pairs + antithetic) + (odd and not antithetic)  # a standard error needs two antithetic pairs
    ig = IntegratedGradients(make_mlp())
    run = lambda size: joint_integrated_gradients(  # noqa: E731
        ig, X, nt_samples=nt_samples, nt_samples_batch_size=size, stdevs=0.3, target=2, seed=seed,
        stratify=stratify, sampler="antithetic" if antithetic else "iid", return_convergence_delta=True, return_stderr=True,
    )
    whole, chunked = run(None), run(batch_size)
    for ours, theirs in [(chunked.attributions, whole.attributions), (chunked.stderr, whole.stderr),
                         (chunked.delta, whole.delta), (chunked.delta_stderr, whole.delta_stderr)]:
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-13)


def test_same_seed_is_bit_identical_another_is_not_and_global_rngs_are_untouched():
    ig = IntegratedGradients(make_mlp())
    run = lambda **kw: joint_integrated_gradients(ig, X, nt_samples=6, nt_samples_batch_size=4,  # noqa: E731
                                                  stdevs=0.3, target=1, **kw)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    first = run(seed=11)
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    assert torch.equal(run(seed=11), first) and not torch.equal(run(seed=12), first)
    from_generator = run(generator=torch.Generator().manual_seed(5))
    assert torch.equal(run(generator=torch.Generator().manual_seed(5)), from_generator)


# --------------------------------------------------------------------------- errors at the door


@pytest.mark.parametrize("nt_type", ["smoothgrad_sq", "vargrad"])
def test_second_moment_nt_types_are_rejected_with_the_reason(nt_type):
    with pytest.raises(ValueError, match="per-noise-draw IG"):
        joint_integrated_gradients(IntegratedGradients(make_mlp()), X, nt_type=nt_type, target=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(nt_type="bogus"), ValueError, "nt_type must be one of"),
        (dict(n_steps=50), TypeError, "nested estimator"),
        (dict(sampler="antithetic", nt_samples=5), ValueError, "must be even"),
        (dict(nt_samples=1, return_stderr=True), ValueError, "needs at least 2 independent units"),
        (dict(sampler="antithetic", nt_samples=2, return_stderr=True), ValueError, "needs at least 2 independent"),
        (dict(nt_samples=0), ValueError, "nt_samples must be a positive int"),
        (dict(target=1.5), TypeError, "target must be an int"),
        (dict(target=[0, -1]), ValueError, "target holds -1"),
        (dict(stdevs=-1.0), ValueError, "stdevs"),
        (dict(baselines=torch.zeros(3, 5)), ValueError, "baselines"),
        (dict(baselines=torch.zeros(1, 4)), ValueError, r"baselines for input 0 has shape \(1, 4\)"),
    ],
)
def test_bad_arguments_are_named_before_any_forward_pass(kwargs, error, message):
    model = PointRecorder()
    with pytest.raises(error, match=message):
        joint_integrated_gradients(IntegratedGradients(model), X, **{"target": 0, **kwargs})
    assert model.seen == []


def test_methods_other_than_integrated_gradients_are_rejected():
    with pytest.raises(TypeError, match="IntegratedGradients"):
        joint_integrated_gradients(Saliency(make_mlp()), X, target=0)


@pytest.mark.parametrize("sampler, dof", [("iid", 4), ("antithetic", 4), ("qmc", 3), ("lhs", 3)])
def test_return_stderr_gives_a_joint_estimate_with_every_sampler(sampler, dof):
    est = joint_integrated_gradients(IntegratedGradients(make_mlp()), X, nt_samples=16, stdevs=0.1, target=0,
                                     sampler=sampler, return_stderr=True)
    assert isinstance(est, SmoothedAttribution) and est.delta is None
    assert bool(torch.isfinite(est.stderr).all()) and bool((est.stderr > 0).all())
    assert est.dof == dof  # stratified: neighbouring groups collapsed (8 → 4); QMC / LHS: 4 replicates


# The fewest samples with a standard error: 2 independent units, which stratified means one collapsed pair of strata.
FEWEST_FOR_STDERR = {"iid": 2, "antithetic": 4}


@pytest.mark.parametrize("stratify", [False, True])
@pytest.mark.parametrize("sampler", sorted(FEWEST_FOR_STDERR))
def test_return_stderr_with_too_few_units_is_refused_before_any_forward_pass(sampler, stratify):
    fewest = FEWEST_FOR_STDERR[sampler]
    model = PointRecorder()
    common = dict(stdevs=0.1, target=0, seed=0, stratify=stratify, sampler=sampler, return_stderr=True)
    with pytest.raises(ValueError, match=f"needs at least 2 independent units.*sampler='{sampler}' with "
                                         f"nt_samples={fewest // 2} has 1"):
        joint_integrated_gradients(IntegratedGradients(model), X, nt_samples=fewest // 2, **common)
    assert model.seen == []
    est = joint_integrated_gradients(IntegratedGradients(model), X, nt_samples=fewest, return_convergence_delta=True,
                                     **common)
    assert bool(est.stderr.isfinite().all()) and bool(est.delta_stderr.isfinite().all())


@pytest.mark.parametrize("joint", [True, "antithetic"])
def test_noise_tunnel_joint_refuses_return_stderr_from_one_unit(joint):
    model = PointRecorder()
    nt_samples = 2 if joint == "antithetic" else 1
    with pytest.raises(ValueError, match="return_stderr=True with nt_type='smoothgrad' needs at least 2"):
        NoiseTunnel(IntegratedGradients(model)).attribute(X, joint=joint, nt_samples=nt_samples, target=0,
                                                          return_stderr=True)
    assert model.seen == []


def test_noise_tunnel_joint_is_the_joint_estimator():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    common = dict(nt_samples=8, nt_samples_batch_size=3, stdevs=0.2, target=1, seed=0, return_convergence_delta=True)
    for joint, antithetic in ((True, False), ("antithetic", True)):
        ours = NoiseTunnel(IntegratedGradients(model)).attribute(x, joint=joint, **common)
        direct = joint_integrated_gradients(
            IntegratedGradients(model), x, sampler="antithetic" if antithetic else "iid", **common
        )
        assert all(torch.equal(a, b) for a, b in zip(ours, direct))


def test_noise_tunnel_joint_passes_return_stderr_on():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    common = dict(nt_samples=8, stdevs=0.2, target=1, seed=0, return_stderr=True)
    ours = NoiseTunnel(IntegratedGradients(model)).attribute(x, joint=True, **common)
    direct = joint_integrated_gradients(IntegratedGradients(model), x, **common)
    assert isinstance(ours, SmoothedAttribution)
    assert torch.equal(ours.attributions, direct.attributions) and torch.equal(ours.stderr, direct.stderr)


@pytest.mark.parametrize(
    "extra, message",
    [
        (dict(joint="yes"), "joint must be False, True,"),
        (dict(joint=True, delta_reduction="none"), "does not support delta_reduction"),
        (dict(joint=True, nt_samples="auto"), 'nt_samples="auto" is not available with joint sampling'),
    ],
)
def test_noise_tunnel_joint_rejects_what_it_cannot_do(extra, message):
    model = nn.Linear(4, 3).double()
    with pytest.raises(ValueError, match=message):
        NoiseTunnel(IntegratedGradients(model)).attribute(torch.zeros(2, 4, dtype=torch.float64), target=0, **extra)


# --------------------------------------------------------------------------- what the one loop gives the joint estimator


class OutOfMemoryAbove(nn.Module):
    """Raises torch.OutOfMemoryError for a forward of more than ``rows`` rows."""

    def __init__(self, net, rows):
        super().__init__()
        self.net, self.rows, self.failures = net, rows, 0

    def forward(self, x):
        if x.shape[0] > self.rows:
            self.failures += 1
            raise torch.OutOfMemoryError(f"injected: {x.shape[0]} rows")
        return self.net(x)


def test_joint_out_of_memory_halves_the_chunk_and_gives_the_smaller_chunks_result():
    net = make_mlp()
    common = dict(nt_samples=12, stdevs=0.3, target=2, seed=5, return_convergence_delta=True, return_stderr=True)
    guarded_net = OutOfMemoryAbove(net, rows=2 * 3)  # 2 examples x at most 3 samples
    with pytest.warns(RuntimeWarning, match="retrying with nt_samples_batch_size=3"):
        ours = joint_integrated_gradients(IntegratedGradients(guarded_net), X, nt_samples_batch_size=12, **common)
    assert guarded_net.failures == 2  # 12 -> 6 -> 3
    expected = joint_integrated_gradients(IntegratedGradients(net), X, nt_samples_batch_size=3, **common)
    for a, b in [(ours.attributions, expected.attributions), (ours.stderr, expected.stderr), (ours.delta, expected.delta)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("budget", [dict(max_batch_rows=6), dict(nt_samples_batch_size="auto"),
                                    dict(memory_budget=4096)])
def test_joint_takes_row_and_memory_budgets_and_automatic_chunks(budget):
    net = make_mlp()
    counter = Counting(net)
    common = dict(nt_samples=10, stdevs=0.3, target=1, seed=2)
    ours = NoiseTunnel(IntegratedGradients(counter)).attribute(X, joint=True, **common, **budget)
    whole = NoiseTunnel(IntegratedGradients(net)).attribute(X, joint=True, **common)
    torch.testing.assert_close(ours, whole, rtol=1e-10, atol=1e-13)
    if "max_batch_rows" in budget:
        assert max(counter.rows) <= 6


def test_the_joint_result_is_a_smoothed_attribution_like_the_nested_one_and_the_old_name_warns():
    nt = NoiseTunnel(IntegratedGradients(make_mlp()))
    joint = nt.attribute(X, joint="antithetic", nt_samples=8, stdevs=0.1, target=0, seed=0, return_stderr=True,
                         return_convergence_delta=True)
    nested = nt.attribute(X, nt_samples=8, stdevs=0.1, target=0, seed=0, return_stderr=True, n_steps=4)
    assert type(joint) is type(nested) is SmoothedAttribution
    expected = (joint.stderr.square().sum(1) / joint.attributions.square().sum(1)).sqrt()
    torch.testing.assert_close(joint.relative_stderr, expected.double())
    assert joint.delta_stderr.shape == (2,) and nested.delta_stderr is None
    assert "Tensor(2, 5)" in repr(joint) and "delta_stderr=" in repr(joint)
    import noisegrad

    with pytest.warns(DeprecationWarning, match="returns a noisegrad.SmoothedAttribution"):
        assert noisegrad.JointEstimate is SmoothedAttribution
