"""One attribution panel drawn on one axes, and the colour bars shared by several panels."""

from typing import List, Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import FigureBase

from noisegrad.viz._arrays import display_image
from noisegrad.viz._normalize import (
    CHANNEL_REDUCTIONS,
    colour_limits,
    default_cmap,
    normalize_attr,
    reduce_channels,
    signed_part,
)

__all__ = ["METHODS", "validate_method", "attribution_map", "check_spatial", "draw_panel", "add_colorbar", "bare", "COLORBAR_LABELS",
           "image_rgb", "BLENDED_GREY"]

#: Captum's image visualisation methods.
METHODS = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
_NEEDS_IMAGE = {"blended_heat_map", "original_image", "masked_image", "alpha_scaling"}
#: The colour map of the image under a blended heat map.
BLENDED_GREY = "gray"
COLORBAR_LABELS = {
    "all": "attribution",
    "positive": "attribution (positive part)",
    "negative": "attribution (negative part, size)",
    "absolute_value": "|attribution|",
}


def validate_method(method: object, has_image: bool) -> str:
    """``method`` if it is one of :data:`METHODS` and its image is there."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in _NEEDS_IMAGE and not has_image:
        raise ValueError(f"method={method!r} draws on the original image: pass image= (or images=)")
    return method


def check_sign_for_method(method: str, sign: str) -> None:
    """Masking and alpha scaling need one-signed values (as in Captum)."""
    if method in ("masked_image", "alpha_scaling") and sign == "all":
        raise ValueError(
            f"method={method!r} needs a one-signed map: choose sign='positive', 'negative' or 'absolute_value', "
            "not 'all'"
        )


def attribution_map(values: np.ndarray, channel_reduction: str) -> np.ndarray:
    """An ``(H, W, C)`` attribution reduced to ``(H, W)``."""
    if channel_reduction not in CHANNEL_REDUCTIONS:
        raise ValueError(f"channel_reduction must be one of {CHANNEL_REDUCTIONS}, got {channel_reduction!r}")
    return reduce_channels(values, channel_reduction)


def check_spatial(attr_shape: Sequence[int], image_shape: Sequence[int], what: str = "image") -> None:
    if tuple(attr_shape[:2]) != tuple(image_shape[:2]):
        raise ValueError(
            f"{what} has height × width {tuple(image_shape[:2])} but the attribution has {tuple(attr_shape[:2])}; "
            "they must match (check channels_last if a dimension looks swapped)"
        )


def image_rgb(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, C)`` image as ``(H, W, 3)`` RGB in [0, 1] (one channel repeated, an alpha channel dropped)."""
    shown = display_image(image)
    if shown.ndim == 2:
        return np.repeat(shown[:, :, None], 3, axis=2)
    return shown[:, :, :3]


def draw_panel(
    ax: Axes,
    attr_map: np.ndarray,
    image: Optional[np.ndarray],
    method: str,
    sign: str,
    scale: float,
    cmap: Optional[object],
    alpha_overlay: float,
) -> Optional[ScalarMappable]:
    """Draw ``attr_map`` (``(H, W)``) on ``ax``; return what a colour bar should show, if anything.

    The map is drawn in attribution units (``vmin``/``vmax`` = the scale), so a
    colour bar reads in the same units as the attributions.
    """
    check_sign_for_method(method, sign)
    colours = cmap if cmap is not None else default_cmap(sign)
    vmin, vmax = colour_limits(sign, scale)
    shown = signed_part(attr_map, sign)
    mappable = None
    if method == "heat_map":
        mappable = ax.imshow(shown, cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
    elif method == "blended_heat_map":
        ax.imshow(image_rgb(image).mean(axis=2), cmap=BLENDED_GREY, vmin=0.0, vmax=1.0, interpolation="nearest")
        mappable = ax.imshow(shown, cmap=colours, vmin=vmin, vmax=vmax, alpha=alpha_overlay, interpolation="nearest")
    elif method == "original_image":
        picture = display_image(image)
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        weight = normalize_attr(attr_map, sign, scale)[:, :, None]
        rgb = image_rgb(image)
        picture = rgb * weight if method == "masked_image" else np.concatenate([rgb, weight], axis=2)
        ax.imshow(picture, interpolation="nearest")
    bare(ax)
    return mappable


def bare(ax: Axes) -> None:
    """No ticks (an image's pixel indices say nothing), but keep the axis labels usable."""
    ax.set_xticks([])
    ax.set_yticks([])


def add_colorbar(fig: FigureBase, mappable: ScalarMappable, axes: List[Axes], sign: str, location: str) -> None:
    """One colour bar for ``axes``, labelled with what the colours mean."""
    bar = fig.colorbar(mappable, ax=axes, location=location, shrink=0.8, aspect=25 if len(axes) > 1 else 15)
    bar.set_label(COLORBAR_LABELS[sign], fontsize=8)
    bar.ax.tick_params(labelsize=7)
