"""Channels-last noisy copies for convolutional models on the CPU: the same results, and contiguous copies where the
layout cannot help or the model cannot take it (noisegrad/_layout.py)."""

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

import noisegrad
from noisegrad import NoiseTunnel, _layout


class Recording(nn.Module):
    """``net``, noting for each forward whether its input was channels-last (and not also contiguous)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.layouts = net, []
        self.eval()

    def forward(self, x):
        if x.shape[0] != 2:  # not the chunk planner's probe of two rows
            self.layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return self.net(x)


class ViewsActivations(nn.Module):
    """A convolution, then the old ``h.view(h.size(0), -1)``, which a channels-last activation cannot take."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.linear, self.forwards = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 3), 0
        self.eval()

    def forward(self, x):
        self.forwards += 1
        h = torch.relu(self.conv(x))
        return self.linear(h.view(h.size(0), -1))


def conv_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).to(dtype).eval()


X = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def contiguous_only(monkeypatch) -> None:
    monkeypatch.setattr(_layout, "channels_last", lambda inputs, forward_func: False)


CALLS = {
    "vargrad": lambda model: noisegrad.vargrad(model, X, target=1, nt_samples=6, nt_samples_batch_size=4,
                                               stdevs=0.2, seed=0),
    "auto": lambda model: noisegrad.smoothgrad(model, X, target=1, nt_samples="auto", tol=0.2, stdevs=0.2, seed=0,
                                               return_stderr=True).attributions,
    "joint IG": lambda model: NoiseTunnel(IntegratedGradients(model)).attribute(
        X, target=2, nt_samples=6, stdevs=0.2, seed=0, joint="lhs"),
    "nested IG": lambda model: NoiseTunnel(IntegratedGradients(model)).attribute(
        X, target=2, nt_samples=4, stdevs=0.2, seed=0, n_steps=4),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_conv_models_float32_images_run_channels_last_with_the_contiguous_result(call, monkeypatch):
    model = Recording(conv_net())
    ours = CALLS[call](model)
    assert model.layouts and all(model.layouts), model.layouts
    assert ours.is_contiguous()
    contiguous_only(monkeypatch)
    reference = Recording(conv_net())
    expected = CALLS[call](reference)
    assert not any(reference.layouts)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["float64", "no convolution", "not an image", "in training mode"])
def test_copies_stay_contiguous_where_channels_last_cannot_help(case):
    if case == "float64":  # slower channels-last (1.43x on a 224x224 net)
        model, x = Recording(conv_net(torch.float64)), X.double()
    elif case == "no convolution":
        torch.manual_seed(0)
        model, x = Recording(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))), X
    elif case == "not an image":
        torch.manual_seed(0)
        model, x = Recording(nn.Sequential(nn.Conv1d(3, 2, 3), nn.Flatten(), nn.Linear(12, 3))), X[:, :, 0]
    else:  # a dropout mask is drawn in memory order: channels-last copies would change a seeded map
        model, x = Recording(nn.Sequential(conv_net(), nn.Dropout(0.5))).train(), X
    noisegrad.smoothgrad(model, x, target=1, nt_samples=4, stdevs=0.2, seed=0)
    assert model.layouts and not any(model.layouts)


def test_a_model_that_views_its_activations_runs_again_contiguous_and_is_remembered(monkeypatch):
    model = ViewsActivations()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    first = noisegrad.smoothgrad(model, X, target=0, nt_samples=4, stdevs=0.2, seed=0)
    in_first = model.forwards
    second = noisegrad.smoothgrad(model, X, target=0, nt_samples=4, stdevs=0.2, seed=0)
    assert torch.equal(first, second)
    assert all(torch.equal(p, before[name]) and p.grad is None for name, p in model.named_parameters())
    contiguous_only(monkeypatch)
    never_tried = ViewsActivations()
    assert torch.equal(first, noisegrad.smoothgrad(never_tried, X, target=0, nt_samples=4, stdevs=0.2, seed=0))
    # the first call ran as far as its first chunk's forward, then again; the second did not try
    assert (in_first, model.forwards - in_first) == (2 * never_tried.forwards, never_tried.forwards)


class ChecksContiguity(ViewsActivations):
    """A forward that refuses what it was not written for, as a custom operator's own check may."""

    def forward(self, x):
        if not x.is_contiguous():
            raise RuntimeError("my_op: expected a contiguous input")
        return super().forward(x)


def test_any_failure_on_channels_last_copies_runs_the_call_again_on_contiguous_ones():
    model = ChecksContiguity()
    first = noisegrad.vargrad(model, X, target=1, nt_samples=4, stdevs=0.2, seed=0)
    assert not _layout.channels_last((X,), model)  # kept contiguous from now on
    assert torch.equal(first, noisegrad.vargrad(ChecksContiguity(), X, target=1, nt_samples=4, stdevs=0.2, seed=0))


def test_an_error_that_contiguous_copies_do_not_mend_is_raised_alone_and_changes_nothing():
    class Transposes(ViewsActivations):
        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.linear(h.transpose(1, 3).view(h.size(0), -1))  # fails in any layout

    model = Transposes()
    with pytest.raises(RuntimeError, match="view size is not compatible") as failure:
        NoiseTunnel(Saliency(model)).attribute(X, target=0, nt_samples=2, stdevs=0.2, seed=0)
    assert failure.value.__context__ is None  # not raised while handling the channels-last attempt's error
    assert _layout.channels_last((X,), model)  # not kept contiguous: contiguous copies did not work either


def test_a_compiled_model_and_one_kept_contiguous_get_contiguous_copies():
    compiled = torch.compile(conv_net(), backend="eager")
    assert not _layout.channels_last((X,), compiled) and not _layout.channels_last((X,), lambda t: compiled(t))
    in_place = conv_net()
    in_place.compile(backend="eager")
    assert not _layout.channels_last((X,), in_place)
    kept, part = conv_net(), conv_net()
    noisegrad.keep_contiguous(kept)
    noisegrad.keep_contiguous(part[0])  # a submodule: the model around it is kept too
    for model in (nn.Sequential(kept, nn.Softmax(dim=1)).eval(), part):
        assert not _layout.channels_last((X,), model)
    model = Recording(conv_net())
    noisegrad.keep_contiguous(lambda t: model(t))  # the model behind a function
    noisegrad.smoothgrad(model, X, target=1, nt_samples=4, stdevs=0.2, seed=0)
    assert model.layouts and not any(model.layouts)


def test_a_failure_after_a_chunk_went_through_is_raised_without_a_second_attempt():
    class FailsLate(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.forwards = conv_net(), 0

        def forward(self, x):
            self.forwards += 1
            if self.forwards == 2:
                raise RuntimeError("bad batch")
            return self.net(x)

    model = FailsLate().eval()
    with pytest.raises(RuntimeError, match="bad batch"):
        NoiseTunnel(Saliency(model)).attribute(X, target=0, nt_samples=4, nt_samples_batch_size=1, stdevs=0.2, seed=0)
    assert model.forwards == 2 and _layout.channels_last((X,), model)
