"""NoiseTunnel's own promises: exact statistics, noise as specified, any dtype, per-input deltas."""

import pytest
import torch
from captum.attr import Attribution, IntegratedGradients, LayerIntegratedGradients, Saliency
from torch import nn

from conftest import make_cnn, make_mlp
from noisegrad import NoiseTunnel, SampleSeeds, _layout, plan_chunks, relative
from noisegrad.perturb.inputs import noisy_copies


def reference_samples(method, x, nt_samples, batch_size, sigma, seed, **kwargs):
    """The wrapped method applied by hand to noisegrad's noisy copies, in the layout noisegrad gives them (a float32
    CNN's: channels-last), so that the maps are the same: (nt_samples, batch, ...)."""
    chunks = []
    for ids in plan_chunks(nt_samples, batch_size):
        noisy = noisy_copies(x, sigma, ids, SampleSeeds(seed), 0)
        noisy = _layout.in_layout(noisy) if _layout.channels_last((x,), method.forward_func) else noisy
        chunks.append(method.attribute(noisy, **kwargs).detach())
    return torch.cat(chunks).reshape((nt_samples,) + tuple(x.shape))


def rel_l2(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_linear_model_smoothgrad_is_the_weight_and_vargrad_is_exactly_zero():
    model = nn.Linear(6, 2).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    nt = NoiseTunnel(Saliency(model))
    smooth = nt.attribute(x, nt_samples=9, nt_samples_batch_size=4, stdevs=0.7, target=1, abs=False, seed=0)
    torch.testing.assert_close(smooth, model.weight[1].detach().expand(4, 6), rtol=0, atol=1e-15)
    vargrad = nt.attribute(x, nt_type="vargrad", nt_samples=9, nt_samples_batch_size=4, stdevs=0.7, target=1, seed=0)
    assert bool((vargrad == 0).all())


@pytest.mark.parametrize("nt_samples, batch_size", [(32, 8), (256, 8), (256, None)])
@pytest.mark.parametrize("relative_noise", [1e-3, 1e-2])
def test_vargrad_at_small_noise_is_nonnegative_and_within_1e_7_of_a_float64_two_pass(relative_noise, nt_samples,
                                                                                    batch_size):
    """σ = 0.1 % of the input range: the regime where Captum's float32 E[a²] − E[a]² goes negative.

    The README's promise: within 1e-7 (norm-relative) of a float64 two-pass over the same float32 maps,
    not growing with the sample count (M2 is merged in float64); per element, the float32 result's own
    rounding (a few 1e-8) is all that is left, also with all samples in one chunk (sums in float64).
    """
    model = make_cnn(torch.float32, seed=3)
    x = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    sigma = relative(relative_noise).sigma(x)
    samples = reference_samples(Saliency(model), x, nt_samples, 8, sigma, 0, target=2, abs=False)
    reference = samples.double().var(dim=0, correction=0)
    vargrad = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="vargrad", nt_samples=nt_samples, nt_samples_batch_size=batch_size,
        stdevs=relative(relative_noise), target=2, abs=False, seed=0,
    )
    assert bool((vargrad >= 0).all())
    assert rel_l2(vargrad, reference) < 1e-7
    assert float(((vargrad.double() - reference).abs() / reference).max()) < 3e-7


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_half_precision_models_run_and_add_no_reduction_error(dtype, nt_type):
    model = make_mlp(dtype, seed=1)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    sigma = torch.tensor(0.2, dtype=dtype)
    samples = reference_samples(Saliency(model), x, 12, 5, sigma, 0, target=0, abs=False).double()
    expected = {
        "smoothgrad": samples.mean(0),
        "smoothgrad_sq": (samples**2).mean(0),
        "vargrad": samples.var(0, correction=0),
    }[nt_type]
    ours = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=12, nt_samples_batch_size=5, stdevs=0.2, target=0, abs=False, seed=0
    )
    assert ours.dtype == dtype
    # Only the final rounding to the half dtype remains: half an ulp.
    torch.testing.assert_close(ours, expected.to(dtype), rtol=0, atol=0)


def test_noise_is_drawn_in_the_inputs_dtype():
    x = torch.zeros(2, 3, dtype=torch.bfloat16)
    noisy = noisy_copies(x, torch.tensor(1.0, dtype=torch.bfloat16), range(4), SampleSeeds(0), 0)
    assert noisy.dtype == torch.bfloat16 and noisy.shape == (8, 3)


class Recorder(nn.Module):
    """Identity-like model that records every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2).double()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x)


def test_per_feature_sigma_zero_means_no_noise_on_that_feature():
    model = Recorder()
    x = torch.randn(3, 4, dtype=torch.float64)
    sigma = torch.tensor([0.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    NoiseTunnel(Saliency(model)).attribute(x, nt_samples=50, nt_samples_batch_size=20, stdevs=sigma, target=0, seed=1)
    noise = torch.cat(model.seen).reshape(50, 3, 4) - x  # rows are sample-major
    assert bool((noise[..., [0, 2]] == 0).all())
    spread = noise.reshape(-1, 4).std(dim=0)
    assert 0.35 < float(spread[1]) < 0.65 and 1.5 < float(spread[3]) < 2.5


@pytest.mark.parametrize("of", ["range", "std"])
def test_relative_noise_has_the_spread_of_each_example(of):
    x = torch.stack([torch.linspace(0, 1, 200), torch.linspace(-5, 15, 200)]).double()
    spread = {"range": torch.tensor([1.0, 20.0]), "std": x.std(dim=1, correction=0)}[of].double()
    model = Recorder()
    model.linear = nn.Linear(200, 2).double()
    NoiseTunnel(Saliency(model)).attribute(x, nt_samples=20, stdevs=relative(0.1, of=of), target=0, seed=2)
    noise = model.seen[0].reshape(20, 2, 200) - x
    measured = noise.transpose(0, 1).reshape(2, -1).std(dim=1)
    torch.testing.assert_close(measured, 0.1 * spread, rtol=0.05, atol=0)


def test_tuple_stdevs_mix_absolute_relative_and_per_feature_entries():
    seen = []

    def forward(a, b):
        seen.append((a.detach().clone(), b.detach().clone()))
        return torch.cat([a, b], dim=1).sum(dim=1, keepdim=True)

    a = torch.randn(2, 2, dtype=torch.float64)
    b = torch.randn(2, 2, dtype=torch.float64)
    stdevs = (relative(0.0), torch.tensor([0.0, 1.0], dtype=torch.float64))
    out = NoiseTunnel(Saliency(forward)).attribute((a, b), nt_samples=3, stdevs=stdevs, seed=0)
    assert isinstance(out, tuple) and [t.shape for t in out] == [a.shape, b.shape]
    noisy_a, noisy_b = seen[0]
    assert torch.equal(noisy_a, a.repeat(3, 1))  # relative(0.0): no noise on a
    assert torch.equal(noisy_b[:, 0], b[:, 0].repeat(3))  # σ = 0 for b's first feature
    assert bool((noisy_b[:, 1] != b[:, 1].repeat(3)).all())  # σ = 1 for its second


def test_delta_is_averaged_per_input_by_default_and_per_copy_with_none():
    model = make_mlp()
    x = torch.randn(4, 5, dtype=torch.float64)
    nt = NoiseTunnel(IntegratedGradients(model))
    common = dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.1, target=0, return_convergence_delta=True, seed=0)
    _, delta = nt.attribute(x, **common)
    _, per_copy = nt.attribute(x, delta_reduction="none", **common)
    assert delta.shape == (4,) and per_copy.shape == (24,)
    # Regroup Captum's (chunk, example, copy) order by hand: chunks of 4 copies, then 2.
    first, second = per_copy[:16].reshape(4, 4), per_copy[16:].reshape(4, 2)
    torch.testing.assert_close(delta, torch.cat([first, second], dim=1).mean(dim=1), rtol=1e-12, atol=1e-18)


def test_layer_attributions_are_smoothed_in_the_layers_shape():
    model = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64)
    nt = NoiseTunnel(LayerIntegratedGradients(model, model[0]))
    attr, delta = nt.attribute(x, nt_samples=4, stdevs=0.1, target=1, n_steps=5, return_convergence_delta=True, seed=0)
    assert attr.shape == (3, 8) and delta.shape == (3,)


def test_inputs_that_require_grad_are_left_alone():
    model = make_mlp()
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    y = x * 1.0  # a non-leaf input
    NoiseTunnel(Saliency(model)).attribute(y, nt_samples=3, stdevs=0.1, target=0, seed=0)
    assert x.grad is None and y.requires_grad and not y.is_leaf


class Doubler(Attribution):
    """A user-written attribution method without Captum's logging decorator."""

    def attribute(self, inputs, target=None):
        return 2 * inputs


def test_a_user_written_method_without_captums_decorator_can_be_wrapped():
    x = torch.randn(3, 4, dtype=torch.float64)
    smooth = NoiseTunnel(Doubler(lambda t: t)).attribute(x, nt_samples=200, stdevs=0.01, seed=0)
    torch.testing.assert_close(smooth, 2 * x, rtol=0, atol=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_on_cuda_everything_stays_on_the_device_and_chunking_does_not_matter(nt_type):
    model = make_cnn(torch.float32).cuda()
    x = torch.rand(2, 2, 5, 5, device="cuda")
    nt = NoiseTunnel(IntegratedGradients(model))
    common = dict(nt_type=nt_type, nt_samples=8, stdevs=relative(0.1), target=1, n_steps=4, seed=0)
    whole, delta = nt.attribute(x, nt_samples_batch_size=8, return_convergence_delta=True, **common)
    chunked = nt.attribute(x, nt_samples_batch_size=3, **common)
    assert whole.device == delta.device == x.device
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6 * float(whole.abs().max()))
