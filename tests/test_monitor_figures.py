"""The monitor's image figure: its pixels are the maps coloured as the grid colours them, block for block, and the
figure shows exactly those pixels with a label per panel."""

import numpy as np
import pytest
import torch
from matplotlib import colormaps

from noisegrad.monitor.figures import PANEL_PIXELS, PANELS_PER_ROW, snapshot_figure, strip_pixels
from noisegrad.viz import figure_to_array


def reference_threshold(values, percent=98.0):
    """The smallest |value| at which the values up to it hold ``percent`` % of the mass (Captum's outlier rule)."""
    flat = np.sort(np.abs(values).ravel())
    cumulative = np.cumsum(flat)
    return flat[np.argmax(cumulative >= cumulative[-1] * percent / 100)]


def reference_panel(attr, image):
    """One panel's colours by hand: RdBu_r over [-s, s] (signed maps), at half opacity over the grey image."""
    s = reference_threshold(attr)
    heat = colormaps["RdBu_r"](np.clip((attr + s) / (2 * s), 0, 1))[..., :3]
    grey = colormaps["gray"](image)[..., :3]
    return np.rint(255 * (0.5 * heat + 0.5 * grey))


@pytest.mark.parametrize("n", [3, 10])
def test_each_panel_is_its_map_coloured_over_its_image_block_for_block(n):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    images = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    pixels = strip_pixels(maps, images)
    assert pixels.dtype == np.uint8 and (pixels[..., 3] == 255).all()
    block = PANEL_PIXELS // 4
    columns = min(n, PANELS_PER_ROW)
    # find the panels: the columns and rows of pixels that are not white
    coloured = (pixels[..., :3] != 255).any(axis=2)
    xs = np.flatnonzero(coloured.any(axis=0))
    ys = np.flatnonzero(coloured.any(axis=1))
    lefts = [xs[0]] + [x for a, x in zip(xs, xs[1:]) if x != a + 1]
    tops = [ys[0]] + [y for a, y in zip(ys, ys[1:]) if y != a + 1]
    assert len(lefts) == columns and len(tops) == -(-n // columns)
    for i in range(n):
        top, left = tops[i // columns], lefts[i % columns]
        expected = reference_panel(maps[i, 0].numpy(), images[i, 0].numpy())
        got = pixels[top + block // 2:top + PANEL_PIXELS:block, left + block // 2:left + PANEL_PIXELS:block, :3]
        np.testing.assert_allclose(got, expected, atol=1)  # one level of rounding
        whole = pixels[top:top + PANEL_PIXELS, left:left + PANEL_PIXELS, :3]
        assert (whole == np.repeat(np.repeat(got, block, axis=0), block, axis=1)).all()  # each element one block


def test_the_figure_shows_those_pixels_with_a_label_per_panel_and_the_title():
    g = torch.Generator().manual_seed(1)
    maps, images = torch.rand(5, 1, 8, 8, generator=g), torch.rand(5, 1, 8, 8, generator=g)
    fig = snapshot_figure(maps, "image", images=images, title="step 50")
    drawn = figure_to_array(fig)
    pixels = strip_pixels(maps, images)[..., :3]
    assert drawn.shape[1] == pixels.shape[1] and drawn.shape[0] > pixels.shape[0]  # room for the title above
    below_title = drawn[drawn.shape[0] - pixels.shape[0]:]
    panels = (pixels != 255).any(axis=2)
    assert panels.sum() == 5 * PANEL_PIXELS ** 2
    assert (below_title[panels] == pixels[panels]).all()
    assert [t.get_text() for t in fig.texts].count("step 50") == 1  # the title (Figure.get_suptitle: matplotlib 3.8)
    assert sorted(t.get_text() for t in fig.texts if t.get_text() != "step 50") == [f"#{i}" for i in range(5)]


def test_a_map_of_another_shape_than_the_images_is_drawn_alone_and_keeps_its_aspect():
    maps = torch.rand(2, 3, 8, 16) - 0.5
    pixels = strip_pixels(maps, None)
    coloured = (pixels[..., :3] != 255).any(axis=2)
    assert coloured.any(axis=1).sum() == PANEL_PIXELS // 2 and coloured.any(axis=0).sum() == 2 * PANEL_PIXELS
    fig = snapshot_figure(maps, "image", images=torch.rand(2, 1, 4, 4))  # no overlay: the images do not fit
    assert [t.get_text() for t in fig.texts] == ["#0", "#1"]  # a label per panel, no title
