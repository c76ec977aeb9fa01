"""Standard errors from the same run: they match the spread of the estimate over seeds."""

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency

from conftest import make_cnn, make_mlp
from noisegrad import NoiseTunnel, SmoothedAttribution
from noisegrad.sampling.samplers import SAMPLERS

X = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_the_standard_error_matches_the_spread_over_seeds(sampler, nt_type):
    nt = NoiseTunnel(Saliency(make_mlp(seed=1)))
    common = dict(nt_type=nt_type, nt_samples=32, nt_samples_batch_size=12, stdevs=0.5, target=1, abs=False,
                  sampler=sampler)
    runs = [nt.attribute(X, return_stderr=True, seed=s, **common) for s in range(60)]
    estimates = torch.stack([r.attributions for r in runs])
    empirical = estimates.std(dim=0).norm()
    reported = torch.stack([r.stderr for r in runs]).pow(2).mean(dim=0).sqrt().norm()
    assert 0.7 < float(reported / empirical) < 1.45


def test_iid_smoothgrad_gets_the_textbook_standard_error_of_a_mean():
    """std(ddof=1) / √n of the very maps that were averaged, recorded as the wrapped method returns them."""

    class Recording(Saliency):
        maps = []

        def attribute(self, inputs, **kwargs):
            out = super().attribute(inputs, **kwargs)
            self.maps.append(out.detach().clone())
            return out

    result = NoiseTunnel(Recording(make_mlp(seed=2))).attribute(
        X, nt_samples=20, nt_samples_batch_size=1, stdevs=0.5, target=0, abs=False, seed=4, return_stderr=True
    )
    maps = torch.stack(Recording.maps)
    assert maps.shape == (20,) + X.shape
    torch.testing.assert_close(result.attributions, maps.mean(0), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result.stderr, maps.std(0) / 20**0.5, rtol=1e-10, atol=1e-14)


def test_the_attributions_are_those_of_a_run_without_standard_errors():
    nt = NoiseTunnel(IntegratedGradients(make_mlp()))
    common = dict(nt_type="vargrad", nt_samples=10, nt_samples_batch_size=4, stdevs=0.3, target=2, n_steps=5, seed=2,
                  return_convergence_delta=True)
    plain, delta = nt.attribute(X, **common)
    result = nt.attribute(X, return_stderr=True, **common)
    assert isinstance(result, SmoothedAttribution)
    torch.testing.assert_close(result.attributions, plain, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(result.delta, delta, rtol=0, atol=0)
    assert result.stderr.shape == plain.shape and bool((result.stderr >= 0).all())
    assert result.relative_stderr.shape == (2,) and result.nt_samples == 10
    expected = (result.stderr.pow(2).sum(1) / plain.pow(2).sum(1)).sqrt()
    torch.testing.assert_close(result.relative_stderr, expected)


def test_tuple_inputs_get_one_standard_error_per_tensor_and_one_summary_per_example():
    model = make_cnn(torch.float64)
    x = torch.rand(2, 2, 5, 5, dtype=torch.float64)
    result = NoiseTunnel(Saliency(lambda a, b: model(a + b))).attribute(
        (x, x.clone()), nt_samples=8, stdevs=0.1, target=0, return_stderr=True, seed=0
    )
    assert isinstance(result.stderr, tuple) and [t.shape for t in result.stderr] == [x.shape, x.shape]
    assert result.relative_stderr.shape == (2,)


@pytest.mark.parametrize(
    "sampler, nt_samples, nt_type, needed",
    [("iid", 1, "smoothgrad", 2), ("antithetic", 2, "smoothgrad", 2), ("iid", 2, "vargrad", 3)],
)
def test_too_few_independent_units_for_a_standard_error_are_rejected(sampler, nt_samples, nt_type, needed):
    with pytest.raises(ValueError, match=f"nt_type='{nt_type}' needs at least {needed} independent units"):
        NoiseTunnel(Saliency(make_mlp())).attribute(
            X, nt_type=nt_type, nt_samples=nt_samples, sampler=sampler, return_stderr=True, target=0
        )


def test_vargrad_from_three_samples_has_a_nonzero_standard_error():
    """With two samples each leave-one-out VarGrad would be 0, and so would its jackknife; three suffice."""
    result = NoiseTunnel(Saliency(make_mlp())).attribute(
        X, nt_type="vargrad", nt_samples=3, stdevs=0.5, return_stderr=True, target=0, abs=False, seed=0
    )
    assert bool((result.relative_stderr > 0.05).all())


@pytest.mark.parametrize("sampler, dof", [("qmc", 3), ("antithetic", 7)])
def test_student_t_intervals_cover_at_their_level_where_1_96_standard_errors_do_not(sampler, dof):
    """Few groups: ±1.96 SE under-covers; result.interval(0.95) uses Student's t with the reported dof.

    The truth is a 40,000-sample i.i.d. run; coverage is counted over 150 seeds × 10 elements.
    """
    nt = NoiseTunnel(Saliency(make_mlp(seed=1)))
    common = dict(stdevs=0.5, target=1, abs=False)
    truth = nt.attribute(X, nt_samples=40000, nt_samples_batch_size=20000, seed=1234, **common)
    covered_t, covered_normal = 0, 0
    for seed in range(150):
        result = nt.attribute(X, nt_samples=32, sampler=sampler, return_stderr=True, seed=seed, **common)
        assert result.dof == dof
        low, high = result.interval(0.95)
        covered_t += int(((low <= truth) & (truth <= high)).sum())
        normal = 1.96 * result.stderr
        covered_normal += int(((result.attributions - normal <= truth) & (truth <= result.attributions + normal)).sum())
    t_rate, normal_rate = covered_t / 1500, covered_normal / 1500
    assert 0.91 <= t_rate <= 0.985
    assert normal_rate < t_rate
