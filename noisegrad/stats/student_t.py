"""Student's t distribution, for confidence intervals around standard errors with few degrees of freedom.

A standard error estimated from ``k`` independent groups (jackknife groups, randomised QMC or LHS
replicates) has ``k − 1`` degrees of freedom, and ``± 1.96 · stderr`` then covers the mean only 86 % of the
time with 3 of them and 91 % with 7. The interval ``± t_{(1 + level) / 2, k − 1} · stderr`` covers it with
probability ``level``. Only :mod:`math` is used: the CDF is the regularised incomplete beta function, summed as
a continued fraction, and the quantile inverts it by Newton's method.
"""

import math
import numbers
import sys
from typing import Tuple, Union

import torch
from torch import Tensor

__all__ = ["student_t_quantile", "student_t_cdf", "interval_halfwidth_factor"]

_LOG_HALF = math.log(0.5)
_LGAMMA_HALF = 0.5 * math.log(math.pi)
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_LOG_SQRT_2PI = math.log(_SQRT_2PI)
_LOG_MAX = math.log(sys.float_info.max)
_TINY = 1e-300  # stands in for a zero denominator in Lentz's method
_MAX_TERMS = 1000  # below its switch point the continued fraction took at most 54 steps in 3e4 random quantiles
_NORMAL_DF = 1e25  # beyond it, the t tails equal the normal ones to rounding, down to underflow
_MAX_STEPS = 200  # Newton took at most 5; an |t| beyond the largest float is bracketed to inf in about 50
_NEWTON_TOLERANCE = 1e-11  # in log |t|: the quadratic step taken after it leaves an error near 1e-22


def student_t_quantile(p: float, df: float) -> float:
    """The quantile ``t`` of Student's t distribution with ``P(T ≤ t) = p``.

    Accurate to about 1e-14 relative (1e-13 in the far tails), near ``p = ½`` as well.

    Parameters
    ----------
    p : float
        Probability, in (0, 1).
    df : float
        Degrees of freedom, positive and not necessarily an integer; ``math.inf`` gives the normal quantile.

    Returns
    -------
    float
        ``t``; ``± math.inf`` only where it exceeds the largest float (for ``df`` well below 1).

    Raises
    ------
    ValueError
        If ``p`` is outside (0, 1), ``df`` is not positive, or either is NaN.

    References
    ----------
    M. Abramowitz, I. A. Stegun (1964), "Handbook of Mathematical Functions": 26.5.8 (the continued
    fraction of the incomplete beta function), 26.7.5 (the Cornish–Fisher start), 26.2.23 (the normal start).
    W. J. Lentz (1976), Applied Optics 15(3); I. J. Thompson, A. R. Barnett (1986), J. Comput. Phys. 64
    (the modified Lentz method). W. H. Press et al., "Numerical Recipes", 2nd ed., §6.4 (its switch point).

    Examples
    --------
    >>> round(student_t_quantile(0.975, 7), 9)
    2.364624252
    >>> round(student_t_quantile(0.75, 1), 12)  # Cauchy: tan(π (p − ½))
    1.0
    >>> round(student_t_quantile(0.025, math.inf), 9)
    -1.959963985
    """
    p, df = _probability("p", p), _degrees_of_freedom(df)
    # both are exact in floating point (Sterbenz) on the side of ¼ / ¾ where each is used
    magnitude = _abs_quantile(abs(p - 0.5), min(p, 1.0 - p), df)
    return magnitude if p >= 0.5 else -magnitude


def student_t_cdf(t: float, df: float) -> float:
    """``P(T ≤ t)`` for Student's t distribution with ``df`` degrees of freedom.

    Accurate to about 1e-14 relative, and for ``t < 0`` far out into the tail (1e-12 relative at 1e-200).

    Parameters
    ----------
    t : float
        Any real number, including ``± math.inf``.
    df : float
        Degrees of freedom, positive and not necessarily an integer; ``math.inf`` gives the normal CDF.

    Examples
    --------
    >>> student_t_cdf(0.0, 3)
    0.5
    >>> round(student_t_cdf(-12.706204736, 1), 9)
    0.025
    >>> round(student_t_cdf(1.959963985, math.inf), 9)
    0.975
    """
    t, df = _real("t", t), _degrees_of_freedom(df)
    if t == 0.0 or math.isinf(t):
        return 0.5 if t == 0.0 else float(t > 0.0)
    if df > _NORMAL_DF:
        centre, tail = 0.5 * math.erf(abs(t) * _SQRT_HALF), 0.5 * math.erfc(abs(t) * _SQRT_HALF)
    else:
        log_centre, log_tail, _ = _log_tails(math.log(abs(t)), df, _log_beta_half(0.5 * df))
        centre, tail = math.exp(log_centre), math.exp(log_tail)
    return 0.5 + centre if t > 0.0 else tail


def interval_halfwidth_factor(level: float, df: Union[float, Tensor]) -> Union[float, Tensor]:
    """The factor ``t_{(1 + level) / 2, df}``: ``estimate ± factor · stderr`` is a two-sided ``level`` interval.

    Parameters
    ----------
    level : float
        Coverage probability of the interval, in (0, 1), e.g. 0.95.
    df : int, float or Tensor
        Degrees of freedom of the standard error (the number of independent groups minus one), or a tensor
        of them per element. A tensor's distinct values are few (one per group count), so the quantile is
        computed once per distinct value and gathered back, with no Python loop over the elements.

    Returns
    -------
    float or Tensor
        A float for a scalar ``df``; otherwise a tensor shaped like ``df`` on its device, in its dtype if it
        is floating point and in ``torch.get_default_dtype()`` if it holds integers.

    Examples
    --------
    >>> round(interval_halfwidth_factor(0.95, 3), 9)
    3.182446305
    >>> interval_halfwidth_factor(0.95, torch.tensor([7, 3, 7]))
    tensor([2.3646, 3.1824, 2.3646])
    """
    level = _probability("level", level)
    # the centre ½ level and the tail ½ (1 − level) are each exact where they are used
    centre, tail = 0.5 * level, 0.5 * (1.0 - level)
    if not isinstance(df, Tensor):
        return _abs_quantile(centre, tail, _degrees_of_freedom(df))
    distinct, inverse = torch.unique(df, return_inverse=True)
    factors = [_abs_quantile(centre, tail, _degrees_of_freedom(value)) for value in distinct.tolist()]
    dtype = df.dtype if df.is_floating_point() else torch.get_default_dtype()
    return torch.tensor(factors, dtype=dtype, device=df.device)[inverse]


def _abs_quantile(centre: float, tail: float, df: float) -> float:
    """``|t|`` with ``P(0 < T < |t|) = centre`` and ``P(T > |t|) = tail``, where ``centre + tail = ½``."""
    if centre == 0.0:
        return 0.0
    if df == 1.0:  # Cauchy: tan(π centre) = cot(π tail), each accurate on its side of the quartile
        return math.tan(math.pi * centre) if tail >= 0.25 else 1.0 / math.tan(math.pi * tail)
    if df == 2.0:  # |2p − 1| / √(2 p (1 − p))
        return 2.0 * centre / math.sqrt(2.0 * tail * (0.5 + centre))
    normal = _normal_abs_quantile(centre, tail)
    return normal if df > _NORMAL_DF else _solve_abs_quantile(centre, tail, df, normal)


def _solve_abs_quantile(centre: float, tail: float, df: float, normal: float) -> float:
    """``|t|`` by Newton's method on ``log P`` in ``log |t|``, kept in a bracket that bisection falls back to.

    ``log P`` is nearly linear in ``log |t|`` both in the power-law tail and near 0; ``normal`` is the
    normal quantile of the same probabilities.
    """
    log_beta = _log_beta_half(0.5 * df)
    use_tail = tail < 0.25  # the smaller of the two probabilities, known to full relative accuracy
    log_target = math.log(tail if use_tail else centre)
    # |t| lies between the normal quantile (t has heavier tails) and the quantile of the power law
    # df^(df/2) s^(−df−1) / B(df/2, ½), which bounds the t density from above; either can be within
    # rounding of the root (large df, far tail), so the bracket is widened by more than that
    low = math.log(normal)
    high = 0.5 * math.log(df) - (math.log(tail) + math.log(df) + log_beta) / df
    low, high = low - 1e-9 * (1.0 + abs(low)), min(high + 1e-9 * (1.0 + abs(high)), _LOG_MAX + 1.0)
    start = _cornish_fisher(normal, df)
    log_s = min(max(math.log(start) if start > 0.0 else low, low), high)
    for _ in range(_MAX_STEPS):
        log_centre, log_tail, log_density = _log_tails(log_s, df, log_beta)
        log_value = log_tail if use_tail else log_centre
        residual = log_value - log_target
        if (residual > 0.0) == use_tail:
            low = log_s
        else:
            high = log_s
        slope = math.exp(log_s + log_density - log_value)  # |d log P / d log s|
        step = residual / slope if slope > 0.0 else math.inf
        step = -step if use_tail else step
        if abs(step) < _NEWTON_TOLERANCE:
            return _exp(log_s - step)
        log_s = log_s - step if low < log_s - step < high else 0.5 * (low + high)
        if high - low < _NEWTON_TOLERANCE:
            break
    return _exp(log_s)


def _log_tails(log_s: float, df: float, log_beta: float) -> Tuple[float, float, float]:
    """``log P(0 < T < s)``, ``log P(T > s)`` and the log density at ``s = exp(log_s)``.

    With ``x = df / (df + s²)`` and ``y = 1 − x``, ``P(T > s) = ½ I_x(df/2, ½)`` and
    ``P(0 < T < s) = ½ I_y(½, df/2)``: the one on the fast side of the continued fraction's switch point
    is summed and the other is ½ minus it.
    """
    half_df = 0.5 * df
    log_ratio = 2.0 * log_s - math.log(df)  # log(s² / df)
    # x, y and their logs with neither overflow for huge s nor cancellation for small s or large df
    if log_ratio <= 0.0:
        log_x = -math.log1p(math.exp(log_ratio))
        log_y = log_ratio + log_x
    else:
        log_y = -math.log1p(math.exp(-log_ratio))
        log_x = log_y - log_ratio
    x, y = math.exp(log_x), math.exp(log_y)
    log_prefix = half_df * log_x + 0.5 * log_y - log_beta  # log(x^(df/2) y^(1/2) / B(df/2, ½))
    if y < 1.5 / (half_df + 2.5):
        log_centre = log_prefix + math.log(_beta_fraction(y, x, 0.5, half_df))
        log_tail = _LOG_HALF + math.log1p(-2.0 * math.exp(log_centre))
    else:
        log_tail = log_prefix - math.log(df) + math.log(_beta_fraction(x, y, half_df, 0.5))
        log_centre = _LOG_HALF + math.log1p(-2.0 * math.exp(log_tail))
    log_density = (half_df + 0.5) * log_x - log_beta - 0.5 * math.log(df)
    return log_centre, log_tail, log_density


def _beta_fraction(x: float, y: float, a: float, b: float) -> float:
    """The continued fraction ``F`` in ``I_x(a, b) = x^a y^b F / (a B(a, b))``, given ``y = 1 − x`` exactly.

    It is the even part of Abramowitz & Stegun 26.5.8 (two of its terms per step), evaluated by the
    modified Lentz method, and converges fast for ``x < (a + 1) / (a + b + 2)``. Its partial denominators
    ``1 + d_2m + d_(2m+1) = 1 − q x`` are written as ``(1 − q) + q y`` with ``1 − q`` in closed form when
    ``x > ½``: for large ``a`` the t tail has ``x`` within rounding of 1, where ``1 − q x`` would lose
    ``log10(a)`` digits (and for large ``b`` the t centre has ``q ≈ b / 10``, where ``(1 − q) + q y`` would).
    """
    near_one = x > 0.5
    odd = (a + b) / (a + 1.0)  # −d_1 / x
    fraction = _nonzero((1.0 - b) / (a + 1.0) + odd * y if near_one else 1.0 - odd * x)
    lentz_c, lentz_d = fraction, 0.0
    for m in range(1, _MAX_TERMS):
        even = m / (a + 2 * m - 1.0) * ((b - m) / (a + 2 * m))  # d_2m / x
        numerator = odd * even * x * x  # −d_(2m−1) d_2m
        odd = (a + m) / (a + 2 * m) * ((a + b + m) / (a + 2 * m + 1.0))  # −d_(2m+1) / x
        if near_one:
            one_minus_odd = (a * (2 * m + 1.0 - b) + m * (3 * m + 2.0 - b)) / (a + 2 * m) / (a + 2 * m + 1.0)
            denominator = one_minus_odd + even + (odd - even) * y
        else:
            denominator = 1.0 - (odd - even) * x
        lentz_d = 1.0 / _nonzero(denominator + numerator * lentz_d)
        lentz_c = _nonzero(denominator + numerator / lentz_c)
        delta = lentz_c * lentz_d
        fraction *= delta
        if abs(delta - 1.0) < 1e-15:
            return 1.0 / fraction
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge for x={x}, a={a}, b={b}")


def _log_beta_half(a: float) -> float:
    """``log B(a, ½)``, through Stirling's series for large ``a``, where lgamma(a) − lgamma(a + ½) cancels."""
    if a < 10.0:
        return math.lgamma(a) + _LGAMMA_HALF - math.lgamma(a + 0.5)
    # lgamma(z) = (z − ½) log z − z + ½ log 2π + series(z): the large terms of the difference taken exactly
    return (_LGAMMA_HALF - (a - 0.5) * math.log1p(0.5 / a) - 0.5 * math.log(a + 0.5) + 0.5
            + _stirling_series(a) - _stirling_series(a + 0.5))


def _stirling_series(z: float) -> float:
    """``lgamma(z) − ((z − ½) log z − z + ½ log 2π)`` for ``z ≥ 10``, to below 1e-15."""
    w = 1.0 / (z * z)
    return (1 / 12 - w * (1 / 360 - w * (1 / 1260 - w * (1 / 1680 - w * (1 / 1188 - w * 691 / 360360))))) / z


def _cornish_fisher(z: float, df: float) -> float:
    """The t quantile from the normal one ``z`` to order ``1/df⁴`` (Abramowitz & Stegun 26.7.5): Newton's start."""
    z2 = z * z
    g1 = z * (z2 + 1.0) / 4.0
    g2 = z * ((5.0 * z2 + 16.0) * z2 + 3.0) / 96.0
    g3 = z * (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) / 384.0
    g4 = z * ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) / 92160.0
    return z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df


def _normal_abs_quantile(centre: float, tail: float) -> float:
    """``|z|`` with ``P(0 < Z < |z|) = centre`` and ``P(Z > |z|) = tail``, by Newton's method on erf / erfc.

    Each iteration starts from a bound and approaches the root from that side, as both the centre
    probability and the log tail probability are concave: ``s φ(0) ≥ P(0 < Z < s)``, and Abramowitz &
    Stegun 26.2.23 is within 4.5e-4 of the tail quantile.
    """
    if tail < 0.25:
        root = math.sqrt(-2.0 * math.log(tail))
        s = root - (2.515517 + root * (0.802853 + root * 0.010328)) / (
            1.0 + root * (1.432788 + root * (0.189269 + root * 0.001308))) + 4.5e-4
        log_tail = math.log(tail)
        for _ in range(_MAX_STEPS):
            log_value = _LOG_HALF + math.log(math.erfc(s * _SQRT_HALF))
            # log P(Z > s) falls with slope φ(s) / P(Z > s)
            step = (log_tail - log_value) * math.exp(log_value + 0.5 * s * s + _LOG_SQRT_2PI)
            s -= step
            if abs(step) <= 1e-15 * s:
                break
        return s
    s = centre * _SQRT_2PI
    for _ in range(_MAX_STEPS):
        step = (0.5 * math.erf(s * _SQRT_HALF) - centre) * _SQRT_2PI * math.exp(0.5 * s * s)
        s -= step
        if abs(step) <= 1e-15 * s:
            break
    return s


def _nonzero(value: float) -> float:
    return value if abs(value) > _TINY else _TINY


def _exp(log_value: float) -> float:
    try:
        return math.exp(log_value)
    except OverflowError:
        return math.inf


def _real(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    return value


def _probability(name: str, value: float) -> float:
    value = _real(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")
    return value


def _degrees_of_freedom(df: float) -> float:
    df = _real("df", df)
    if not df > 0.0:
        raise ValueError(f"df must be positive (math.inf for the normal distribution), got {df!r}")
    return df
