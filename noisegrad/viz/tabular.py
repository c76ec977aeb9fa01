"""Tabular attributions: one horizontal bar per feature, sorted, with standard-error bars."""

from typing import Optional, Sequence, Tuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase

from noisegrad.viz._arrays import as_array
from noisegrad.viz._canvas import PathLike, Plot, figure_and_axes, save_figure

__all__ = ["plot_feature_attr", "SORTS", "POSITIVE_COLOUR", "NEGATIVE_COLOUR"]

#: ``sort`` options: by size (largest on top), by signed value, or the given order.
SORTS = ("abs", "value", "none")

#: The ends of the ``RdBu_r`` colour map the image and text helpers use: red > 0 > blue.
POSITIVE_COLOUR = "#b2182b"
NEGATIVE_COLOUR = "#2166ac"


def plot_feature_attr(
    attr: object,
    feature_names: Optional[Sequence[str]] = None,
    stderr: Optional[object] = None,
    *,
    example: Optional[int] = None,
    sort: str = "abs",
    max_features: Optional[int] = None,
    err_scale: float = 1.0,
    level: Optional[float] = None,
    dof: Optional[object] = None,
    title: Optional[str] = None,
    xlabel: str = "attribution",
    ax: Optional[Axes] = None,
    save: Optional[PathLike] = None,
) -> Tuple[FigureBase, Axes]:
    """Horizontal bars of the attributions of one example's features, red for positive and blue for negative.

    Parameters
    ----------
    attr : torch.Tensor, numpy.ndarray or noisegrad.SmoothedAttribution
        ``(F,)``, or ``(N, F)`` with ``example`` choosing the row (``(1, F)`` needs no ``example``).
        A :class:`~noisegrad.SmoothedAttribution` (``return_stderr=True``)
        brings its standard errors and degrees of freedom along.
    feature_names : sequence of str, optional
        ``F`` names; default ``"feature 0"``, ``"feature 1"``, ...
    stderr : torch.Tensor or numpy.ndarray, optional
        Standard errors shaped like ``attr`` (e.g. of a SmoothGrad mean:
        the per-feature standard deviation of the noisy attributions over
        ``√nt_samples``); drawn as error bars of ``± err_scale × stderr``.
    example : int, optional
        Row of a batch to draw.
    sort : {"abs", "value", "none"}
        Largest ``|attr|`` on top, largest signed value on top, or the given order.
    max_features : int, optional
        Draw only the first ``max_features`` after sorting (the title says how many are left out).
    err_scale : float
        Error-bar half-width in standard errors, when no ``level`` is given.
    level : float, optional
        Draw confidence intervals at this level instead (e.g. 0.95): the
        half-width is Student's t quantile at ``(1 + level) / 2`` with
        ``dof`` degrees of freedom times the standard error. With few
        independent groups (a jackknife over 8 groups has 7; 4 QMC / LHS
        replicates have 3) ``± 1.96`` standard errors covers only 84–90 %.
    dof : int or tensor, optional
        Degrees of freedom of ``stderr`` (``SmoothedAttribution.dof``; per
        example with ``nt_samples="auto"``); needed with ``level``.
    title : str, optional
    xlabel : str
    ax : matplotlib Axes, optional
    save : str or path-like, optional
        Also write the figure (``.png``, ``.svg`` or ``.pdf``).

    Returns
    -------
    fig, ax

    Examples
    --------
    >>> import torch
    >>> fig, ax = plot_feature_attr(torch.tensor([0.5, -2.0, 1.0]), ["age", "income", "tenure"],
    ...                             stderr=torch.tensor([0.1, 0.3, 0.2]))
    >>> [label.get_text() for label in ax.get_yticklabels()]
    ['income', 'tenure', 'age']
    """
    if hasattr(attr, "attributions") and hasattr(attr, "stderr"):  # a SmoothedAttribution
        stderr = attr.stderr if stderr is None else stderr
        dof = getattr(attr, "dof", None) if dof is None else dof
        attr = attr.attributions
    values = _one_example(as_array(attr, "attr"), "attr", example)
    n = values.shape[0]
    names = _names(feature_names, n)
    errors = None if stderr is None else _one_example(as_array(stderr, "stderr"), "stderr", example)
    if errors is not None and (errors.shape != values.shape or (errors < 0).any()):
        raise ValueError(f"stderr must be non-negative and shaped like attr {values.shape}, got {errors.shape}")
    if isinstance(err_scale, bool) or not isinstance(err_scale, (int, float)) or not err_scale > 0:
        raise ValueError(f"err_scale must be a positive number of standard errors, got {err_scale!r}")
    half_width, bars = err_scale, f"± {err_scale:g} standard error{'' if err_scale == 1 else 's'}"
    if level is not None:
        half_width, bars = _interval_factor(level, dof, example), f"{level:.0%} interval, Student's t"
    order = _order(values, sort)
    if max_features is not None:
        if isinstance(max_features, bool) or not isinstance(max_features, (int, np.integer)) or max_features < 1:
            raise ValueError(f"max_features must be a positive int, got {max_features!r}")
        order = order[:max_features]

    shown = len(order)
    fig, ax = figure_and_axes(ax, (6.0, 0.8 + 0.32 * shown))
    positions = np.arange(shown)[::-1]  # the first feature of the order on top
    colours = [POSITIVE_COLOUR if values[i] >= 0 else NEGATIVE_COLOUR for i in order]
    ax.barh(
        positions, values[order], color=colours, height=0.7,
        xerr=None if errors is None else half_width * errors[order],
        error_kw={"ecolor": "0.2", "capsize": 3, "elinewidth": 1},
    )
    ax.set_yticks(positions, [names[i] for i in order])
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_ylim(-0.6, shown - 0.4)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    if errors is not None:
        xlabel = f"{xlabel} (bars: {bars})"
    ax.set_xlabel(xlabel)
    if shown < n:
        title = f"{title + ': ' if title else ''}top {shown} of {n} features"
    if title:
        ax.set_title(title)
    save_figure(fig, save)
    return Plot(fig, ax)


def _one_example(values: np.ndarray, name: str, example: Optional[int]) -> np.ndarray:
    if values.ndim == 1 and example is None:
        return values
    if values.ndim == 2:
        if example is None and values.shape[0] == 1:
            return values[0]
        if example is None:
            raise ValueError(f"{name} has {values.shape[0]} rows; choose one with example=")
        if isinstance(example, bool) or not isinstance(example, (int, np.integer)) or not (
            -values.shape[0] <= example < values.shape[0]
        ):
            raise ValueError(f"example must be an int row index of the {values.shape[0]} rows, got {example!r}")
        return values[example]
    raise ValueError(f"{name} must have shape (F,) or (N, F), got shape {tuple(values.shape)}")


def _names(feature_names: Optional[Sequence[str]], n: int) -> list:
    if feature_names is None:
        return [f"feature {i}" for i in range(n)]
    if isinstance(feature_names, str) or len(feature_names) != n:
        raise ValueError(f"feature_names must be a sequence of {n} names (one per feature), got {feature_names!r}")
    return [str(name) for name in feature_names]


def _order(values: np.ndarray, sort: str) -> np.ndarray:
    # Stable sorts, so ties keep the features' own order.
    if sort == "abs":
        return np.argsort(-np.abs(values), kind="stable")
    if sort == "value":
        return np.argsort(-values, kind="stable")
    if sort == "none" or sort is None:
        return np.arange(values.shape[0])
    raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")


def _interval_factor(level: object, dof: object, example: Optional[int]) -> float:
    """Student's t factor of a two-sided interval at ``level`` for one example's degrees of freedom."""
    from noisegrad.stats.student_t import interval_halfwidth_factor

    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), e.g. 0.95, got {level!r}")
    if dof is None:
        raise ValueError("level needs dof, the degrees of freedom of stderr (SmoothedAttribution.dof)")
    values = np.atleast_1d(as_array(dof, "dof")).astype(float)
    one = values[0] if values.size == 1 else values[0 if example is None else example]
    return float(interval_halfwidth_factor(float(level), float(one)))
