"""SmoothingConfig and the model-in classes: each seed's documented semantics against hand-computed references."""

import json

import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradientXActivation, Saliency
from torch import nn

from conftest import make_mlp
from noisegrad import NoiseTunnel, Smoothed, SmoothGrad, SmoothingConfig, SquareGrad, VarGrad, relative

X = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3


class Recorder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x, *extra):
        self.seen.append(x.detach().clone())
        return self.model(x)


def noise_seen(config, x=X):
    recorder = Recorder(make_mlp(seed=1))
    SmoothGrad(recorder, config).attribute(x, target=0)
    rows = torch.cat(recorder.seen[-1:])  # the noisy copies (any earlier forward measured memory per row)
    return (rows - x.repeat(rows.shape[0] // x.shape[0], 1)).view(-1, *x.shape)


def test_innsights_noise_level_is_relative_to_the_range_of_the_whole_data_tensor():
    config = SmoothingConfig.from_innsight(n=8, noise_level=0.2, dtype="double")
    model = make_mlp(seed=1)
    ours = SmoothGrad(model, config.replace(seed=3)).attribute(X, target=1)
    sigma = 0.2 * float(X.max() - X.min())
    expected = NoiseTunnel(Saliency(model)).attribute(X, nt_samples=8, stdevs=sigma, target=1, abs=False, seed=3,
                                                     return_stderr=True)
    torch.testing.assert_close(ours.attributions, expected.attributions, rtol=1e-12, atol=1e-14)
    per_example = SmoothGrad(model, config.replace(seed=3, scope="example", noise_level=0.2)).attribute(X, target=1)
    expected = NoiseTunnel(Saliency(model)).attribute(X, nt_samples=8, stdevs=relative(0.2), target=1, abs=False,
                                                     seed=3, return_stderr=True)
    torch.testing.assert_close(per_example.attributions, expected.attributions, rtol=1e-12, atol=1e-14)


def test_vertex_feature_sigma_by_name_and_no_noise_on_features_not_set():
    names = ["age", "income", "debt", "score", "zip"]
    config = SmoothingConfig.from_vertex(
        feature_noise_sigma={"noise_sigma": [{"name": "income", "sigma": 0.5}, {"name": "score", "sigma": 2.0}]},
        noisy_sample_count=6, feature_names=names,
    ).replace(seed=1)
    unit = SmoothingConfig(nt_samples=6, noise=1.0, seed=1)
    noise, reference = noise_seen(config), noise_seen(unit)
    assert bool((noise[..., [0, 2, 4]] == 0).all())
    torch.testing.assert_close(noise[..., 1], 0.5 * reference[..., 1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(noise[..., 3], 2.0 * reference[..., 3], rtol=1e-12, atol=1e-12)


def test_a_zero_feature_sigma_by_index_leaves_that_feature_noise_free():
    noise = noise_seen(SmoothingConfig(nt_samples=4, feature_noise=[(0, 0.0), (1, 0.3)], seed=0))
    assert bool((noise[..., 0] == 0).all()) and bool((noise[..., 2:] == 0).all())
    assert bool((noise[..., 1] != 0).all())


@pytest.mark.parametrize("fields, error, match", [
    (dict(noise=0.1, noise_level=0.2), ValueError, "give one noise specification"),
    (dict(feature_noise={"age": 0.1}), ValueError, "give feature_names="),
    (dict(feature_noise={"agee": 0.1}, feature_names=["age"]), ValueError, "unknown feature 'agee'"),
    (dict(dtype="half"), ValueError, "dtype must be one of"),
    (dict(nt_samples=0), ValueError, r"nt_samples must be a positive int or \"auto\", got 0"),
    (dict(nt_samples="auto", max_samples=1), ValueError, "max_samples must be >= 2"),
    (dict(tol=0.1), ValueError, "apply to nt_samples=\"auto\" only"),
    (dict(noise=-1.0), ValueError, "noise must be finite and >= 0"),
    (dict(noise=relative(0.1, of="std")), TypeError, r"noise must be a number, .*noise is σ itself; .*give "
                                                  r"noise_level=0.1 with relative_to='std' \(in SmoothingConfig"),
    (dict(noise_level=relative(0.2)), TypeError, r"noise_level is the fraction itself: give noise_level=0.2 "
                                                 r"\(with relative_to='range'"),
    (dict(feature_noise={0: relative(0.1)}), TypeError, r"feature_noise takes an absolute σ per feature; .* "
                                                        r"noise_level=0.1 with relative_to='range'"),
    (dict(feature_noise=relative(0.1)), TypeError, r"feature_noise takes \{feature: σ\} or \(feature, σ\) pairs, got "
                                                   r"relative\(0.1, of='range'\); .*noise_level=0.1"),
    (dict(feature_noise=(0.1, 0.2)), TypeError, r"feature_noise takes \{feature: σ\} or \(feature, σ\) pairs, got "
                                                r"\(0.1, 0.2\)$"),  # was Python's "'float' object is not iterable"
    (dict(sampler="sobol"), ValueError, "sampler must be one of"),
    (dict(noise_layer=nn.Linear(2, 2)), TypeError, "dotted name"),
    (dict(relative_to="var"), ValueError, "relative_to must be one of"),
])
def test_bad_configurations_are_refused_on_construction(fields, error, match):
    with pytest.raises(error, match=match):
        SmoothingConfig(**fields)


@pytest.mark.parametrize("kwargs, match", [
    (dict(noise_sigma=0.1, noisy_sample_count=51), r"noisy_sample_count must be in \[1, 50\]"),
    (dict(noise_sigma=0.1, noisy_sample_count=0), r"noisy_sample_count must be in \[1, 50\]"),
    (dict(noise_sigma=0.1, feature_noise_sigma={"a": 0.1}), "exactly one of noise_sigma and feature_noise_sigma"),
    (dict(), "exactly one of noise_sigma and feature_noise_sigma"),
])
def test_vertex_ranges_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SmoothingConfig.from_vertex(**kwargs)


def test_the_constructors_keep_each_seeds_defaults():
    assert SmoothingConfig.from_vertex(noise_sigma=0.1).nt_samples == 3
    innsight = SmoothingConfig.from_innsight()
    assert (innsight.nt_samples, innsight.noise_level, innsight.scope, innsight.dtype) == (50, 0.1, "data", "float")
    pnpxai = SmoothingConfig.from_pnpxai(nt_type="vargrad")
    assert (pnpxai.nt_samples, pnpxai.noise_level, pnpxai.nt_type) == (20, 0.1, "vargrad")
    xplique = SmoothingConfig.from_xplique(nt_type="smoothgrad_sq")
    assert (xplique.nt_samples, xplique.noise, xplique.max_batch_rows) == (50, 0.2, 32)


@pytest.mark.parametrize("config", [
    SmoothingConfig(),
    SmoothingConfig(nt_samples="auto", tol=0.1, max_samples=64, sampler="antithetic", noise=0.3),
    SmoothingConfig(feature_noise=[("b", 0.1), (0, 0.2)], feature_names=["a", "b"], dtype="double", seed=-4),
    SmoothingConfig.from_innsight(noise_level=0.3),
    SmoothingConfig.from_pnpxai(layer="encoder.embed"),
])
def test_configurations_round_trip_through_json(config):
    text = config.to_json()
    json.loads(text)  # plain JSON
    again = SmoothingConfig.from_json(text)
    assert again == config and again.to_json() == text


def test_unknown_fields_in_a_dict_are_named():
    with pytest.raises(ValueError, match=r"unknown SmoothingConfig fields \['n_samples'\]"):
        SmoothingConfig.from_dict({"n_samples": 3})


def test_tunables_follow_the_noise_specification_in_use():
    assert set(SmoothingConfig().get_tunables()) == {"noise_level", "nt_samples", "sampler"}
    assert set(SmoothingConfig(noise=0.2).get_tunables()) == {"noise", "nt_samples", "sampler"}
    auto = SmoothingConfig(nt_samples="auto").get_tunables()
    assert "nt_samples" not in auto and "lhs" in auto["sampler"]["choices"]  # "auto" draws hypercubes in blocks
    for spec in SmoothingConfig().get_tunables().values():
        if spec["type"] != "categorical":
            assert spec["low"] < spec["high"]


def test_double_precision_runs_on_a_copy_and_leaves_the_users_model_alone():
    model = make_mlp(dtype=torch.float32, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = X.float()
    result = SmoothGrad(model, nt_samples=6, noise=0.3, seed=4, dtype="double").attribute(x, target=2)
    assert result.attributions.dtype == torch.float64
    assert all(v.dtype == torch.float32 and torch.equal(v, before[k]) for k, v in model.state_dict().items())
    reference = make_mlp(dtype=torch.float32, seed=2).double()
    expected = NoiseTunnel(Saliency(reference)).attribute(x.double(), nt_samples=6, stdevs=0.3, target=2, abs=False,
                                                         seed=4, return_stderr=True)
    torch.testing.assert_close(result.attributions, expected.attributions, rtol=1e-12, atol=1e-14)


class Scaled(nn.Module):
    """A model with a second forward argument, as a batch dict carries it."""

    def __init__(self):
        super().__init__()
        self.inner = make_mlp(seed=1)

    def forward(self, x, scale):
        return self.inner(x) * scale


def test_batches_as_dicts_go_in_through_extractors():
    model = Scaled()
    scale = torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=torch.float64)
    batch = {"features": X, "scale": scale, "label": torch.tensor([0, 1, 2, 0])}
    explainer = VarGrad(model, nt_samples=5, seed=2, forward_arg_extractor=lambda b: b["features"],
                        additional_forward_arg_extractor=lambda b: (b["scale"],))
    ours = explainer.attribute(batch, target=batch["label"])
    expected = NoiseTunnel(Saliency(model)).attribute(
        X, nt_type="vargrad", nt_samples=5, stdevs=relative(0.15), target=batch["label"], abs=False, seed=2,
        additional_forward_args=(scale,), return_stderr=True)
    torch.testing.assert_close(ours.attributions, expected.attributions, rtol=1e-12, atol=1e-14)


def test_the_result_carries_the_configuration_and_the_delta():
    config = SmoothingConfig(nt_samples=6, noise_level=0.1, seed=0)
    result = Smoothed(make_mlp(seed=1), IntegratedGradients, config, method_kwargs={"n_steps": 24}).attribute(
        X, target=1)
    assert result.config == config.to_dict()
    assert SmoothingConfig.from_dict(result.config) == config  # as the README says: the configuration rebuilt
    assert result.delta.shape == (4,) and result.stderr is not None and int(result.dof) == 5
    plain = Smoothed(make_mlp(seed=1), Saliency, config.replace(return_stderr=False)).attribute(X, target=1)
    assert plain.stderr is None and plain.config["return_stderr"] is False


def test_square_grad_is_captums_smoothgrad_sq_and_copies_are_independent():
    model = make_mlp(seed=1)
    explainer = SquareGrad(model, nt_samples=6, noise=0.2, seed=5)
    twin = explainer.copy().set_kwargs(nt_samples=12)
    assert explainer.config.nt_samples == 6 and twin.config.nt_samples == 12
    expected = NoiseTunnel(Saliency(model)).attribute(X, nt_type="smoothgrad_sq", nt_samples=6, stdevs=0.2, target=0,
                                                     abs=False, seed=5, return_stderr=True)
    torch.testing.assert_close(explainer.attribute(X, target=0).attributions, expected.attributions,
                               rtol=1e-12, atol=1e-14)


def test_pnpxais_layer_is_noise_at_that_layer():
    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed, self.head = nn.Embedding(9, 4), nn.Linear(4, 2)
            self.double()

        def forward(self, ids):
            return self.head(torch.tanh(self.embed(ids)).mean(1))

    model = Text()
    ids = torch.randint(0, 9, (3, 5), generator=torch.Generator().manual_seed(1))
    config = SmoothingConfig.from_pnpxai(noise_level=0.2, n_iter=6, layer="embed").replace(seed=2)
    ours = SmoothGrad(model, config).attribute(ids, target=1)
    expected = NoiseTunnel(LayerGradientXActivation(model, model.embed, multiply_by_inputs=False)).attribute(
        ids, nt_samples=6, stdevs=relative(0.2), target=1, seed=2, noise_layer=model.embed, return_stderr=True)
    torch.testing.assert_close(ours.attributions, expected.attributions, rtol=1e-12, atol=1e-14)
    same = SmoothGrad(model, layer=model.embed, nt_samples=6, noise_level=0.2, seed=2).attribute(ids, target=1)
    torch.testing.assert_close(same.attributions, expected.attributions, rtol=1e-12, atol=1e-14)


def test_explainer_arguments_are_checked():
    with pytest.raises(TypeError, match="must be a Captum Attribution class"):
        Smoothed(make_mlp(), Saliency(make_mlp()))
    with pytest.raises(ValueError, match="give layer="):
        Smoothed(make_mlp(), LayerGradientXActivation)
    with pytest.raises(ValueError, match="names no submodule"):
        SmoothGrad(make_mlp(), layer="nope")
    assert SquareGrad(make_mlp(), SmoothingConfig()).config.nt_type == "smoothgrad_sq"  # one config serves all
    with pytest.raises(ValueError, match=r"set_kwargs got \['foo'\]"):
        SmoothGrad(make_mlp()).set_kwargs(foo=1)
    assert SmoothGrad(make_mlp()).set_kwargs(n_iter=9).config.nt_samples == 9  # pnpxai's name
    with pytest.raises(TypeError, match="dotted name"):
        SmoothingConfig.from_pnpxai(layer=nn.Linear(2, 2))


@pytest.mark.parametrize("argument", [{"generator": torch.Generator().manual_seed(0)}, {"seed": 3},
                                      {"nt_samples": 8}, {"stdevs": 0.5}, {"max_batch_rows": 64}])
def test_what_the_configuration_decides_is_refused_beside_it_so_that_the_recorded_config_is_the_calls(
        argument, tmp_path):
    from noisegrad import attribute_dataset

    name = next(iter(argument))
    model = make_mlp(seed=1)
    explainer = SmoothGrad(model, nt_samples=4, noise=0.2)  # unseeded: a call that ran would move the global RNG
    rng = torch.get_rng_state()
    with pytest.raises(TypeError, match=rf"SmoothGrad.attribute got \['{name}'\], which the configuration decides"):
        explainer.attribute(X, target=0, **argument)
    assert torch.equal(torch.get_rng_state(), rng)  # refused before any noise was drawn
    changed_later = explainer.copy()
    changed_later.method_kwargs.update(argument)  # the dict changed after construction: refused at the call
    with pytest.raises(TypeError, match=rf"SmoothGrad.attribute got \['{name}'\]"):
        changed_later.attribute(X, target=0)
    with pytest.raises(TypeError, match=rf"explainer.method_kwargs got \['{name}'\]"):
        attribute_dataset(changed_later, X, tmp_path / "smoothed", target=0)
    with pytest.raises(TypeError, match=rf"method_kwargs got \['{name}'\]"):
        Smoothed(model, Saliency, method_kwargs=argument)
    with pytest.raises(TypeError, match=rf"method_kwargs got \['{name}'\]"):
        attribute_dataset(Saliency(model), X, tmp_path / "captum", config=SmoothingConfig(seed=0), target=0,
                          method_kwargs=argument)
    assert not any(tmp_path.iterdir())  # nothing written
    assert torch.equal(torch.get_rng_state(), rng)
    hint = {"generator": "for generator seed=", "stdevs": r"for stdevs noise= \(σ itself\), noise_level= .* or feature_noise="}
    if name in hint:
        with pytest.raises(TypeError, match=hint[name]):
            explainer.attribute(X, target=0, **argument)
        with pytest.raises(TypeError, match=hint[name]):  # not set_kwargs' "neither a field nor Saliency's"
            explainer.copy().set_kwargs(**argument)
    # the same change through the configuration: recorded as it ran
    field = "noise" if name == "stdevs" else name
    if field != "generator":
        changed = explainer.copy().set_kwargs(**{field: argument[name]})
        assert changed.attribute(X, target=0).config[field] == argument[name]


def test_the_refused_arguments_are_the_noise_tunnels_that_a_configuration_passes_and_no_others():
    import inspect

    from captum.attr import GradientShap

    tunnel = set(inspect.signature(NoiseTunnel.attribute).parameters)
    expected = (set(SmoothingConfig.__dataclass_fields__) & tunnel) | {"stdevs", "generator"}
    for name in tunnel | set(SmoothingConfig.__dataclass_fields__):
        refused = name in expected
        try:
            SmoothingConfig.decided({name: None}, "kwargs")
        except TypeError:
            assert refused, name
        else:
            assert not refused, name  # e.g. scope=: a field the call never passes may be a method's own argument
    assert set(SmoothingConfig(tol=0.1, nt_samples="auto", max_batch_rows=8).call_kwargs(X)) <= expected
    with pytest.raises(TypeError, match="set_kwargs got \\['stdevs'\\]"):  # GradientShap's own stdevs would collide
        Smoothed(make_mlp(), GradientShap).set_kwargs(stdevs=0.1)


def test_numpy_scalars_become_python_values_and_layer_noise_must_be_measurable_on_the_layer():
    np = pytest.importorskip("numpy")
    config = SmoothingConfig(nt_samples=np.int64(8), seed=np.int64(1), max_batch_rows=np.int32(64))
    assert json.loads(config.to_json())["nt_samples"] == 8 and type(config.seed) is int
    for fields in (dict(noise_level=0.1, scope="data", noise_layer="emb"), dict(feature_noise={0: 0.1},
                                                                                  noise_layer="emb")):
        with pytest.raises(ValueError, match="with noise_layer, give noise="):
            SmoothingConfig(**fields)
    for tol in (0, 2.0, float("nan")):  # the same rule as NoiseTunnel.attribute(tol=) and explain --tol
        with pytest.raises(ValueError, match=r"tol must be a relative standard error between 0 and 1"):
            SmoothingConfig(nt_samples="auto", tol=tol)


def test_an_additional_argument_extractor_may_return_a_list():
    batch = {"x": X, "scale": torch.full((4, 1), 2.0, dtype=torch.float64)}
    as_list = SmoothGrad(Scaled(), nt_samples=3, seed=0, forward_arg_extractor=lambda b: b["x"],
                         additional_forward_arg_extractor=lambda b: [b["scale"]]).attribute(batch, target=0)
    as_tuple = SmoothGrad(Scaled(), nt_samples=3, seed=0, forward_arg_extractor=lambda b: b["x"],
                          additional_forward_arg_extractor=lambda b: (b["scale"],)).attribute(batch, target=0)
    torch.testing.assert_close(as_list.attributions, as_tuple.attributions, rtol=0, atol=0)


def test_outputs_times_input_and_the_reducer_round_trip_and_reach_the_call():
    config = SmoothingConfig(nt_samples=4, noise=0.2, seed=0, outputs=[2, 0], times_input="clean",
                             channel_reducer="mean", return_stderr=False)
    assert config.outputs == (2, 0)
    again = SmoothingConfig.from_json(config.to_json())
    assert again == config
    result = SmoothGrad(make_mlp(seed=1), config).attribute(X)
    expected = NoiseTunnel(Saliency(make_mlp(seed=1))).attribute(X, nt_samples=4, stdevs=0.2, seed=0, abs=False,
                                                                 outputs=[2, 0], times_input="clean")
    torch.testing.assert_close(result.attributions, expected, rtol=0, atol=0)
    assert result.outputs == (2, 0) and result.config["outputs"] == [2, 0]


def margin(model, inputs, targets):
    return model(inputs)[:, 2] - model(inputs)[:, 0]


def test_an_objective_is_kept_by_name_in_json_and_asked_for_again():
    config = SmoothingConfig(nt_samples=4, noise=0.2, seed=0, objective=margin, return_stderr=False)
    values = json.loads(config.to_json())
    assert values["objective"] == "test_config.margin"
    with pytest.raises(ValueError, match="names a function .* pass the function itself"):
        SmoothingConfig.from_dict(values)
    assert SmoothingConfig.from_dict({**values, "objective": margin}) == config
    result = SmoothGrad(make_mlp(seed=1), config).attribute(X)
    expected = NoiseTunnel(Saliency(make_mlp(seed=1))).attribute(X, nt_samples=4, stdevs=0.2, seed=0, abs=False,
                                                                 objective=margin)
    torch.testing.assert_close(result.attributions, expected, rtol=0, atol=0)
    assert result.config["objective"] == "test_config.margin"


def test_innsight_and_xplique_map_their_outputs_operator_reducer_and_times_input():
    innsight = SmoothingConfig.from_innsight(output_idx=[1, 3], times_input=True)
    assert (innsight.outputs, innsight.times_input) == ((0, 2), "clean")
    assert SmoothingConfig.from_innsight(output_idx=2).outputs == (1,)
    assert SmoothingConfig.from_innsight().outputs is None and SmoothingConfig.from_innsight().times_input is None
    with pytest.raises(ValueError, match="counted from 1"):
        SmoothingConfig.from_innsight(output_idx=[0])
    with pytest.raises(ValueError, match=r"output_idx=\[1, 1\] has repeated indices"):
        SmoothingConfig.from_innsight(output_idx=[1, 1])


def test_outputs_with_an_objective_and_auto_are_refused_on_construction():
    with pytest.raises(ValueError, match='outputs= with nt_samples="auto" needs a method that takes all outputs'):
        SmoothingConfig(outputs=[0], objective=margin, nt_samples="auto")
    xplique = SmoothingConfig.from_xplique(operator=margin, reducer="max")
    assert (xplique.objective, xplique.channel_reducer) == (margin, "max")
    assert SmoothingConfig.from_xplique().channel_reducer == "mean"  # Xplique's default
    assert SmoothingConfig.from_xplique(operator="classification").objective is None
    with pytest.raises(ValueError, match="pass the operator function"):
        SmoothingConfig.from_xplique(operator="regression")


def test_xplique_one_hot_targets_select_what_their_indices_select():
    labels = torch.tensor([2, 0, 1, 1])
    one_hot = torch.nn.functional.one_hot(labels, 3).double()
    config = SmoothingConfig.from_xplique(nb_samples=4, noise=0.2).replace(seed=0, return_stderr=False)
    by_rows = SmoothGrad(make_mlp(seed=1), config).attribute(X, target=one_hot)
    by_index = SmoothGrad(make_mlp(seed=1), config).attribute(X, target=labels)
    torch.testing.assert_close(by_rows.attributions, by_index.attributions, rtol=0, atol=0)
    with pytest.raises(ValueError, match="read as one-hot rows"):
        SmoothGrad(make_mlp(seed=1), config).attribute(X, target=one_hot * 0.5)
    for column in (labels[:, None], torch.ones(4, 1, dtype=torch.long)):  # labels, even when every label is 1
        with pytest.raises(ValueError, match=r"rows of one output select nothing.*target.reshape\(-1\)"):
            SmoothGrad(make_mlp(seed=1), config).attribute(X, target=column)


@pytest.mark.parametrize("fields, match", [
    (dict(outputs=[1, 1]), "outputs= has repeated indices"),
    (dict(times_input=True), "ambiguous"),
    (dict(channel_reducer="median"), "channel_reducer must be one of"),
    (dict(objective=3), "objective must be a function"),
])
def test_bad_output_fields_are_named(fields, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SmoothingConfig(**fields)


@pytest.mark.parametrize("field", ["noise", "noise_level"])
@pytest.mark.parametrize("value", [10**400, -(10**400), float("nan"), float("inf")], ids=["1e400", "-1e400", "nan", "inf"])
def test_a_noise_too_large_for_a_float_or_not_finite_is_refused_naming_the_field(field, value):
    # float() of a huge int raised OverflowError from math.isfinite instead of the field's ValueError
    with pytest.raises(ValueError, match=f"{field} must be finite and >= 0"):
        SmoothingConfig(**{field: value})


@pytest.mark.parametrize("field", ["nt_samples", "nt_samples_batch_size"])
@pytest.mark.parametrize("text", ["Auto", " auto", "many"])
def test_a_misspelt_auto_is_refused_as_noise_tunnel_refuses_it(field, text):
    # the configuration is NoiseTunnel.attribute's arguments kept for later: the same error for the same mistake
    error = ValueError if text.strip().lower() == "auto" else TypeError
    with pytest.raises(error) as by_the_tunnel:
        NoiseTunnel(Saliency(make_mlp())).attribute(X, target=0, **{"nt_samples": 4, field: text})
    assert '"auto"' in str(by_the_tunnel.value)
    with pytest.raises(error) as by_the_configuration:
        SmoothingConfig(**{field: text})
    assert str(by_the_configuration.value) == str(by_the_tunnel.value)


def test_noise_given_to_an_explainer_as_the_methods_argument_is_pointed_to_its_configuration():
    """Helper-69: the hint named only NoiseTunnel's stdevs=, which an explainer refuses (its configuration decides it)."""
    explainer = SmoothGrad(make_mlp(), nt_samples=4, noise=0.2, seed=0)
    with pytest.raises(TypeError, match=r"does not take 'noise_level'.*where a SmoothingConfig decides the call "
                                        r"\(an explainer, its set_kwargs, .*\) as its noise= \(σ itself\) or "
                                        r"noise_level="):
        explainer.attribute(X, target=0, noise_level=0.1)
    result = explainer.set_kwargs(noise_level=0.1).attribute(X, target=0)  # the hint, followed
    assert (result.config["noise"], result.config["noise_level"]) == (None, 0.1)


def test_an_unknown_field_is_named_with_where_the_noise_goes_or_the_closest_field():
    """Helper-70: SmoothGrad(model, sigma=0.1) said only "__init__() got an unexpected keyword argument 'sigma'"."""
    with pytest.raises(TypeError, match=r"SmoothingConfig has no field 'sigma'; that is not how the noise is given: "
                                        r".* as its noise= \(σ itself\) or noise_level="):
        SmoothGrad(make_mlp(), sigma=0.1)
    with pytest.raises(TypeError, match=r"SmoothingConfig has no field 'stdevs'; that is not how the noise is given"):
        SmoothGrad(make_mlp(), stdevs=0.1)  # NoiseTunnel's name: the explainer's configuration has fields instead
    with pytest.raises(TypeError, match=r"SmoothingConfig has no field 'nt_sample'; did you mean nt_samples=\?"):
        SmoothingConfig().replace(nt_sample=3)
    with pytest.raises(ValueError, match=r"set_kwargs got \['stdev_spread'\]: .*that is not how the noise is given"):
        SmoothGrad(make_mlp()).set_kwargs(stdev_spread=0.15)
