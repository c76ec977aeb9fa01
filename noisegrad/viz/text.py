"""Sequence attributions: tokens on a background coloured by their attribution (a figure or HTML)."""

import html
from typing import List, Optional, Sequence, Tuple

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize, to_hex
from matplotlib.figure import FigureBase
from matplotlib.transforms import ScaledTranslation

from noisegrad.viz._arrays import as_array
from noisegrad.viz._canvas import PathLike, Plot, figure_and_axes, new_figure, root_figure, save_figure
from noisegrad.viz._normalize import (
    attribution_scale,
    colour_limits,
    default_cmap,
    resolve_sign,
    signed_part,
    validate_outlier_perc,
    validate_vmax,
)
from noisegrad.viz._panel import COLORBAR_LABELS, add_colorbar

__all__ = ["plot_token_attr", "token_attr_html", "TokenHTML", "token_colours"]

_LINE_HEIGHT = 1.9  # in font sizes


class TokenHTML(str):
    """An HTML string that Jupyter displays as HTML (it has ``_repr_html_``); otherwise a plain ``str``."""

    def _repr_html_(self) -> str:
        return str(self)


def token_colours(
    tokens: Sequence[str],
    attr: object,
    *,
    sign: str = "auto",
    outlier_perc: float = 0.0,
    vmax: Optional[float] = None,
    cmap: Optional[object] = None,
) -> Tuple[List[str], np.ndarray, List[Tuple[float, float, float, float]], str, float]:
    """The colours behind each token, and the values and scale they come from.

    Parameters
    ----------
    tokens : sequence of str
    attr : torch.Tensor or numpy.ndarray
        ``(T,)``, ``(1, T)``, or ``(T, D)`` per-embedding-dimension
        attributions, summed over ``D`` (Captum's ``summarize_attributions``
        without the normalisation).
    sign, outlier_perc, vmax, cmap
        As in :func:`noisegrad.viz.plot_image_attr`; ``outlier_perc`` defaults
        to 0 here, since a sentence has few tokens to clip.

    Returns
    -------
    tokens, values, rgba, sign, scale
        ``values`` are the per-token attributions, ``rgba`` their colours,
        ``sign`` the resolved sign and ``scale`` the value at full colour.

    Examples
    --------
    >>> _, values, rgba, sign, scale = token_colours(["good", "bad"], [1.0, -1.0])
    >>> sign, scale, rgba[0][0] > rgba[0][2], rgba[1][2] > rgba[1][0]
    ('all', 1.0, True, True)
    """
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a sequence of strings (e.g. tokenizer.convert_ids_to_tokens(ids))")
    values = as_array(attr, "attr")
    if values.ndim == 2 and values.shape[0] == 1 and len(tokens) != 1:
        values = values[0]
    elif values.ndim == 2 and values.shape[0] == len(tokens):
        values = values.sum(axis=1)
    if values.ndim != 1 or values.shape[0] != len(tokens):
        raise ValueError(
            f"attr must have shape (T,), (1, T) or (T, D) with T = len(tokens) = {len(tokens)}, "
            f"got shape {tuple(as_array(attr, 'attr').shape)}"
        )
    outlier_perc, vmax = validate_outlier_perc(outlier_perc), validate_vmax(vmax)
    sign = resolve_sign(sign, values)
    scale = vmax if vmax is not None else attribution_scale([values], sign, outlier_perc)
    lo, hi = colour_limits(sign, scale)
    colours = _colormap(cmap if cmap is not None else default_cmap(sign))
    rgba = [tuple(float(c) for c in colours(v)) for v in (np.clip(signed_part(values, sign), lo, hi) - lo) / (hi - lo)]
    return list(tokens), values, rgba, sign, scale


def plot_token_attr(
    tokens: Sequence[str],
    attr: object,
    *,
    sign: str = "auto",
    outlier_perc: float = 0.0,
    vmax: Optional[float] = None,
    cmap: Optional[object] = None,
    fontsize: float = 12.0,
    width: float = 7.0,
    colorbar: bool = True,
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    save: Optional[PathLike] = None,
) -> Tuple[FigureBase, Axes]:
    """Tokens in reading order, each on a box coloured by its attribution, wrapped to the axes' width.

    Parameters
    ----------
    tokens, attr, sign, outlier_perc, vmax, cmap
        As in :func:`token_colours`.
    fontsize : float
    width : float
        Figure width in inches when ``ax`` is not given (the height follows the number of lines).
    colorbar : bool
        Add a horizontal colour bar under the text.
    title : str, optional
    ax : matplotlib Axes, optional
    save : str or path-like, optional
        Also write the figure (``.png``, ``.svg`` or ``.pdf``).

    Returns
    -------
    fig, ax
        The token boxes are ``ax.texts``, in order.

    Examples
    --------
    >>> fig, ax = plot_token_attr(["the", "movie", "was", "great"], [0.0, 0.2, -0.1, 0.9])
    >>> [t.get_text() for t in ax.texts]
    ['the', 'movie', 'was', 'great']
    """
    tokens, values, rgba, sign, scale = token_colours(
        tokens, attr, sign=sign, outlier_perc=outlier_perc, vmax=vmax, cmap=cmap
    )
    own_figure = ax is None
    if own_figure:
        # Laid out by hand: the height follows the number of wrapped lines.
        fig = new_figure((width, 1.0))
        fig.set_layout_engine("none")
        ax = fig.add_axes((0.02, 0.0, 0.96, 1.0))
    else:
        fig, ax = figure_and_axes(ax, (width, 1.0))
    ax.set_axis_off()
    lines = _place_tokens(ax, tokens, rgba, fontsize)
    mappable = ScalarMappable(Normalize(*colour_limits(sign, scale)), _colormap(cmap or default_cmap(sign)))
    if own_figure:
        text_h = lines * _LINE_HEIGHT * fontsize / 72 + 0.1
        title_h, bar_h = (0.4 if title else 0.05), (0.75 if colorbar else 0.0)
        height = text_h + title_h + bar_h
        fig.set_size_inches(width, height)
        ax.set_position((0.02, bar_h / height, 0.96, text_h / height))
        if colorbar:
            cax = fig.add_axes((0.3, 0.42 / height, 0.4, 0.12 / height))
            bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
            bar.set_label(COLORBAR_LABELS[sign], fontsize=8)
            bar.ax.tick_params(labelsize=7)
    elif colorbar:
        add_colorbar(fig, mappable, [ax], sign, "bottom")
    if title:
        ax.set_title(title, loc="left")
    save_figure(fig, save)
    return Plot(fig, ax)


def _place_tokens(ax: Axes, tokens: List[str], rgba: list, fontsize: float) -> int:
    """Lay the tokens out left to right from the axes' top-left corner, wrapping lines; return the line count."""
    fig = root_figure(ax.figure)
    renderer = fig.canvas.get_renderer()
    available = ax.get_window_extent(renderer).width * 72 / fig.dpi  # points
    gap, line_height = 0.45 * fontsize, _LINE_HEIGHT * fontsize
    x = y = 0.0
    lines = 1
    for token, colour in zip(tokens, rgba):
        # Offsets in points from the top-left corner: the layout survives resizing the figure.
        text = ax.text(
            0.0, 1.0, token, fontsize=fontsize, va="top", ha="left", color=_ink(colour),
            transform=ax.transAxes + ScaledTranslation(0, 0, fig.dpi_scale_trans),
            bbox={"boxstyle": "round,pad=0.25", "facecolor": colour, "edgecolor": "0.75", "linewidth": 0.5},
        )
        token_width = text.get_window_extent(renderer).width * 72 / fig.dpi + 0.5 * fontsize
        if x > 0 and x + token_width > available:
            x, y, lines = 0.0, y + line_height, lines + 1
        text.set_transform(ax.transAxes + ScaledTranslation((x + 0.25 * fontsize) / 72, -(y + 0.3 * fontsize) / 72,
                                                            fig.dpi_scale_trans))
        x += token_width + gap
    return lines


def _ink(rgba: Tuple[float, float, float, float]) -> str:
    """Black text on light backgrounds, white on dark ones (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _colormap(cmap: object) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    if isinstance(cmap, str) and cmap in colormaps:
        return colormaps[cmap]
    raise ValueError(f"cmap must be a matplotlib colour map or one of its names (e.g. 'RdBu_r'), got {cmap!r}")


def token_attr_html(
    tokens: Sequence[str],
    attr: object,
    *,
    sign: str = "auto",
    outlier_perc: float = 0.0,
    vmax: Optional[float] = None,
    cmap: Optional[object] = None,
    title: Optional[str] = None,
) -> TokenHTML:
    """The tokens as an HTML fragment, each on a background coloured by its attribution.

    Tokens are HTML-escaped; hovering a token shows its attribution. The
    result is a ``str`` that also displays itself in Jupyter.

    Parameters
    ----------
    tokens, attr, sign, outlier_perc, vmax, cmap
        As in :func:`token_colours`.
    title : str, optional
        A caption above the tokens.

    Returns
    -------
    TokenHTML

    Examples
    --------
    >>> page = token_attr_html(["<b>", "fine"], [0.0, 1.0])
    >>> "&lt;b&gt;" in page, 'title="1' in page
    (True, True)
    """
    tokens, values, rgba, _, _ = token_colours(tokens, attr, sign=sign, outlier_perc=outlier_perc, vmax=vmax, cmap=cmap)
    spans = [
        f'<span title="{value:.4g}" style="background-color: {to_hex(colour)}; color: {_ink(colour)}; '
        f'padding: 0.1em 0.25em; margin: 0 0.1em; border-radius: 0.25em; line-height: 2;">{html.escape(token)}</span>'
        for token, value, colour in zip(tokens, values, rgba)
    ]
    caption = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    return TokenHTML(f'<div class="noisegrad-tokens">{caption}<div>{" ".join(spans)}</div></div>')
