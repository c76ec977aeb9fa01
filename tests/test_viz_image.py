"""Image helpers rendered headless: where the colour goes, which hue each sign gets, panel counts, files."""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib import colormaps

from noisegrad.viz import figure_to_array, plot_attr_comparison, plot_image_attr, plot_image_attr_grid


def pixel(fig, ax, row, col):
    """RGB (0–255 ints) of the rendered figure at image pixel (row, col) of ``ax``."""
    rgb = figure_to_array(fig)
    x, y = ax.transData.transform((col, row))
    return rgb[int(round(rgb.shape[0] - y)), int(round(x))].astype(int)


def panel_pixels(fig, ax):
    """The rendered pixels inside ``ax`` (without its frame)."""
    rgb = figure_to_array(fig)
    (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
    height = rgb.shape[0]
    return rgb[int(height - y1) + 3 : int(height - y0) - 3, int(x0) + 3 : int(x1) - 3].astype(int)


def brightness(rgb):
    return rgb[..., :3].sum(axis=-1)


def blob(size=16, centre=(4, 11), sigma=1.5):
    """A synthetic attribution: a Gaussian bump at ``centre`` (row, col)."""
    rows, cols = np.mgrid[:size, :size]
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))


def test_the_hottest_region_is_the_brightest_part_of_the_heat_map():
    fig, ax = plot_image_attr(torch.tensor(blob())[None], cmap="inferno", colorbar=False)
    rendered = np.array([[brightness(pixel(fig, ax, r, c)) for c in range(16)] for r in range(16)])
    assert np.unravel_index(rendered.argmax(), rendered.shape) == (4, 11)
    assert rendered[4, 11] > rendered[12, 3] + 300  # far from the bump: dark


def test_default_colours_signs_are_red_positive_blue_negative_white_zero():
    attr = np.zeros((8, 8))
    attr[1, 1], attr[6, 6] = 1.0, -1.0
    fig, ax = plot_image_attr(attr, outlier_perc=0)  # auto → "all": diverging, centred at 0
    red, blue, zero = pixel(fig, ax, 1, 1), pixel(fig, ax, 6, 6), pixel(fig, ax, 3, 5)
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50
    centre = (np.array(colormaps["RdBu_r"](0.5)[:3]) * 255).round()
    np.testing.assert_allclose(zero, centre, atol=2)  # 0 maps to the centre colour of the colour map


def test_a_positive_and_a_negative_map_of_the_same_size_get_opposite_hues_of_equal_strength():
    attr = blob()
    fig_pos, ax_pos = plot_image_attr(attr, sign="all", outlier_perc=0)
    fig_neg, ax_neg = plot_image_attr(-attr, sign="all", outlier_perc=0)
    pos, neg = pixel(fig_pos, ax_pos, 4, 11), pixel(fig_neg, ax_neg, 4, 11)
    assert pos[0] > pos[2] and neg[2] > neg[0]


@pytest.mark.parametrize("sign", ["positive", "negative", "absolute_value"])
def test_one_signed_views_show_only_their_part(sign):
    attr = np.zeros((8, 8))
    attr[1, 1], attr[6, 6] = 1.0, -1.0
    fig, ax = plot_image_attr(attr, sign=sign, outlier_perc=0)
    plus, minus = brightness(pixel(fig, ax, 1, 1)), brightness(pixel(fig, ax, 6, 6))
    white = 3 * 255
    shown = {"positive": (True, False), "negative": (False, True), "absolute_value": (True, True)}[sign]
    assert (plus < white - 100) == shown[0] and (minus < white - 100) == shown[1]


@pytest.mark.parametrize("attr, sign", [(np.zeros((8, 8)), "auto"), (-np.ones((8, 8)), "positive"),
                                         (np.zeros((8, 8)), "all"), (np.ones((8, 8)), "negative")])
def test_maps_with_nothing_to_show_render_blank_instead_of_failing(attr, sign):
    fig, ax = plot_image_attr(attr, sign=sign, colorbar=False)
    inside = panel_pixels(fig, ax)
    zero_colour = (np.array(ax.images[0].cmap(ax.images[0].norm(0.0))[:3]) * 255).round()
    assert brightness(zero_colour) > 3 * 235  # white, or nearly: the colour map's zero
    assert np.abs(inside - zero_colour).max() <= 1  # ...everywhere: a blank panel


def test_blended_overlay_shows_the_image_where_the_map_is_zero_and_the_map_where_it_is_hot():
    image = np.zeros((3, 16, 16))
    image[:, :, :8] = 1.0  # left half white, right half black
    attr = np.zeros((16, 16))
    attr[12, 12] = 1.0
    fig, ax = plot_image_attr(attr, image, method="blended_heat_map", outlier_perc=0, colorbar=False)
    left, right, hot = pixel(fig, ax, 3, 3), pixel(fig, ax, 3, 12), pixel(fig, ax, 12, 12)
    assert brightness(left) > brightness(right) + 300  # the image shows through
    assert hot[0] > hot[1] + 40 and hot[0] > hot[2]  # the heat map's red on the (black) image


def test_masked_image_and_alpha_scaling_follow_the_map():
    image = np.ones((16, 16, 3)) * 0.8
    attr = blob()
    fig, ax = plot_image_attr(attr, image, method="masked_image", sign="positive", outlier_perc=0)
    assert brightness(pixel(fig, ax, 4, 11)) > brightness(pixel(fig, ax, 14, 1)) + 300
    with pytest.raises(ValueError, match="one-signed map"):
        plot_image_attr(attr, image, method="alpha_scaling", sign="all")


def test_channel_first_channel_last_numpy_and_grad_tensors_render_identically():
    attr = torch.randn(3, 12, 12)
    a = figure_to_array(plot_image_attr(attr)[0])
    b = figure_to_array(plot_image_attr(attr.permute(1, 2, 0).numpy())[0])
    c = figure_to_array(plot_image_attr(attr.double().requires_grad_())[0])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_a_batch_grid_has_one_panel_per_example():
    fig, axes = plot_image_attr_grid(torch.randn(7, 1, 8, 8), ncols=3, titles=[f"#{i}" for i in range(7)])
    panels = [ax for ax in fig.axes if ax.images]
    assert len(axes) == len(panels) == 7
    assert axes[0].get_subplotspec().get_gridspec().get_geometry() == (3, 3)
    assert [ax.get_title() for ax in axes] == [f"#{i}" for i in range(7)]


def test_shared_scale_makes_a_weaker_map_lighter():
    strong, weak = blob(), 0.25 * blob()
    batch = np.stack([strong, weak])
    own = plot_image_attr_grid(batch, outlier_perc=0)
    shared = plot_image_attr_grid(batch, outlier_perc=0, shared_scale=True, colorbar=True)
    own_weak, shared_weak = pixel(own[0], own[1][1], 4, 11), pixel(shared[0], shared[1][1], 4, 11)
    strong_peak = pixel(shared[0], shared[1][0], 4, 11)
    np.testing.assert_array_equal(own_weak, pixel(own[0], own[1][0], 4, 11))  # own scales: both at full colour
    assert brightness(shared_weak) > brightness(strong_peak) + 150  # shared scale: the weak one is lighter
    assert len(shared[0].axes) == 3  # two panels and one colour bar


def test_vmax_puts_separate_figures_on_one_scale():
    fig_a, ax_a = plot_image_attr(blob(), vmax=1.0)
    fig_b, ax_b = plot_image_attr(0.5 * blob(), vmax=1.0)
    assert brightness(pixel(fig_b, ax_b, 4, 11)) > brightness(pixel(fig_a, ax_a, 4, 11)) + 100


def test_comparison_lays_out_inputs_by_methods_with_titles():
    x = torch.rand(3, 1, 8, 8)
    maps = {name: torch.randn(3, 1, 8, 8) for name in ("Saliency", "SmoothGrad", "SmoothGrad²", "VarGrad")}
    maps["VarGrad"] = maps["VarGrad"].abs()
    fig, axes = plot_attr_comparison(maps, x, row_labels=["a", "b", "c"], shared_scale="column", colorbar=True)
    assert axes.shape == (3, 5)
    assert [ax.get_title() for ax in axes[0]] == ["Input", "Saliency", "SmoothGrad", "SmoothGrad²", "VarGrad"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
    assert sum(1 for ax in fig.axes if ax.images) == 15
    assert len(fig.axes) == 15 + 4  # one colour bar per method column
    # the unsigned VarGrad column uses the white-to-red map: no blue anywhere in it
    for ax in axes[:, 4]:
        inside = panel_pixels(fig, ax)
        assert (inside[..., 2] <= inside[..., 0] + 2).all()


def test_comparison_signs_can_be_chosen_per_column():
    maps = {"a": np.random.randn(2, 6, 6), "b": np.random.randn(2, 6, 6)}
    fig, axes = plot_attr_comparison(maps, sign={"b": "absolute"})
    assert axes[0, 0].images[0].get_cmap().name == "RdBu_r"
    assert axes[0, 1].images[0].get_cmap().name == "Purples"
    with pytest.raises(ValueError, match=r"sign has entries for \['c'\]"):
        plot_attr_comparison(maps, sign={"c": "all"})


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_save_writes_the_format_of_the_extension(tmp_path, suffix, magic):
    path = tmp_path / f"map{suffix}"
    plot_image_attr(blob(), save=path)
    assert path.read_bytes().startswith(magic)


def test_nothing_touches_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_image_attr(blob())
    plot_attr_comparison({"a": np.random.rand(2, 4, 4)})
    assert plt.get_fignums() == before
    assert matplotlib.get_backend()  # the global backend was not switched by us


def test_drawing_on_a_given_axes():
    from noisegrad.viz._canvas import new_figure

    fig = new_figure((6, 3))
    left, right = fig.subplots(1, 2)
    out_fig, out_ax = plot_image_attr(blob(), ax=right, title="right")
    assert out_fig is fig and out_ax is right and right.get_title() == "right" and not left.images


def test_wrong_shapes_and_options_get_clear_errors():
    with pytest.raises(ValueError, match=r"image has height × width \(8, 8\) but the attribution has \(6, 6\)"):
        plot_image_attr(np.zeros((6, 6)), np.zeros((8, 8)), method="blended_heat_map")
    with pytest.raises(ValueError, match="method must be one of"):
        plot_image_attr(np.zeros((6, 6)), method="heatmap")
    with pytest.raises(ValueError, match="pass image="):
        plot_image_attr(np.zeros((6, 6)), method="blended_heat_map")
    with pytest.raises(ValueError, match=r"batch of shape \(N, C, H, W\)"):
        plot_image_attr_grid(np.zeros((6, 6)))
    with pytest.raises(ValueError, match="images has 2 images but there are 3 attributions"):
        plot_image_attr_grid(np.zeros((3, 6, 6)), np.zeros((2, 6, 6)), method="blended_heat_map")
    with pytest.raises(ValueError, match="same batch and image size"):
        plot_attr_comparison({"a": np.zeros((3, 6, 6)), "b": np.zeros((2, 6, 6))})
    with pytest.raises(ValueError, match="shared_scale must be one of"):
        plot_attr_comparison({"a": np.zeros((3, 6, 6))}, shared_scale="rows")
    with pytest.raises(ValueError, match="save must be a path ending in one of"):
        plot_image_attr(np.zeros((6, 6)), save="map.jpg")
    with pytest.raises(ValueError, match="vmax must be a positive"):
        plot_image_attr(np.zeros((6, 6)), vmax=0)
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        plot_image_attr(np.zeros((6, 6)), ax="left")
