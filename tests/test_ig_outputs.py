"""IntegratedGradients for several outputs at once: one path per chunk, K gradients summed over its steps.

Checked against a float64 IG written by hand (analytic gradients of a tiny
network, quadrature from numpy), against Captum's own IG run once per output
for every form of baselines it takes, and, through NoiseTunnel, against one
noisegrad run per output.
"""

import contextlib
import inspect
import warnings

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from conftest import Counting, make_mlp, make_two_input, separate_runs
from noisegrad import NoiseTunnel
from noisegrad.estimators._ig_outputs import integrated_gradients_of_outputs, integrated_gradients_of_target

OUTPUTS = (2, 0)
X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
BASELINE = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def by_hand(model, x, baseline, k, n_steps, approximation, times_input=True):
    """IG of output k of Linear–Tanh–Linear, its gradient written out: Σ_s w_s ∇f_k(b + α_s (x − b)) [× (x − b)].

    Exact float64 quadrature; Captum's points and step sizes are float32
    values (torch.linspace, and a float32 tensor of the sizes), so results
    agree to about 1e-7.
    """
    if approximation == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(n_steps)
        alphas, sizes = (points + 1) / 2, weights / 2
    else:  # riemann_middle: the midpoint of each of n equal steps
        alphas, sizes = (np.arange(n_steps) + 0.5) / n_steps, np.full(n_steps, 1 / n_steps)
    first, last = model[0], model[2]
    total = torch.zeros_like(x)
    for alpha, size in zip(alphas.tolist(), sizes.tolist()):
        point = baseline + alpha * (x - baseline)
        slope = 1 - torch.tanh(point @ first.weight.T + first.bias) ** 2  # (rows, hidden)
        total += size * (slope * last.weight[k]) @ first.weight
    attribution = total * (x - baseline) if times_input else total
    value = lambda p: (torch.tanh(p @ first.weight.T + first.bias) @ last.weight.T + last.bias)[:, k]  # noqa: E731
    return attribution, attribution.sum(1) - (value(x) - value(baseline))


@pytest.mark.parametrize("approximation", ["gausslegendre", "riemann_middle"])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
@pytest.mark.parametrize("internal_batch_size", [None, 6])  # 6 rows: two of the 7 steps of 3 examples per forward
def test_each_output_is_ig_written_by_hand_in_float64(approximation, multiply_by_inputs, internal_batch_size):
    model = make_mlp(seed=1)
    attribute = integrated_gradients_of_outputs(IntegratedGradients(model, multiply_by_inputs), OUTPUTS)
    with torch.no_grad():
        attributions, delta = attribute(X, baselines=BASELINE, n_steps=7, method=approximation,
                                        internal_batch_size=internal_batch_size, return_convergence_delta=True)
    assert attributions.shape == (2, 3, 5) and delta.shape == (2, 3)
    for i, k in enumerate(OUTPUTS):
        expected, expected_delta = by_hand(model, X, BASELINE, k, 7, approximation, multiply_by_inputs)
        torch.testing.assert_close(attributions[i], expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(delta[i], expected_delta, rtol=1e-6, atol=1e-6)


def test_the_defaults_are_captums():
    ours = inspect.signature(integrated_gradients_of_outputs(IntegratedGradients(make_mlp()), (0,))).parameters
    captums = inspect.signature(IntegratedGradients.attribute).parameters
    assert {name: p.default for name, p in ours.items()} == {  # target=None too: outputs= takes its place
        name: p.default for name, p in captums.items() if name != "self"}


TWO = (torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
       torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
SCALE = torch.tensor([[0.5], [2.0], [-1.0]], dtype=torch.float64)

BASELINE_FORMS = {
    "none": (X, None),
    "int": (X, 1),
    "float": (X, -0.25),
    "per example": (X, BASELINE),
    "one row": (X, BASELINE[:1]),
    "tuple: a tensor per example, a number": (TWO, (TWO[0].flip(0), 0.5)),
    "tuple: one row, none given as zero": (TWO, (TWO[0][1:2], 0)),
}


@pytest.mark.parametrize("form", BASELINE_FORMS)
@pytest.mark.parametrize("approximation", ["riemann_left", "riemann_trapezoid", "gausslegendre"])
def test_every_form_of_baselines_gives_captums_ig_of_each_output(form, approximation):
    inputs, baselines = BASELINE_FORMS[form]
    model = make_mlp(seed=2) if isinstance(inputs, torch.Tensor) else make_two_input(seed=2)
    extra = None if isinstance(inputs, torch.Tensor) else SCALE
    common = dict(baselines=baselines, additional_forward_args=extra, n_steps=5, method=approximation,
                  internal_batch_size=9, return_convergence_delta=True)
    attributions, delta = integrated_gradients_of_outputs(IntegratedGradients(model), OUTPUTS)(inputs, **common)
    for i, k in enumerate(OUTPUTS):
        expected, expected_delta = IntegratedGradients(model).attribute(inputs, target=k, **common)
        for ours, theirs in zip(attributions if isinstance(inputs, tuple) else (attributions,),
                                expected if isinstance(inputs, tuple) else (expected,)):
            torch.testing.assert_close(ours[i], theirs, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(delta[i], expected_delta, rtol=1e-10, atol=1e-12)


def test_the_batched_products_of_other_devices_give_the_same_sums(all_outputs_at_once):
    model = make_mlp(seed=1)
    attribute = integrated_gradients_of_outputs(IntegratedGradients(model), OUTPUTS)
    ig = dict(baselines=BASELINE, n_steps=6, internal_batch_size=6)
    saliency = dict(outputs=list(OUTPUTS), nt_samples=3, stdevs=0.2, seed=0)
    one_by_one = attribute(X, **ig), NoiseTunnel(Saliency(model)).attribute(X, **saliency)
    with all_outputs_at_once():
        batched = attribute(X, **ig), NoiseTunnel(Saliency(model)).attribute(X, **saliency)
    for got, want in zip(batched, one_by_one):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("approximation", ["riemann_trapezoid", "gausslegendre"])
def test_several_outputs_of_tuple_inputs_equal_one_noisegrad_run_per_output(nt_type, batch_size, approximation):
    nt = NoiseTunnel(IntegratedGradients(make_two_input(seed=4), multiply_by_inputs=approximation == "gausslegendre"))
    common = dict(nt_type=nt_type, nt_samples=5, nt_samples_batch_size=batch_size, stdevs=0.3, seed=7, n_steps=4,
                  method=approximation, baselines=(TWO[0].flip(0), 0.25), additional_forward_args=SCALE,
                  internal_batch_size=30, return_convergence_delta=True)  # 2 steps of 15 rows, or 5 of 6
    (first, second), delta = nt.attribute(TWO, outputs=[1, 2, 0], **common)
    (first_expected, second_expected), delta_expected = separate_runs(nt, TWO, [1, 2, 0], **common)
    assert first.shape == (3, 4, 3) and second.shape == (3, 3, 3) and delta.shape == (3, 3)
    torch.testing.assert_close(first, first_expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(second, second_expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta, delta_expected, rtol=1e-10, atol=1e-12)


def test_with_internal_batch_size_the_path_runs_once_for_all_outputs_in_forwards_of_that_size():
    model = Counting(make_mlp(seed=1, classes=6))
    common = dict(nt_samples=4, nt_samples_batch_size=2, stdevs=0.1, seed=0, n_steps=5, internal_batch_size=13)
    single = NoiseTunnel(IntegratedGradients(model)).attribute(X, target=4, **common)
    rows, model.rows[:] = list(model.rows), []
    several = NoiseTunnel(IntegratedGradients(model)).attribute(X, outputs=list(range(6)), **common)
    assert model.rows == rows == [12, 12, 6] * 2  # per chunk of 2 samples × 3 examples: 2 + 2 + 1 of the 5 steps
    torch.testing.assert_close(several[..., 4], single, rtol=1e-10, atol=1e-12)


def test_the_users_method_is_left_as_it_was():
    ig = IntegratedGradients(make_mlp(seed=1))
    before = dict(vars(ig))
    NoiseTunnel(ig).attribute(X, outputs=[0, 1], nt_samples=2, stdevs=0.1, seed=0, n_steps=3)
    assert vars(ig) == before


@pytest.mark.parametrize("model, match", [
    (make_mlp(seed=1), r"outputs=\[0, 5\] names column 5, but the model returns 3 outputs"),
    (nn.Sequential(make_mlp(seed=1), nn.Flatten(0)), r"a \(batch, outputs\) model output; the model returns shape"),
])
def test_outputs_the_model_does_not_have_are_refused(model, match):
    with pytest.raises(ValueError, match=match):
        NoiseTunnel(IntegratedGradients(model)).attribute(X, outputs=[0, 5], nt_samples=2, stdevs=0.1, n_steps=3)


W = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
ALIASING_MODELS = {  # the same function twice: gradients autograd hands out as one tensor or an expanded view ...
    "inputs share one gradient": (lambda x, y: torch.tanh((x + y) @ W), lambda x, y: torch.tanh(x @ W + y @ W)),
    "expanded gradient": (lambda x, y: torch.tanh(x.sum(1, keepdim=True) * W[0] + y @ W),
                          lambda x, y: torch.tanh(x @ torch.ones(5, 1, dtype=torch.float64) * W[0] + y @ W)),
}  # ... and the same function with separate gradients of their own


@pytest.mark.filterwarnings("ignore:noisegrad found no torch.nn.Module")
@pytest.mark.parametrize("all_at_once", [False, True], ids=["one output at a time", "batched (other devices)"])
@pytest.mark.parametrize("outputs", [[1], [1, 2]])
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("name", sorted(ALIASING_MODELS))
def test_gradients_autograd_shares_are_not_overwritten_by_the_statistics(name, nt_type, outputs, all_at_once,
                                                                         all_outputs_at_once):
    # Saliency(abs=False) returns the gradients themselves, which the statistics may centre in place: a gradient
    # two inputs share, or an expanded one, must be copied first (one output's gradient is not a fresh concatenation)
    aliasing, separate = ALIASING_MODELS[name]
    x, y = X, torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    kwargs = dict(outputs=outputs, nt_type=nt_type, nt_samples=4, nt_samples_batch_size=2, seed=1, abs=False,
                  return_stderr=True)
    with all_outputs_at_once() if all_at_once else contextlib.nullcontext():
        ours = NoiseTunnel(Saliency(aliasing)).attribute((x, y), **kwargs)
        expected = NoiseTunnel(Saliency(separate)).attribute((x, y), **kwargs)
    for got, want in zip(ours.attributions + ours.stderr, expected.attributions + expected.stderr):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


TARGET_FORMS = {
    "int": 1,
    "per example": torch.tensor([2, 0, 1]),
    "list": [0, 2, 2],
    "one-element tensor": torch.tensor(2),
}


@pytest.mark.parametrize("target", TARGET_FORMS)
@pytest.mark.parametrize("form", BASELINE_FORMS)
@pytest.mark.parametrize("approximation", ["riemann_trapezoid", "gausslegendre"])
@pytest.mark.parametrize("internal_batch_size", [None, 9])
def test_the_target_path_gives_captums_ig_for_every_form_of_target_and_baselines(target, form, approximation,
                                                                                 internal_batch_size):
    """The path NoiseTunnel builds for a plain IntegratedGradients: Captum's attributions and delta."""
    inputs, baselines = BASELINE_FORMS[form]
    model = make_mlp(seed=2) if isinstance(inputs, torch.Tensor) else make_two_input(seed=2)
    extra = None if isinstance(inputs, torch.Tensor) else SCALE
    common = dict(baselines=baselines, target=TARGET_FORMS[target], additional_forward_args=extra, n_steps=5,
                  method=approximation, internal_batch_size=internal_batch_size, return_convergence_delta=True)
    ours, delta = integrated_gradients_of_target(IntegratedGradients(model))(inputs, **common)
    theirs, their_delta = IntegratedGradients(model).attribute(inputs, **common)
    assert isinstance(ours, tuple) == isinstance(inputs, tuple)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(delta, their_delta, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_noise_tunnel_builds_a_plain_igs_path_itself_and_leaves_others_to_captum(monkeypatch, multiply_by_inputs):
    calls = []
    original = IntegratedGradients.attribute

    def counted(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(IntegratedGradients, "attribute", counted)
    model = make_mlp(seed=3)
    common = dict(nt_samples=4, stdevs=0.2, target=1, n_steps=6, seed=0, return_convergence_delta=True)
    plain = NoiseTunnel(IntegratedGradients(model, multiply_by_inputs)).attribute(X, **common)
    assert calls == []  # the path was built by noisegrad

    class Subclass(IntegratedGradients):
        pass

    via_captum = NoiseTunnel(Subclass(model, multiply_by_inputs)).attribute(X, **common)
    assert calls and set(calls) == {"Subclass"}  # a subclass keeps its own attribute
    for ours, theirs in zip(plain, via_captum):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("internal_batch_size", [None, 6])
def test_the_target_path_of_a_half_precision_model_sums_in_float32_as_captum_does(dtype, internal_batch_size):
    """Captum weights the steps with float32 step sizes, so a half model's IG is summed (and returned) in float32."""
    model = make_mlp(dtype, seed=4)
    x = X.to(dtype)
    common = dict(target=1, n_steps=7, internal_batch_size=internal_batch_size, return_convergence_delta=True)
    ours, delta = integrated_gradients_of_target(IntegratedGradients(model))(x, baselines=0.25, **common)
    theirs, their_delta = IntegratedGradients(model).attribute(x, baselines=0.25, **common)
    assert ours.dtype == theirs.dtype == torch.float32
    # the same path points and gradients; only the order of the float32 step sums differs
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(delta, their_delta, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("internal_batch_size", [2, 3])
def test_the_target_path_warns_as_captum_does_when_internal_batch_size_is_below_the_rows(internal_batch_size):
    """Captum warns that a step batch below the rows holds all rows anyway; the path built for it says so too."""
    model = make_mlp(seed=5)
    ig_target = integrated_gradients_of_target(IntegratedGradients(model))
    common = dict(target=1, n_steps=4, internal_batch_size=internal_batch_size)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        IntegratedGradients(model).attribute(X, **common)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        ig_target(X, **common)
    assert len(theirs) == (1 if internal_batch_size < len(X) else 0)
    assert [w.category for w in ours] == [w.category for w in theirs]
    if ours:
        assert f"internal_batch_size={internal_batch_size}" in str(ours[0].message)


def test_the_internal_batch_size_warning_points_at_the_users_line():
    """It named noisegrad/_call.py, a line the user cannot change; a user's NoiseTunnel call is where to look."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NoiseTunnel(IntegratedGradients(make_mlp(seed=5))).attribute(
            X, nt_samples=3, stdevs=0.1, target=1, n_steps=4, internal_batch_size=2, seed=0)
    below = [w for w in caught if "internal_batch_size=2" in str(w.message)]
    assert below and all(w.filename == __file__ for w in below)
