"""A snapshot's maps as one figure, drawn by :mod:`noisegrad.viz`: image overlays, feature bars or coloured tokens."""

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["FIGURE_KINDS", "TABULAR_FEATURES", "figure_kind", "snapshot_figure"]

#: What the monitor can draw; ``None`` draws nothing.
FIGURE_KINDS = ("image", "tabular", "text")
#: Features drawn per example in a tabular figure: its largest ``|attribution|`` (784 of them made a 156840-pixel
#: figure taking 50 s to draw).
TABULAR_FEATURES = 20


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
        fig, _ = viz.plot_image_attr_grid(maps, images.detach() if overlay else None, ncols=min(n, 8),
                                          method="blended_heat_map" if overlay else "heat_map",
                                          titles=[f"#{i}" for i in range(n)], panel_size=1.5, suptitle=title)
        return fig
    if kind == "tabular":
        fig = new_figure((5.0, 0.4 + 0.25 * min(maps.shape[1], TABULAR_FEATURES) * n))
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
