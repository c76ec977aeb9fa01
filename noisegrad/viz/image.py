"""One image attribution: a heat map, or a map blended with / masking the original image."""

from typing import Optional, Tuple

from matplotlib.axes import Axes
from matplotlib.figure import FigureBase

from noisegrad.viz._arrays import image_hwc
from noisegrad.viz._canvas import PathLike, Plot, figure_and_axes, save_figure
from noisegrad.viz._normalize import attribution_scale, resolve_sign, validate_outlier_perc, validate_vmax
from noisegrad.viz._panel import add_colorbar, attribution_map, check_spatial, draw_panel, validate_method

__all__ = ["plot_image_attr"]


def plot_image_attr(
    attr: object,
    image: Optional[object] = None,
    *,
    method: str = "heat_map",
    sign: str = "auto",
    outlier_perc: float = 2.0,
    vmax: Optional[float] = None,
    cmap: Optional[object] = None,
    alpha_overlay: float = 0.5,
    channels_last: Optional[bool] = None,
    channel_reduction: str = "sum",
    colorbar: bool = True,
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    save: Optional[PathLike] = None,
) -> Tuple[FigureBase, Axes]:
    """Draw one image attribution as a heat map, alone or over the image.

    The options are Captum's ``visualize_image_attr``'s, with a colour scale in
    attribution units and no failure on maps with nothing to show.

    Parameters
    ----------
    attr : torch.Tensor or numpy.ndarray
        ``(C, H, W)``, ``(H, W, C)`` or ``(H, W)``, on any device. Channels are
        combined by ``channel_reduction``.
    image : torch.Tensor or numpy.ndarray, optional
        The original image, in the same layouts; values in [0, 1], [0, 255] or
        anything else (min-max scaled for display). Needed by every ``method``
        but ``"heat_map"``.
    method : {"heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling"}
        ``"blended_heat_map"`` draws the map with opacity ``alpha_overlay`` over
        the image in grey; ``"masked_image"`` multiplies the image by the
        normalised map; ``"alpha_scaling"`` uses it as the image's opacity.
    sign : {"auto", "all", "positive", "negative", "absolute_value"}
        Which part of the map to show (``"absolute"`` is accepted too).
        ``"all"`` uses a diverging colour map centred at 0 (blue < 0 < red);
        ``"auto"`` is ``"all"`` for a map with negative values, else ``"positive"``.
    outlier_perc : float
        Percent of the shown attribution mass (the largest values) clipped to
        full colour, as in Captum. Ignored when ``vmax`` is given.
    vmax : float, optional
        The attribution value drawn at full colour (use the same value for
        several plots to compare them on one scale).
    cmap : str or matplotlib Colormap, optional
        Default: ``"RdBu_r"`` for ``"all"``, ``"Reds"`` / ``"Blues"`` /
        ``"Purples"`` for positive / negative / absolute values.
    alpha_overlay : float
        Opacity of the heat map in ``"blended_heat_map"``.
    channels_last : bool, optional
        Layout of 3-D inputs; default: the shorter of the first and last
        dimensions is the channel one (ties: channel-first).
    channel_reduction : {"sum", "mean", "abs_sum", "max_abs", "l2"}
        How an attribution's channels become one value per pixel (Captum: sum).
    colorbar : bool
        Add a colour bar (for the heat-map methods).
    title : str, optional
    ax : matplotlib Axes, optional
        Draw here; default: a new figure.
    save : str or path-like, optional
        Also write the figure to this ``.png``, ``.svg`` or ``.pdf`` file.

    Returns
    -------
    fig, ax
        The (sub)figure and the axes drawn on.

    Examples
    --------
    >>> import torch
    >>> attr = torch.zeros(3, 8, 8)
    >>> attr[:, 2, 5] = 1.0
    >>> fig, ax = plot_image_attr(attr, torch.rand(3, 8, 8), method="blended_heat_map", title="toy")
    >>> ax.get_title()
    'toy'
    """
    values = image_hwc(attr, "attr", channels_last)
    picture = None if image is None else image_hwc(image, "image", channels_last)
    method = validate_method(method, picture is not None)
    if picture is not None:
        check_spatial(values.shape, picture.shape)
    attr_map = attribution_map(values, channel_reduction)
    shown_sign = resolve_sign(sign, attr_map)
    outlier_perc, vmax = validate_outlier_perc(outlier_perc), validate_vmax(vmax)
    scale = vmax if vmax is not None else attribution_scale([attr_map], shown_sign, outlier_perc)
    fig, ax = figure_and_axes(ax, (4.2, 3.6) if colorbar else (3.6, 3.6))
    mappable = draw_panel(ax, attr_map, picture, method, shown_sign, scale, cmap, alpha_overlay)
    if colorbar and mappable is not None:
        add_colorbar(fig, mappable, [ax], shown_sign, "right")
    if title is not None:
        ax.set_title(title)
    save_figure(fig, save)
    return Plot(fig, ax)
