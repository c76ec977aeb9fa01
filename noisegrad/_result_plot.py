"""How a SmoothedAttribution draws itself: its shape chooses the noisegrad.viz figure.

Nothing here imports :mod:`noisegrad.viz` (nor matplotlib) until a figure is drawn.
"""

from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["PLOT_KINDS", "plot_result"]

#: ``kind`` options of :meth:`noisegrad.SmoothedAttribution.plot`.
PLOT_KINDS = ("auto", "image", "features", "tokens")


def plot_result(attributions: Tensor, stderr: Any, dof: Any, relative_stderr: Any, *, kind: str,
                example: Optional[int], images: Any, feature_names: Optional[Sequence[str]],
                tokens: Optional[Sequence[Any]], level: Optional[float], options: Dict[str, Any]) -> Any:
    """The figure of one attribution tensor (batch first) and its standard error; see ``SmoothedAttribution.plot``."""
    kind = _plot_kind(kind, attributions, tokens)
    unused = [name for name, value, needed in (("images", images, "image"), ("feature_names", feature_names,
              "features"), ("tokens", tokens, "tokens")) if value is not None and kind != needed]
    if unused:
        raise ValueError(f"{unused[0]}= does not apply to a {kind!r} plot")
    example = _check_example(example, attributions.shape[0])
    if kind == "image":
        return _plot_images(attributions, images, example, relative_stderr, options)
    if kind == "features":
        return _plot_features(attributions, stderr, dof, feature_names, example, level, options)
    return _plot_tokens(attributions, tokens, example, options)


def _plot_kind(kind: str, attributions: Tensor, tokens: Optional[Sequence[Any]]) -> str:
    if kind not in PLOT_KINDS:
        raise ValueError(f"kind must be one of {PLOT_KINDS}, got {kind!r}")
    dims = attributions.dim()
    if kind == "auto":
        if tokens is not None:
            kind = "tokens"
        elif dims in (2, 4):
            kind = "features" if dims == 2 else "image"
        elif dims == 3:
            raise ValueError(f"attributions of shape {tuple(attributions.shape)} are images (batch, H, W) or tokens "
                             "(batch, tokens, hidden): pass kind='image', or tokens=")
        else:
            raise ValueError(f"no plot for attributions of shape {tuple(attributions.shape)}: images are "
                             "(batch, C, H, W), features (batch, features), tokens (batch, tokens, ...); for several "
                             "outputs (outputs=), plot one of them with noisegrad.viz on result[..., k]")
    allowed = {"image": (3, 4), "features": (2,), "tokens": (2, 3, 4, 5)}[kind]
    if dims not in allowed:
        raise ValueError(f"a {kind!r} plot needs attributions with {' or '.join(map(str, allowed))} dimensions "
                         f"(batch first), got shape {tuple(attributions.shape)}")
    return kind


def _check_example(example: Optional[int], batch: int) -> Optional[int]:
    if example is None:
        return None
    if isinstance(example, bool) or not isinstance(example, int) or not -batch <= example < batch:
        raise ValueError(f"example must be an int row index of the {batch} examples, got {example!r}")
    return example % batch


def _plot_images(attributions: Tensor, images: Any, example: Optional[int], relative_stderr: Tensor,
                 options: Dict[str, Any]) -> Any:
    from noisegrad import viz

    def title(i: int) -> str:
        error = float(relative_stderr[i]) if isinstance(relative_stderr, Tensor) else float("nan")
        return f"example {i}" + (f": rel. SE {error:.1%}" if error == error else "")

    if example is None:
        options.setdefault("titles", [title(i) for i in range(attributions.shape[0])])
        return viz.plot_image_attr_grid(attributions, images, **options)
    options.setdefault("title", title(example))
    return viz.plot_image_attr(attributions[example], None if images is None else images[example], **options)


def _plot_features(attributions: Tensor, stderr: Any, dof: Any, feature_names: Optional[Sequence[str]],
                   example: Optional[int], level: Optional[float], options: Dict[str, Any]) -> Any:
    from noisegrad import viz
    from noisegrad.viz._canvas import Plot, new_figure, save_figure

    # Bars only where there is an error to draw (a single sample has none: NaN).
    drawable = isinstance(stderr, Tensor) and bool(torch.isfinite(stderr).all())
    bars: Dict[str, Any] = {"stderr": stderr if drawable else None}
    if drawable and level is not None and dof is not None:
        bars.update(level=level, dof=dof)
    if example is not None or attributions.shape[0] == 1:
        return viz.plot_feature_attr(attributions, feature_names, example=example or 0, **bars, **options)
    if "ax" in options:
        raise ValueError("ax= draws one example: choose it with example=")
    save, title = options.pop("save", None), options.pop("title", None)
    batch, features = attributions.shape
    limit = options.get("max_features")
    shown = min(features, limit) if isinstance(limit, int) and limit > 0 else features
    fig = new_figure((6.0, batch * (0.8 + 0.32 * shown)))
    axes = fig.subplots(batch, 1, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        viz.plot_feature_attr(attributions, feature_names, example=i, ax=ax,
                              title=f"{title}: example {i}" if title else f"example {i}", **bars, **options)
    save_figure(fig, save)
    return Plot(fig, axes)


def _plot_tokens(attributions: Tensor, tokens: Optional[Sequence[Any]], example: Optional[int],
                 options: Dict[str, Any]) -> Any:
    from noisegrad import viz
    from noisegrad.reducers import token_scores

    if tokens is None:
        raise ValueError("a 'tokens' plot needs tokens= (the example's tokens, or one list per example)")
    if example is None:
        if attributions.shape[0] != 1:
            raise ValueError(f"the batch has {attributions.shape[0]} examples: choose one with example=")
        example = 0
    per_example = len(tokens) > 0 and not isinstance(tokens[0], str)
    shown = list(tokens[example]) if per_example else list(tokens)
    scores = token_scores(attributions)[example]
    options.setdefault("title", f"example {example}")
    return viz.plot_token_attr(shown, scores, **options)
