"""nt_samples="auto": stop each input when its relative standard error meets tol."""

import math
import statistics
import warnings
from decimal import Decimal

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import Counting, make_cnn, make_mlp
from noisegrad import NoiseTunnel, SmoothedAttribution, SmoothingConfig, relative


def test_every_input_stops_at_tol_or_max_samples_and_reports_its_samples():
    model = make_mlp(seed=1)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    result = NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples="auto", tol=0.02, max_samples=600, stdevs=0.5, target=1, abs=False, seed=0
    )
    assert isinstance(result, SmoothedAttribution)
    assert result.attributions.shape == x.shape and result.nt_samples.shape == (4,)
    assert bool((result.nt_samples >= 16).all()) and bool((result.nt_samples <= 600).all())
    converged = result.relative_stderr <= 0.02
    assert bool((converged | (result.nt_samples == 600)).all())


def test_inputs_that_converged_stop_consuming_compute():
    model = Counting(make_mlp(seed=2))
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    stdevs = torch.tensor([[0.01], [0.8], [0.8]], dtype=torch.float64)  # example 0 barely varies
    result = NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples="auto", tol=0.01, max_samples=2000, nt_samples_batch_size=16, stdevs=stdevs, target=0,
        abs=False, seed=0,
    )
    assert int(result.nt_samples[0]) == 16 and int(result.nt_samples[1:].min()) > 16  # the first check: 16
    assert model.rows[0] == 3 * 16 and model.rows[-1] <= 2 * 16  # example 0 left after the first check


def test_checks_come_at_least_an_eighth_apart_when_examples_converge_one_by_one():
    """Examples with spread noise converge at many different counts; the checks still grow geometrically."""
    from noisegrad.stats.stopping import LEAST_GROWTH

    model = Counting(make_mlp(seed=3))
    x = torch.randn(24, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stdevs = torch.linspace(0.05, 1.0, 24, dtype=torch.float64).unsqueeze(1)
    result = NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples="auto", tol=0.02, max_samples=4000, nt_samples_batch_size=4000, stdevs=stdevs, target=0,
        abs=False, seed=0,
    )
    stops = sorted(set(result.nt_samples.tolist()))
    assert len(stops) >= 3, stops  # the examples did converge at different checks
    assert LEAST_GROWTH == 1 / 8
    for before, after in zip(stops, stops[1:]):
        assert after >= before * 9 / 8, stops
    # one chunk per check (the chunk size holds every sample): at most one check per growth of 9/8 from 16 on
    assert len(model.rows) <= 1 + math.log(stops[-1] / 16) / math.log(9 / 8) + 1e-9, (model.rows, stops)


@settings(max_examples=12, deadline=None)
@given(sampler=st.sampled_from(["iid", "antithetic", "qmc", "lhs"]), chunk=st.integers(1, 40))
def test_auto_results_do_not_depend_on_the_chunk_size(sampler, chunk):
    """Checks come at the same sample counts whatever the chunk (a small one used to check after every chunk):
    the same stops, and the attributions of fixed runs with those counts, to rounding."""
    from noisegrad.stats.stopping import StoppingRule

    counts = []
    check = StoppingRule.check

    def recording(rule, values, errors, dof, examples, count, delta=None):
        counts.append(count)
        return check(rule, values, errors, dof, examples, count, delta)

    x = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stdevs = torch.linspace(0.05, 1.0, 12, dtype=torch.float64).unsqueeze(1)  # examples converge one by one
    nt = NoiseTunnel(Saliency(make_mlp(seed=3)))
    common = dict(nt_samples="auto", tol=0.03, max_samples=1000, stdevs=stdevs, target=0, abs=False, seed=0,
                  sampler=sampler)
    whole = nt.attribute(x, nt_samples_batch_size=1000, **common)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StoppingRule, "check", recording)
        chunked = nt.attribute(x, nt_samples_batch_size=chunk, **common)
    assert torch.equal(chunked.nt_samples, whole.nt_samples)
    torch.testing.assert_close(chunked.attributions, whole.attributions, rtol=1e-10, atol=1e-12)
    first = 32 if sampler == "qmc" else 16  # QMC's 4 replicates (3 dof) get 8 points each first; LHS: 4 blocks
    assert counts[0] == first and all(after >= before * 9 / 8 for before, after in zip(counts, counts[1:])), counts
    if sampler == "lhs":  # checks after whole hypercubes only
        assert all(count % 4 == 0 for count in counts), counts


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
        (dict(sampler="lhs", nt_type="vargrad", max_samples=8),
         r"nt_samples=\"auto\" with nt_type='vargrad' needs at least 3 independent units of samples; "
         r"sampler='lhs' \(hypercubes of 4 samples\) with max_samples=8 has 2"),
        (dict(tol=0), r"tol must be a relative standard error between 0 and 1 \(0.05 for 5 %\), got 0"),
        (dict(tol=1), r"between 0 and 1 \(0.05 for 5 %\), got 1"),
        (dict(tol=5), r"between 0 and 1 \(0.05 for 5 %\), got 5"),  # 5 meant as 5 %: would stop at the first check
        (dict(tol=float("nan")), r"between 0 and 1 \(0.05 for 5 %\), got nan"),
        (dict(max_samples=0), "max_samples must be a positive int"),
        (dict(delta_reduction="none"), "averaged per input only"),
    ],
)
def test_auto_mode_rejects_what_it_cannot_do(extra, message):
    with pytest.raises(ValueError, match=message):
        NoiseTunnel(Saliency(make_mlp())).attribute(
            torch.zeros(2, 5, dtype=torch.float64), nt_samples="auto", target=0, **extra
        )


@pytest.mark.parametrize("tol", ["0.05", torch.tensor(0.05), Decimal("0.05"), True],
                         ids=["str", "tensor", "Decimal", "bool"])
def test_a_tol_that_is_no_number_is_a_type_error_naming_its_type_before_any_forward(tol):
    # its value may read as in range ("got '0.05'"): the message says what is wrong with it, its type
    model = Counting(make_mlp())
    for check in (lambda: NoiseTunnel(Saliency(model)).attribute(torch.zeros(2, 5, dtype=torch.float64), target=0,
                                                                nt_samples="auto", tol=tol),
                  lambda: SmoothingConfig(nt_samples="auto", tol=tol)):
        with pytest.raises(TypeError, match=rf"tol must be a number between 0 and 1 \(0.05 for 5 %\), "
                                            rf"got .* \({type(tol).__name__}\)"):
            check()
    assert model.rows == []


def test_a_per_feature_sigma_as_long_as_the_batch_stays_per_feature_after_inputs_leave():
    """σ of shape (features,) with features == batch is per feature, told by its shape, not its length.

    Only the last feature gets noise, so every row the model sees must equal some example on the other
    features, also after converged examples have left the batch (before the fix, σ was then indexed by
    example and other features got noise).
    """
    model = Counting(make_mlp(seed=3))
    seen = []
    model.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().clone()))
    x = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[:, :4] *= torch.tensor([0.1, 1.0, 3.0, 10.0, 30.0], dtype=torch.float64)[:, None]  # examples converge apart
    sigma = torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    result = NoiseTunnel(Saliency(model)).attribute(
        x, nt_samples="auto", tol=0.02, max_samples=512, nt_samples_batch_size=16, stdevs=sigma, target=0,
        abs=False, seed=0,
    )
    assert result.nt_samples.unique().numel() > 1  # some examples left the batch before others
    rows = torch.cat(seen)
    matches_an_example = (rows[:, None, :4] == x[None, :, :4]).all(dim=2).any(dim=1)
    assert bool(matches_an_example.all())


def test_stopping_at_max_samples_above_tol_warns_and_marks_the_inputs():
    model = make_mlp(seed=1)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    stdevs = torch.tensor([[0.001], [2.0], [2.0]], dtype=torch.float64)  # only example 0 can converge
    with pytest.warns(RuntimeWarning, match=r"2 of 3 inputs did not reach tol=0.001 within max_samples=64") as caught:
        result = NoiseTunnel(Saliency(model)).attribute(
            x, nt_samples="auto", tol=0.001, max_samples=64, stdevs=stdevs, target=0, abs=False, seed=0
        )
    assert [w.filename for w in caught if "did not reach" in str(w.message)] == [__file__]  # the caller's line
    assert result.converged.tolist() == [True, False, False]
    assert bool((result.relative_stderr[1:] > 0.001).all()) and result.nt_samples.tolist()[1:] == [64, 64]
    assert result.dof.shape == (3,) and bool((result.dof == result.nt_samples - 1).all())  # i.i.d. SmoothGrad


def test_tol_or_max_samples_with_a_fixed_sample_count_are_refused_instead_of_ignored():
    with pytest.raises(ValueError, match=r'tol=0.01 applies only to nt_samples="auto"'):
        NoiseTunnel(Saliency(make_mlp())).attribute(torch.randn(2, 5, dtype=torch.float64), nt_samples=8, tol=0.01,
                                                    target=0)


def test_a_baseline_distribution_as_long_as_the_batch_keeps_all_its_rows_when_inputs_leave():
    """DeepLiftShap of a linear model: (x − mean of the baselines) · w for every example, by hand."""
    from captum.attr import DeepLiftShap

    linear = nn.Linear(3, 1).double()
    with torch.no_grad():
        linear.weight.fill_(1.0)
        linear.bias.zero_()
    baselines = torch.tensor([[-10.0] * 3, [10.0] * 3, [4.0] * 3], dtype=torch.float64)
    stdevs = torch.tensor([[0.0], [0.3], [0.3]], dtype=torch.float64)  # example 0 converges at once
    result = NoiseTunnel(DeepLiftShap(linear)).attribute(
        torch.zeros(3, 3, dtype=torch.float64), nt_samples="auto", max_samples=256, tol=1e-6, stdevs=stdevs,
        target=0, baselines=baselines, seed=0,
    )
    assert int(result.nt_samples[0]) < int(result.nt_samples[1])  # the scenario: one input left the batch early
    torch.testing.assert_close(result.attributions[0], torch.full((3,), -4.0 / 3, dtype=torch.float64))
    for i in (1, 2):  # the noisy ones: x + mean noise − 4/3, as a fixed run with the same samples gives
        fixed = NoiseTunnel(DeepLiftShap(linear)).attribute(
            torch.zeros(3, 3, dtype=torch.float64), nt_samples=int(result.nt_samples[i]), stdevs=stdevs, target=0,
            baselines=baselines, seed=0,
        )
        torch.testing.assert_close(result.attributions[i], fixed[i], rtol=1e-10, atol=1e-12)
        assert float((fixed[i] + 4.0 / 3).abs().max()) < 0.2  # not the -6.6 of a distribution that lost rows


@pytest.mark.parametrize("sampler", ["iid", "antithetic", "qmc"])
def test_an_input_that_ran_longer_gets_the_result_of_a_fixed_run_with_its_sample_count(sampler):
    """Its noise does not depend on which other inputs are still running."""
    model = make_mlp(seed=5)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    stdevs = torch.tensor([[0.01], [0.6], [0.6]], dtype=torch.float64)
    nt = NoiseTunnel(Saliency(model))
    common = dict(stdevs=stdevs, target=1, abs=False, seed=3, sampler=sampler)
    result = nt.attribute(x, nt_samples="auto", tol=0.02, max_samples=400, nt_samples_batch_size=16, **common)
    assert int(result.nt_samples[0]) < int(result.nt_samples[1:].max())  # input 0 left the batch early
    for i in (1, 2):  # with standard errors, as "auto" keeps them: QMC then has the same 4 replicates
        fixed = nt.attribute(x, nt_samples=int(result.nt_samples[i]), nt_samples_batch_size=16, return_stderr=True,
                             **common)
        torch.testing.assert_close(result.attributions[i], fixed.attributions[i], rtol=1e-10, atol=1e-12)


def test_nan_attributions_never_count_as_converged_and_zero_ones_with_spread_do_not_crash():
    nan_model = lambda t: (t * float("nan")).sum(1, keepdim=True)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        result = NoiseTunnel(Saliency(nan_model)).attribute(
            torch.randn(2, 3), nt_samples="auto", max_samples=64, stdevs=0.1, target=0, seed=0
        )
    assert result.converged.tolist() == [False, False]
    kink = lambda t: t.abs().sum(1, keepdim=True)  # noqa: E731  (at 0 the signed gradients average to about 0)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        NoiseTunnel(Saliency(kink)).attribute(torch.zeros(2, 3), nt_samples="auto", max_samples=64, stdevs=0.1,
                                              target=0, abs=False, seed=823, tol=1e-9)


def test_auto_hypercube_blocks_are_unbiased_and_their_standard_error_matches_the_spread_over_seeds():
    """With max_samples=32 (and a tol no check meets), "auto" with sampler="lhs" is 8 independent hypercubes of 4
    samples: their mean over seeds meets a long float64 i.i.d. reference within its Monte-Carlo error, and the
    mean squared standard error is the variance of the estimate over seeds (within sampling error)."""
    model = make_mlp(seed=3)
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    nt = NoiseTunnel(Saliency(model))
    common = dict(stdevs=0.8, target=1, abs=True)
    reference = nt.attribute(x, nt_samples=20000, nt_samples_batch_size=5000, seed=12345, **common)
    reference_stderr = nt.attribute(x, nt_samples=20000, nt_samples_batch_size=5000, seed=12345,
                                    return_stderr=True, **common).stderr
    with warnings.catch_warnings():  # none reaches tol: each warns that it stopped at max_samples
        warnings.simplefilter("ignore", RuntimeWarning)
        runs = [nt.attribute(x, nt_samples="auto", tol=1e-9, max_samples=32, sampler="lhs", seed=s, **common)
                for s in range(300)]
    assert all(int(r.nt_samples.max()) == 32 and int(r.dof.min()) == 7 for r in runs)
    estimates = torch.stack([r.attributions for r in runs])
    mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(len(runs))
    z = (mean - reference) / (stderr**2 + reference_stderr**2).sqrt()
    assert float(z.abs().max()) < 4.5
    # summed over elements: Var over seeds (±8 % at 300 seeds) against the mean of stderr² (7 dof per run)
    spread = float(estimates.var(0).sum())
    claimed = float(torch.stack([r.stderr.pow(2) for r in runs]).mean(0).sum())
    assert 0.75 < claimed / spread < 1.33, (claimed, spread)
    # and the hypercubes did reduce the variance: i.i.d. noise at the same 32 samples spreads more
    iid = torch.stack([nt.attribute(x, nt_samples=32, seed=s, **common) for s in range(300)])
    assert spread < 0.8 * float(iid.var(0).sum()), (spread, float(iid.var(0).sum()))
