"""Channel reducers (``channel_reducer=``): image channels combined after smoothing, as a by-hand reduction."""

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

import noisegrad
from conftest import make_cnn, make_mlp
from noisegrad import NoiseTunnel, SmoothingConfig, reduce_channels

X = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
BY_HAND = {
    "mean": lambda a: a.mean(1),
    "sum": lambda a: a.sum(1),
    "max": lambda a: torch.maximum(a[:, 0], a[:, 1]),
    "min": lambda a: torch.minimum(a[:, 0], a[:, 1]),
    "abs-sum": lambda a: a[:, 0].abs() + a[:, 1].abs(),
}


@pytest.mark.parametrize("reducer", BY_HAND)
@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
def test_each_reducer_equals_the_by_hand_reduction_of_the_smoothed_channels(reducer, nt_type):
    nt = NoiseTunnel(Saliency(make_cnn()))
    common = dict(nt_type=nt_type, nt_samples=4, stdevs=0.2, seed=1, target=2, abs=False)
    channels = nt.attribute(X, **common)
    reduced = nt.attribute(X, channel_reducer=reducer, **common)
    assert reduced.shape == (2, 5, 5)
    torch.testing.assert_close(reduced, BY_HAND[reducer](channels), rtol=0, atol=0)


@pytest.mark.parametrize("reducer", BY_HAND)
def test_several_outputs_are_reduced_output_by_output(reducer):
    nt = NoiseTunnel(IntegratedGradients(make_cnn()))
    common = dict(nt_samples=3, stdevs=0.2, seed=1, n_steps=4, return_convergence_delta=True)
    channels, delta = nt.attribute(X, outputs=[3, 0], **common)
    reduced, same_delta = nt.attribute(X, outputs=[3, 0], channel_reducer=reducer, **common)
    assert reduced.shape == (2, 5, 5, 2)
    torch.testing.assert_close(same_delta, delta, rtol=0, atol=0)
    for k in range(2):
        torch.testing.assert_close(reduced[..., k], BY_HAND[reducer](channels[..., k]), rtol=0, atol=0)


def test_the_result_carries_the_reduction_and_no_standard_error_for_combined_channels():
    nt = NoiseTunnel(Saliency(make_cnn()))
    common = dict(nt_samples=8, stdevs=0.2, seed=1, target=2, abs=False, return_stderr=True)
    channels = nt.attribute(X, **common)
    reduced = nt.attribute(X, channel_reducer="sum", **common)
    assert reduced.channel_reducer == "sum" and reduced.stderr is None
    torch.testing.assert_close(reduced.relative_stderr, channels.relative_stderr)  # of the channels, as documented
    with pytest.raises(ValueError, match="channel_reducer='sum' combined the channels after smoothing"):
        reduced.interval(0.95)


def test_tables_are_left_as_they_are_and_tuples_reduce_their_images_only():
    mlp = make_mlp()
    x = torch.randn(3, 5, dtype=torch.float64)
    nt = NoiseTunnel(Saliency(mlp))
    torch.testing.assert_close(nt.attribute(x, nt_samples=2, stdevs=0.1, seed=0, target=1, channel_reducer="max"),
                               nt.attribute(x, nt_samples=2, stdevs=0.1, seed=0, target=1))
    attr = (torch.randn(2, 3, 4, 4), torch.randn(2, 6))
    image, table = reduce_channels(attr[0], "mean"), reduce_channels(attr[1], "mean")
    assert image.shape == (2, 4, 4) and table is attr[1]


def test_the_front_ends_explainers_and_configuration_reduce_the_same_way():
    model = make_cnn()
    common = dict(nt_samples=4, stdevs=0.2, seed=1, sampler="iid", return_stderr=False)
    expected = NoiseTunnel(Saliency(model)).attribute(X, target=1, abs=False, channel_reducer="abs-sum",
                                                      **{k: v for k, v in common.items() if k != "return_stderr"})
    torch.testing.assert_close(noisegrad.smoothgrad(model, X, target=1, channel_reducer="abs-sum", **common), expected)
    config = SmoothingConfig(nt_samples=4, noise=0.2, seed=1, channel_reducer="abs-sum", return_stderr=False)
    result = noisegrad.SmoothGrad(model, config).attribute(X, target=1)
    torch.testing.assert_close(result.attributions, expected)
    assert result.channel_reducer == "abs-sum" and result.config["channel_reducer"] == "abs-sum"


def test_an_unknown_reducer_is_named_before_any_forward():
    with pytest.raises(ValueError, match=r"channel_reducer must be one of \('mean', 'sum', 'max', 'min', "
                                         r"'abs-sum'\) or None, got 'median'"):
        NoiseTunnel(Saliency(make_cnn())).attribute(X, nt_samples=2, target=0, channel_reducer="median")


def test_reduce_channels_reads_the_outputs_dimension_from_a_result():
    torch.manual_seed(0)
    grey = nn.Sequential(nn.Flatten(), nn.Linear(25, 4)).double()
    x = torch.randn(2, 5, 5, dtype=torch.float64)  # greyscale maps (batch, H, W): no channels to reduce
    result = NoiseTunnel(Saliency(grey)).attribute(x, outputs=[0, 3], nt_samples=4, stdevs=0.1, seed=0,
                                                   return_stderr=True)
    torch.testing.assert_close(reduce_channels(result, "mean"), result.attributions)
    rgb = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    result = NoiseTunnel(Saliency(nn.Sequential(nn.Flatten(), nn.Linear(75, 4)).double())).attribute(
        rgb, outputs=[0, 3], nt_samples=4, stdevs=0.1, seed=0, return_stderr=True)
    torch.testing.assert_close(reduce_channels(result, "sum"), result.attributions.sum(dim=1))
