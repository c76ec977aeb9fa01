"""Bad input gets a clear error that names the argument, before any forward pass."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from captum.attr import (
    FeatureAblation,
    GradientShap,
    IntegratedGradients,
    InternalInfluence,
    LayerConductance,
    LayerIntegratedGradients,
    NeuronConductance,
    NeuronIntegratedGradients,
    Saliency,
)

from conftest import ForwardCounter, make_mlp, make_two_input
from noisegrad import NoiseTunnel, relative
from noisegrad.estimators.joint_ig import joint_integrated_gradients

X = torch.randn(3, 5, dtype=torch.float64)

BAD_CALLS = {
    "nt_samples zero": (dict(nt_samples=0), ValueError, 'nt_samples must be a positive int or "auto", got 0'),
    "nt_samples Auto": (dict(nt_samples="Auto"), ValueError,
                        'nt_samples must be a positive int or "auto", got \'Auto\' \\(spelt "auto", lower case\\)'),
    "batch size AUTO": (dict(nt_samples_batch_size="AUTO"), ValueError,
                        'nt_samples_batch_size must be a positive int, "auto" or None, got \'AUTO\' \\(spelt "auto"'),
    "nt_samples float": (dict(nt_samples=2.0), TypeError, "nt_samples must be a positive int"),
    "nt_samples bool": (dict(nt_samples=True), TypeError, "nt_samples"),
    "nt_samples numpy float": (dict(nt_samples=np.float64(2.0)), TypeError, "nt_samples must be a positive int"),
    "nt_samples numpy zero": (dict(nt_samples=np.int64(0)), ValueError, 'nt_samples must be a positive int or "auto", got 0'),
    "max_batch_rows bool": (dict(max_batch_rows=True), TypeError, "max_batch_rows must be a positive int"),
    "memory_budget float": (dict(memory_budget=1e6), TypeError, "memory_budget must be a positive int"),
    "max_samples numpy float": (
        dict(nt_samples="auto", max_samples=np.float32(64)), TypeError, "max_samples must be a positive int"
    ),
    "seed numpy bool": (dict(seed=np.bool_(True)), TypeError, "seed must be an int"),
    "batch size zero": (dict(nt_samples_batch_size=0), ValueError, "nt_samples_batch_size must be a positive int"),
    "batch size str": (dict(nt_samples_batch_size="8"), TypeError, "nt_samples_batch_size"),
    "unknown nt_type": (dict(nt_type="smoothgrad2"), ValueError, "nt_type must be one of .*'vargrad'.*got 'smoothgrad2'"),
    "negative stdev": (dict(stdevs=-0.1), ValueError, "stdevs for input 0 must be finite and >= 0"),
    "nan stdev": (dict(stdevs=math.nan), ValueError, "stdevs for input 0 must be finite"),
    "inf stdev": (dict(stdevs=math.inf), ValueError, "stdevs for input 0 must be finite"),
    "negative tensor stdev": (dict(stdevs=torch.tensor([0.1, -1.0, 0, 0, 0])), ValueError, "1 invalid value"),
    "stdevs tuple too long": (dict(stdevs=(0.1, 0.2)), ValueError, "stdevs has 2 entries but there are 1 input"),
    "stdevs not broadcastable": (dict(stdevs=torch.ones(4)), ValueError, r"shape \(4,\).*does not broadcast.*\(3, 5\)"),
    "stdevs string": (dict(stdevs="0.1"), TypeError, "stdevs for input 0 must be a float"),
    "stdevs bool": (dict(stdevs=True), TypeError, "stdevs for input 0"),
    "seed and generator": (dict(seed=1, generator=torch.Generator()), ValueError, "seed or generator, not both"),
    "seed float": (dict(seed=1.5), TypeError, "seed must be an int"),
    "generator wrong type": (dict(generator=3), TypeError, "generator must be a torch.Generator"),
    "delta_reduction": (dict(delta_reduction="sum"), ValueError, "delta_reduction must be one of"),
    "delta unsupported": (dict(return_convergence_delta=True), ValueError, "Saliency has no convergence delta"),
    "unknown keyword": (dict(n_steps=5), TypeError, r"Saliency.attribute\(\) does not take 'n_steps'"),
    "the noise by another library's name": (dict(noise_level=0.2, sigma=0.1), TypeError,
                                            r"does not take 'noise_level', 'sigma'; it takes .*; that is not how the "
                                            r"noise is given: give it as stdevs= to NoiseTunnel .*; where a "
                                            r"SmoothingConfig decides the call .* as its noise= \(σ itself\) or "
                                            r"noise_level= \(the f of relative\(f\)"),
    "target list length": (dict(target=[0, 1]), ValueError, "target is a list of 2 entries but the batch has 3"),
    "target tensor length": (dict(target=torch.tensor([0, 1])), ValueError, "target is a tensor of shape"),
    "target float": (dict(target=1.0), TypeError, r"target must be an int.*got 1.0 \(float\)"),
    "target fractional": (dict(target=1.5), TypeError, r"target must be an int.*got 1.5 \(float\)"),
    "target bool": (dict(target=True), TypeError, r"target must be an int.*got True \(bool\)"),
    "target numpy int": (dict(target=np.int64(1)), TypeError, r"target must be an int.*pass int\(target\)"),
    "target tuple of floats": (dict(target=(0.5,)), TypeError, r"target must be an int.*got \(0.5,\)"),
    "target float tensor": (dict(target=torch.tensor([0.0, 1, 2])), TypeError, "target must hold integer indices"),
    "target float scalar tensor": (dict(target=torch.tensor(1.0)), TypeError, "target must hold integer indices"),
    "target list of floats": (dict(target=[0, 1.5, 2]), TypeError, r"target as a list.*got 1.5 \(float\)"),
    "target negative in list": (dict(target=[0, -1, 2]), ValueError, "target holds -1 at position 1.*>= 0"),
    "target negative in tensor": (dict(target=torch.tensor([0, 1, -3])), ValueError, "target holds -3 at position 2"),
    "target uint8 tensor": (
        dict(target=torch.tensor([0, 1, 2], dtype=torch.uint8)), TypeError, "target is a tensor of dtype torch.uint8"
    ),
    "target 2-d tensor": (dict(target=torch.zeros(3, 1, dtype=torch.long)), ValueError, r"target.reshape\(-1\)"),
}


@pytest.mark.parametrize("call", ["attribute", "check_arguments"])
@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_arguments_raise_before_any_forward_pass(name, call):
    kwargs, error, message = BAD_CALLS[name]
    model = make_mlp()
    counter = ForwardCounter(model)
    kwargs = {"target": 0, **kwargs}
    with pytest.raises(error, match=message):
        getattr(NoiseTunnel(Saliency(model)), call)(X, **kwargs)
    assert counter.calls == 0


def test_check_arguments_accepts_what_attribute_runs_and_runs_nothing():
    model = make_mlp()
    counter = ForwardCounter(model)
    nt = NoiseTunnel(Saliency(model))
    rng = torch.get_rng_state()
    call = dict(nt_samples_batch_size=2, stdevs=relative(0.1), sampler="antithetic", return_stderr=True, target=1)
    assert nt.check_arguments(X, "smoothgrad_sq", 4, **call) is None  # positional arguments as attribute takes them
    assert counter.calls == 0 and torch.equal(torch.get_rng_state(), rng)  # unseeded, and no noise drawn
    nt.attribute(X, "smoothgrad_sq", 4, **call)
    assert counter.calls > 0
    with pytest.raises(TypeError, match="nt_type"):  # a second value for an argument, as attribute refuses it
        nt.check_arguments(X, "smoothgrad", nt_type="vargrad")
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    nt.check_arguments(X, target=0, generator=generator)
    assert torch.equal(generator.get_state(), state)  # the draw an unseeded call makes is given back


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_and_boolean_inputs_point_to_attributing_an_embedding_layer(dtype):
    model = make_mlp()
    counter = ForwardCounter(model)
    with pytest.raises(TypeError, match=f"dtype {dtype}.*embedding"):
        NoiseTunnel(Saliency(model)).attribute(torch.zeros(3, 5, dtype=dtype), target=0)
    assert counter.calls == 0


def test_inputs_whose_batch_dimensions_disagree_are_rejected():
    with pytest.raises(ValueError, match=r"share their first \(batch\) dimension, got sizes \[3, 2\]"):
        NoiseTunnel(Saliency(make_mlp())).attribute((X, torch.zeros(2, 4, dtype=torch.float64)), target=0)


def test_non_tensor_inputs_and_wrapped_objects_are_rejected():
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        NoiseTunnel(Saliency(make_mlp())).attribute([X], target=0)
    with pytest.raises(TypeError, match="attribution_method must be a captum.attr.Attribution"):
        NoiseTunnel(make_mlp())


def test_relative_noise_arguments_are_checked_when_built():
    with pytest.raises(ValueError, match=r"relative\(of=...\) must be one of \('range', 'std'\), got 'max'"):
        relative(0.1, of="max")
    with pytest.raises(ValueError, match="finite and >= 0"):
        relative(-0.1)


def test_baselines_that_do_not_fit_the_inputs_are_rejected_before_a_forward_pass():
    model = make_mlp()
    counter = ForwardCounter(model)
    nt = NoiseTunnel(IntegratedGradients(model))
    with pytest.raises(ValueError, match=r"baselines for input 0 has shape \(2, 5\)"):
        nt.attribute(X, target=0, baselines=torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="draw_baseline_from_distrib=True"):
        nt.attribute(X, target=0, baselines=torch.zeros(4, 6), draw_baseline_from_distrib=True)
    assert counter.calls == 0


@pytest.mark.parametrize("stdevs", [1e39, torch.tensor([1.0, 1e39, 1.0, 1.0, 1.0], dtype=torch.float64)],
                         ids=["number", "float64 tensor"])
def test_a_sigma_beyond_the_inputs_dtype_is_refused_as_not_finite(stdevs):
    # σ is used in the input's dtype, where 1e39 is inf for float32; a number is checked in Python, a tensor on
    # its own device after conversion
    model = make_mlp(torch.float32)
    counter = ForwardCounter(model)
    with pytest.raises(ValueError, match="stdevs for input 0 must be finite and >= 0.*1 invalid value"):
        NoiseTunnel(Saliency(model)).attribute(X.float(), stdevs=stdevs, target=0)
    assert counter.calls == 0


def test_non_finite_inputs_make_relative_noise_fail_with_a_clear_message():
    x = X.clone()
    x[1, 2] = math.inf
    with pytest.raises(ValueError, match="the input's spread"):
        NoiseTunnel(FeatureAblation(make_mlp())).attribute(x, stdevs=relative(0.1), target=0)


COUNTS = {
    "nt_samples": dict(nt_samples=4),
    "nt_samples_batch_size": dict(nt_samples=4, nt_samples_batch_size=3),
    "max_batch_rows": dict(nt_samples=4, max_batch_rows=6),
    "memory_budget": dict(nt_samples=4, memory_budget=2**16),
    "max_samples": dict(nt_samples="auto", max_samples=40, tol=1e-9),
    "seed": dict(nt_samples=4),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
@pytest.mark.parametrize("numpy_int", [np.int64, np.int32])
def test_numpy_integers_count_as_the_python_ints_they_hold(name, numpy_int):
    kwargs = dict(COUNTS[name], stdevs=0.1, target=0, seed=12345)
    nt = NoiseTunnel(Saliency(make_mlp()))
    expected = nt.attribute(X, **kwargs)
    got = nt.attribute(X, **dict(kwargs, **{name: numpy_int(kwargs[name])}))
    if name == "max_samples":  # a SmoothedAttribution
        got, expected = (got.attributions, got.stderr), (expected.attributions, expected.stderr)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    else:
        assert torch.equal(got, expected)


def test_numpy_integers_count_as_python_ints_in_the_joint_estimator():
    nt = NoiseTunnel(IntegratedGradients(make_mlp()))
    common = dict(joint=True, stdevs=0.1, target=0)
    expected = nt.attribute(X, nt_samples=6, nt_samples_batch_size=4, seed=12345, **common)
    got = nt.attribute(X, nt_samples=np.int64(6), nt_samples_batch_size=np.int64(4), seed=np.int64(12345), **common)
    assert torch.equal(got, expected)


INFERENCE_MODE_CALLS = {
    "saliency": lambda model: NoiseTunnel(Saliency(model)).attribute(X, target=0),
    "integrated gradients": lambda model: NoiseTunnel(IntegratedGradients(model)).attribute(X, target=0),
    "joint": lambda model: NoiseTunnel(IntegratedGradients(model)).attribute(X, target=0, joint=True),
    "joint_integrated_gradients": lambda model: joint_integrated_gradients(IntegratedGradients(model), X, target=0),
}


@pytest.mark.parametrize("name", sorted(INFERENCE_MODE_CALLS))
def test_a_gradient_method_under_inference_mode_is_stopped_before_any_forward_pass(name):
    model = make_mlp()
    counter = ForwardCounter(model)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode\(\).*torch.no_grad\(\) is fine"):
        INFERENCE_MODE_CALLS[name](model)
    assert counter.calls == 0


def test_a_perturbation_method_runs_under_inference_mode():
    model = make_mlp()
    expected = NoiseTunnel(FeatureAblation(model)).attribute(X, nt_samples=3, target=0, seed=0)
    with torch.inference_mode():
        smoothed = NoiseTunnel(FeatureAblation(model)).attribute(X, nt_samples=3, target=0, seed=0)
    assert torch.equal(smoothed, expected)


PATH_METHODS = {
    "IntegratedGradients": lambda m: (IntegratedGradients(m), dict(target=0)),
    "LayerIntegratedGradients": lambda m: (LayerIntegratedGradients(m, m[0]), dict(target=0)),
    "LayerConductance": lambda m: (LayerConductance(m, m[0]), dict(target=0)),
    "InternalInfluence": lambda m: (InternalInfluence(m, m[0]), dict(target=0)),
    "NeuronIntegratedGradients": lambda m: (NeuronIntegratedGradients(m, m[0]), dict(neuron_selector=1)),
    "NeuronConductance": lambda m: (NeuronConductance(m, m[0]), dict(neuron_selector=1, target=0)),
}
BAD_PATH_ARGUMENTS = {
    "n_steps zero": (dict(n_steps=0), ValueError, "n_steps must be a positive int, got 0"),
    "n_steps negative": (dict(n_steps=-3), ValueError, "n_steps must be a positive int, got -3"),
    "n_steps float": (dict(n_steps=2.0), TypeError, r"n_steps must be a positive int, got 2.0 \(float\)"),
    "n_steps bool": (dict(n_steps=True), TypeError, "n_steps must be a positive int"),
    "unknown method": (dict(method="riemann"), ValueError, r"method must be one of \(.*'gausslegendre'\), got 'riemann"),
    "method None": (dict(method=None), TypeError, "method must be one of .*, got None"),
    "internal_batch_size zero": (dict(internal_batch_size=0), ValueError,
                                 "internal_batch_size must be a positive int, got 0"),
    "internal_batch_size float": (dict(internal_batch_size=30.0), TypeError,
                                  r"internal_batch_size must be a positive int, got 30.0 \(float\)"),
    "internal_batch_size bool": (dict(internal_batch_size=True), TypeError, "internal_batch_size must be a positive int"),
}


@pytest.mark.parametrize("case", sorted(BAD_PATH_ARGUMENTS))
@pytest.mark.parametrize("name", sorted(PATH_METHODS))
def test_bad_path_arguments_of_every_path_method_raise_before_any_forward_pass(name, case):
    model = make_mlp()
    counter = ForwardCounter(model)
    method, required = PATH_METHODS[name](model)
    kwargs, error, message = BAD_PATH_ARGUMENTS[case]
    with pytest.raises(error, match=message):
        NoiseTunnel(method).attribute(X, **required, **kwargs)
    assert counter.calls == 0


@pytest.mark.parametrize("name", sorted(PATH_METHODS))
def test_one_step_is_too_few_for_a_riemann_sum_except_for_conductance_which_adds_a_point(name):
    model = make_mlp()
    counter = ForwardCounter(model)
    method, required = PATH_METHODS[name](model)
    call = lambda: NoiseTunnel(method).attribute(X, **required, n_steps=1, method="riemann_right", nt_samples=2)
    if name == "LayerConductance":
        assert call().shape == (3, 8)
        return
    with pytest.raises(ValueError, match="n_steps must be at least 2 with method='riemann_right'"):
        call()
    assert counter.calls == 0


def test_a_default_riemann_method_needs_two_steps_too():
    model = make_mlp()
    counter = ForwardCounter(model)
    with pytest.raises(ValueError, match="n_steps must be at least 2 with method='riemann_trapezoid'"):
        NoiseTunnel(NeuronConductance(model, model[0])).attribute(X, neuron_selector=1, target=0, n_steps=1)
    assert counter.calls == 0


X32 = X.float()
MASK = torch.tensor([[0, 0, 1, 1, 2]])
BAD_TENSOR_ARGUMENTS = {
    "baselines trailing dims": (
        IntegratedGradients, dict(baselines=torch.zeros(1, 4)), ValueError, r"baselines for input 0 has shape \(1, 4\)"
    ),
    "baselines extra dim": (
        IntegratedGradients, dict(baselines=torch.zeros(1, 5, 1)), ValueError, r"has shape \(1, 5, 1\)"
    ),
    "baselines float64": (
        IntegratedGradients, dict(baselines=torch.zeros(3, 5, dtype=torch.float64)), TypeError,
        r"baselines for input 0 has dtype torch.float64.*torch.float64 rows for the torch.float32 input",
    ),
    "baseline distribution float64": (
        GradientShap, dict(baselines=torch.zeros(4, 5, dtype=torch.float64)), TypeError, "dtype torch.float64"
    ),
    "baselines complex": (IntegratedGradients, dict(baselines=torch.zeros(1, 5, dtype=torch.complex64)), TypeError,
                          "dtype torch.complex64"),
    "baselines on another device": (
        IntegratedGradients, dict(baselines=torch.zeros(1, 5, device="meta")), ValueError,
        r"baselines for input 0 is on meta but the input is on cpu; move it with .to\('cpu'\)",
    ),
    "mask trailing dims": (
        FeatureAblation, dict(feature_mask=torch.tensor([[0, 0, 1, 1]])), ValueError,
        r"feature_mask for input 0 has shape \(1, 4\), which does not broadcast to the input's \(3, 5\)",
    ),
    "mask rows not the batch": (
        FeatureAblation, dict(feature_mask=MASK.repeat(2, 1)), ValueError, r"has shape \(2, 5\), which does not"
    ),
    "mask extra dim": (FeatureAblation, dict(feature_mask=MASK[..., None]), ValueError, r"has shape \(1, 5, 1\)"),
    "mask per input twice": (
        FeatureAblation, dict(feature_mask=(MASK, MASK)), ValueError, "feature_mask has 2 entries but there are 1 input"
    ),
    "mask a list": (FeatureAblation, dict(feature_mask=[0, 0, 1, 1, 2]), TypeError, "must be a tensor, got list"),
    "mask on another device": (
        FeatureAblation, dict(feature_mask=MASK.to("meta")), ValueError, "feature_mask for input 0 is on meta"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSOR_ARGUMENTS))
def test_baselines_and_masks_that_do_not_fit_the_inputs_raise_before_any_forward_pass(case):
    method, kwargs, error, message = BAD_TENSOR_ARGUMENTS[case]
    model = make_mlp(torch.float32)
    counter = ForwardCounter(model)
    with pytest.raises(error, match=message):
        NoiseTunnel(method(model)).attribute(X32, target=0, **kwargs)
    assert counter.calls == 0


def test_one_mask_for_two_input_tensors_is_rejected_before_any_forward_pass():
    model = make_two_input()
    counter = ForwardCounter(model)
    with pytest.raises(ValueError, match="feature_mask has 1 entries but there are 2 input tensors"):
        NoiseTunnel(FeatureAblation(model)).attribute(
            (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)), target=0,
            feature_mask=torch.zeros(1, 4, dtype=torch.long),
        )
    assert counter.calls == 0


def test_a_mask_without_the_batch_dimension_is_the_same_mask_for_every_example():
    nt = NoiseTunnel(FeatureAblation(make_mlp()))
    common = dict(nt_samples=4, nt_samples_batch_size=3, stdevs=0.1, target=1, seed=0)
    assert torch.equal(nt.attribute(X, feature_mask=MASK[0], **common), nt.attribute(X, feature_mask=MASK, **common))


@pytest.mark.parametrize("dtype", [torch.float16, torch.int64])
def test_baselines_in_a_dtype_that_promotes_to_the_inputs_are_accepted(dtype):
    nt = NoiseTunnel(IntegratedGradients(make_mlp(torch.float32)))
    common = dict(nt_samples=2, stdevs=0.1, target=1, seed=0, n_steps=4)
    ours = nt.attribute(X32, baselines=torch.zeros(1, 5, dtype=dtype), **common)
    assert torch.equal(ours, nt.attribute(X32, baselines=torch.zeros(1, 5), **common))


@pytest.mark.parametrize("index", [np.int64(1), torch.tensor(1)], ids=["numpy", "tensor"])
def test_a_tuple_target_indexes_with_any_integer_as_the_output_tensor_does(index):
    nt = NoiseTunnel(Saliency(make_mlp()))
    common = dict(nt_samples=2, stdevs=0.1, seed=0)
    assert torch.equal(nt.attribute(X, target=(index,), **common), nt.attribute(X, target=(1,), **common))


def test_a_column_of_indices_is_told_to_be_flattened_and_weight_rows_to_use_an_objective():
    from captum.attr import Saliency

    from conftest import make_mlp

    nt = NoiseTunnel(Saliency(make_mlp()))
    x = torch.randn(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"give target.reshape\(-1\)"):
        nt.attribute(x, nt_samples=2, target=torch.tensor([[2], [0], [1]]))
    with pytest.raises(ValueError, match="objective=lambda model, x, y"):
        nt.attribute(x, nt_samples=2, target=torch.tensor([[0.5, 0.5, 0.0]] * 3))
    with pytest.raises(ValueError, match=r"one row per example \(3\), got shape \(2, 3\)"):
        nt.attribute(x, nt_samples=2, target=torch.eye(3)[:2])


@pytest.mark.parametrize("call", [dict(target=0), dict(outputs=[0, 1]), dict(target=0, joint=True)],
                         ids=["target", "outputs", "joint"])
def test_check_arguments_refuses_a_row_budget_below_one_copy_as_attribute_does(call):
    # attribute refuses max_batch_rows below one noisy copy (3 examples × 50 steps, joint: × 1) before any forward;
    # the check made when a call is set up (the monitor's) has to refuse it too, not the first snapshot
    model = make_mlp()
    counter = ForwardCounter(model)
    nt = NoiseTunnel(IntegratedGradients(model))
    for run in (nt.attribute, nt.check_arguments):
        with pytest.raises(ValueError, match="max_batch_rows=2 .* smaller than one noisy copy"):
            run(X, max_batch_rows=2, **call)
    assert counter.calls == 0
    assert nt.check_arguments(X, max_batch_rows=150, **call) is None  # one copy fits (joint: one row per copy)


@pytest.mark.parametrize("stdevs", [10**400, -(10**400), Fraction(10**400, 3)], ids=["int", "negative int", "Fraction"])
def test_a_real_number_too_large_for_a_float_is_refused_naming_stdevs(stdevs):
    # float() of these raised OverflowError, from inside the library, instead of the argument's ValueError
    with pytest.raises(ValueError, match="stdevs for input 0 must be finite and >= 0"):
        NoiseTunnel(Saliency(make_mlp(torch.float32))).attribute(X.float(), stdevs=stdevs, target=0)
    with pytest.raises(ValueError, match=r"relative\(fraction=...\) must be finite"):
        relative(stdevs)


def test_a_sigma_tensor_beyond_the_inputs_dtype_is_shown_as_given():
    # the message showed the converted value, inf, which the user never gave
    stdevs = torch.tensor([1.0, 1e300], dtype=torch.float64).view(2, 1)
    with pytest.raises(ValueError, match=r"1 invalid value\(s\), e.g. 1e\+300 \(beyond torch.float32's largest"):
        NoiseTunnel(Saliency(make_mlp(torch.float32))).attribute(X.float()[:2], stdevs=stdevs, target=0)


def test_relative_noise_that_overflows_names_the_fraction():
    with pytest.raises(ValueError, match=r"relative\(1e\+300, of='range'\) times the input's spread"):
        NoiseTunnel(Saliency(make_mlp(torch.float32))).attribute(X.float(), stdevs=relative(1e300), target=0)
