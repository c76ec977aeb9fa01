"""Moments kept per independent group of samples: the smoothed value and its standard error from one run."""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from noisegrad.stats.moments import Moments
from noisegrad.stats.smoothing import smooth

__all__ = ["GroupedMoments", "relative_stderr"]


class GroupedMoments:
    """The moments of a stream of samples, dealt into independent groups for a standard error.

    Samples arrive in chunks of consecutive sample ids. Consecutive runs of
    ``unit_size`` samples form an independent *unit* (a single i.i.d.
    sample, an antithetic pair), and units are dealt round-robin into
    ``groups`` groups: sample ``k`` belongs to group
    ``(k // unit_size) mod groups`` (for QMC / LHS, with ``groups`` equal to
    the replicates, that is its replicate). With one group nothing is split
    and no standard error is available.

    The smoothed statistic is that of all groups merged; its standard error
    is the delete-one-group jackknife, valid for the mean (SmoothGrad) and
    the smooth statistics SmoothGrad² and VarGrad alike, with
    ``groups − 1`` degrees of freedom. For the mean of i.i.d. samples, when
    ``textbook_mean`` is set, it is ``√(M2 / (n (n − 1)))`` instead, with
    all ``n − 1`` degrees of freedom. Memory per group: a mean and an M2,
    and between reads the sums of the chunks since (two more) and the pivot
    they were centred on (:class:`~noisegrad.stats.moments.Moments`).

    With ``collapsed_mean``, for the mean of a stratified design whose unit
    ``u`` has a stratum of its own (the joint estimator's path points), the
    groups are independent but not alike: neighbouring groups hold
    neighbouring strata, so the squared differences of neighbouring group
    means estimate the groups' variances (the collapsed-strata estimator,
    slightly conservative), with ``groups / 2`` degrees of freedom; the
    spread of all group means would count the strata's differences too.

    While every chunk starts a round of the groups and holds whole rounds,
    the groups share one accumulator over a leading group dimension, so a
    chunk costs the operations of one update whatever the number of groups;
    another chunk splits it into one accumulator per group.

    Examples
    --------
    >>> grouped = GroupedMoments(groups=4)
    >>> grouped.update(torch.arange(16.0).reshape(8, 2), range(8))
    >>> grouped.total().mean
    tensor([7., 8.], dtype=torch.float64)
    >>> stderr, dof = grouped.stderr("smoothgrad")
    >>> dof
    3
    """

    def __init__(
        self, groups: int = 1, unit_size: int = 1, track_m2: bool = True, textbook_mean: bool = False,
        collapsed_mean: bool = False,
    ) -> None:
        self.groups, self.unit_size, self.textbook_mean, self.collapsed_mean = (
            groups, unit_size, textbook_mean, collapsed_mean
        )
        self._track_m2 = track_m2
        #: All groups' moments in one accumulator, state (groups, ...), while every chunk has held whole rounds;
        #: else None, and ``_split`` holds one accumulator per group.
        self._stacked: Optional[Moments] = Moments(track_m2=track_m2) if groups > 1 else None
        self._split: List[Moments] = [] if groups > 1 else [Moments(track_m2=track_m2)]

    @property
    def track_m2(self) -> bool:
        return self._track_m2

    @property
    def parts(self) -> List[Moments]:
        """One accumulator per group (views of the shared state while there is one)."""
        if self._stacked is None:
            return self._split
        return [self._stacked.select(group) for group in range(self.groups)]

    def update(self, samples: Tensor, sample_ids: range, overwrite: bool = False) -> None:
        """Merge a chunk (samples along dim 0, in the order of ``sample_ids``).

        A group's rows of the chunk are strided slices (no index tensor, so
        nothing waits for the device); ``overwrite=True`` lets the groups
        centre them in place.
        """
        if self.groups == 1:
            self._split[0].update(samples, dim=0, overwrite=overwrite)
            return
        size = self.unit_size
        period = size * self.groups
        if self._stacked is not None and sample_ids.start % period == 0 and samples.shape[0] % period == 0:
            # Whole rounds: row (round, group, offset) of the chunk, every group's rows at once.
            rounds = samples.unflatten(0, (-1, self.groups, size))
            for offset in range(size):
                self._stacked.update(rounds[:, :, offset], dim=0, overwrite=overwrite)
            return
        if self._stacked is not None:
            self._split, self._stacked = self.parts, None
        for group, part in enumerate(self._split):
            for offset in range(size):
                first = (group * size + offset - sample_ids.start) % period
                part.update(samples[first::period], dim=0, overwrite=overwrite)

    def select(self, examples: Tensor) -> "GroupedMoments":
        """The groups' moments of some examples only."""
        part = GroupedMoments(self.groups, self.unit_size, self.track_m2, self.textbook_mean, self.collapsed_mean)
        if self._stacked is not None:
            part._stacked = self._stacked.select(examples, dim=1)
        else:
            part._stacked, part._split = None, [p.select(examples) for p in self._split]
        return part

    def total(self) -> Moments:
        """All groups merged: the moments of every sample."""
        if self.groups == 1:
            return self.parts[0]
        if self._stacked is not None:
            return self._stacked.merged_over(0)
        total = Moments(track_m2=self.track_m2)
        for part in self.parts:
            total.merge(part)
        return total

    def stderr(self, nt_type: str) -> Tuple[Tensor, int]:
        """The standard error of ``smooth(total, nt_type)`` and its degrees of freedom."""
        total = self.total()
        if nt_type == "smoothgrad" and self.textbook_mean and total.m2 is not None and total.count > 1:
            return (total.m2.clamp(min=0) / (total.count * (total.count - 1))).sqrt(), total.count - 1
        collapsed = nt_type == "smoothgrad" and self.collapsed_mean
        if self._stacked is not None and self._stacked.count and not collapsed:
            # every group alike: the statistics without each one, all at once
            leave_one_out, g = smooth(total.without(self._stacked), nt_type), self.groups
        else:
            filled = [part for part in self.parts if part.count]
            if len(filled) < 2:
                raise ValueError("a standard error needs samples in at least two independent groups")
            if collapsed:
                return _collapsed(filled, total.count)
            leave_one_out = torch.stack([smooth(total.without(part), nt_type) for part in filled])
            g = len(filled)
        spread = leave_one_out - leave_one_out.mean(dim=0)
        return ((g - 1) / g * (spread * spread).sum(dim=0)).sqrt(), g - 1


def _collapsed(groups: Sequence[Moments], count: int) -> Tuple[Tensor, int]:
    """Standard error of the overall mean from the differences of neighbouring groups' means.

    ``d_j = mean_{2j} − mean_{2j+1}`` has expectation ≈ 0 and variance
    ``Var_{2j} + Var_{2j+1}``, so ``Σ_j w_j d_j²`` over the pairs, scaled to all
    groups, estimates ``Var(Σ_g c_g mean_g / n)`` (weights ``c_g²`` for groups of
    ``c_g`` samples).
    """
    pairs = len(groups) // 2
    total = None
    for j in range(pairs):
        a, b = groups[2 * j], groups[2 * j + 1]
        difference = a.mean - b.mean
        term = difference * difference * ((a.count**2 + b.count**2) / 2)
        total = term if total is None else total + term
    variance = total * (len(groups) / (2 * pairs)) / count**2
    return variance.sqrt(), pairs


def relative_stderr(stderr: Sequence[Tensor], attributions: Sequence[Tensor], per_output: bool = False) -> Tensor:
    """Per example, ‖standard error‖ / ‖attribution‖ over all elements of all attribution tensors.

    An all-zero attribution gives ``inf`` if its standard error is not zero
    (no relative accuracy is reached) and ``NaN`` if it is. ``per_output``:
    the last dimension indexes outputs (``outputs=``), and each gets its own
    ratio, shape ``(batch, K)``.

    Examples
    --------
    >>> relative_stderr([torch.tensor([[0.3, 0.4]])], [torch.tensor([[3.0, 4.0]])])
    tensor([0.1000], dtype=torch.float64)
    """
    batch = attributions[0].shape[0]
    shape = (batch, -1, attributions[0].shape[-1]) if per_output else (batch, -1)
    error = sum(s.reshape(shape).double().pow(2).sum(dim=1) for s in stderr)
    size = sum(a.reshape(shape).double().pow(2).sum(dim=1) for a in attributions)
    return (error / size).sqrt()
