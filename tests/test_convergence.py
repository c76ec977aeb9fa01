"""nt_samples="auto": stop each input when its relative standard error meets tol."""

import statistics

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from conftest import make_cnn, make_mlp
from noisegrad import NoiseTunnel, SmoothedAttribution, relative


class Rows(nn.Module):
    """A model that records the rows of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.model(x)


def test_every_input_stops_at_tol_or_max_samples_and_reports_its_samples():
    model = make_mlp(seed=1)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    result = NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples="auto", tol=0.02, max_samples=600, stdevs=0.5, target=1, abs=False, seed=0
    )
    assert isinstance(result, SmoothedAttribution)
    assert result.attributions.shape == x.shape and result.nt_samples.shape == (4,)
    assert bool((result.nt_samples >= 32).all()) and bool((result.nt_samples <= 600).all())
    converged = result.relative_stderr <= 0.02
    assert bool((converged | (result.nt_samples == 600)).all())


def test_inputs_that_converged_stop_consuming_compute():
    model = Rows(make_mlp(seed=2))
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    stdevs = torch.tensor([[0.01], [0.8], [0.8]], dtype=torch.float64)  # example 0 barely varies
    result = NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples="auto", tol=0.01, max_samples=2000, nt_samples_batch_size=16, stdevs=stdevs, target=0,
        abs=False, seed=0,
    )
    assert int(result.nt_samples[0]) == 32 and int(result.nt_samples[1:].min()) > 32
    assert model.rows[0] == 3 * 16 and model.rows[-1] <= 2 * 16  # example 0 left after the first check


def test_the_achieved_error_is_close_to_tol():
    """Against a long-run reference, the error at stopping is within ±25 % of tol (median over runs)."""
    model = make_cnn(torch.float64, seed=2)
    x = torch.rand(4, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    nt = NoiseTunnel(Saliency(model))
    common = dict(stdevs=relative(0.3), target=1, abs=False)
    reference = nt.attribute(x, nt_samples=60000, nt_samples_batch_size=20000, seed=99, **common)
    tol, ratios = 0.005, []
    for seed in range(6):
        result = nt.attribute(x, nt_samples="auto", tol=tol, max_samples=4096, seed=seed, **common)
        error = (result.attributions - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
        ratios += (error / tol).tolist()
    assert 0.75 <= statistics.median(ratios) <= 1.25


def test_auto_mode_is_reproducible_and_averages_deltas_per_input():
    model = nn.Sequential(nn.Linear(5, 3)).double()  # IG is exact on a linear model: deltas vanish
    x = torch.randn(3, 5, dtype=torch.float64)
    nt = NoiseTunnel(IntegratedGradients(model))
    common = dict(nt_samples="auto", tol=0.05, stdevs=0.3, target=2, n_steps=4, return_convergence_delta=True)
    first, second = nt.attribute(x, seed=5, **common), nt.attribute(x, seed=5, **common)
    assert torch.equal(first.attributions, second.attributions) and torch.equal(first.nt_samples, second.nt_samples)
    assert first.delta.shape == (3,) and float(first.delta.abs().max()) < 1e-12


@pytest.mark.parametrize(
    "extra, message",
    [
        (dict(sampler="lhs"), 'cannot use sampler="lhs"'),
        (dict(tol=0), "tol must be a positive finite number"),
        (dict(max_samples=0), "max_samples must be a positive int"),
        (dict(delta_reduction="none"), "averaged per input only"),
    ],
)
def test_auto_mode_rejects_what_it_cannot_do(extra, message):
    with pytest.raises(ValueError, match=message):
        NoiseTunnel(Saliency(make_mlp())).attribute(
            torch.zeros(2, 5, dtype=torch.float64), nt_samples="auto", target=0, **extra
        )
