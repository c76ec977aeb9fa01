"""Feature bars and coloured tokens rendered headless: order, colours by sign, error bars, HTML."""

import re

import numpy as np
import pytest
import torch
from matplotlib.container import ErrorbarContainer

from noisegrad.viz import figure_to_array, plot_feature_attr, plot_token_attr, token_attr_html


def box_colour(fig, patch):
    """Rendered RGB just inside the left edge of a (token box) patch, away from the glyphs."""
    rgb = figure_to_array(fig)
    (x0, y0), (x1, y1) = patch.get_window_extent().get_points()
    return rgb[int(rgb.shape[0] - (y0 + y1) / 2), int(x0) + 3].astype(int)


def test_bars_are_sorted_by_size_and_coloured_by_sign_in_the_pixels():
    attr = torch.tensor([0.5, -2.0, 1.0, 0.1])
    fig, ax = plot_feature_attr(attr, ["a", "b", "c", "d"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "c", "a", "d"]  # top to bottom
    rgb = figure_to_array(fig).astype(int)
    top_bar = ax.patches[0]  # "b": -2, on top
    (x0, y0), (x1, y1) = top_bar.get_window_extent().get_points()
    colour = rgb[int(rgb.shape[0] - (y0 + y1) / 2), int((x0 + x1) / 2)]
    assert colour[2] > colour[0] + 80  # negative: blue
    x_zero = ax.transData.transform((0.0, 0.0))[0]
    assert x1 <= x_zero + 1  # and it extends to the left of zero
    (x0, y0), (x1, y1) = ax.patches[1].get_window_extent().get_points()
    colour = rgb[int(rgb.shape[0] - (y0 + y1) / 2), int((x0 + x1) / 2)]
    assert colour[0] > colour[2] + 80 and x0 >= x_zero - 1  # positive: red, right of zero


def test_error_bars_are_err_scale_standard_errors_wide():
    attr, stderr = np.array([1.0, -2.0, 0.5]), np.array([0.1, 0.3, 0.2])
    fig, ax = plot_feature_attr(attr, stderr=stderr, err_scale=1.96)
    container = next(c for c in ax.containers if isinstance(c, ErrorbarContainer))
    segments = container.lines[2][0].get_segments()
    half_widths = sorted(round((seg[1][0] - seg[0][0]) / 2, 6) for seg in segments)
    assert half_widths == sorted(round(1.96 * s, 6) for s in stderr)
    assert "± 1.96 standard errors)" in ax.get_xlabel()
    assert "± 1 standard error)" in plot_feature_attr(attr, stderr=stderr).ax.get_xlabel()


def test_a_batch_needs_an_example_and_max_features_keeps_the_largest():
    attr = np.array([[1.0, 2.0, 3.0], [3.0, -5.0, 0.0]])
    with pytest.raises(ValueError, match="choose one with example="):
        plot_feature_attr(attr)
    fig, ax = plot_feature_attr(attr, example=1, max_features=2)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["feature 1", "feature 0"]
    assert ax.get_title() == "top 2 of 3 features"


def test_tabular_errors_name_the_argument():
    with pytest.raises(ValueError, match="feature_names must be a sequence of 3 names"):
        plot_feature_attr(np.ones(3), ["a", "b"])
    with pytest.raises(ValueError, match="stderr must be non-negative and shaped like attr"):
        plot_feature_attr(np.ones(3), stderr=np.ones(2))
    with pytest.raises(ValueError, match="sort must be one of"):
        plot_feature_attr(np.ones(3), sort="size")


def test_token_boxes_are_red_for_positive_blue_for_negative_white_for_zero():
    fig, ax = plot_token_attr(["good", "plain", "bad"], torch.tensor([2.0, 0.0, -2.0]))
    good, plain, bad = (box_colour(fig, t.get_bbox_patch()) for t in ax.texts)
    assert good[0] > good[2] + 50 and bad[2] > bad[0] + 50
    assert plain.min() >= 240  # zero: the colour map's white centre
    assert ax.texts[0].get_color() == "white" and ax.texts[1].get_color() == "black"  # readable ink


def test_long_sequences_wrap_onto_more_lines_and_a_taller_figure():
    short_fig, short_ax = plot_token_attr(["word"] * 3, np.ones(3))
    long_fig, long_ax = plot_token_attr(["word"] * 60, np.ones(60))
    rows = {round(t.get_window_extent().y0) for t in long_ax.texts}
    assert len(rows) >= 4
    assert long_fig.get_size_inches()[1] > short_fig.get_size_inches()[1]
    right_edge = long_fig.get_window_extent().x1
    assert all(t.get_window_extent().x1 <= right_edge for t in long_ax.texts)  # nothing runs off the figure


def test_embedding_attributions_are_summed_per_token():
    fig, ax = plot_token_attr(["a", "b"], np.array([[1.0, 1.0], [-1.0, -1.0]]), colorbar=False)
    a, b = (box_colour(fig, t.get_bbox_patch()) for t in ax.texts)
    assert a[0] > a[2] and b[2] > b[0]
    with pytest.raises(ValueError, match=r"T = len\(tokens\) = 3"):
        plot_token_attr(["a", "b", "c"], np.ones(4))


def test_html_colours_escapes_and_shows_values():
    page = token_attr_html(["<script>", "ok", "no"], [0.0, 1.0, -1.0], title="IG")
    assert "<script>" not in page and "&lt;script&gt;" in page
    colours = re.findall(r"background-color: (#[0-9a-f]{6})", page)
    (r0, g0, b0), (r1, _, b1), (r2, _, b2) = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in colours]
    assert min(r0, g0, b0) >= 240 and r1 > b1 + 50 and b2 > r2 + 50
    assert re.findall(r'title="([^"]+)"', page) == ["0", "1", "-1"]
    assert page._repr_html_() == str(page)


def test_feature_bars_at_a_level_are_student_t_intervals_from_a_smoothed_attribution():
    import torch

    from noisegrad import SmoothedAttribution
    from noisegrad.stats.student_t import interval_halfwidth_factor

    result = SmoothedAttribution(torch.tensor([[0.5, -2.0, 1.0]]), torch.tensor([[0.1, 0.3, 0.2]]),
                                 torch.tensor([0.1]), 4, dof=3)
    fig, ax = plot_feature_attr(result, ["a", "b", "c"], level=0.95)
    (bars,) = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
    segments = bars.errorbar.lines[2][0].get_segments()
    half_widths = sorted(round(float(s[1][0] - s[0][0]) / 2, 6) for s in segments)
    t = interval_halfwidth_factor(0.95, 3)
    assert half_widths == sorted(round(t * e, 6) for e in (0.1, 0.3, 0.2))
    assert "95% interval" in ax.get_xlabel()
    with pytest.raises(ValueError, match="level needs dof"):
        plot_feature_attr(torch.tensor([1.0, 2.0]), stderr=torch.tensor([0.1, 0.1]), level=0.95)
