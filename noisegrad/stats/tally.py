"""The statistics of one call: grouped moments per attribution tensor and of the deltas."""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from noisegrad.stats.deltas import DeltaLog
from noisegrad.stats.grouped import GroupedMoments
from noisegrad.stats.moments import accumulation_dtype
from noisegrad.stats.smoothing import smooth

__all__ = ["Chunk", "Tally"]


@dataclass
class Chunk:
    """What an estimator made of a chunk of ``n`` samples of ``batch`` examples.

    Attributes
    ----------
    attributions : tuple of Tensor
        Each ``(n, batch, ...)``: the contribution of every (sample, example).
    deltas : Tensor, optional
        ``(n, batch, e)`` or, with several outputs, ``(n, batch, K, e)``: the
        convergence deltas of every (sample, example), ``e`` per row of the
        wrapped method's own expansion (GradientShap's ``n_samples``), or
        ``None``.
    fresh : tuple of bool
        Whether each attribution tensor is ours to overwrite (not a view of
        something the caller may keep).
    """

    attributions: Tuple[Tensor, ...]
    deltas: Optional[Tensor] = None
    fresh: Tuple[bool, ...] = ()


class Tally:
    """Per attribution tensor and for the deltas, the samples' moments in independent groups.

    Parameters
    ----------
    groups, unit_size, textbook_mean, collapsed_mean
        As :class:`~noisegrad.stats.grouped.GroupedMoments` (one group when no
        standard error is needed).
    track_m2 : bool
        Whether the attributions' second moments are needed.
    delta_reduction : {"mean", "none"} or None
        ``None``: no deltas.
    delta_stderr : bool
        Keep the deltas in the groups too, for their standard error.

    Examples
    --------
    >>> tally = Tally(groups=2, track_m2=True, delta_reduction=None)
    >>> tally.add(Chunk((torch.tensor([[1.0], [3.0]]),)), range(0, 2))
    >>> tally.values("vargrad")
    [tensor([1.], dtype=torch.float64)]
    """

    def __init__(
        self, groups: int = 1, unit_size: int = 1, track_m2: bool = False, textbook_mean: bool = False,
        delta_reduction: Optional[str] = None, collapsed_mean: bool = False, delta_stderr: bool = False,
    ) -> None:
        self.groups, self.unit_size, self.track_m2, self.textbook_mean = groups, unit_size, track_m2, textbook_mean
        self.collapsed_mean = collapsed_mean
        self.attributions: List[GroupedMoments] = []
        self.dtypes: List[torch.dtype] = []
        delta_groups = groups if delta_stderr else 1
        self.deltas = (
            GroupedMoments(delta_groups, unit_size, track_m2=delta_groups > 1, collapsed_mean=collapsed_mean)
            if delta_reduction == "mean" else None
        )
        self.delta_log = DeltaLog() if delta_reduction == "none" else None
        self.delta_dtype: Optional[torch.dtype] = None

    def add(self, chunk: Chunk, sample_ids: range) -> None:
        if not self.attributions:
            self.attributions = [
                GroupedMoments(self.groups, self.unit_size, self.track_m2, self.textbook_mean, self.collapsed_mean)
                for _ in chunk.attributions
            ]
            self.dtypes = [a.dtype for a in chunk.attributions]
        fresh = chunk.fresh or (False,) * len(chunk.attributions)
        for moments, samples, overwrite in zip(self.attributions, chunk.attributions, fresh):
            moments.update(samples, sample_ids, overwrite=overwrite)
        if chunk.deltas is not None:
            self.delta_dtype = chunk.deltas.dtype
            if self.deltas is not None:
                per_sample = chunk.deltas.mean(dim=-1, dtype=accumulation_dtype(chunk.deltas.dtype))
                self.deltas.update(per_sample, sample_ids, overwrite=True)
            elif self.delta_log is not None:
                self.delta_log.add(chunk.deltas)

    def select(self, keep: Tensor) -> None:
        """Keep the statistics of some examples only."""
        self.attributions = [m.select(keep) for m in self.attributions]
        if self.deltas is not None:
            self.deltas = self.deltas.select(keep)

    def values(self, nt_type: str) -> List[Tensor]:
        """The smoothed attribution of every tensor (in the accumulation dtype)."""
        return [smooth(m.total(), nt_type) for m in self.attributions]

    def stderrs(self, nt_type: str) -> Tuple[List[Tensor], int]:
        """The standard error of every tensor and their degrees of freedom."""
        pairs = [m.stderr(nt_type) for m in self.attributions]
        return [error for error, _ in pairs], pairs[0][1]

    def delta(self) -> Optional[Tensor]:
        """The deltas: the mean per example, or Captum's per-copy layout."""
        if self.deltas is not None and self.delta_dtype is not None:
            return self.deltas.total().mean.to(self.delta_dtype)
        if self.delta_log is not None and self.delta_log.parts:
            return self.delta_log.result()
        return None

    def delta_stderr(self) -> Optional[Tensor]:
        if self.deltas is None or self.delta_dtype is None or self.deltas.groups < 2:
            return None
        return self.deltas.stderr("smoothgrad")[0].to(self.delta_dtype)
