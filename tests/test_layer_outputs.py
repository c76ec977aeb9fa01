"""LayerGradientXActivation for several outputs at once: one forward per chunk, K gradients w.r.t. the layer.

Checked against Captum's own LayerGradientXActivation run once per output
(every form of layer it takes: a module's output or its input, a tuple of
tensors, tuple model inputs with additional forward arguments, offloaded to
the CPU), against a gradient written by hand in float64, and, through
NoiseTunnel, against one noisegrad run per output; the forwards are counted.
"""

import inspect
import threading

import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from torch import nn

from conftest import Counting, as_tuple, make_cnn, make_mlp, make_two_input, separate_runs
from test_ig_outputs import BASELINE, BASELINE_FORMS, SCALE, TWO, X  # every form of baselines Captum takes
from noisegrad import NoiseTunnel, _captum, weight_noise
from noisegrad.estimators._layer_outputs import (
    layer_gradient_x_activation_of_outputs,
    layer_integrated_gradients_of_outputs,
)

OUTPUTS = (2, 0)


class Split(nn.Module):
    """A layer whose output is a tuple of two tensors (its input's halves, one of them doubled)."""

    def forward(self, h):
        return h[:, :3], 2 * h[:, 3:]


class TupleLayerModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.first, self.split = nn.Linear(5, 8).double(), Split()
        self.left, self.right = nn.Linear(3, 4).double(), nn.Linear(5, 4).double()

    def forward(self, x):
        a, b = self.split(torch.tanh(self.first(x)))
        return self.left(torch.tanh(a)) * self.right(b)


def _cases():
    mlp, two, tupled = make_mlp(seed=1), make_two_input(seed=2), TupleLayerModel()
    return {
        "hidden output": (mlp, mlp[1], X, None, {}),
        "first layer's input": (mlp, mlp[0], X, None, {"attribute_to_layer_input": True}),
        "tuple inputs, extra argument": (two, two.act, TWO, SCALE, {}),
        "a layer taking the two inputs' sum": (two, two.act, TWO, SCALE, {"attribute_to_layer_input": True}),
        "a tuple layer output": (tupled, tupled.split, X, None, {}),
    }


CASES = _cases()


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_each_output_is_captums_layer_gradient_x_activation(case, multiply_by_inputs, memory_efficient):
    model, layer, inputs, extra, kwargs = CASES[case]
    # Captum sets requires_grad on a layer input that is the inputs themselves: give it copies
    inputs = tuple(x.clone() for x in inputs) if isinstance(inputs, tuple) else inputs.clone()
    if memory_efficient and "memory_efficient" not in inspect.signature(LayerGradientXActivation).parameters:
        pytest.skip("this captum's LayerGradientXActivation has no memory_efficient (added after 0.8)")
    options = {"memory_efficient": True} if memory_efficient else {}
    method = LayerGradientXActivation(model, layer, multiply_by_inputs=multiply_by_inputs, **options)
    ours = layer_gradient_x_activation_of_outputs(method, OUTPUTS)(inputs, additional_forward_args=extra, **kwargs)
    for i, k in enumerate(OUTPUTS):
        theirs = method.attribute(inputs, target=k, additional_forward_args=extra, **kwargs)
        assert isinstance(ours, tuple) == isinstance(theirs, tuple)
        for got, want in zip(as_tuple(ours), as_tuple(theirs)):
            assert got.shape == (len(OUTPUTS),) + want.shape
            torch.testing.assert_close(got[i], want, rtol=1e-12, atol=1e-14)


def test_the_hidden_layer_of_an_mlp_by_hand_in_float64():
    # f_k = W2[k] · tanh(W1 x + b1) + b2[k]; layer = the Tanh: gradient W2[k], activation tanh(W1 x + b1)
    model = make_mlp(seed=3)
    activation = torch.tanh(X @ model[0].weight.T + model[0].bias)
    for multiply in (True, False):
        ours = layer_gradient_x_activation_of_outputs(
            LayerGradientXActivation(model, model[1], multiply_by_inputs=multiply), OUTPUTS)(X)
        for i, k in enumerate(OUTPUTS):
            expected = model[2].weight[k].expand_as(activation) * (activation if multiply else 1)
            torch.testing.assert_close(ours[i], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("case", ["tuple inputs, extra argument", "first layer's input", "a tuple layer output"])
def test_several_outputs_equal_one_noisegrad_run_per_output(case, nt_type, batch_size):
    model, layer, inputs, extra, kwargs = CASES[case]
    nt = NoiseTunnel(LayerGradientXActivation(model, layer, multiply_by_inputs=nt_type != "vargrad"))
    common = dict(nt_type=nt_type, nt_samples=5, nt_samples_batch_size=batch_size, stdevs=0.3, seed=7,
                  additional_forward_args=extra, **kwargs)
    ours = nt.attribute(inputs, outputs=[1, 2, 0], **common)
    expected = separate_runs(nt, inputs, [1, 2, 0], **common)
    for got, want in zip(as_tuple(ours), as_tuple(expected)):
        assert got.shape[-1] == 3
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("noise", [dict(nt_samples=1, stdevs=0.0), dict(nt_samples=3, stdevs=0.0)])
def test_without_noise_each_output_is_captums_own(noise):
    model, layer, inputs, extra, _ = CASES["tuple inputs, extra argument"]
    method = LayerGradientXActivation(model, layer)
    ours = NoiseTunnel(method).attribute(inputs, outputs=list(OUTPUTS), additional_forward_args=extra, seed=0,
                                         **noise)
    for i, k in enumerate(OUTPUTS):
        torch.testing.assert_close(ours[..., i], method.attribute(inputs, target=k, additional_forward_args=extra),
                                   rtol=1e-12, atol=1e-14)


def test_one_forward_per_chunk_for_all_outputs():
    model = Counting(make_mlp(seed=1, classes=6))
    nt = NoiseTunnel(LayerGradientXActivation(model, model.model[1]))
    common = dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.2, seed=0)
    several = nt.attribute(X, outputs=list(range(6)), **common)
    assert model.rows == [12, 6]  # chunks of 4 and 2 samples of 3 examples, no factor of 6
    model.rows[:] = []
    torch.testing.assert_close(several[..., 4], nt.attribute(X, target=4, **common), rtol=1e-10, atol=1e-12)


def test_grad_kwargs_keep_one_run_per_output():
    model = Counting(make_mlp(seed=1))
    nt = NoiseTunnel(LayerGradientXActivation(model, model.model[1]))
    common = dict(nt_samples=4, stdevs=0.2, seed=0, grad_kwargs={"retain_graph": False})
    assert not _captum.batches_outputs(nt.attribution_method, {"grad_kwargs": {"retain_graph": False}})
    ours = nt.attribute(X, outputs=list(OUTPUTS), **common)
    assert model.rows == [12, 12]  # one forward of 4 × 3 rows per output
    torch.testing.assert_close(ours, separate_runs(nt, X, OUTPUTS, **common), rtol=0, atol=0)


def test_the_batched_products_of_other_devices_give_the_same_attributions(all_outputs_at_once):
    model, layer, inputs, extra, _ = CASES["a tuple layer output"]
    nt = NoiseTunnel(LayerGradientXActivation(model, layer, multiply_by_inputs=False))
    common = dict(outputs=list(OUTPUTS), nt_samples=4, nt_samples_batch_size=2, stdevs=0.2, seed=1,
                  nt_type="smoothgrad_sq")
    one_by_one = nt.attribute(inputs, **common)
    with all_outputs_at_once():
        batched = nt.attribute(inputs, **common)
    for got, want in zip(batched, one_by_one):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("extra", [
    dict(noise_layer="0", stdevs=0.2),
    dict(weight_noise=weight_noise(sigma=0.05, draws=2), stdevs=0.1),
    dict(nt_samples="auto", tol=0.2, max_samples=64, stdevs=0.1),
])
def test_noise_at_a_layer_weight_noise_and_auto_equal_one_run_per_output(extra):
    model = make_mlp(seed=1)
    nt = NoiseTunnel(LayerGradientXActivation(model, model[1]))
    common = dict(dict(nt_samples=4), seed=3, **extra)
    ours = nt.attribute(X, outputs=list(OUTPUTS), **common)
    if extra.get("nt_samples") == "auto":  # each example stops when all its outputs reached tol: compare at its count
        for i in range(3):
            alone = [nt.attribute(X[i:i + 1], target=k, example_ids=[i], seed=3, stdevs=0.1,
                                  nt_samples=int(ours.nt_samples[i])) for k in OUTPUTS]
            torch.testing.assert_close(ours.attributions[i:i + 1], torch.stack(alone, -1), rtol=1e-10, atol=1e-12)
        return
    torch.testing.assert_close(ours, separate_runs(nt, X, OUTPUTS, **common), rtol=1e-10, atol=1e-12)


def test_a_cnn_in_float32():
    model = make_cnn(dtype=torch.float32)
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    nt = NoiseTunnel(LayerGradientXActivation(model, model[1]))
    ours = nt.attribute(x, outputs=[3, 1], nt_samples=4, stdevs=0.1, seed=2)
    assert ours.shape == (2, 3, 5, 5, 2)
    torch.testing.assert_close(ours, separate_runs(nt, x, [3, 1], nt_samples=4, stdevs=0.1, seed=2),
                               rtol=1e-5, atol=1e-7)


def test_the_users_method_model_and_inputs_are_left_as_they_were():
    model = make_mlp(seed=1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    x = X.detach().clone()  # the first layer's input is the noisy copies (a copy of x itself with stdevs=0): never x
    for layer, to_input, stdevs in [(model[1], False, 0.1), (model[0], True, 0.0)]:
        method = LayerGradientXActivation(model, layer)
        before = dict(vars(method))
        NoiseTunnel(method).attribute(x, outputs=list(OUTPUTS), nt_samples=2, stdevs=stdevs, seed=0,
                                      attribute_to_layer_input=to_input)
        assert vars(method) == before and not x.requires_grad and torch.equal(x, X)
        assert all(not p.grad.any() and p.requires_grad for p in model.parameters())
        assert not model._forward_hooks and not layer._forward_hooks and not layer._forward_pre_hooks


def test_outputs_the_model_does_not_have_are_refused():
    model = make_mlp(seed=1)
    with pytest.raises(ValueError, match=r"outputs=\[0, 5\] names column 5, but the model returns 3 outputs"):
        NoiseTunnel(LayerGradientXActivation(model, model[1])).attribute(X, outputs=[0, 5], nt_samples=2,
                                                                          stdevs=0.1)


# LayerIntegratedGradients

def _layer_ig_case(inputs, to_layer_input, tupled_layer):
    if tupled_layer:
        model = TupleLayerModel()
        return model, model.split, None
    if isinstance(inputs, tuple):
        model = make_two_input(seed=2)
        return model, model.act, SCALE
    model = make_mlp(seed=2)
    return model, model[0] if to_layer_input else model[1], None


LAYER_IG_VARIANTS = {  # approximation, attribute_to_layer_input, a tuple layer output, multiply_by_inputs
    "riemann_left": ("riemann_left", False, False, True),
    "riemann_trapezoid, layer input, not times inputs": ("riemann_trapezoid", True, False, False),
    "gausslegendre, tuple layer": ("gausslegendre", False, True, True),
}


@pytest.mark.parametrize("form, variant", [
    (form, variant) for form in BASELINE_FORMS for variant in LAYER_IG_VARIANTS
    if not (LAYER_IG_VARIANTS[variant][2] and isinstance(BASELINE_FORMS[form][0], tuple))  # one-input model
])
def test_each_output_is_captums_layer_integrated_gradients(form, variant):
    inputs, baselines = BASELINE_FORMS[form]
    approximation, to_layer_input, tupled_layer, multiply = LAYER_IG_VARIANTS[variant]
    model, layer, extra = _layer_ig_case(inputs, to_layer_input, tupled_layer)
    method = LayerIntegratedGradients(model, layer, multiply_by_inputs=multiply)
    common = dict(baselines=baselines, additional_forward_args=extra, n_steps=5, method=approximation,
                  internal_batch_size=9, return_convergence_delta=True, attribute_to_layer_input=to_layer_input)
    attributions, delta = layer_integrated_gradients_of_outputs(method, OUTPUTS)(inputs, **common)
    for i, k in enumerate(OUTPUTS):
        expected, expected_delta = method.attribute(inputs, target=k, **common)
        assert isinstance(attributions, tuple) == isinstance(expected, tuple)
        for got, want in zip(as_tuple(attributions), as_tuple(expected)):
            torch.testing.assert_close(got[i], want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(delta[i], expected_delta, rtol=1e-10, atol=1e-12)


def test_the_defaults_are_captums():
    ours = inspect.signature(layer_integrated_gradients_of_outputs(
        LayerIntegratedGradients(make_mlp(), make_mlp()[1]), (0,))).parameters
    captums = inspect.signature(LayerIntegratedGradients.attribute).parameters
    assert {name: p.default for name, p in ours.items()} == {
        name: p.default for name, p in captums.items() if name != "self"}


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("batch_size", [None, 2])
def test_layer_ig_of_several_outputs_equals_one_noisegrad_run_per_output(nt_type, batch_size):
    model = make_two_input(seed=4)
    nt = NoiseTunnel(LayerIntegratedGradients(model, model.act, multiply_by_inputs=nt_type != "vargrad"))
    common = dict(nt_type=nt_type, nt_samples=5, nt_samples_batch_size=batch_size, stdevs=0.3, seed=7, n_steps=4,
                  baselines=(TWO[0].flip(0), 0.25), additional_forward_args=SCALE, internal_batch_size=30,
                  return_convergence_delta=True)
    ours, delta = nt.attribute(TWO, outputs=[1, 2, 0], **common)
    expected, expected_delta = separate_runs(nt, TWO, [1, 2, 0], **common)
    assert ours.shape == (3, 6, 3) and delta.shape == (3, 3)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta, expected_delta, rtol=1e-10, atol=1e-12)


def test_layer_ig_without_noise_is_captums_own():
    model = make_mlp(seed=2)
    method = LayerIntegratedGradients(model, model[1])
    common = dict(baselines=BASELINE, n_steps=6, return_convergence_delta=True)
    ours, delta = NoiseTunnel(method).attribute(X, outputs=list(OUTPUTS), nt_samples=2, stdevs=0.0, seed=0,
                                                **common)
    for i, k in enumerate(OUTPUTS):
        expected, expected_delta = method.attribute(X, target=k, **common)
        torch.testing.assert_close(ours[..., i], expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(delta[..., i], expected_delta, rtol=1e-10, atol=1e-12)


def test_layer_ig_runs_the_forwards_of_one_output_for_all_of_them():
    model = Counting(make_mlp(seed=1, classes=6))
    common = dict(nt_samples=4, nt_samples_batch_size=2, stdevs=0.1, seed=0, n_steps=5, internal_batch_size=13,
                  return_convergence_delta=True)
    nt = NoiseTunnel(LayerIntegratedGradients(model, model.model[1]))
    single = nt.attribute(X, target=4, **common)
    rows, model.rows[:] = list(model.rows), []
    several = nt.attribute(X, outputs=list(range(6)), **common)
    # per chunk of 2 samples × 3 examples: the layer at the inputs and at the baselines, 2 + 2 + 1 of the 5 steps,
    # the delta's forwards at the baselines and the inputs
    assert model.rows == rows == [6, 6, 12, 12, 6, 6, 6] * 2
    torch.testing.assert_close(several[0][..., 4], single[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(several[1][..., 4], single[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("noise", [
    dict(noise_layer="0", stdevs=0.2),  # the attributed layer itself: noise on the inputs' layer values only
    dict(noise_layer="1", stdevs=0.2),
    dict(weight_noise=weight_noise(sigma=0.05, draws=2), stdevs=0.1),
])
def test_layer_ig_with_noise_at_a_layer_or_on_the_weights_equals_one_run_per_output(noise):
    model = make_mlp(seed=1)
    nt = NoiseTunnel(LayerIntegratedGradients(model, model[0]))
    common = dict(nt_samples=4, nt_samples_batch_size=2, seed=3, n_steps=4, baselines=BASELINE,
                  return_convergence_delta=True, **noise)
    ours, delta = nt.attribute(X, outputs=list(OUTPUTS), **common)
    expected, expected_delta = separate_runs(nt, X, OUTPUTS, **common)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta, expected_delta, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Multiple layers provided")
def test_what_layer_ig_cannot_batch_keeps_one_run_per_output():
    model = make_mlp(seed=1)
    assert _captum.batches_outputs(LayerIntegratedGradients(model, model[1]), {})
    assert not _captum.batches_outputs(LayerIntegratedGradients(model, model[1]), {"grad_kwargs": {"a": 1}})
    assert not _captum.batches_outputs(LayerIntegratedGradients(model, model[1], device_ids=[0]), {})
    assert not _captum.batches_outputs(LayerGradientXActivation(model, model[1], device_ids=[0]), {})
    assert not _captum.batches_outputs(LayerGradientXActivation(model, [model[0], model[1]]), {})
    assert not _captum.batches_outputs(LayerIntegratedGradients(model, [model[0], model[1]]), {})
    counting = Counting(model)
    nt = NoiseTunnel(LayerIntegratedGradients(counting, model[1]))
    common = dict(nt_samples=2, stdevs=0.1, seed=0, n_steps=3, grad_kwargs={"retain_graph": False})
    ours = nt.attribute(X, outputs=list(OUTPUTS), **common)
    assert counting.rows == [6, 6, 18] * 2  # the layer's two forwards and the path, once per output
    torch.testing.assert_close(ours, separate_runs(nt, X, OUTPUTS, **common), rtol=0, atol=0)


def test_the_users_layer_ig_is_left_as_it_was():
    model = make_mlp(seed=1)
    method = LayerIntegratedGradients(model, model[1])
    before = dict(vars(method))
    NoiseTunnel(method).attribute(X, outputs=list(OUTPUTS), nt_samples=2, stdevs=0.1, seed=0, n_steps=3)
    assert vars(method) == before and method.device_ids is None
    assert not model[1]._forward_hooks and not model[1]._forward_pre_hooks


class _OtherThreadsForward(nn.Module):
    """Identity that, on the attributing thread's path forwards, runs ``layer`` on ``probe`` in another thread."""

    def __init__(self, layer, probe):
        super().__init__()
        self.layer, self.probe, self.seen = layer, probe, []

    def forward(self, h):
        if threading.current_thread() is threading.main_thread() and torch.is_grad_enabled():
            worker = threading.Thread(target=lambda: self.seen.append(self.layer(self.probe)))
            worker.start()
            worker.join()
        return h


def test_layer_ig_leaves_other_threads_forwards_through_the_layer_alone():
    # the path's points replace the layer's output in this thread's forwards only: another thread running the same
    # layer meanwhile (a shared model) gets the layer's own output
    model = make_mlp(seed=2)
    probe = torch.full((2, 8), 0.5, dtype=torch.float64)
    watcher = _OtherThreadsForward(model[1], probe)
    watched = nn.Sequential(model[0], model[1], watcher, model[2])
    layer_integrated_gradients_of_outputs(LayerIntegratedGradients(watched, model[1]), OUTPUTS)(X, n_steps=3)
    assert watcher.seen and all(torch.equal(seen, torch.tanh(probe)) for seen in watcher.seen)


class _OtherThreadsLayerCall(nn.Module):
    """Identity that, on each forward of the attributing thread, runs ``layer`` on ``probe`` in another thread."""

    def __init__(self, layer, probe):
        super().__init__()
        self.layer, self.probe, self.calls = layer, probe, 0

    def forward(self, h):
        if threading.current_thread() is threading.main_thread():
            worker = threading.Thread(target=lambda: self.layer(self.probe))
            worker.start()
            worker.join()
            self.calls += 1
        return h


@pytest.mark.parametrize("to_layer_input", [False, True])
@pytest.mark.parametrize("kind", ["gradient x activation", "integrated gradients"])
def test_the_layers_values_are_this_threads_own(kind, to_layer_input):
    # another thread running the shared layer between this thread's layer call and the end of its forward: its values
    # are not taken for this thread's, and its tensors are not made to require gradients
    model = make_mlp(seed=2)
    layer = model[2] if to_layer_input else model[1]
    probe = torch.full((X.shape[0], 8), 0.5, dtype=torch.float64)
    watcher = _OtherThreadsLayerCall(layer, probe)
    watched = nn.Sequential(model[0], model[1], model[2], watcher) if to_layer_input else \
        nn.Sequential(model[0], model[1], watcher, model[2])
    if kind == "gradient x activation":
        ours = layer_gradient_x_activation_of_outputs(LayerGradientXActivation(watched, layer), OUTPUTS)(
            X, attribute_to_layer_input=to_layer_input)
        theirs = [LayerGradientXActivation(model, layer).attribute(X, target=k, attribute_to_layer_input=to_layer_input)
                  for k in OUTPUTS]
    else:
        ours = layer_integrated_gradients_of_outputs(LayerIntegratedGradients(watched, layer), OUTPUTS)(
            X, n_steps=3, attribute_to_layer_input=to_layer_input)
        theirs = [LayerIntegratedGradients(model, layer).attribute(X, target=k, n_steps=3,
                                                                   attribute_to_layer_input=to_layer_input)
                  for k in OUTPUTS]
    assert watcher.calls and not probe.requires_grad
    torch.testing.assert_close(ours, torch.stack(theirs), rtol=1e-10, atol=1e-12)
