"""Many image attributions in one figure: a batch as a grid, or methods side by side for several inputs."""

import math
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase

from noisegrad.viz._arrays import batch_nhwc
from noisegrad.viz._canvas import PathLike, Plot, new_figure, save_figure
from noisegrad.viz._normalize import (
    cumulative_threshold,
    resolve_sign,
    signed_part,
    validate_outlier_perc,
    validate_sign,
    validate_vmax,
)
from noisegrad.viz._panel import add_colorbar, attribution_map, check_spatial, draw_panel, validate_method

__all__ = ["plot_image_attr_grid", "plot_attr_comparison", "SHARED_SCALES"]

#: ``shared_scale`` options: per panel (False), one for all (True), per row, per column.
SHARED_SCALES = (False, True, "row", "column")

SignOption = Union[str, Mapping[str, str]]


def plot_image_attr_grid(
    attributions: object,
    images: Optional[object] = None,
    *,
    ncols: Optional[int] = None,
    titles: Optional[Sequence[str]] = None,
    method: str = "heat_map",
    sign: str = "auto",
    outlier_perc: float = 2.0,
    vmax: Optional[float] = None,
    shared_scale: bool = False,
    cmap: Optional[object] = None,
    alpha_overlay: float = 0.5,
    channels_last: Optional[bool] = None,
    channel_reduction: str = "sum",
    colorbar: bool = False,
    panel_size: float = 2.0,
    suptitle: Optional[str] = None,
    save: Optional[PathLike] = None,
) -> Tuple[FigureBase, np.ndarray]:
    """A batch of image attributions laid out as a grid, one panel per example.

    Parameters
    ----------
    attributions : torch.Tensor or numpy.ndarray
        ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``, on any device.
    images : torch.Tensor or numpy.ndarray, optional
        The ``N`` original images, for the methods that draw on them.
    ncols : int, optional
        Panels per row; default ``min(N, 4)``.
    titles : sequence of str, optional
        One title per panel.
    shared_scale : bool
        One colour scale for the whole batch (computed from all panels, or
        ``vmax``), so panels can be compared; default: each panel its own.
    method, sign, outlier_perc, vmax, cmap, alpha_overlay, channels_last, channel_reduction
        As in :func:`noisegrad.viz.plot_image_attr`; ``sign="auto"`` is
        resolved once for the whole batch, so all panels use one convention.
    colorbar : bool
        Colour bars: one for the figure with ``shared_scale``, else one per panel.
    panel_size : float
        Inches per panel.
    suptitle : str, optional
    save : str or path-like, optional
        Also write the figure (``.png``, ``.svg`` or ``.pdf``).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of Axes
        The ``N`` panels in order (unused grid cells are removed).

    Examples
    --------
    >>> import torch
    >>> fig, axes = plot_image_attr_grid(torch.randn(5, 1, 8, 8), ncols=3, shared_scale=True)
    >>> len(axes), axes[0].get_subplotspec().get_gridspec().get_geometry()
    (5, (2, 3))
    """
    maps = _maps(attributions, "attributions", channels_last, channel_reduction)
    n = len(maps)
    pictures = _images(images, n, maps, channels_last)
    method = validate_method(method, pictures is not None)
    if not isinstance(shared_scale, bool):
        raise ValueError(f"shared_scale must be True or False, got {shared_scale!r}")
    ncols = _count(ncols, "ncols", default=min(n, 4))
    titles = _labels(titles, "titles", n)
    shown_sign = resolve_sign(sign, *maps)
    rows = math.ceil(n / ncols)
    grid = [[maps[r * ncols + c] if r * ncols + c < n else None for c in range(ncols)] for r in range(rows)]
    scales = _scales(grid, [shown_sign] * ncols, shared_scale, outlier_perc, vmax)

    fig = new_figure((panel_size * ncols + (0.8 if colorbar else 0.0), panel_size * rows + (0.4 if suptitle else 0.1)))
    axes = fig.subplots(rows, ncols, squeeze=False)
    drawn: List[Axes] = []
    mappables = []
    for k in range(rows * ncols):
        ax = axes.flat[k]
        if k >= n:
            ax.remove()
            continue
        mappable = draw_panel(ax, maps[k], None if pictures is None else pictures[k], method, shown_sign,
                              scales[k // ncols][k % ncols], cmap, alpha_overlay)
        if titles is not None:
            ax.set_title(titles[k], fontsize=9)
        drawn.append(ax)
        mappables.append(mappable)
    if colorbar and mappables[0] is not None:
        groups = [drawn] if shared_scale else [[ax] for ax in drawn]
        for group in groups:
            add_colorbar(fig, mappables[drawn.index(group[0])], group, shown_sign, "right")
    if suptitle:
        fig.suptitle(suptitle)
    save_figure(fig, save)
    return Plot(fig, np.array(drawn, dtype=object))


def plot_attr_comparison(
    attributions: Mapping[str, object],
    images: Optional[object] = None,
    *,
    row_labels: Optional[Sequence[str]] = None,
    method: str = "heat_map",
    sign: SignOption = "auto",
    outlier_perc: float = 2.0,
    vmax: Optional[float] = None,
    shared_scale: Union[bool, str] = False,
    cmap: Optional[object] = None,
    alpha_overlay: float = 0.5,
    channels_last: Optional[bool] = None,
    channel_reduction: str = "sum",
    colorbar: bool = False,
    input_title: str = "Input",
    panel_size: float = 1.8,
    suptitle: Optional[str] = None,
    save: Optional[PathLike] = None,
) -> Tuple[FigureBase, np.ndarray]:
    """Several methods (or ``nt_type``s, or sample counts) side by side for several inputs.

    One row per input, one column per entry of ``attributions`` (preceded by
    the input image when ``images`` is given), the column titles on top.

    Parameters
    ----------
    attributions : mapping of str to tensor or array
        Column title → a batch of ``N`` attributions, as in
        :func:`plot_image_attr_grid`; e.g. ``{"Saliency": a, "SmoothGrad": b}``.
    images : torch.Tensor or numpy.ndarray, optional
        The ``N`` inputs: drawn in a first column and used by the blended methods.
    row_labels : sequence of str, optional
        One label per input (e.g. the target class), left of each row.
    sign : str or mapping of str to str
        One sign for all columns, or one per column title (missing titles:
        ``"auto"``). ``"auto"`` is resolved per column, over all its inputs:
        signed methods (SmoothGrad, IG) get the diverging map, unsigned ones
        (SmoothGrad², VarGrad) a white-to-red map.
    shared_scale : {False, True, "row", "column"}
        Which panels share a colour scale: none (each its own, the default),
        all, each input's row, or each method's column (the usual choice to
        compare inputs under one method; methods have different units).
    colorbar : bool
        Colour bars for the scale groups: per panel, per row, per column, or
        one for all (when every column has the same sign).
    method, outlier_perc, vmax, cmap, alpha_overlay, channels_last, channel_reduction
        As in :func:`noisegrad.viz.plot_image_attr`.
    input_title : str
        Title of the image column.
    panel_size : float
        Inches per panel.
    suptitle : str, optional
    save : str or path-like, optional
        Also write the figure (``.png``, ``.svg`` or ``.pdf``).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of Axes, shape (N, columns)

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 1, 8, 8)
    >>> maps = {"SmoothGrad": torch.randn(2, 1, 8, 8), "VarGrad": torch.rand(2, 1, 8, 8)}
    >>> fig, axes = plot_attr_comparison(maps, x, row_labels=["cat", "dog"], shared_scale="column")
    >>> axes.shape, [ax.get_title() for ax in axes[0]]
    ((2, 3), ['Input', 'SmoothGrad', 'VarGrad'])
    """
    if not isinstance(attributions, Mapping) or not attributions:
        raise TypeError(
            "attributions must be a non-empty mapping of column title to a batch of attributions, "
            f"e.g. {{'SmoothGrad': attr}}, got {type(attributions).__name__}"
        )
    names = [str(name) for name in attributions]
    columns = [_maps(v, f"attributions[{k!r}]", channels_last, channel_reduction) for k, v in attributions.items()]
    n = len(columns[0])
    for name, column in zip(names, columns):
        if len(column) != n or column.shape[1:] != columns[0].shape[1:]:
            raise ValueError(
                f"every entry of attributions must have the same batch and image size; "
                f"{names[0]!r} has {columns[0].shape}, {name!r} has {column.shape} (N, H, W after reduction)"
            )
    pictures = _images(images, n, columns[0], channels_last)
    method = validate_method(method, pictures is not None)
    if not (isinstance(shared_scale, bool) or shared_scale in ("row", "column")):
        raise ValueError(f"shared_scale must be one of {SHARED_SCALES}, got {shared_scale!r}")
    row_labels = _labels(row_labels, "row_labels", n)
    signs = [resolve_sign(s, *column) for s, column in zip(_column_signs(sign, names), columns)]
    grid = [[column[i] for column in columns] for i in range(n)]
    scales = _scales(grid, signs, shared_scale, outlier_perc, vmax)

    offset = 1 if pictures is not None else 0
    ncols = offset + len(columns)
    fig = new_figure((panel_size * ncols + (0.3 if row_labels else 0) + (0.9 if colorbar else 0),
                      panel_size * n + (0.45 if suptitle else 0.2) + (0.5 if colorbar and shared_scale == "column" else 0)))
    axes = fig.subplots(n, ncols, squeeze=False)
    mappables: Dict[Tuple[int, int], object] = {}
    for i in range(n):
        if pictures is not None:
            draw_panel(axes[i, 0], grid[i][0], pictures[i], "original_image", signs[0], 1.0, None, 0.0)
        for j, name in enumerate(names):
            mappables[i, j] = draw_panel(axes[i, offset + j], grid[i][j], None if pictures is None else pictures[i],
                                         method, signs[j], scales[i][j], cmap, alpha_overlay)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
    for j, title in enumerate(([input_title] if offset else []) + names):
        axes[0, j].set_title(title, fontsize=10)
    if colorbar:
        _comparison_colorbars(fig, axes[:, offset:], mappables, signs, shared_scale)
    if suptitle:
        fig.suptitle(suptitle)
    save_figure(fig, save)
    return Plot(fig, axes)


# --------------------------------------------------------------------------- shared pieces


def _maps(values: object, name: str, channels_last: Optional[bool], channel_reduction: str) -> np.ndarray:
    """A batch of attributions as ``(N, H, W)`` maps."""
    batch = batch_nhwc(values, name, channels_last)
    if batch.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch; give at least one attribution")
    return attribution_map(batch, channel_reduction)


def _images(images: Optional[object], n: int, maps: np.ndarray, channels_last: Optional[bool]) -> Optional[np.ndarray]:
    if images is None:
        return None
    pictures = batch_nhwc(images, "images", channels_last)
    if pictures.shape[0] != n:
        raise ValueError(f"images has {pictures.shape[0]} images but there are {n} attributions; give one per input")
    check_spatial(maps.shape[1:], pictures.shape[1:], "images")
    return pictures


def _count(value: Optional[int], name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _labels(labels: Optional[Sequence[str]], name: str, n: int) -> Optional[List[str]]:
    if labels is None:
        return None
    if isinstance(labels, str) or len(labels) != n:
        raise ValueError(f"{name} must be a sequence of {n} strings (one per input), got {labels!r}")
    return [str(label) for label in labels]


def _column_signs(sign: SignOption, names: List[str]) -> List[str]:
    if isinstance(sign, Mapping):
        unknown = set(sign) - set(names)
        if unknown:
            raise ValueError(f"sign has entries for {sorted(unknown)}, which are not in attributions {names}")
        return [validate_sign(sign.get(name, "auto")) for name in names]
    return [validate_sign(sign)] * len(names)


def _scales(
    grid: List[List[Optional[np.ndarray]]], signs: List[str], shared_scale: Union[bool, str], outlier_perc: float,
    vmax: Optional[float],
) -> List[List[float]]:
    """The colour scale of every panel: ``vmax``, or the outlier-robust scale of its group's pooled values."""
    outlier_perc, vmax = validate_outlier_perc(outlier_perc), validate_vmax(vmax)
    rows, cols = len(grid), len(grid[0])
    if vmax is not None:
        return [[vmax] * cols for _ in range(rows)]
    group_of = {
        False: lambda r, c: (r, c), True: lambda r, c: 0, "row": lambda r, c: r, "column": lambda r, c: c,
    }[shared_scale]
    members = defaultdict(list)
    for r in range(rows):
        for c in range(cols):
            if grid[r][c] is not None:
                members[group_of(r, c)].append(np.abs(signed_part(grid[r][c], signs[c])).ravel())
    threshold = {g: cumulative_threshold(np.concatenate(v), 100.0 - outlier_perc) for g, v in members.items()}
    return [[threshold.get(group_of(r, c), 0.0) for c in range(cols)] for r in range(rows)]


def _comparison_colorbars(fig, axes: np.ndarray, mappables, signs: List[str], shared_scale) -> None:
    """Colour bars for the groups that share a scale, where one bar can honestly stand for the group."""
    rows, cols = axes.shape
    if mappables[0, 0] is None:
        return
    if shared_scale is True and len(set(signs)) == 1:
        add_colorbar(fig, mappables[0, 0], list(axes.flat), signs[0], "right")
    elif shared_scale == "column" or (shared_scale is True):
        for c in range(cols):
            add_colorbar(fig, mappables[0, c], list(axes[:, c]), signs[c], "bottom")
    elif shared_scale == "row" and len(set(signs)) == 1:
        for r in range(rows):
            add_colorbar(fig, mappables[r, 0], list(axes[r, :]), signs[0], "right")
    else:
        for (r, c), mappable in mappables.items():
            add_colorbar(fig, mappable, [axes[r, c]], signs[c], "right")
