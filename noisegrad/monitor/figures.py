"""A snapshot's maps as one figure, drawn by :mod:`noisegrad.viz`: image overlays, feature bars or coloured tokens."""

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["FIGURE_KINDS", "TABULAR_FEATURES", "PANEL_PIXELS", "PANELS_PER_ROW", "OVERLAY_ALPHA", "figure_kind",
           "snapshot_figure", "strip_pixels"]

#: What the monitor can draw; ``None`` draws nothing.
FIGURE_KINDS = ("image", "tabular", "text")
#: Features drawn per example in a tabular figure: its largest ``|attribution|`` (784 of them made a 156840-pixel
#: figure taking 50 s to draw).
TABULAR_FEATURES = 20
#: Pixels along the longer side of each map in an image figure (nearest neighbour: a 16 × 16 map is 8 × 8 blocks).
PANEL_PIXELS = 128
#: Panels per row of an image figure.
PANELS_PER_ROW = 8
#: Opacity of a map over its probe image (:func:`noisegrad.viz.plot_image_attr_grid`'s ``alpha_overlay``).
OVERLAY_ALPHA = 0.5
_PAD, _GAP, _LABEL, _TITLE = 4, 8, 16, 24  # pixels: border, between panels, a panel's label, the title


def figure_kind(attributions: Tensor, tokens: Optional[Sequence[Sequence[str]]]) -> Optional[str]:
    """The kind of figure for attributions shaped like these: text with tokens, images, tabular, or None.

    Examples
    --------
    >>> import torch
    >>> figure_kind(torch.zeros(2, 3, 8, 8), None), figure_kind(torch.zeros(2, 5), None)
    ('image', 'tabular')
    """
    if tokens is not None:
        return "text"
    if attributions.dim() in (3, 4):
        return "image"
    if attributions.dim() == 2:
        return "tabular"
    return None


def snapshot_figure(
    attributions: Tensor,
    kind: str,
    *,
    images: Optional[Tensor] = None,
    tokens: Optional[Sequence[Sequence[str]]] = None,
    feature_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
) -> "object":
    """One figure of a probe batch's maps.

    Parameters
    ----------
    attributions : Tensor
        ``(batch, ...)``: images ``(batch, C, H, W)`` or ``(batch, H, W)``,
        drawn as :func:`noisegrad.viz.plot_image_attr_grid` draws them
        (``"blended_heat_map"`` on the probe images, else ``"heat_map"``;
        the sign chosen for the batch, each map its own scale) but as
        pixels, :data:`PANEL_PIXELS` on a side, with no axes;
        features ``(batch, F)`` (each example's :data:`TABULAR_FEATURES`
        largest ``|attribution|`` are drawn, the title says how many are
        left out), or tokens ``(batch, tokens, ...)`` (reduced to
        one score per token by :func:`noisegrad.token_scores`).
    kind : {"image", "tabular", "text"}
    images : Tensor, optional
        The probe images, overlaid when their height and width match the maps'.
    tokens : sequence of sequences of str, optional
        Per example, its tokens (text).
    feature_names : sequence of str, optional
        Tabular features' names.
    title : str, optional
        With values that are NaN or infinite (a NaN input gradient), those are
        drawn as 0 and the title says how many.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import torch
    >>> fig = snapshot_figure(torch.randn(2, 4), "tabular", feature_names=["a", "b", "c", "d"], title="step 0")
    >>> len(fig.axes)
    2
    """
    from noisegrad import viz
    from noisegrad.viz._canvas import new_figure

    maps = attributions.detach()
    n = maps.shape[0]
    unfinite = int((~maps.isfinite()).sum()) if maps.is_floating_point() else 0
    if unfinite:  # drawn as 0, and said so: a monitor's picture must not stop the training
        maps = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
        title = f"{title + ': ' if title else ''}{unfinite} values NaN or infinite, drawn as 0"
    if kind == "image":
        overlay = images is not None and tuple(images.shape[-2:]) == tuple(maps.shape[-2:])
        return _image_figure(maps, images.detach() if overlay else None, title)
    if kind == "tabular":
        # a quarter inch a bar, room for three at least: one or two made a panel too small to lay out
        fig = new_figure((5.0, 0.4 + 0.25 * max(3, min(maps.shape[1], TABULAR_FEATURES)) * n))
        for i, ax in enumerate(fig.subplots(n, 1, squeeze=False)[:, 0]):
            viz.plot_feature_attr(maps[i], feature_names, ax=ax, title=f"#{i}", max_features=TABULAR_FEATURES)
        if title:
            fig.suptitle(title)
        return fig
    if kind == "text":
        from noisegrad.reducers import token_scores

        if tokens is None or len(tokens) != n:
            raise ValueError(f"a text figure needs tokens for each of the {n} examples")
        scores = token_scores(maps) if maps.dim() > 2 else maps
        fig = new_figure((7.0, 0.3 + 0.9 * n))
        for i, ax in enumerate(fig.subplots(n, 1, squeeze=False)[:, 0]):
            viz.plot_token_attr(list(tokens[i]), scores[i, : len(tokens[i])], ax=ax, title=f"#{i}", colorbar=False)
        if title:
            fig.suptitle(title)
        return fig
    raise ValueError(f"kind must be one of {FIGURE_KINDS}, got {kind!r}")


def _image_figure(maps: Tensor, images: Optional[Tensor], title: Optional[str]) -> "object":
    """The maps as one picture placed on a figure, a label above each, :data:`PANELS_PER_ROW` a row.

    A grid of matplotlib axes (:func:`noisegrad.viz.plot_image_attr_grid`)
    costs about 80 ms to build, lay out and write for 8 maps, mostly creating
    the axes; these pixels and labels cost about 15 ms, which a training loop
    pays at every ``figures_every``-th snapshot.
    """
    from noisegrad.viz._canvas import new_figure

    pixels = strip_pixels(maps, images)
    above = _TITLE if title else 0
    height, width = pixels.shape[0] + above, pixels.shape[1]
    fig = new_figure((width / 100, height / 100), dpi=100, layout=None)
    fig.figimage(pixels, xo=0, yo=0, origin="upper")  # one image pixel per figure pixel, the title's room above
    panel_h, panel_w = _panel_shape(*maps.shape[-2:])
    for i in range(maps.shape[0]):
        top, left = _panel_corner(i, min(maps.shape[0], PANELS_PER_ROW), panel_h, panel_w)
        fig.text((left + panel_w / 2) / width, 1 - (above + top - 4) / height, f"#{i}", ha="center",
                 va="baseline", fontsize=9)
    if title:
        fig.suptitle(title, y=1 - _PAD / height, va="top", fontsize=11)
    return fig


def strip_pixels(maps: Tensor, images: Optional[Tensor]) -> np.ndarray:
    """The RGBA pixels, ``(height, width, 4)`` uint8 (opaque), of :func:`snapshot_figure`'s image figure below its
    title.

    Each map is coloured as :func:`noisegrad.viz.plot_image_attr_grid`
    colours it (the batch's sign, the panel's own scale at
    ``outlier_perc=2``, over the image's grey at half opacity when
    ``images`` are given), resized by nearest neighbour to
    :data:`PANEL_PIXELS` on its longer side, and placed on white with room
    for a label above it.

    Examples
    --------
    >>> import torch
    >>> strip_pixels(torch.rand(3, 1, 16, 16), None).shape  # 3 panels of 128 pixels, 8 between them
    (152, 408, 4)
    """
    from matplotlib import colormaps

    from noisegrad.viz._arrays import batch_nhwc
    from noisegrad.viz._normalize import attribution_scale, colour_limits, default_cmap, resolve_sign, signed_part
    from noisegrad.viz._panel import BLENDED_GREY, attribution_map, image_rgb

    shown = attribution_map(batch_nhwc(maps, "attributions"), "sum")  # (N, H, W), as the grid reduces channels
    pictures = None if images is None else batch_nhwc(images, "images")
    n, h, w = shown.shape
    sign = resolve_sign("auto", *shown)
    colours, grey = colormaps[default_cmap(sign)], colormaps[BLENDED_GREY]
    panel_h, panel_w = _panel_shape(h, w)
    rows, cols = (np.arange(panel_h) * h) // panel_h, (np.arange(panel_w) * w) // panel_w
    columns = min(n, PANELS_PER_ROW)
    bottom = _panel_corner(n - 1, columns, panel_h, panel_w)[0]
    width = _panel_corner(columns - 1, columns, panel_h, panel_w)[1] + panel_w + _PAD
    canvas = np.full((bottom + panel_h + _PAD, width, 4), 255, dtype=np.uint8)  # uint8 RGBA: matplotlib draws it as it is
    for i in range(n):
        vmin, vmax = colour_limits(sign, attribution_scale([shown[i]], sign))
        rgb = colours(np.clip((signed_part(shown[i], sign) - vmin) / (vmax - vmin), 0.0, 1.0))[..., :3]
        if pictures is not None:
            under = grey(np.clip(image_rgb(pictures[i]).mean(axis=2), 0.0, 1.0))[..., :3]
            rgb = OVERLAY_ALPHA * rgb + (1 - OVERLAY_ALPHA) * under
        top, left = _panel_corner(i, columns, panel_h, panel_w)
        canvas[top:top + panel_h, left:left + panel_w, :3] = np.rint(255 * rgb[rows][:, cols])
    return canvas


def _panel_shape(h: int, w: int) -> "tuple[int, int]":
    """A panel's pixels, ``(height, width)``: :data:`PANEL_PIXELS` on the longer side, the map's aspect kept."""
    scale = PANEL_PIXELS / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _panel_corner(i: int, columns: int, panel_h: int, panel_w: int) -> "tuple[int, int]":
    """The top-left pixel ``(row, column)`` of panel ``i`` in :func:`strip_pixels`, below its label's room."""
    line, column = divmod(i, columns)
    return _PAD + line * (_LABEL + panel_h + _GAP) + _LABEL, _PAD + column * (panel_w + _GAP)
