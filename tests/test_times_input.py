"""Times-input in both meanings: mean(∇f(x+ε)) ⊙ x (innsight) and mean((x+ε) ⊙ ∇f(x+ε)) (Captum's InputXGradient)."""

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerGradientXActivation, Saliency
from torch import nn

import noisegrad
from conftest import Recorder, make_cnn
from noisegrad import NoiseTunnel

W = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=torch.float64)  # 2 outputs of 3 features


class Quadratic(nn.Module):
    """f_k(x) = Σ_j W_kj x_j²: ∇f_k(x) = 2 W_k ⊙ x, so every product below has a closed form."""

    def forward(self, x):
        return (x ** 2) @ W.T


X = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]], dtype=torch.float64)


def noisy_rows(**kwargs):
    """The (n, batch, features) noisy inputs a seeded call draws, recorded from its forward passes."""
    model = Recorder(Quadratic())
    NoiseTunnel(Saliency(model)).attribute(X, nt_samples_batch_size=1, target=0, abs=False, **kwargs)
    return torch.stack(model.seen)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_clean_times_input_against_the_hand_computed_formula(nt_type):
    common = dict(nt_samples=7, stdevs=0.4, seed=3)
    xs = noisy_rows(**common)  # x + ε, (7, 2, 3)
    per_copy = 2 * W[0] * xs * X  # ∇f_0(x + ε) ⊙ x
    expected = {"smoothgrad": per_copy.mean(0), "smoothgrad_sq": (per_copy ** 2).mean(0),
                "vargrad": per_copy.var(0, correction=0)}[nt_type]
    ours = NoiseTunnel(Saliency(Quadratic())).attribute(X, nt_type=nt_type, target=0, abs=False, times_input="clean",
                                                        nt_samples_batch_size=3, **common)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    if nt_type == "smoothgrad":  # innsight's reading: the smoothed gradient, times x
        torch.testing.assert_close(ours, (2 * W[0] * xs).mean(0) * X, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noisy_times_input_against_the_hand_computed_formula_and_input_x_gradient(nt_type):
    common = dict(nt_samples=7, stdevs=0.4, seed=3)
    xs = noisy_rows(**common)
    per_copy = 2 * W[1] * xs * xs  # (x + ε) ⊙ ∇f_1(x + ε)
    expected = {"smoothgrad": per_copy.mean(0), "smoothgrad_sq": (per_copy ** 2).mean(0),
                "vargrad": per_copy.var(0, correction=0)}[nt_type]
    ours = NoiseTunnel(Saliency(Quadratic())).attribute(X, nt_type=nt_type, target=1, abs=False, times_input="noisy",
                                                        **common)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    # Captum's NoiseTunnel over InputXGradient (ours equals Captum's given the same noise: test_captum_parity.py)
    ixg = NoiseTunnel(InputXGradient(Quadratic())).attribute(X, nt_type=nt_type, target=1, **common)
    torch.testing.assert_close(ours, ixg, rtol=1e-12, atol=1e-12)


def test_times_input_with_several_outputs_and_standard_errors_equals_one_run_per_output():
    nt = NoiseTunnel(Saliency(Quadratic()))
    common = dict(nt_samples=8, stdevs=0.3, seed=1, abs=False, return_stderr=True, sampler="antithetic")
    for times_input in ("clean", "noisy"):
        ours = nt.attribute(X, outputs=[1, 0], times_input=times_input, **common)
        runs = [nt.attribute(X, target=k, times_input=times_input, **common) for k in (1, 0)]
        for name in ("attributions", "stderr", "relative_stderr"):
            torch.testing.assert_close(getattr(ours, name), torch.stack([getattr(r, name) for r in runs], -1))


def test_the_front_ends_and_explainers_take_times_input():
    common = dict(nt_samples=6, stdevs=0.3, seed=2, sampler="iid")
    nt = NoiseTunnel(Saliency(Quadratic())).attribute(X, target=0, abs=False, times_input="clean", **common)
    torch.testing.assert_close(noisegrad.smoothgrad(Quadratic(), X, target=0, times_input="clean", **common), nt)
    config = noisegrad.SmoothingConfig(nt_samples=6, noise=0.3, seed=2, times_input="clean", return_stderr=False)
    torch.testing.assert_close(noisegrad.SmoothGrad(Quadratic(), config).attribute(X, target=0).attributions, nt)


@pytest.mark.parametrize("method, kwargs, match", [
    (Saliency, dict(times_input=True), "ambiguous"),
    (Saliency, dict(times_input="both"), "None, 'clean' or 'noisy'"),
    (IntegratedGradients, dict(times_input="clean"), "already multiplies by the inputs"),
    (InputXGradient, dict(times_input="noisy"), "already multiplies by the inputs"),
])
def test_times_input_is_refused_where_it_has_no_meaning(method, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseTunnel(method(Quadratic())).attribute(X, nt_samples=2, stdevs=0.1, target=0, **kwargs)


def test_times_input_is_refused_for_a_layers_attributions():
    model = make_cnn()
    with pytest.raises(ValueError, match="does not apply to a layer's attributions"):
        NoiseTunnel(LayerGradientXActivation(model, model[0])).attribute(
            torch.zeros(1, 2, 5, 5, dtype=torch.float64), nt_samples=2, stdevs=0.1, target=0, times_input="clean")
