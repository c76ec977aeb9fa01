"""The wrapped call: gradients whatever the caller's grad mode, no graph for perturbation methods."""

import contextlib

import pytest
import torch
from captum.attr import DeepLift, FeatureAblation, GradientAttribution, IntegratedGradients, Saliency

from conftest import make_mlp
from noisegrad import NoiseTunnel

X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
GRAD_MODES = {"grad enabled": contextlib.nullcontext, "no_grad": torch.no_grad}


class PlainGradient(GradientAttribution):
    """A user-written gradient method that takes the gradient without enabling grad itself."""

    def attribute(self, inputs, target=None):
        return torch.autograd.grad(self.forward_func(inputs)[:, target].sum(), inputs)[0]


@pytest.mark.parametrize("mode", sorted(GRAD_MODES))
def test_a_user_written_gradient_method_gets_its_gradients_inside_the_tunnel(mode):
    model = make_mlp()
    common = dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.2, target=1, seed=0)
    expected = NoiseTunnel(Saliency(model)).attribute(X, abs=False, **common)
    with GRAD_MODES[mode]():
        smoothed = NoiseTunnel(PlainGradient(model)).attribute(X, **common)
    torch.testing.assert_close(smoothed, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "method, extra",
    [(Saliency, {}), (IntegratedGradients, {"n_steps": 4}), (DeepLift, {}), (IntegratedGradients, {"joint": True})],
)
def test_a_call_under_no_grad_gives_what_a_call_with_grad_gives(method, extra):
    model = make_mlp()
    common = dict(nt_samples=4, stdevs=0.2, target=1, seed=0, **extra)
    expected = NoiseTunnel(method(model)).attribute(X, **common)
    with torch.no_grad():
        smoothed = NoiseTunnel(method(model)).attribute(X, **common)
    assert torch.equal(smoothed, expected)


def test_a_perturbation_method_builds_no_graph_even_when_the_caller_has_grad_enabled():
    model = make_mlp()
    graphs = []
    handle = model.register_forward_hook(lambda _module, _args, output: graphs.append(output.requires_grad))
    NoiseTunnel(FeatureAblation(model)).attribute(X, nt_samples=3, stdevs=0.2, target=1, seed=0)
    handle.remove()
    assert torch.is_grad_enabled() and graphs and not any(graphs)
