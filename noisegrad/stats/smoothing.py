"""The noise-tunnel types: how the statistics of the noisy attributions become the result."""

from typing import Optional, Tuple, Union

from torch import Tensor

from noisegrad.stats.moments import Moments

__all__ = ["NT_TYPES", "smooth", "statistic"]

#: nt_type → does it need the sum of squared deviations?
NT_TYPES = {"smoothgrad": False, "smoothgrad_sq": True, "vargrad": True}


def smooth(moments: Moments, nt_type: str) -> Tensor:
    """The smoothed attribution of one tensor.

    ``smoothgrad`` is the mean of the noisy attributions (Smilkov et al. 2017),
    ``smoothgrad_sq`` the mean of their squares, ``vargrad`` their population
    variance (sum of squared deviations over ``nt_samples``, not
    ``nt_samples − 1``, as in Captum; Adebayo et al. 2018). The last two are
    unsigned by construction.

    Examples
    --------
    >>> import torch
    >>> m = Moments()
    >>> m.update(torch.tensor([[1.0, 3.0]]))
    >>> [smooth(m, nt_type).item() for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad")]
    [2.0, 5.0, 1.0]
    """
    if moments.count == 0:
        raise ValueError("no samples yet: a smoothed attribution needs at least one update")
    return statistic(nt_type, moments.mean, moments.m2, moments.count)


def statistic(nt_type: str, mean: Tensor, m2: Optional[Tensor], count: Union[int, Tensor]) -> Tensor:
    """:func:`smooth` of samples given by their ``mean``, ``m2`` and ``count`` (a tensor of counts broadcasts).

    Examples
    --------
    >>> import torch
    >>> statistic("vargrad", torch.tensor([2.0]), torch.tensor([2.0]), 2)
    tensor([1.])
    """
    if nt_type == "smoothgrad":
        return mean
    if NT_TYPES.get(nt_type) and m2 is None:
        raise ValueError(f"{nt_type} needs Moments(track_m2=True)")
    if nt_type == "smoothgrad_sq":
        return m2.clamp(min=0) / count + mean * mean  # M2 is a sum of squares: only rounding takes it below 0
    if nt_type == "vargrad":
        return m2.clamp(min=0) / count
    raise ValueError(f"nt_type must be one of {tuple(NT_TYPES)}, got {nt_type!r}")


def validate_nt_type(nt_type: object) -> Tuple[str, bool]:
    """``nt_type`` and whether it needs second moments; ``ValueError`` for an unknown type."""
    if not isinstance(nt_type, str) or nt_type not in NT_TYPES:
        raise ValueError(f"nt_type must be one of {tuple(NT_TYPES)}, got {nt_type!r}")
    return nt_type, NT_TYPES[nt_type]
