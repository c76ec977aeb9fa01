"""Numbers that describe where an attribution map looks: its share on a mask, its concentration, its rank agreement.

Every function takes attributions shaped ``(batch, ...)`` — a tensor, or a
tuple of tensors for several inputs, whose elements then count together — and
returns one float64 value per example. They read magnitudes, ``|attribution|``:
what the model looks at, whatever the sign. Values that are undefined (the
concentration of an all-zero map, the rank correlation with a constant map,
the share on an empty mask) are NaN.

A map with a value that is not finite (NaN, ±inf) has no metric: NaN for
that example, whatever the others hold.

The helpers not in ``__all__`` (``share_on``, ``gini_of_ascending``,
``entropy_of``, ``average_ranks``, ``rank_correlation``) take the rows of
:func:`magnitudes` computed once, so that a snapshot sorts and ranks its maps
once for every metric (:func:`noisegrad.monitor.snapshot.summarise`).
"""

import math
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["mask_share", "gini", "entropy", "spearman", "magnitudes"]

Attributions = Union[Tensor, Sequence[Tensor]]


def _tensors(value: Attributions, name: str) -> Tuple[Tensor, ...]:
    tensors = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name} must be a tensor or a tuple of tensors, got {type(value).__name__}")
    batch = tensors[0].shape[0] if tensors[0].dim() else None
    if batch is None or any(t.dim() < 1 or t.shape[0] != batch for t in tensors):
        raise ValueError(f"{name} must be shaped (batch, ...) with one batch size, got shapes "
                         f"{[tuple(t.shape) for t in tensors]}")
    return tensors


def magnitudes(attributions: Attributions) -> Tensor:
    """``|attribution|`` per example as one float64 row, ``(batch, elements)`` (several inputs side by side).

    Examples
    --------
    >>> magnitudes((torch.tensor([[-1.0, 2.0]]), torch.tensor([[[3.0]]])))
    tensor([[1., 2., 3.]], dtype=torch.float64)
    """
    tensors = _tensors(attributions, "attributions")
    return torch.cat([t.detach().abs().double().reshape(t.shape[0], -1) for t in tensors], dim=1)


def _undefined_where(finite: Tensor, values: Tensor) -> Tensor:
    """``values``, NaN for each example whose map has a value that is not finite (sorting, sums and ratios would
    turn a NaN or an infinity into any number, 0 or 1 included)."""
    return torch.where(finite, values, math.nan)


def finite_rows(values: Tensor) -> Tensor:
    """Whether each row of :func:`magnitudes` is finite throughout, ``(batch,)`` bool."""
    return values.isfinite().all(dim=1)


def mask_columns(masks: Attributions, attributions: Attributions) -> Tensor:
    """The masks as one bool row per example, aligned with the columns of ``magnitudes(attributions)``.

    Each mask is checked: one per attribution tensor, as many dimensions,
    each of the attribution's size or 1, only 0 and 1 (or bool).
    """
    tensors = _tensors(attributions, "attributions")
    mask_tensors = _tensors(masks, "masks")
    if len(mask_tensors) != len(tensors):
        raise ValueError(f"masks must have one tensor per attribution tensor ({len(tensors)}), got {len(mask_tensors)}")
    expanded = []
    for i, (attr, mask) in enumerate(zip(tensors, mask_tensors)):
        if mask.dim() != attr.dim():
            raise ValueError(f"masks[{i}] of shape {tuple(mask.shape)} has {mask.dim()} dimensions and the "
                             f"attributions' shape {tuple(attr.shape)} {attr.dim()}: give a mask with one dimension "
                             f"per attribution dimension, of size 1 where it is the same for all (e.g. masks[..., None] "
                             f"for one mask value per token of (batch, tokens, hidden) attributions)")
        try:
            expanded.append(zero_one(mask, f"masks[{i}]").to(device=attr.device).expand_as(attr))
        except RuntimeError:
            raise ValueError(f"masks[{i}] of shape {tuple(mask.shape)} does not broadcast to the attributions' "
                             f"shape {tuple(attr.shape)}") from None
    return torch.cat([m.reshape(m.shape[0], -1) for m in expanded], dim=1)


def mask_share(attributions: Attributions, masks: Attributions) -> Tensor:
    """Share of each example's attribution mass, ``sum |a|``, that falls on its mask.

    Parameters
    ----------
    attributions : Tensor or tuple of Tensor
    masks : Tensor or tuple of Tensor
        One per attribution tensor, with as many dimensions, each of the
        attribution's size or 1 (e.g. ``(batch, 1, H, W)`` for ``(batch, C, H,
        W)`` maps, ``(batch, tokens, 1)`` for ``(batch, tokens, hidden)``);
        booleans, or numbers that are all 0 or 1.

    Returns
    -------
    Tensor
        ``(batch,)`` float64 in [0, 1]. An example whose mask is empty has no
        share: NaN (a mean over examples should leave it out); an example with
        no attribution at all counts 0.

    Examples
    --------
    >>> mask_share(torch.tensor([[3.0, -1.0, 0.0, 0.0]]), torch.tensor([[True, False, False, False]]))
    tensor([0.7500], dtype=torch.float64)
    """
    on = mask_columns(masks, attributions)
    values = magnitudes(attributions)
    return _undefined_where(finite_rows(values), share_on(values, on))


def share_on(values: Tensor, on: Tensor) -> Tensor:
    """:func:`mask_share` of magnitude rows ``values`` on bool rows ``on`` (finite or not)."""
    on_mask = torch.where(on, values, torch.zeros_like(values)).sum(dim=1)
    total = values.sum(dim=1)
    share = torch.where(total > 0, on_mask / total.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(total))
    return torch.where(on.any(dim=1), share, math.nan)


def zero_one(mask: Tensor, name: str) -> Tensor:
    """``mask`` as booleans, if it holds only 0 and 1; else an error naming ``name`` and what it holds.

    Examples
    --------
    >>> zero_one(torch.tensor([0.0, 1.0, 1.0]), "masks")
    tensor([False,  True,  True])
    """
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        found = mask.detach().flatten().unique()
        shown = ", ".join(f"{v:g}" for v in found[:5].tolist()) + (", ..." if found.numel() > 5 else "")
        raise ValueError(f"{name} must hold only 0 and 1 (or be bool), got values {shown} (dtype {mask.dtype}): "
                         f"a mask says where the ground truth is, not how much; e.g. give mask > 0 or mask > 0.5")
    return mask != 0


def gini(attributions: Attributions) -> Tensor:
    """The Gini coefficient of each example's ``|attribution|``: 0 when spread evenly, towards 1 on one element.

    With the magnitudes sorted ascending, ``x_(1) <= ... <= x_(n)``,
    ``G = sum_i (2i - n - 1) x_(i) / (n sum_i x_i)``; its largest value is
    ``(n - 1) / n``. NaN for an all-zero map.

    Examples
    --------
    >>> gini(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, -5.0]]))
    tensor([0.0000, 0.7500], dtype=torch.float64)
    """
    values = magnitudes(attributions)
    return _undefined_where(finite_rows(values), gini_of_ascending(values.sort(dim=1).values))


def gini_of_ascending(ascending: Tensor) -> Tensor:
    """:func:`gini` of magnitude rows already sorted ascending."""
    n = ascending.shape[1]
    weights = 2.0 * torch.arange(1, n + 1, dtype=ascending.dtype, device=ascending.device) - n - 1
    total = ascending.sum(dim=1)
    return (ascending * weights).sum(dim=1) / (n * total)


def entropy(attributions: Attributions) -> Tensor:
    """The entropy of each example's normalised ``|attribution|``, divided by its largest value ``log n``.

    1 for an even map, towards 0 as it concentrates; NaN for an all-zero map
    or a single element.

    Examples
    --------
    >>> entropy(torch.tensor([[2.0, -2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 1.0]]))
    tensor([1., 0.], dtype=torch.float64)
    """
    values = magnitudes(attributions)
    return _undefined_where(finite_rows(values), entropy_of(values))


def entropy_of(values: Tensor) -> Tensor:
    """:func:`entropy` of magnitude rows."""
    total = values.sum(dim=1, keepdim=True)
    p = values / total
    terms = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    n = values.shape[1]
    spread = (0.0 - terms.sum(dim=1)) / (math.log(n) if n > 1 else math.nan)  # 0.0 - : no "-0." for one spike
    return torch.where(total[:, 0] > 0, spread, math.nan)


def spearman(attributions: Attributions, others: Attributions) -> Tensor:
    """Spearman's rank correlation of each example's ``|attribution|`` with its ``|other|``: do they look at the same
    places, in the same order?

    Tied values get their average rank. NaN where either map is constant.

    Examples
    --------
    >>> spearman(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), torch.tensor([[10.0, 20.0, 30.0], [3.0, 2.0, 1.0]]))
    tensor([ 1., -1.], dtype=torch.float64)
    """
    first, second = magnitudes(attributions), magnitudes(others)
    if first.shape != second.shape:
        raise ValueError(f"the maps to compare must have the same shapes, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)} (examples × elements)")
    ranks = [average_ranks(*v.sort(dim=1, stable=True)) for v in (first, second)]
    return _undefined_where(finite_rows(first) & finite_rows(second), rank_correlation(*ranks))


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson's correlation of each row of ranks ``a`` with the same row of ``b``: :func:`spearman` of the maps
    ranked."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))


def average_ranks(ascending: Tensor, order: Tensor) -> Tensor:
    """Ranks 1..n along dimension 1 of the rows that ``values.sort(dim=1)`` gave as ``(ascending, order)``, tied
    values sharing the average of the ranks they span: (the run's first rank + its last) / 2, all rows at once;
    float64.

    Examples
    --------
    >>> average_ranks(*torch.tensor([[5.0, 1.0, 5.0, 2.0]]).sort(dim=1, stable=True))
    tensor([[3.5000, 1.0000, 3.5000, 2.0000]], dtype=torch.float64)
    """
    n = ascending.shape[1]
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=ascending.device).expand(ascending.shape)
    starts = torch.ones_like(ascending, dtype=torch.bool)
    starts[:, 1:] = ascending[:, 1:] != ascending[:, :-1]  # a run of ties starts where the value changes
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0.0).cummax(dim=1).values
    last = torch.where(ends, positions, n + 1.0).flip(1).cummin(dim=1).values.flip(1)
    return torch.empty_like(positions).scatter_(1, order, (first + last) / 2)
