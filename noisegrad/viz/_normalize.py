"""Sign selection and outlier-robust scaling of attribution maps: pure numpy functions.

The conventions are Captum's (``captum.attr.visualization``): ``sign`` picks
which part of the map is shown, and the colour scale is the value below which
``100 − outlier_perc`` percent of the shown attribution *mass* lies, so a few
extreme pixels cannot wash out the rest. Unlike Captum, a map with nothing to
show (all zero, or ``sign="positive"`` on an all-negative map) has scale 0 and
is drawn blank instead of failing.
"""

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "SIGNS",
    "CHANNEL_REDUCTIONS",
    "validate_sign",
    "resolve_sign",
    "signed_part",
    "cumulative_threshold",
    "attribution_scale",
    "validate_vmax",
    "validate_outlier_perc",
    "normalize_attr",
    "reduce_channels",
    "colour_limits",
    "default_cmap",
]

#: The ``sign`` options, as in Captum; ``"auto"`` resolves to ``"all"`` or ``"positive"``.
SIGNS = ("auto", "all", "positive", "negative", "absolute_value")
_SIGN_ALIASES = {"absolute": "absolute_value", "abs": "absolute_value"}

#: How the channels of an image attribution become one value per pixel.
CHANNEL_REDUCTIONS = ("sum", "mean", "abs_sum", "max_abs", "l2")

#: Red for positive and blue for negative, in every helper; white is zero.
_CMAPS = {"all": "RdBu_r", "positive": "Reds", "negative": "Blues", "absolute_value": "Purples"}


def validate_sign(sign: object) -> str:
    """The canonical name of ``sign`` (``"absolute"`` is accepted for ``"absolute_value"``).

    Examples
    --------
    >>> validate_sign("absolute")
    'absolute_value'
    >>> validate_sign("pos")
    Traceback (most recent call last):
    ...
    ValueError: sign must be one of ('auto', 'all', 'positive', 'negative', 'absolute_value'), got 'pos'
    """
    canonical = _SIGN_ALIASES.get(sign, sign) if isinstance(sign, str) else sign
    if canonical not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    return canonical


def resolve_sign(sign: object, *maps: np.ndarray) -> str:
    """``sign``, with ``"auto"`` made concrete: ``"all"`` if any map has a negative value, else ``"positive"``.

    Examples
    --------
    >>> resolve_sign("auto", np.array([0.0, 2.0])), resolve_sign("auto", np.array([-1.0, 2.0]))
    ('positive', 'all')
    """
    sign = validate_sign(sign)
    if sign != "auto":
        return sign
    return "all" if any((m < 0).any() for m in maps) else "positive"


def signed_part(values: np.ndarray, sign: str) -> np.ndarray:
    """The part of ``values`` that ``sign`` shows, as magnitudes except for ``"all"``.

    ``"positive"`` keeps ``max(v, 0)``, ``"negative"`` gives ``max(−v, 0)``
    (drawn as the size of the negative part), ``"absolute_value"`` ``|v|``.

    Examples
    --------
    >>> v = np.array([-2.0, 0.0, 3.0])
    >>> [signed_part(v, s).tolist() for s in ("all", "positive", "negative", "absolute_value")]
    [[-2.0, 0.0, 3.0], [0.0, 0.0, 3.0], [2.0, 0.0, 0.0], [2.0, 0.0, 3.0]]
    """
    if sign == "all":
        return values
    if sign == "positive":
        return np.maximum(values, 0.0)
    if sign == "negative":
        return np.maximum(-values, 0.0)
    if sign == "absolute_value":
        return np.abs(values)
    raise ValueError(f"sign must be one of {SIGNS[1:]} here, got {sign!r}")


def cumulative_threshold(magnitudes: np.ndarray, percentile: float) -> float:
    """The smallest value ``t`` such that the values ≤ ``t`` hold ``percentile`` % of the total mass.

    Captum's ``_cumulative_sum_threshold``, except that an empty or all-zero
    input gives 0 instead of an error.

    Examples
    --------
    >>> cumulative_threshold(np.array([1.0, 1.0, 1.0, 97.0]), 98)
    97.0
    >>> cumulative_threshold(np.array([1.0, 1.0, 1.0, 97.0]), 2)
    1.0
    >>> cumulative_threshold(np.zeros(3), 98)
    0.0
    """
    flat = np.sort(np.asarray(magnitudes, dtype=np.float64).ravel())
    if flat.size == 0 or flat[-1] <= 0.0:
        return 0.0
    sums = np.cumsum(flat)
    index = int(np.searchsorted(sums, sums[-1] * 0.01 * percentile, side="left"))
    return float(flat[min(index, flat.size - 1)])


def validate_outlier_perc(outlier_perc: object) -> float:
    if isinstance(outlier_perc, bool) or not isinstance(outlier_perc, (int, float)) or not 0 <= outlier_perc < 100:
        raise ValueError(f"outlier_perc must be a number in [0, 100), got {outlier_perc!r}")
    return float(outlier_perc)


def attribution_scale(maps: Sequence[np.ndarray], sign: str, outlier_perc: float = 2.0) -> float:
    """The value drawn at full colour for ``maps`` shown with ``sign`` (one shared scale for all of them).

    Parameters
    ----------
    maps : sequence of numpy.ndarray
        One or more attribution maps (pooled: pass several for a shared scale).
    sign : {"all", "positive", "negative", "absolute_value"}
    outlier_perc : float
        Percent of the shown attribution mass, the largest values, that is
        clipped to full colour (Captum's ``outlier_perc``; 0: the maximum).

    Returns
    -------
    float
        ≥ 0; 0 when there is nothing to show.

    Examples
    --------
    >>> attribution_scale([np.array([-4.0, 1.0])], "all", 0), attribution_scale([np.array([-4.0, 1.0])], "positive", 0)
    (4.0, 1.0)
    >>> attribution_scale([np.array([-4.0, -1.0])], "positive")
    0.0
    """
    outlier_perc = validate_outlier_perc(outlier_perc)
    pooled = np.concatenate([np.abs(signed_part(np.asarray(m), sign)).ravel() for m in maps])
    return cumulative_threshold(pooled, 100.0 - outlier_perc)


def validate_vmax(vmax: object) -> Optional[float]:
    """``vmax`` as a positive float, or None."""
    if vmax is None:
        return None
    if isinstance(vmax, bool) or not isinstance(vmax, (int, float, np.floating, np.integer)) or not (
        np.isfinite(vmax) and vmax > 0
    ):
        raise ValueError(f"vmax must be a positive finite number (the value drawn at full colour), got {vmax!r}")
    return float(vmax)


def normalize_attr(values: np.ndarray, sign: str, scale: float) -> np.ndarray:
    """``signed_part(values, sign) / scale``, clipped to [−1, 1] (``"all"``) or [0, 1]; zeros if ``scale`` is 0.

    Examples
    --------
    >>> normalize_attr(np.array([-4.0, 1.0, 2.0]), "all", 2.0).tolist()
    [-1.0, 0.5, 1.0]
    >>> normalize_attr(np.array([-4.0, -1.0]), "positive", 0.0).tolist()
    [0.0, 0.0]
    """
    part = signed_part(values, sign)
    if scale <= 0.0:
        return np.zeros_like(part)
    return np.clip(part / scale, -1.0 if sign == "all" else 0.0, 1.0)


def reduce_channels(hwc: np.ndarray, reduction: str = "sum") -> np.ndarray:
    """One value per pixel from an ``(H, W, C)`` attribution.

    ``"sum"`` is Captum's choice (signed); ``"mean"`` is signed too;
    ``"abs_sum"``, ``"max_abs"`` (the SmoothGrad paper's) and ``"l2"`` are
    magnitudes.

    Examples
    --------
    >>> a = np.array([[[1.0, -3.0]]])
    >>> [reduce_channels(a, r).item() for r in ("sum", "mean", "abs_sum", "max_abs", "l2")]
    [-2.0, -1.0, 4.0, 3.0, 3.1622776601683795]
    """
    if reduction == "sum":
        return hwc.sum(axis=-1)
    if reduction == "mean":
        return hwc.mean(axis=-1)
    if reduction == "abs_sum":
        return np.abs(hwc).sum(axis=-1)
    if reduction == "max_abs":
        return np.abs(hwc).max(axis=-1)
    if reduction == "l2":
        return np.sqrt((hwc**2).sum(axis=-1))
    raise ValueError(f"channel_reduction must be one of {CHANNEL_REDUCTIONS}, got {reduction!r}")


def colour_limits(sign: str, scale: float) -> Tuple[float, float]:
    """``(vmin, vmax)`` for drawing :func:`signed_part` values; a zero scale draws as blank, not as −1.

    Examples
    --------
    >>> colour_limits("all", 2.0), colour_limits("positive", 0.0)
    ((-2.0, 2.0), (0.0, 1.0))
    """
    shown = scale if scale > 0.0 else 1.0
    return (-shown, shown) if sign == "all" else (0.0, shown)


def default_cmap(sign: str) -> str:
    """The colour map for ``sign``: diverging ``RdBu_r`` centred at 0 for ``"all"``, white-based otherwise.

    Examples
    --------
    >>> default_cmap("all"), default_cmap("positive"), default_cmap("negative")
    ('RdBu_r', 'Reds', 'Blues')
    """
    return _CMAPS[sign]
