"""Moments kept per independent group of samples: the smoothed value and its standard error from one run."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from noisegrad.stats.moments import Moments, sum_samples, mean_dtype, summable
from noisegrad.stats.smoothing import statistic

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
    and between reads the sums of the chunks since (two more); the pivot
    those were centred on is one for all groups (:class:`~noisegrad.stats.moments.Moments`).

    With ``collapsed_mean``, for the mean of a stratified design whose unit
    ``u`` has a stratum of its own (the joint estimator's path points), the
    groups are independent but not alike: neighbouring groups hold
    neighbouring strata, so the squared differences of neighbouring group
    means estimate the groups' variances (the collapsed-strata estimator,
    slightly conservative), with ``groups / 2`` degrees of freedom; the
    spread of all group means would count the strata's differences too.

    A chunk costs a few operations whatever the number of groups: it is
    centred once, on a pivot all groups share (the first chunk's mean, later
    the running mean of every sample, renewed as :class:`Moments` renews its
    own), and each group's sums are taken over its rows in the chunk: the
    runs of consecutive rows of one unit at the chunk's ends, and all groups'
    rows at once over the whole rounds between them.

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
        self.track_m2 = track_m2
        #: One accumulator per group.
        self.parts: List[Moments] = [Moments(track_m2=track_m2) for _ in range(groups)]
        self._pivot: Optional[Tensor] = None  # the centre of the chunks since it was chosen, shared by the groups
        self._count = 0  # samples seen
        self._since_pivot = 0  # of which since the pivot was chosen

    def update(self, samples: Tensor, sample_ids: range, overwrite: bool = False) -> None:
        """Merge a chunk (samples along dim 0, in the order of ``sample_ids``).

        A group's rows of the chunk are slices (no index tensor, so nothing
        waits for the device); ``overwrite=True`` lets the chunk be centred in
        place.
        """
        if samples.shape[0] != len(sample_ids):
            raise ValueError(f"a chunk of {samples.shape[0]} samples for {len(sample_ids)} sample ids")
        if self.groups == 1:
            self.parts[0].update(samples, dim=0, overwrite=overwrite)
            return
        if len(sample_ids) == 0:
            return
        samples, overwrite = summable(samples, overwrite, mean_dtype(samples.device))
        if not self.track_m2:  # plain sums: a mean needs no centre
            for group, count, total in self._group_sums(samples, sample_ids.start):
                self.parts[group].add_sums(count, total)
            self._count += len(sample_ids)
            return
        if self._pivot is None or self._pivot.dtype != samples.dtype or 2 * self._since_pivot >= self._count:
            # as Moments.update chooses its pivot: the running mean once the chunks since the last pivot
            # outnumber the samples before it
            self._pivot = samples.mean(dim=0) if self._count == 0 else self.total().mean.to(samples.dtype)
            self._since_pivot = 0
        centred = samples.sub_(self._pivot) if overwrite else samples - self._pivot
        totals = self._group_sums(centred, sample_ids.start)
        squares = self._group_sums(centred.mul_(centred), sample_ids.start)  # ours: squared in place
        for (group, count, total), (_, _, square) in zip(totals, squares):
            self.parts[group].add_sums(count, total, square, self._pivot)
        self._count += len(sample_ids)
        self._since_pivot += len(sample_ids)

    def _group_sums(self, rows: Tensor, first: int) -> List[Tuple[int, int, Tensor]]:
        """``(group, samples, sum of its rows)`` for every group with rows in ``rows`` (sample ids from ``first``).

        The sums are in the accumulation dtype, new tensors; the rows of a unit are summed in their own dtype.
        """
        size, groups = self.unit_size, self.groups
        period, n = size * groups, rows.shape[0]
        head = min(n, -first % period)  # rows before the first whole round
        rounds = (n - head) // period
        tail = head + rounds * period
        dtype = mean_dtype(rows.device)
        sums: Dict[int, Tuple[int, Tensor]] = {}
        if rounds:  # whole rounds: row (round, group, offset), every group's rows at once
            by_group = sum_samples(None, rows[head:tail].unflatten(0, (rounds, groups, size)).sum(dim=2), dtype)
            sums = {group: (rounds * size, by_group[group]) for group in range(groups)}
        for start, stop in ((0, head), (tail, n)):
            while start < stop:  # a run of one unit's rows
                end = min(stop, start + size - (first + start) % size)
                group = (first + start) // size % groups
                run = rows[start:end].sum(dim=0, dtype=dtype) if end - start > 1 else rows[start].to(dtype, copy=True)
                if group in sums:
                    count, total = sums[group]
                    sums[group] = (count + end - start, total.add_(run))
                else:
                    sums[group] = (end - start, run)
                start = end
        return [(group, count, total) for group, (count, total) in sums.items()]

    def select(self, examples: Tensor) -> "GroupedMoments":
        """The groups' moments of some examples only."""
        part = GroupedMoments(self.groups, self.unit_size, self.track_m2, self.textbook_mean, self.collapsed_mean)
        part.parts = [p.select(examples) for p in self.parts]
        part._count = self._count
        return part

    def total(self) -> Moments:
        """All groups merged: the moments of every sample."""
        if self.groups == 1:
            return self.parts[0]
        filled = [part for part in self.parts if part.count]
        if not filled:
            return Moments(track_m2=self.track_m2)
        _, count, mean, m2 = self._merged(filled)
        return Moments._of(None, self.track_m2, count, mean, m2)

    def _merged(self, filled: List[Moments]) -> Tuple["_Stacked", int, Tensor, Optional[Tensor]]:
        """The groups stacked, and the count, mean and M2 of them all (Chan et al.'s merge of every group at once)."""
        stacked = _Stacked(filled)
        count = sum(part.count for part in filled)
        mean = (stacked.mean * stacked.counts).sum(dim=0) / count
        m2 = None
        if stacked.m2 is not None:
            deviation = stacked.mean - mean
            m2 = stacked.m2.sum(dim=0) + (deviation * deviation * stacked.counts).sum(dim=0)
        return stacked, count, mean, m2

    def stderr(self, nt_type: str) -> Tuple[Tensor, int]:
        """The standard error of ``smooth(total, nt_type)`` and its degrees of freedom."""
        if nt_type == "smoothgrad" and self.textbook_mean:
            total = self.total()
            if total.m2 is not None and total.count > 1:
                return (total.m2.clamp(min=0) / (total.count * (total.count - 1))).sqrt(), total.count - 1
        filled = [part for part in self.parts if part.count]
        if len(filled) < 2:
            raise ValueError("a standard error needs samples in at least two independent groups")
        if nt_type == "smoothgrad" and self.collapsed_mean:
            return _collapsed(filled, sum(part.count for part in filled))
        # every group left out at once: the moments of the others (Chan's merge, inverted)
        groups, count, mean, m2 = self._merged(filled)
        rest = count - groups.counts
        rest_mean = (mean * count - groups.mean * groups.counts) / rest
        rest_m2 = None
        if m2 is not None:
            shift = groups.mean - rest_mean
            rest_m2 = (m2 - groups.m2 - shift * shift * (rest * groups.counts / count)).clamp(min=0)
        leave_one_out = statistic(nt_type, rest_mean, rest_m2, rest)
        g = len(filled)
        spread = leave_one_out - leave_one_out.mean(dim=0)
        return ((g - 1) / g * (spread * spread).sum(dim=0)).sqrt(), g - 1


class _Stacked:
    """Groups' means and M2 stacked along a new leading dimension, and their counts shaped to broadcast."""

    def __init__(self, parts: List[Moments]) -> None:
        self.mean = torch.stack([part.mean for part in parts])
        self.m2 = None if parts[0].m2 is None else torch.stack([part.m2 for part in parts])
        counts = torch.tensor([float(part.count) for part in parts], dtype=self.mean.dtype)
        if self.mean.device.type == "cuda":  # a copy from pinned memory does not stop the host
            counts = counts.pin_memory()
        self.counts = counts.to(self.mean.device, non_blocking=True).view((-1,) + (1,) * (self.mean.dim() - 1))


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
