"""Pictures of convergence: maps at growing sample counts, error curves, convergence deltas per input."""

from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase
from matplotlib.ticker import StrMethodFormatter

from noisegrad.viz._arrays import as_array
from noisegrad.viz._canvas import PathLike, Plot, figure_and_axes, save_figure
from noisegrad.viz.convergence import ConvergenceRun
from noisegrad.viz.grid import plot_attr_comparison

__all__ = ["plot_convergence_maps", "plot_convergence_curve", "plot_convergence_delta", "METRICS"]

#: ``metric`` options of :func:`plot_convergence_curve`.
METRICS = ("auto", "relative_stderr", "relative_change")

_METRIC_LABELS = {
    "relative_stderr": ("relative standard error  ‖SE‖ / ‖estimate‖", "Relative standard error"),
    "relative_change": ("relative change  ‖A_N − A_prev‖ / ‖A_N‖", "Change between successive estimates"),
}


def _check_run(run: object) -> ConvergenceRun:
    if not isinstance(run, ConvergenceRun):
        raise TypeError(f"run must be a ConvergenceRun (from measure_convergence), got {type(run).__name__}")
    return run


def _examples(examples: Optional[Sequence[int]], batch: int) -> list:
    if examples is None:
        return list(range(batch))
    picked = list(examples)
    if not picked or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < batch for i in picked):
        raise ValueError(f"examples must be indices in [0, {batch}), got {examples!r}")
    return picked


def plot_convergence_maps(
    run: ConvergenceRun,
    images: Optional[object] = None,
    *,
    examples: Optional[Sequence[int]] = None,
    row_labels: Optional[Sequence[str]] = None,
    shared_scale: Union[bool, str] = "row",
    **comparison_kwargs: object,
) -> Tuple[FigureBase, np.ndarray]:
    """The map of each input after each sample count, side by side (one row per input).

    Parameters
    ----------
    run : ConvergenceRun
        From :func:`measure_convergence` on image inputs.
    images : tensor or array, optional
        The inputs, drawn in a first column.
    examples : sequence of int, optional
        Which inputs to draw (default: all).
    row_labels : sequence of str, optional
        Default: ``"input i"``.
    shared_scale : {False, True, "row", "column"}
        Default ``"row"``: the maps of one input share one colour scale, so
        the noise that fades as ``N`` grows is visible as such.
    **comparison_kwargs
        Passed to :func:`noisegrad.viz.plot_attr_comparison` (``sign``,
        ``method``, ``colorbar``, ``save``, ...).

    Returns
    -------
    fig, axes

    Examples
    --------
    >>> run = ConvergenceRun.from_estimates([1, 4], [np.random.rand(2, 1, 6, 6), np.random.rand(2, 1, 6, 6)])
    >>> fig, axes = plot_convergence_maps(run, examples=[1])
    >>> [ax.get_title() for ax in axes[0]]
    ['N = 1', 'N = 4']
    """
    run = _check_run(run)
    picked = _examples(examples, run.estimates.shape[1])
    columns = {f"N = {n}": run.estimates[k][picked] for k, n in enumerate(run.sample_counts)}
    if images is not None:
        images = as_array(images, "images")[picked]
    labels = row_labels if row_labels is not None else [f"input {i}" for i in picked]
    return plot_attr_comparison(columns, images, row_labels=labels, shared_scale=shared_scale, **comparison_kwargs)


def plot_convergence_curve(
    run: ConvergenceRun,
    *,
    metric: str = "auto",
    labels: Optional[Sequence[str]] = None,
    reference: bool = True,
    level: Optional[float] = None,
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    save: Optional[PathLike] = None,
) -> Tuple[FigureBase, Axes]:
    """How far each input's estimate still is from settling, against the number of samples (log-log).

    Parameters
    ----------
    run : ConvergenceRun
    metric : {"auto", "relative_stderr", "relative_change"}
        ``"auto"``: the relative standard error when the run has it, else
        the relative change between successive estimates.
    labels : sequence of str, optional
        One legend label per input; default ``"input i"``.
    reference : bool
        Draw a dashed ``∝ 1/√N`` line, the rate of a Monte-Carlo mean.
    level : float, optional
        With the relative standard error: draw the relative half-width of
        the confidence interval at this level instead, ``t · ‖SE‖ / ‖estimate‖``
        with Student's t at ``(1 + level) / 2`` and the run's degrees of
        freedom per count (few groups make ``t`` well above 1.96).
    title : str, optional
    ax : matplotlib Axes, optional
    save : str or path-like, optional
        Also write the figure (``.png``, ``.svg`` or ``.pdf``).

    Returns
    -------
    fig, ax
        One line per input (``ax.get_lines()``, the reference last).

    Examples
    --------
    >>> run = ConvergenceRun.from_estimates([1, 4, 16], [np.ones((2, 3)), np.full((2, 3), 2.0), np.full((2, 3), 2.2)])
    >>> fig, ax = plot_convergence_curve(run)
    >>> ax.get_ylabel().startswith("relative change"), len(ax.get_lines())
    (True, 3)
    """
    run = _check_run(run)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "auto":
        metric = "relative_stderr" if run.relative_stderr is not None else "relative_change"
    values = getattr(run, metric)
    if values is None:
        raise ValueError("this run has no relative_stderr: measure it with stderr='return_stderr' or 'repeats'")
    ylabel, default_title = _METRIC_LABELS[metric]
    if level is not None:
        values, ylabel = _interval_half_widths(run, metric, values, level)
        default_title = f"Relative half-width of the {level:.0%} interval (Student's t)"
    batch = values.shape[1]
    if labels is not None and (isinstance(labels, str) or len(labels) != batch):
        raise ValueError(f"labels must be a sequence of {batch} strings (one per input), got {labels!r}")
    labels = labels if labels is not None else [f"input {i}" for i in range(batch)]
    counts = np.asarray(run.sample_counts, dtype=float)

    fig, ax = figure_and_axes(ax, (5.0, 3.6))
    for i in range(batch):
        ax.plot(counts, values[:, i], marker="o", markersize=4, label=labels[i])
    valid = np.isfinite(values) & (values > 0)
    if reference and valid.any():
        first = int(np.argmax(valid.any(axis=1)))  # the first count with a value
        level = np.exp(np.mean(np.log(values[first][valid[first]])))
        ax.plot(counts[first:], level * np.sqrt(counts[first] / counts[first:]), "k--", linewidth=1, label="∝ 1/√N")
    if valid.any():
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        shown = values[valid]
        if shown.max() / shown.min() < 30:  # within ~1.5 decades: plain numbers read better than 4×10⁻¹
            ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
            ax.yaxis.set_minor_formatter(StrMethodFormatter("{x:g}"))
    ax.set_xticks(counts, [str(n) for n in run.sample_counts])
    ax.set_xlabel("nt_samples N")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title if title is not None else f"{default_title} ({run.nt_type})", fontsize=10)
    ax.grid(True, which="major", color="0.9")
    ax.legend(fontsize=8, frameon=False, ncol=2 if batch > 4 else 1)
    save_figure(fig, save)
    return Plot(fig, ax)


def plot_convergence_delta(
    delta: Union[object, Mapping[str, object], ConvergenceRun],
    *,
    labels: Optional[Sequence[str]] = None,
    absolute: bool = False,
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    save: Optional[PathLike] = None,
) -> Tuple[FigureBase, Axes]:
    """Bars of the averaged convergence delta of each input (e.g. IntegratedGradients' completeness error).

    Parameters
    ----------
    delta : tensor or array, mapping of str to tensor or array, or ConvergenceRun
        ``(batch,)`` deltas from ``attribute(..., return_convergence_delta=True)``
        (noisegrad averages them per input); a mapping of several
        (e.g. one per method or ``nt_samples``) draws grouped bars; a run with
        deltas draws one group per sample count.
    labels : sequence of str, optional
        One label per input; default ``"input i"``.
    absolute : bool
        Draw ``|delta|`` (log scale) instead of the signed delta.
    title : str, optional
    ax : matplotlib Axes, optional
    save : str or path-like, optional
        Also write the figure (``.png``, ``.svg`` or ``.pdf``).

    Returns
    -------
    fig, ax

    Examples
    --------
    >>> fig, ax = plot_convergence_delta({"N = 4": [0.2, -0.1], "N = 64": [0.05, -0.02]})
    >>> len(ax.patches)
    4
    """
    series = _delta_series(delta)
    batch = len(next(iter(series.values())))
    if any(len(v) != batch for v in series.values()):
        raise ValueError(f"every delta must have one value per input; got lengths {[len(v) for v in series.values()]}")
    if labels is not None and (isinstance(labels, str) or len(labels) != batch):
        raise ValueError(f"labels must be a sequence of {batch} strings (one per input), got {labels!r}")
    labels = labels if labels is not None else [f"input {i}" for i in range(batch)]

    fig, ax = figure_and_axes(ax, (max(4.0, 0.9 + 0.45 * batch * len(series)), 3.4))
    width = 0.8 / len(series)
    positions = np.arange(batch)
    for k, (name, values) in enumerate(series.items()):
        shown = np.abs(values) if absolute else values
        ax.bar(positions + (k - (len(series) - 1) / 2) * width, shown, width=width * 0.95, label=name)
    ax.set_xticks(positions, labels)
    if absolute:
        if (np.concatenate(list(series.values())) != 0).any():
            ax.set_yscale("log")
        ax.set_ylabel("|convergence delta| (mean over samples)")
    else:
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_ylabel("convergence delta (mean over samples)")
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    if len(series) > 1 or next(iter(series)) != "delta":
        ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, save)
    return Plot(fig, ax)


def _delta_series(delta: object) -> dict:
    if isinstance(delta, ConvergenceRun):
        if delta.deltas is None:
            raise ValueError("this run has no deltas: measure it with return_convergence_delta=True")
        return {f"N = {n}": delta.deltas[k] for k, n in enumerate(delta.sample_counts)}
    items = delta.items() if isinstance(delta, Mapping) else [("delta", delta)]
    series = {}
    for name, values in items:
        array = as_array(values, "delta")
        if array.ndim != 1 or array.size == 0:
            raise ValueError(
                f"delta must have shape (batch,) (noisegrad's delta_reduction='mean'), got shape {array.shape}"
            )
        series[str(name)] = array
    if not series:
        raise ValueError("delta is an empty mapping; give at least one series of deltas")
    return series


def _interval_half_widths(run: ConvergenceRun, metric: str, values: np.ndarray, level: object) -> Tuple[np.ndarray, str]:
    """``t_{(1+level)/2, dof_k} ×`` the relative standard error of count ``k``, and the axis label."""
    from noisegrad.stats.student_t import interval_halfwidth_factor

    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), e.g. 0.95, got {level!r}")
    if metric != "relative_stderr" or run.dof is None:
        raise ValueError("level needs a run with standard errors and their degrees of freedom "
                         "(measure_convergence with stderr='return_stderr' or 'repeats')")
    factors = np.array([interval_halfwidth_factor(float(level), float(d)) if np.isfinite(d) and d > 0 else np.nan
                        for d in run.dof])
    return values * factors[:, None], f"{level:.0%} interval half-width / ‖estimate‖"
