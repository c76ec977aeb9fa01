"""What ``noisegrad/_captum.py`` assumes about Captum's method classes, checked against the installed Captum.

Every test is parametrized by class name, so a Captum release that breaks an
assumption fails with the class in the test id.
"""

import contextlib
import copy
import gc
import inspect
import random
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest
import torch
from captum._utils.gradient import compute_gradients
from captum.attr import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    InternalInfluence,
    LayerConductance,
    LayerDeepLift,
    LayerDeepLiftShap,
    LayerGradientShap,
    LayerIntegratedGradients,
    LRP,
    NeuronConductance,
    NeuronDeepLift,
    NeuronDeepLiftShap,
    NeuronGradientShap,
    NeuronIntegratedGradients,
    Occlusion,
    Saliency,
)
from torch import nn

from noisegrad import _captum, _gradients

BATCH, FEATURES, HIDDEN, CLASSES = 2, 4, 6, 3


class RowCountingNet(nn.Module):
    """Linear → activation → Linear whose forward records the rows it sees, after every hook has run.

    DeepLift's pre-hook joins inputs and baselines before the forward body
    runs, so the recorded rows are what the model computes on.
    """

    def __init__(self, activation: Callable[[], nn.Module] = nn.Tanh) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.hidden = nn.Linear(FEATURES, HIDDEN)
            self.act = activation()
            self.head = nn.Linear(HIDDEN, CLASSES)
        self.double().eval()
        self.rows = []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.head(self.act(self.hidden(x)))


class IdentityFirstNet(RowCountingNet):
    """The same network behind an identity layer, whose value is the input itself."""

    def __init__(self) -> None:
        super().__init__()
        self.entry = nn.Identity()

    def forward(self, x):
        return super().forward(self.entry(x))


def inputs():
    return torch.linspace(-1.0, 1.5, BATCH * FEATURES, dtype=torch.float64).reshape(BATCH, FEATURES)


def baselines(rows):
    return torch.linspace(-0.5, 0.5, rows * FEATURES, dtype=torch.float64).reshape(rows, FEATURES)


@dataclass
class Case:
    """How to build a method on a model and call it; ``expansion`` names the argument that sets its rows per copy."""

    make: Callable[[RowCountingNet], Any]
    kwargs: Dict[str, Any]
    expansion: Optional[str] = None
    other: Dict[str, Any] = field(default_factory=dict)  # a setting other than the default


def whole(cls):
    return lambda model: cls(model)


def at_layer(cls):
    return lambda model: cls(model, model.hidden)


TARGET = {"target": 0}
NEURON = {"neuron_selector": 1}
CASES = {
    IntegratedGradients: Case(whole(IntegratedGradients), TARGET, "n_steps", {"n_steps": 7}),
    LayerIntegratedGradients: Case(at_layer(LayerIntegratedGradients), TARGET, "n_steps", {"n_steps": 7}),
    LayerConductance: Case(at_layer(LayerConductance), TARGET, "n_steps", {"n_steps": 7}),
    InternalInfluence: Case(at_layer(InternalInfluence), TARGET, "n_steps", {"n_steps": 7}),
    NeuronIntegratedGradients: Case(at_layer(NeuronIntegratedGradients), NEURON, "n_steps", {"n_steps": 7}),
    NeuronConductance: Case(at_layer(NeuronConductance), {**NEURON, **TARGET}, "n_steps", {"n_steps": 7}),
    GradientShap: Case(whole(GradientShap), {"baselines": baselines(3), **TARGET}, "n_samples", {"n_samples": 3}),
    LayerGradientShap: Case(
        at_layer(LayerGradientShap), {"baselines": baselines(3), **TARGET}, "n_samples", {"n_samples": 3}
    ),
    NeuronGradientShap: Case(
        at_layer(NeuronGradientShap), {"baselines": baselines(3), **NEURON}, "n_samples", {"n_samples": 3}
    ),
    DeepLiftShap: Case(whole(DeepLiftShap), {"baselines": baselines(3), **TARGET}, other={"baselines": baselines(4)}),
    LayerDeepLiftShap: Case(
        at_layer(LayerDeepLiftShap), {"baselines": baselines(3), **TARGET}, other={"baselines": baselines(4)}
    ),
    NeuronDeepLiftShap: Case(
        at_layer(NeuronDeepLiftShap), {"baselines": baselines(3), **NEURON}, other={"baselines": baselines(4)}
    ),
    FeatureAblation: Case(whole(FeatureAblation), TARGET, "perturbations_per_eval", {"perturbations_per_eval": 3}),
    Occlusion: Case(
        whole(Occlusion), {"sliding_window_shapes": (1,), **TARGET}, "perturbations_per_eval",
        {"perturbations_per_eval": 3},
    ),
    # not named by _captum, but rows_per_copy must be right for them too
    DeepLift: Case(whole(DeepLift), TARGET),
    LayerDeepLift: Case(at_layer(LayerDeepLift), TARGET),
    NeuronDeepLift: Case(at_layer(NeuronDeepLift), NEURON),
    Saliency: Case(whole(Saliency), TARGET),
}
NAMED = _captum.PATH_METHODS + _captum.SAMPLES_METHODS + _captum.BASELINE_ROWS_METHODS + (FeatureAblation, Occlusion)


def by_name(classes):
    return pytest.mark.parametrize("cls", list(classes), ids=lambda cls: cls.__name__)


def build(cls):
    model = RowCountingNet()
    return model, CASES[cls].make(model)


@contextlib.contextmanager
def global_seed(seed):
    """torch's, numpy's and Python's global RNGs seeded for the body, and put back afterwards."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def test_every_class_noisegrad_names_is_checked_here():
    assert set(NAMED) <= set(CASES)


# --------------------------------------------------------------------------- rows per copy


@by_name(cls for cls in CASES if CASES[cls].expansion)
def test_the_default_in_captums_signature_is_what_rows_per_copy_assumes(cls):
    _, method = build(cls)
    name = CASES[cls].expansion
    default = inspect.signature(cls.attribute).parameters[name].default
    assert isinstance(default, int), f"{cls.__name__}.attribute has no int default for {name}: {default!r}"
    assert _captum.rows_per_copy(method, {}) == _captum.rows_per_copy(method, {name: default})
    assert _captum.rows_per_copy(method, CASES[cls].other) != _captum.rows_per_copy(method, {})


SETTINGS = [(cls, "default") for cls in CASES] + [(cls, "other") for cls in CASES if CASES[cls].other]


@pytest.mark.parametrize("cls, setting", SETTINGS, ids=[f"{cls.__name__}-{setting}" for cls, setting in SETTINGS])
def test_rows_per_copy_is_the_largest_forward_the_method_makes_per_input_row(cls, setting):
    model, method = build(cls)
    kwargs = dict(CASES[cls].kwargs, **(CASES[cls].other if setting == "other" else {}))
    with global_seed(0):
        method.attribute(inputs(), **kwargs)
    assert max(model.rows) == BATCH * _captum.rows_per_copy(method, kwargs), model.rows


@by_name(_captum.PATH_METHODS)
def test_path_methods_split_their_forward_within_internal_batch_size(cls):
    """The planner gives ``internal_batch_size`` = rows_per_split_copy rows per example at the least."""
    assert inspect.signature(cls.attribute).parameters["internal_batch_size"].default is None
    model, method = build(cls)
    assert _captum.takes_internal_batch_size(method)
    kwargs = dict(CASES[cls].kwargs, n_steps=7)
    whole_path = method.attribute(inputs(), **kwargs)
    model.rows.clear()
    tightest = BATCH * _captum.rows_per_split_copy(method)
    with no_captum_warning():
        split = method.attribute(inputs(), internal_batch_size=tightest, **kwargs)
    assert max(model.rows) <= tightest, model.rows
    torch.testing.assert_close(split, whole_path, rtol=1e-12, atol=1e-12)


@by_name(cls for cls in CASES if cls not in _captum.PATH_METHODS)
def test_only_path_methods_are_given_internal_batch_size(cls):
    _, method = build(cls)
    assert not _captum.takes_internal_batch_size(method)
    assert _captum.rows_per_split_copy(method) == 0


@contextlib.contextmanager
def no_captum_warning():
    """Captum warns when it overrides an internal_batch_size it cannot honour."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in caught if "internal batch size" in str(w.message).lower()]
    assert not messages, messages


@by_name(CASES)
def test_methods_said_to_take_a_baseline_distribution_accept_any_number_of_baseline_rows(cls):
    model, method = build(cls)
    if "baselines" not in inspect.signature(cls.attribute).parameters:
        assert not _captum.takes_baseline_distribution(method)
        return
    kwargs = dict(CASES[cls].kwargs, baselines=baselines(BATCH + 3))
    if _captum.takes_baseline_distribution(method):
        with global_seed(0):
            method.attribute(inputs(), **kwargs)
    else:
        with pytest.raises((AssertionError, ValueError, RuntimeError)):
            method.attribute(inputs(), **kwargs)


# --------------------------------------------------------------------------- global RNG


@by_name(CASES)
def test_only_the_gradient_shap_family_draws_from_the_global_rng(cls):
    _, method = build(cls)
    draws = isinstance(method, (GradientShap, LayerGradientShap, NeuronGradientShap))
    assert _captum.draws_from_global_rng(method) == draws

    def attribute(seed):
        with global_seed(seed):
            return method.attribute(inputs(), **CASES[cls].kwargs)

    first, again, other = attribute(0), attribute(0), attribute(1)
    assert torch.equal(first, again)
    assert torch.equal(first, other) != draws


# --------------------------------------------------------------------------- the lean gradient

GRADIENT_METHODS = [
    Saliency, InputXGradient, IntegratedGradients, GradientShap, DeepLift, DeepLiftShap, GuidedBackprop,
    Deconvolution, LRP,
]


@by_name(GRADIENT_METHODS)
def test_lean_copies_the_method_with_summed_gradients_that_equal_captums_exactly(cls):
    model = RowCountingNet(nn.ReLU)  # LRP, guided backprop and deconvolution have rules for ReLU
    method = cls(model)
    kwargs = dict(TARGET, baselines=baselines(3)) if cls in (GradientShap, DeepLiftShap) else dict(TARGET)
    assert method.gradient_func is compute_gradients

    # Captum computes every gradient through gradient_func, so replacing it changes what runs
    calls = []
    spy = copy.copy(method)
    spy.gradient_func = lambda *args, **kw: calls.append(1) or compute_gradients(*args, **kw)
    with global_seed(0):
        spy.attribute(inputs(), **kwargs)
    assert calls

    twin = _captum.lean(method)
    assert twin is not method and type(twin) is cls
    assert twin.gradient_func is _gradients.summed_gradients
    assert method.gradient_func is compute_gradients
    with global_seed(0):
        theirs = method.attribute(inputs(), **kwargs)
    with global_seed(0):
        ours = twin.attribute(inputs(), **kwargs)
    assert torch.equal(ours, theirs)
    assert method.gradient_func is compute_gradients


def test_lean_copies_a_method_without_captums_gradient_and_keeps_its_own():
    """Always a shallow copy (what a call sets goes on the copy), with the method's own gradient function kept."""
    model = RowCountingNet()
    ablation = FeatureAblation(model)
    twin = _captum.lean(ablation)
    assert twin is not ablation and twin.forward_func is ablation.forward_func
    custom = Saliency(model)
    own = lambda *args, **kwargs: _gradients.summed_gradients(*args, **kwargs)  # noqa: E731
    custom.gradient_func = own
    assert _captum.lean(custom).gradient_func is own and custom.gradient_func is own


# --------------------------------------------------------------------------- helpers the joint estimator uses


class ScaledNet(nn.Module):
    """Two inputs and an additional forward argument: head(tanh(A a + B b) · scale)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.a, self.b, self.head = nn.Linear(FEATURES, HIDDEN), nn.Linear(2, HIDDEN), nn.Linear(HIDDEN, CLASSES)
        self.double()

    def forward(self, a, b, scale):
        return self.head(torch.tanh(self.a(a) + self.b(b)) * scale)


@pytest.mark.parametrize("extra_as_tuple", [False, True], ids=["tensor", "tuple"])
def test_run_forward_calls_the_model_with_inputs_then_extra_args_and_selects_targets(extra_as_tuple):
    model, a = ScaledNet(), inputs()
    b = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    scale = torch.tensor([[2.0], [0.5]], dtype=torch.float64)
    full = model(a, b, scale)
    extra = (scale,) if extra_as_tuple else scale
    for target, expected in [
        (1, full[:, 1]),
        ([2, 0], torch.stack([full[0, 2], full[1, 0]])),
        (torch.tensor([0, 2]), torch.stack([full[0, 0], full[1, 2]])),
    ]:
        out = _gradients.run_forward(model, (a, b), target, extra)
        assert torch.equal(out, expected), target
    assert torch.equal(_gradients.run_forward(model, (a, b), None, extra), full)


def test_run_forward_gives_what_captums_run_forward_gives_and_holds_no_model():
    """The signature is looked up once per forward function, with Captum's result in every case it distinguishes."""
    from captum._utils.common import _run_forward as captums

    model, a = ScaledNet(), inputs()
    b = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    scale = torch.tensor([[2.0], [0.5]], dtype=torch.float64)
    constant = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    cases = [
        (model, (a, b), scale),
        (lambda *args: model(*args), [a, b], (scale,)),
        (lambda: constant, (a,), None),  # no parameters: called without the inputs, as Captum does
        (nn.Linear(FEATURES, CLASSES).double(), a, None),
    ]
    for forward, given, extra in cases:
        for target in (None, 1, [2, 0]):
            for _ in range(2):  # the second call uses the cached lookup
                assert torch.equal(_gradients.run_forward(forward, given, target, extra),
                                   captums(forward, given, target, extra))
    dead = weakref.ref(cases[3][0])
    del cases, forward
    gc.collect()
    assert dead() is None


def test_format_additional_forward_args_makes_a_tuple_to_append_to_the_inputs():
    scale = torch.ones(2, 1)
    assert _captum.format_additional_forward_args(None) is None
    assert _captum.format_additional_forward_args(scale)[0] is scale
    assert len(_captum.format_additional_forward_args(scale)) == 1
    both = (scale, 3)
    assert _captum.format_additional_forward_args(both) is both


@pytest.mark.parametrize("to_layer_input", [False, True], ids=["layer_output", "layer_input"])
def test_forward_layer_eval_gives_a_tuple_of_the_layers_values(to_layer_input):
    model, x = RowCountingNet(), inputs()
    with torch.no_grad():
        values = _captum.forward_layer_eval(model, (x,), model.hidden, attribute_to_layer_input=to_layer_input)
        expected = x if to_layer_input else model.hidden(x)
        both = _captum.forward_layer_eval(model, (x,), [model.hidden, model.head], attribute_to_layer_input=False)
    assert isinstance(values, tuple) and len(values) == 1
    assert torch.equal(values[0], expected)
    assert isinstance(both, list) and [len(v) for v in both] == [1, 1]
    assert torch.equal(both[1][0], model.head(model.act(model.hidden(x))).detach())


@pytest.mark.parametrize(
    "layer, to_layer_input", [("entry", False), ("hidden", True)], ids=["identity_output", "next_layer_input"]
)
def test_layer_gradient_func_differentiates_at_the_given_layer_values(layer, to_layer_input):
    """At an identity layer, the gradient w.r.t. the layer's value at point p is the input gradient at p."""
    model, x = IdentityFirstNet(), inputs()
    method = LayerIntegratedGradients(model, getattr(model, layer))
    point = (x * 0.5 - 0.25).requires_grad_()  # not x: the function must use the values it is given
    gradient_func = _captum.layer_gradient_func(method, [1], to_layer_input, None)
    (ours,) = gradient_func(model.forward, (point,), 2, (x,))
    probe = point.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(model(probe)[:, 2].sum(), probe)
    torch.testing.assert_close(ours, expected, rtol=1e-13, atol=1e-15)
