"""Several outputs at once (``outputs=``): equal to one run per output, with one forward per chunk where batched."""

import pytest
import torch
from captum.attr import DeepLift, FeatureAblation, InputXGradient, IntegratedGradients, LayerConductance, Saliency
from torch import nn

from conftest import WRAPPED_METHODS, Counting, make_cnn, make_mlp, separate_runs
from noisegrad import NoiseTunnel, weight_noise

X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
OUTPUTS = [2, 0]

METHODS = WRAPPED_METHODS  # DeepLift and FeatureAblation run once per output


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_several_outputs_equal_one_run_per_output(name, nt_type, batch_size):
    method, kwargs = METHODS[name]
    nt = NoiseTunnel(method(make_mlp(seed=1)))
    common = dict(nt_type=nt_type, nt_samples=6, nt_samples_batch_size=batch_size, stdevs=0.3, seed=4, **kwargs)
    ours = nt.attribute(X, outputs=OUTPUTS, **common)
    expected = separate_runs(nt, X, OUTPUTS, **common)
    if kwargs.get("return_convergence_delta"):
        torch.testing.assert_close(ours[1], expected[1], rtol=1e-10, atol=1e-12)
        ours, expected = ours[0], expected[0]
    assert ours.shape == X.shape + (len(OUTPUTS),)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


def test_standard_errors_of_a_method_run_once_per_output_are_stacked_too():
    nt = NoiseTunnel(DeepLift(make_mlp(seed=1)))
    common = dict(nt_samples=6, stdevs=0.3, seed=4, return_stderr=True, return_convergence_delta=True)
    ours = nt.attribute(X, outputs=OUTPUTS, **common)
    runs = [nt.attribute(X, target=k, **common) for k in OUTPUTS]
    for name in ("attributions", "stderr", "relative_stderr", "delta"):
        torch.testing.assert_close(getattr(ours, name), torch.stack([getattr(r, name) for r in runs], -1))
    assert int(ours.dof) == 5  # i.i.d. SmoothGrad: the textbook n − 1


def test_standard_errors_and_tuple_inputs_carry_an_output_dimension():
    model = make_mlp(seed=1)

    def two_inputs(a, b):
        return model(torch.cat([a, b], dim=1))

    x = (X[:, :2], X[:, 2:])
    nt = NoiseTunnel(Saliency(two_inputs))
    ours = nt.attribute(x, outputs=OUTPUTS, nt_samples=8, stdevs=0.2, seed=1, abs=False, return_stderr=True,
                        sampler="antithetic")
    runs = [nt.attribute(x, target=k, nt_samples=8, stdevs=0.2, seed=1, abs=False, return_stderr=True,
                         sampler="antithetic") for k in OUTPUTS]
    for i in range(2):
        torch.testing.assert_close(ours.attributions[i], torch.stack([r.attributions[i] for r in runs], -1))
        torch.testing.assert_close(ours.stderr[i], torch.stack([r.stderr[i] for r in runs], -1))
    torch.testing.assert_close(ours.relative_stderr, torch.stack([r.relative_stderr for r in runs], -1))
    assert ours.relative_stderr.shape == (3, 2)


@pytest.mark.parametrize("method, kwargs, rows_per_copy", [
    (Saliency, {}, 1), (InputXGradient, {}, 1), (IntegratedGradients, {"n_steps": 5}, 5),
])
def test_batched_methods_run_one_forward_per_chunk_on_the_copies_only(method, kwargs, rows_per_copy):
    model = Counting(make_mlp(seed=1))
    NoiseTunnel(method(model)).attribute(X, outputs=[0, 1, 2], nt_samples=6, nt_samples_batch_size=3, stdevs=0.2,
                                          seed=0, **kwargs)
    assert model.rows == [3 * 3 * rows_per_copy] * 2  # two chunks of 3 samples × 3 examples, no output factor


@pytest.mark.parametrize("method, kwargs", [(Saliency, {}), (IntegratedGradients, {"n_steps": 4})])
def test_max_batch_rows_counts_the_one_block_a_forward_holds_not_one_per_output(method, kwargs):
    model, outputs = Counting(make_mlp(seed=1, classes=10)), list(range(10))
    common = dict(nt_samples=4, stdevs=0.1, seed=0, max_batch_rows=12, **kwargs)
    NoiseTunnel(method(model)).attribute(X, target=1, **common)
    single, model.rows[:] = list(model.rows), []
    NoiseTunnel(method(model)).attribute(X, outputs=outputs, **common)
    assert model.rows == single and max(single) <= 12  # 3 examples × (12 // 3 // rows per copy) samples


def test_the_convergence_delta_of_several_outputs_runs_its_forwards_on_one_block():
    model, outputs = Counting(make_mlp(seed=1, classes=10)), list(range(10))
    common = dict(nt_samples=4, stdevs=0.1, seed=0, n_steps=5, return_convergence_delta=True)
    _, one = NoiseTunnel(IntegratedGradients(model)).attribute(X, target=3, **common)
    single, model.rows[:] = list(model.rows), []
    _, several = NoiseTunnel(IntegratedGradients(model)).attribute(X, outputs=outputs, **common)
    assert model.rows == single  # the path's forward, then the delta's two, each on the rows of one output
    torch.testing.assert_close(several[..., 3], one, rtol=1e-10, atol=1e-12)


def test_a_memory_budget_still_counts_the_gradients_of_every_output():
    model, outputs = Counting(make_mlp(seed=1, classes=10)), list(range(10))
    common = dict(nt_samples=64, stdevs=0.1, seed=0, memory_budget=20_000)
    NoiseTunnel(Saliency(model)).attribute(X, target=1, **common)
    single, model.rows[:] = max(model.rows), []
    NoiseTunnel(Saliency(model)).attribute(X, outputs=outputs, **common)
    assert max(model.rows) * 10 <= single


def test_a_cnn_in_float32_and_a_layer_method_that_runs_once_per_output():
    model = make_cnn(dtype=torch.float32)
    x = torch.randn(2, 2, 5, 5)
    nt = NoiseTunnel(Saliency(model))
    ours = nt.attribute(x, outputs=[3, 1], nt_samples=4, stdevs=0.1, seed=2)
    torch.testing.assert_close(ours, separate_runs(nt, x, [3, 1], nt_samples=4, stdevs=0.1, seed=2),
                               rtol=1e-5, atol=1e-7)
    mlp = make_mlp(seed=1)
    layer = NoiseTunnel(LayerConductance(mlp, mlp[0]))  # the layer forms of the batched methods: test_layer_outputs
    ours = layer.attribute(X, outputs=[1, 2], nt_samples=3, stdevs=0.1, seed=2, n_steps=4)
    torch.testing.assert_close(ours, separate_runs(layer, X, [1, 2], nt_samples=3, stdevs=0.1, seed=2, n_steps=4),
                               rtol=1e-10, atol=1e-12)


def test_auto_stops_each_example_on_the_error_of_all_its_outputs():
    result = NoiseTunnel(Saliency(make_mlp(seed=1))).attribute(
        X, outputs=OUTPUTS, nt_samples="auto", tol=0.1, max_samples=256, stdevs=0.3, seed=0, abs=False)
    assert result.attributions.shape == (3, 5, 2) and result.relative_stderr.shape == (3, 2)
    norm = lambda t: t.reshape(3, -1, 2).pow(2).sum(1).sqrt()  # noqa: E731
    assert bool((norm(result.stderr) / norm(result.attributions) <= 0.1 + 1e-12).all())


@pytest.mark.parametrize("name", ["Saliency", "InputXGradient", "IntegratedGradients"])
def test_an_explicit_target_none_beside_outputs_is_no_target(name):
    """Front-ends, explainers and the CLI pass target=None along; IntegratedGradients' path refused it."""
    method = {"Saliency": Saliency, "InputXGradient": InputXGradient, "IntegratedGradients": IntegratedGradients}[name]
    nt = NoiseTunnel(method(make_mlp(seed=1)))
    common = dict(nt_samples=4, stdevs=0.3, seed=2, outputs=OUTPUTS)
    torch.testing.assert_close(nt.attribute(X, target=None, **common), nt.attribute(X, **common), rtol=0, atol=0)


def test_auto_with_outputs_keeps_a_delta_per_example_and_output():
    """Each example's delta is that of a fixed run with its own sample count (its noise is its own)."""
    nt = NoiseTunnel(IntegratedGradients(make_mlp(seed=1)))
    common = dict(outputs=OUTPUTS, stdevs=0.3, seed=0, n_steps=4, return_convergence_delta=True)
    result = nt.attribute(X, nt_samples="auto", tol=0.1, max_samples=256, **common)
    assert result.delta.shape == (3, len(OUTPUTS))
    assert len(set(result.nt_samples.tolist())) > 1  # the examples stopped at different checks
    for i in range(3):
        alone = nt.attribute(X[i:i + 1], nt_samples=int(result.nt_samples[i]), example_ids=[i], **common)
        torch.testing.assert_close(result.attributions[i:i + 1], alone[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(result.delta[i:i + 1], alone[1], rtol=1e-10, atol=1e-12)


class _SteadyAndNoisy(nn.Module):
    # output 0: a large steady gradient; output 1: a tiny one that the noise makes vary a lot
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))  # something for weight noise to perturb

    def forward(self, x):
        return self.scale * torch.stack([10 * x.sum(1) + torch.sin(x).sum(1), 0.01 * torch.sin(3 * x).sum(1)], 1)


@pytest.mark.parametrize("kwargs", [dict(nt_samples="auto", max_samples=1024),
                                    dict(nt_samples=2, weight_noise=weight_noise(sigma=0.01, draws="auto", filter="*"),
                                         max_samples=2048)])
def test_auto_is_converged_only_when_every_output_reached_tol(kwargs):
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nt, common = NoiseTunnel(Saliency(_SteadyAndNoisy())), dict(tol=0.2, stdevs=0.5, seed=0, abs=False, **kwargs)
    result = nt.attribute(x, outputs=[0, 1], **common)
    ratio = (result.stderr.pow(2).sum(1) / result.attributions.pow(2).sum(1)).sqrt()  # (batch, K), by hand
    torch.testing.assert_close(result.relative_stderr, ratio)
    assert bool(result.converged.all()) and bool((ratio <= 0.2 + 1e-12).all())
    # the noisy output sets the pace: as many samples as explaining it alone, with the same noise
    alone = nt.attribute(x, target=1, **common)
    assert result.nt_samples.tolist() == alone.nt_samples.tolist()
    assert bool((alone.nt_samples > nt.attribute(x, target=0, **common).nt_samples).all())


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(outputs=[0], target=1), ValueError, "give target= .* or outputs="),
    (dict(outputs=[]), ValueError, "non-empty sequence of output indices"),
    (dict(outputs=[0, 0]), ValueError, "repeated indices"),
    (dict(outputs=[-1]), ValueError, "indices >= 0"),
    (dict(outputs="01"), TypeError, "sequence of output indices"),
    (dict(outputs=[0, 7]), ValueError, r"names column 7, but the model returns 3 outputs"),
])
def test_bad_outputs_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        NoiseTunnel(Saliency(make_mlp(seed=1))).attribute(X, nt_samples=2, **kwargs)


def test_an_output_beyond_the_model_is_named_as_outputs_also_when_run_once_per_output():
    with pytest.raises(ValueError, match=r"outputs=\[0, 7\], output 7: target=7 is out of range"):
        NoiseTunnel(DeepLift(make_mlp(seed=1))).attribute(X, outputs=[0, 7], nt_samples=2, stdevs=0.1)


@pytest.mark.parametrize("method", [DeepLift, FeatureAblation])
def test_an_output_beyond_the_model_is_found_before_the_other_outputs_run(method):
    model, forwards = make_mlp(seed=1), []
    model.register_forward_hook(lambda *_: forwards.append(1))
    with pytest.raises(ValueError, match=r"outputs=\[0, 1, 7\], output 7: target=7 is out of range"):
        NoiseTunnel(method(model)).attribute(X, outputs=[0, 1, 7], nt_samples=20, nt_samples_batch_size=5,
                                             stdevs=0.1, seed=0)
    assert len(forwards) <= 2  # the first chunk of output 7, not 4 chunks of outputs 0 and 1 each


def _selected(model, inputs, targets):
    return model(inputs).gather(1, targets.reshape(-1, 1)).squeeze(1)


@pytest.mark.parametrize("method, kwargs", [
    (DeepLift, dict(nt_samples="auto")),
    (DeepLift, dict(nt_samples=2, weight_noise=weight_noise(sigma=0.1, draws="auto"))),
    (Saliency, dict(nt_samples="auto", objective=_selected)),
    (Saliency, dict(nt_samples=2, weight_noise=weight_noise(sigma=0.1, draws="auto"), objective=_selected)),
])
def test_auto_with_a_method_run_once_per_output_is_refused_before_any_forward(method, kwargs):
    model = make_mlp(seed=1)
    model.register_forward_hook(lambda *_: pytest.fail("a forward ran before the refusal"))
    with pytest.raises(ValueError, match="needs a method that takes all outputs in one pass"):
        NoiseTunnel(method(model)).attribute(X, outputs=[0, 1], stdevs=0.1, **kwargs)
