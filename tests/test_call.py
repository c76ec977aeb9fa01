"""The wrapped call: gradients whatever the caller's grad mode, and failures at the first forward explained."""

import contextlib
import re

import numpy as np
import pytest
import torch
from captum.attr import DeepLift, FeatureAblation, GradientAttribution, IntegratedGradients, NeuronGradient, Saliency

from conftest import make_mlp
from noisegrad import NoiseTunnel
from test_state import FlakyNet, assert_unchanged, prepared, snapshot

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


# --------------------------------------------------------------------------- failures at the first forward


def assert_left_as_it_was(model, before, method):
    assert_unchanged(model, before)
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert method.forward_func is model or method.forward_func.__self__ is model


OUT_OF_RANGE = {
    "int": (3, r"target=3 is out of range: the model returns 3 outputs per example.*\[-3, 2\]"),
    "negative int": (-4, r"target=-4 is out of range: the model returns 3 outputs per example"),
    "list": ([0, 7, 1, 2], r"target holds 7, out of range: the model returns 3 outputs per example.*\[0, 2\]"),
    "tensor": (torch.tensor([0, 1, 2, 5]), r"target holds 5, out of range: the model returns 3 outputs"),
    "one-element tensor": (torch.tensor([3]), r"target=3 is out of range: the model returns 3 outputs"),
    "tuple too long": ((0, 1), r"target=\(0, 1\) has 2 indices, but the model's output per example has shape \(3,\)"),
    # the repr of a numpy integer depends on numpy's version ("np.int64(4)" from 2.0, "4" before)
    "tuple of numpy": ((np.int64(4),), re.escape(f"target={(np.int64(4),)!r} is out of range: its index 4 selects from 3")),
}


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients, FeatureAblation])
@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_a_target_beyond_the_models_outputs_is_named_at_the_first_forward(case, method):
    target, message = OUT_OF_RANGE[case]
    model = prepared(train=False)
    before = snapshot(model)
    wrapped = method(model)
    with pytest.raises(ValueError, match=message) as raised:
        NoiseTunnel(wrapped).attribute(torch.randn(4, 5), nt_samples=4, nt_samples_batch_size=2, target=target)
    assert isinstance(raised.value.__cause__, (IndexError, RuntimeError, AssertionError))
    assert model.calls == 1
    assert_left_as_it_was(model, before, wrapped)


def test_a_target_for_a_model_with_one_value_per_example_says_to_give_none():
    model = make_mlp()
    with pytest.raises(ValueError, match="target=1 selects an output, but the model returns a single value"):
        NoiseTunnel(Saliency(lambda x: model(x).sum(1))).attribute(X, target=1)


class Packed(FlakyNet):
    """FlakyNet whose outputs come packed in a tuple, a dict or a list."""

    def __init__(self, pack):
        super().__init__()
        self.pack = pack

    def forward(self, x):
        return self.pack(super().forward(x))


PACKINGS = {
    "tuple": (lambda y: (y, y.sum(1)), r"returned a tuple of 2 \(Tensor, Tensor\)"),
    "dict": (lambda y: {"logits": y}, r"returned a dict with keys \['logits'\]"),
    "list": (lambda y: [y], r"returned a list of 1 \(Tensor\)"),
}


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients, DeepLift, FeatureAblation])
@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_a_model_that_does_not_return_a_tensor_is_named_at_the_first_forward(packing, method):
    pack, described = PACKINGS[packing]
    torch.manual_seed(0)
    model = Packed(pack).eval()
    model.calls = 0
    before = snapshot(model)
    wrapped = method(model)
    with pytest.raises(TypeError, match=described + ".*needs a tensor.*wrap the model"):
        NoiseTunnel(wrapped).attribute(torch.randn(4, 5), nt_samples=4, nt_samples_batch_size=2, target=1)
    assert model.calls == 1
    assert_left_as_it_was(model, before, wrapped)


FORWARD_FUNCTIONS = {
    "function": lambda model: (lambda x: model(x)),
    "bound method": lambda model: model.forward,
    "script module": lambda model: torch.jit.script(model),  # takes no Python hooks
}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", sorted(FORWARD_FUNCTIONS))
def test_a_forward_function_that_takes_no_hooks_is_watched_and_put_back(kind):
    forward_func = FORWARD_FUNCTIONS[kind](make_mlp())
    wrapped = Saliency(forward_func)
    with pytest.raises(ValueError, match="target=5 is out of range: the model returns 3 outputs"):
        NoiseTunnel(wrapped).attribute(X, target=5)
    assert wrapped.forward_func is forward_func


def test_a_function_returning_a_dict_is_named_at_the_first_forward():
    model = make_mlp()
    with pytest.raises(TypeError, match=r"returned a dict with keys \['logits'\].*needs a tensor"):
        NoiseTunnel(Saliency(lambda x: {"logits": model(x)})).attribute(X, target=None)


def test_methods_that_do_not_select_a_target_still_take_a_model_returning_a_tuple():
    model = Packed(PACKINGS["tuple"][0]).eval()
    smoothed = NoiseTunnel(NeuronGradient(model, model.head)).attribute(X.float(), neuron_selector=1, nt_samples=2)
    assert smoothed.shape == X.shape


class IndexingNet(FlakyNet):
    """A forward that fails with an IndexError of its own."""

    def forward(self, x):
        raise IndexError("the model's own indexing failed")


def test_a_failure_inside_the_model_is_not_blamed_on_the_target():
    with pytest.raises(IndexError, match="the model's own indexing failed"):
        NoiseTunnel(Saliency(IndexingNet().eval())).attribute(X.float(), target=7)
