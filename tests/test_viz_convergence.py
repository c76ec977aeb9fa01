"""Convergence helpers on a real NoiseTunnel: nested estimates, error measures, and their plots."""

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from captum.attr import NoiseTunnel as CaptumNoiseTunnel
from torch import nn

import noisegrad
from noisegrad import NoiseTunnel
from noisegrad.viz import (
    ConvergenceRun,
    figure_to_array,
    measure_convergence,
    plot_convergence_curve,
    plot_convergence_delta,
    plot_convergence_maps,
)


@pytest.fixture(scope="module")
def image_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return model.double().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def run(image_model, images):
    return measure_convergence(NoiseTunnel(Saliency(image_model)), images, sample_counts=(1, 4, 16, 64),
                               stdevs=0.3, target=0, abs=False)


def test_estimates_are_the_nested_seeded_runs(run, image_model, images):
    nt = NoiseTunnel(Saliency(image_model))
    for k, n in enumerate(run.sample_counts):
        expected = nt.attribute(images, nt_samples=n, seed=0, stdevs=0.3, target=0, abs=False)
        # The runs keep per-group moments for their standard error: the same mean up to summation order.
        np.testing.assert_allclose(run.estimates[k], expected.numpy(), rtol=1e-12, atol=1e-15)


def test_relative_change_is_the_norm_of_successive_differences(run):
    a = run.estimates.reshape(4, 2, -1)
    expected = np.linalg.norm(a[1:] - a[:-1], axis=2) / np.linalg.norm(a[1:], axis=2)
    np.testing.assert_allclose(run.relative_change[1:], expected)
    assert np.isnan(run.relative_change[0]).all()


def test_own_stderr_agrees_with_repeated_runs_and_falls_like_one_over_root_n(run, image_model, images):
    assert run.stderr_method == "return_stderr" and np.isnan(run.relative_stderr[0]).all()
    repeated = measure_convergence(NoiseTunnel(Saliency(image_model)), images, sample_counts=(4, 16, 64),
                                   stdevs=0.3, target=0, abs=False, stderr="repeats", repeats=12)
    ratio = run.relative_stderr[1:] / repeated.relative_stderr
    assert ((ratio > 0.5) & (ratio < 2.0)).all()  # two independent estimators of the same error
    fall = run.relative_stderr[1] / run.relative_stderr[3]  # 16× the samples
    assert ((fall > 2.5) & (fall < 6.5)).all()  # ≈ 4 = √16


def test_joint_runs_bring_their_own_standard_errors(image_model, images):
    joint = measure_convergence(NoiseTunnel(IntegratedGradients(image_model)), images, sample_counts=(4, 16),
                                stdevs=0.1, target=0, joint=True)
    assert joint.stderr_method == "return_stderr"
    assert np.isfinite(joint.relative_stderr).all() and (joint.relative_stderr > 0).all()


def test_deltas_are_collected_per_count(image_model, images):
    ig = measure_convergence(NoiseTunnel(IntegratedGradients(image_model)), images, sample_counts=(2, 8),
                             stderr=None, stdevs=0.1, target=0, n_steps=8, return_convergence_delta=True)
    assert ig.deltas.shape == (2, 2) and ig.relative_stderr is None


def test_maps_figure_has_one_panel_per_count_and_input(run, images):
    fig, axes = plot_convergence_maps(run, images, colorbar=True)
    assert axes.shape == (2, 5)
    assert [ax.get_title() for ax in axes[0]] == ["Input", "N = 1", "N = 4", "N = 16", "N = 64"]
    assert sum(1 for ax in fig.axes if ax.images) == 10


def test_curve_draws_each_inputs_values_on_log_axes_with_a_reference(run):
    fig, ax = plot_convergence_curve(run, labels=["cat", "dog"])
    lines = ax.get_lines()
    assert len(lines) == 3 and lines[-1].get_label() == "∝ 1/√N"
    np.testing.assert_allclose(lines[1].get_ydata(), run.relative_stderr[:, 1])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # the first input's line falls: its last point is lower on the rendered figure than its second
    rgb = figure_to_array(fig)
    y_second, y_last = (ax.transData.transform((n, v))[1] for n, v in
                        zip(run.sample_counts[1::2], run.relative_stderr[1::2, 0]))
    assert y_last < y_second and rgb.shape[0] > 100
    fig, ax = plot_convergence_curve(run, metric="relative_change")
    assert ax.get_ylabel().startswith("relative change")
    with pytest.raises(ValueError, match="metric must be one of"):
        plot_convergence_curve(run, metric="stderr")


def test_delta_bars_have_the_signed_heights_and_groups():
    fig, ax = plot_convergence_delta({"N = 4": torch.tensor([0.2, -0.1]), "N = 64": np.array([0.05, -0.02])})
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.2, -0.1, 0.05, -0.02]
    zero = ax.transData.transform((0, 0))[1]
    assert ax.patches[0].get_window_extent().y1 > zero + 5 and ax.patches[1].get_window_extent().y0 < zero - 5
    fig, ax = plot_convergence_delta(np.array([0.3, 0.01]), absolute=True)
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match=r"delta must have shape \(batch,\)"):
        plot_convergence_delta(np.zeros((2, 3)))


def test_from_estimates_accepts_external_standard_errors():
    run = ConvergenceRun.from_estimates([4, 16], [np.full((1, 2), 2.0)] * 2, stderr=[np.ones((1, 2)), np.full((1, 2), 0.5)])
    np.testing.assert_allclose(run.relative_stderr[:, 0], [0.5, 0.25])
    with pytest.raises(ValueError, match="sample_counts must be strictly increasing"):
        ConvergenceRun.from_estimates([4, 4], [np.ones((1, 2))] * 2)


def test_measure_convergence_errors(image_model, images):
    nt = NoiseTunnel(Saliency(image_model))
    with pytest.raises(ValueError, match="set by measure_convergence"):
        measure_convergence(nt, images, nt_samples=4)
    with pytest.raises(ValueError, match="needs noisegrad.NoiseTunnel, got NoiseTunnel: use stderr='repeats'"):
        measure_convergence(CaptumNoiseTunnel(Saliency(image_model)), images, stderr="return_stderr")
    with pytest.raises(TypeError, match="inputs must be one torch.Tensor"):
        measure_convergence(nt, (images,))
    calls = []
    hook = image_model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"weight draws stay fixed.*weight_noise\(draws=\"auto\"\)"):
        measure_convergence(nt, images, weight_noise=noisegrad.weight_noise(0.2, draws=4), target=0)
    hook.remove()
    assert not calls


def test_the_curve_at_a_level_is_the_relative_stderr_times_students_t_of_each_counts_dof(run):
    from noisegrad.stats.student_t import interval_halfwidth_factor

    assert np.isnan(run.dof[0]) and run.dof[1:].tolist() == [3.0, 15.0, 63.0]  # i.i.d.: n − 1; one sample: none
    fig, ax = plot_convergence_curve(run, level=0.9, reference=False)
    drawn = np.stack([line.get_ydata() for line in ax.get_lines()], axis=1)
    factors = np.array([np.nan] + [interval_halfwidth_factor(0.9, d) for d in (3, 15, 63)])
    np.testing.assert_allclose(drawn, run.relative_stderr * factors[:, None], rtol=1e-12)
    assert "90% interval" in ax.get_ylabel() and "90% interval" in ax.get_title()
