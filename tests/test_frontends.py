"""smoothgrad / smoothgrad_sq / vargrad: NoiseTunnel(Saliency) with the best measured defaults."""

import pytest
import torch
from captum.attr import Saliency

from conftest import make_mlp
from noisegrad import NoiseTunnel, SmoothedAttribution, relative, smoothgrad, smoothgrad_sq, vargrad
from noisegrad.frontends import BEST_SAMPLER

X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "function, nt_type, absolute",
    [(smoothgrad, "smoothgrad", False), (smoothgrad, "smoothgrad", True), (smoothgrad_sq, "smoothgrad_sq", False),
     (vargrad, "vargrad", False)],
)
def test_front_ends_are_the_tunnel_with_relative_noise_50_samples_and_the_best_sampler(function, nt_type, absolute):
    model = make_mlp()
    extra = {"absolute": absolute} if function is smoothgrad else {}
    ours = function(model, X, target=1, seed=3, **extra)
    expected = NoiseTunnel(Saliency(model)).attribute(
        X, nt_type=nt_type, nt_samples=50, stdevs=relative(0.15), sampler=BEST_SAMPLER[(nt_type, absolute)],
        target=1, abs=absolute, seed=3,
    )
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-15)


def test_the_tunnel_itself_keeps_captums_iid_default():
    model = make_mlp()
    default = NoiseTunnel(Saliency(model)).attribute(X, target=0, seed=1)
    iid = NoiseTunnel(Saliency(model)).attribute(X, target=0, seed=1, sampler="iid")
    assert torch.equal(default, iid)


@pytest.mark.parametrize(
    "options, sampler", [(dict(nt_samples="auto", tol=0.2), "antithetic"), (dict(return_stderr=True), "antithetic")]
)
def test_auto_samples_and_standard_errors_swap_the_latin_hypercube_for_antithetic_pairs(options, sampler):
    """A hypercube needs its sample count up front, and its standard error would rest on 4 replicates (3 dof)."""
    model = make_mlp()
    result = smoothgrad(model, X, target=0, absolute=True, seed=0, **options)
    expected = NoiseTunnel(Saliency(model)).attribute(
        X, **{"nt_samples": 50, **options}, stdevs=relative(0.15), sampler=sampler, target=0, abs=True, seed=0
    )
    assert isinstance(result, SmoothedAttribution)
    torch.testing.assert_close(result.attributions, expected.attributions, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result.stderr, expected.stderr, rtol=1e-12, atol=1e-15)
    if "return_stderr" in options:
        assert int(result.dof) == 7  # 8 groups of antithetic pairs


def test_saliencys_abs_keyword_points_to_absolute():
    import pytest
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(TypeError, match="absolute=True"):
        smoothgrad(model, torch.rand(2, 4), target=0, abs=True)
