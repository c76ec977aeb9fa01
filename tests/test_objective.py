"""Custom objectives (``objective=g(model, inputs, targets)``): any score, explained by any wrapped method."""

import pytest
import torch
from captum.attr import DeepLift, IntegratedGradients, LayerIntegratedGradients, Saliency
from torch import nn

from conftest import WRAPPED_METHODS, make_cnn, make_mlp, make_two_input
from noisegrad import NoiseTunnel, weight_noise

X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
TARGET = torch.tensor([2, 0, 1])


def selected(model, inputs, targets):
    """Captum's target selection, written as an objective."""
    return model(inputs).gather(1, targets.reshape(-1, 1)).squeeze(1)


METHODS = WRAPPED_METHODS


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
def test_an_objective_that_selects_the_target_gives_the_target_result(name, nt_type):
    method, kwargs = METHODS[name]
    nt = NoiseTunnel(method(make_mlp(seed=1)))
    common = dict(nt_type=nt_type, nt_samples=4, nt_samples_batch_size=3, stdevs=0.2, seed=3, target=TARGET, **kwargs)
    ours = nt.attribute(X, objective=selected, **common)
    expected = nt.attribute(X, **common)
    if kwargs.get("return_convergence_delta"):
        torch.testing.assert_close(ours[1], expected[1], rtol=0, atol=1e-12)
        ours, expected = ours[0], expected[0]
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method, kwargs", [(Saliency, {"abs": False}), (IntegratedGradients, {"n_steps": 7})])
def test_without_noise_an_objective_gives_captums_own_result(method, kwargs):
    model = make_mlp(seed=2)
    ours = NoiseTunnel(method(model)).attribute(X, nt_samples=1, stdevs=0.0, objective=selected, target=TARGET,
                                                **kwargs)
    captum = method(model).attribute(X.clone().requires_grad_(), target=TARGET, **kwargs)
    torch.testing.assert_close(ours, captum.detach(), rtol=0, atol=1e-12)


def test_a_regression_output_against_its_gradient_by_hand():
    # f(x) = w · tanh(x), a (batch, 1) regression head: the score is its one output, ∇ = w (1 − tanh²(x))
    w = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)

    class Regression(nn.Module):
        def forward(self, x):
            return (torch.tanh(x) * w).sum(dim=1, keepdim=True)

    x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    value = lambda model, inputs, _targets: model(inputs)[:, 0]  # noqa: E731
    nt = NoiseTunnel(Saliency(Regression()))
    ours = nt.attribute(x, nt_samples=1, stdevs=0.0, abs=False, objective=value)
    torch.testing.assert_close(ours, w * (1 - torch.tanh(x) ** 2), rtol=0, atol=1e-12)
    # with noise: what selecting output 0 gives, the same noise
    common = dict(nt_samples=6, stdevs=0.3, seed=2, abs=False)
    torch.testing.assert_close(nt.attribute(x, objective=value, **common), nt.attribute(x, target=0, **common),
                               rtol=0, atol=1e-12)


def test_a_margin_between_two_classes_against_the_difference_of_their_gradients():
    model = make_mlp(seed=3)
    margin = lambda model, inputs, _targets: model(inputs)[:, 2] - model(inputs)[:, 0]  # noqa: E731
    common = dict(nt_samples=5, stdevs=0.2, seed=1, abs=False)
    nt = NoiseTunnel(Saliency(model))
    ours = nt.attribute(X, objective=margin, **common)
    by_hand = nt.attribute(X, target=2, **common) - nt.attribute(X, target=0, **common)  # linearity of the mean
    torch.testing.assert_close(ours, by_hand, rtol=0, atol=1e-12)
    # and in float64 without noise, against autograd on the margin itself
    x = X.clone().requires_grad_()
    exact = torch.autograd.grad(margin(model, x, None).sum(), x)[0]
    torch.testing.assert_close(nt.attribute(X, objective=margin, nt_samples=1, stdevs=0.0, abs=False), exact)


def test_a_segmentation_mask_objective_sums_the_pixels_the_mask_keeps():
    model = make_cnn(seed=4)  # (batch, 4) outputs, read as a 2 × 2 "segmentation" per example
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    masks = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 1]]], dtype=torch.float64)  # one mask per example

    def mask_score(model, inputs, targets):
        return (model(inputs).reshape(-1, 2, 2) * targets).sum(dim=(1, 2))

    ours = NoiseTunnel(Saliency(model)).attribute(x, nt_samples=1, stdevs=0.0, abs=False, objective=mask_score,
                                                  target=masks)
    leaf = x.clone().requires_grad_()
    exact = torch.autograd.grad((model(leaf).reshape(-1, 2, 2) * masks).sum(), leaf)[0]
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-12)


def test_tuple_inputs_additional_arguments_and_a_layer_method():
    model = make_two_input()
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    scale = torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)

    def first_output(model, inputs, targets):
        assert isinstance(inputs, tuple) and targets is None
        return model(*inputs)[:, 0]

    nt = NoiseTunnel(IntegratedGradients(model))
    common = dict(nt_samples=3, stdevs=0.1, seed=0, n_steps=4, additional_forward_args=(scale,))
    ours = nt.attribute((a, b), objective=first_output, **common)
    expected = nt.attribute((a, b), target=0, **common)
    for mine, theirs in zip(ours, expected):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)
    mlp = make_mlp(seed=1)
    layer = NoiseTunnel(LayerIntegratedGradients(mlp, mlp[0]))
    common = dict(nt_samples=3, stdevs=0.1, seed=2, n_steps=4, target=TARGET)
    torch.testing.assert_close(layer.attribute(X, objective=selected, **common), layer.attribute(X, **common),
                               rtol=0, atol=1e-12)


def test_several_outputs_with_an_objective_give_its_targets_one_by_one():
    model = make_mlp(seed=1)
    nt = NoiseTunnel(Saliency(model))
    common = dict(nt_samples=4, stdevs=0.2, seed=0, abs=False)
    ours = nt.attribute(X, objective=selected, outputs=[1, 2], **common)
    expected = torch.stack([nt.attribute(X, target=k, **common) for k in (1, 2)], dim=-1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("score, shape", [
    (lambda model, x, y: model(x), r"\(3, 3\)"),
    (lambda model, x, y: model(x)[:, :1], r"\(3, 1\); for a \(rows, 1\) score, return score.squeeze\(-1\)"),
    (lambda model, x, y: model(x).sum(), r"\(\)"),
])
def test_a_score_of_the_wrong_shape_is_refused_at_the_first_forward_naming_the_shape_expected(score, shape):
    calls = []

    def counted(model, inputs, targets):
        calls.append(inputs.shape[0])
        return score(model, inputs, targets)

    with pytest.raises(ValueError, match=rf"objective must return one score per example: a tensor of shape "
                                         rf"\(3,\) for a forward of 3 rows, got shape {shape}"):
        NoiseTunnel(Saliency(make_mlp())).attribute(X, nt_samples=4, nt_samples_batch_size=1, stdevs=0.1,
                                                    objective=counted)
    assert calls == [3]  # the first chunk's forward, nothing merged


@pytest.mark.parametrize("score", [
    lambda model, x, y: model(x).detach()[:, 0],
    lambda model, x, y: model(x).argmax(dim=1).double(),
])
def test_a_score_without_a_gradient_is_refused_naming_the_objective(score):
    with pytest.raises(ValueError, match="objective returned a score that does not depend on the inputs"):
        NoiseTunnel(Saliency(make_mlp())).attribute(X, nt_samples=2, stdevs=0.1, objective=score)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(objective="logit"), TypeError, "objective must be a function"),
    (dict(objective=selected, target=torch.zeros(2, dtype=torch.long)), ValueError, "one row per example"),
    (dict(objective=selected, target=[0, 1]), ValueError, "one entry per example"),
    (dict(objective=selected, outputs=[0, 1], nt_samples="auto"), ValueError, "with an objective it runs once"),
])
def test_bad_objectives_are_refused_before_any_forward(kwargs, error, match):
    model = make_mlp()
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    with pytest.raises(error, match=match):
        NoiseTunnel(Saliency(model)).attribute(X, **dict(dict(nt_samples=2, stdevs=0.1), **kwargs))
    assert not forwards


def test_the_users_method_keeps_its_forward_function():
    model = make_mlp()
    method = Saliency(model)
    NoiseTunnel(method).attribute(X, nt_samples=2, stdevs=0.1, objective=selected, target=TARGET)
    assert method.forward_func is model


@pytest.mark.parametrize("make, kwargs", [
    (lambda m: IntegratedGradients(m), dict(nt_samples=8, joint=True, return_convergence_delta=True)),
    (lambda m: Saliency(m), dict(nt_samples=2, weight_noise=weight_noise(sigma=0.1, draws=2))),
    (lambda m: DeepLift(m), dict(nt_samples=2, weight_noise=weight_noise(sigma=0.1, draws=2))),
    (lambda m: Saliency(m), dict(nt_samples=2, noise_layer="0")),
    (lambda m: LayerIntegratedGradients(m, m[0]), dict(nt_samples=2, noise_layer="0", n_steps=4)),
    (lambda m: Saliency(m), dict(nt_samples="auto", tol=0.2, return_stderr=True)),
])
def test_an_objective_composes_with_joint_sampling_weight_noise_layer_noise_and_auto(make, kwargs):
    model = make_mlp(seed=1)
    nt = NoiseTunnel(make(model))
    common = dict(stdevs=0.1, seed=0, target=TARGET, **kwargs)
    ours, expected = nt.attribute(X, objective=selected, **common), nt.attribute(X, **common)
    if kwargs.get("return_convergence_delta"):
        torch.testing.assert_close(ours[1], expected[1], rtol=0, atol=1e-12)
        ours, expected = ours[0], expected[0]
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


def test_a_regression_target_with_one_row_per_example_keeps_its_shape_also_for_a_batch_of_one():
    model = make_mlp(classes=1)
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([[0.3], [-0.2]], dtype=torch.float64)
    seen = []

    def neg_sq_err(model, inputs, targets):
        seen.append(tuple(targets.shape))
        return -((model(inputs) - targets) ** 2).sum(dim=1)

    kw = dict(nt_samples=3, stdevs=0.2, seed=0, abs=False, objective=neg_sq_err)
    both = NoiseTunnel(Saliency(model)).attribute(x, target=y, example_ids=[0, 1], **kw)
    alone = NoiseTunnel(Saliency(model)).attribute(x[:1], target=y[:1], example_ids=[0], **kw)
    assert set(seen) == {(6, 1), (3, 1)}
    torch.testing.assert_close(alone[0], both[0])
