"""Moments kept per independent group of samples: the smoothed value and its standard error from one run."""

from typing import List, Optional, Sequence, Tuple

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

    The groups' state is stacked along a leading dimension (a mean and an
    M2 per group, and the sums of the chunks since the last read), so a
    chunk costs a few operations whatever the number of groups: it is
    centred once, on a pivot all groups share (the first chunk's mean, later
    the running mean of every sample, renewed when the chunks since it
    outnumber the samples before it, as :class:`Moments` renews its own; a
    read does not renew it), and its rows are summed into the groups' sums
    by whole rounds (every group at once), whole units (a slice of groups)
    and the partial units at its ends. Counts are kept on the host, per
    group.

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
        self._single = Moments(track_m2=track_m2) if groups == 1 else None  # nothing to split: a plain Moments
        self._counts = [0] * groups  # samples per group in _mean and _m2
        self._mean: Optional[Tensor] = None  # (groups, ...)
        self._m2: Optional[Tensor] = None
        self._pending = [0] * groups  # samples per group in _sum and _sum_sq, not yet in _mean and _m2
        self._pivot: Optional[Tensor] = None  # what the pending samples were centred on (the chunks' dtype)
        self._sum: Optional[Tensor] = None
        self._sum_sq: Optional[Tensor] = None
        self._read: Optional[Tuple[Tensor, Tensor, Optional[Tensor]]] = None  # _merged() until the next chunk

    @property
    def parts(self) -> List[Moments]:
        """One accumulator per group (views of the stacked state: read them, do not update them)."""
        if self._single is not None:
            return [self._single]
        self._settle()
        return [Moments._of(None, self.track_m2, count, None if self._mean is None else self._mean[group],
                            None if self._m2 is None else self._m2[group])
                for group, count in enumerate(self._counts)]

    def update(self, samples: Tensor, sample_ids: range, overwrite: bool = False) -> None:
        """Merge a chunk (samples along dim 0, in the order of ``sample_ids``).

        A group's rows of the chunk are slices (no index tensor, so nothing
        waits for the device); ``overwrite=True`` lets the chunk be centred in
        place.
        """
        if samples.shape[0] != len(sample_ids):
            raise ValueError(f"a chunk of {samples.shape[0]} samples for {len(sample_ids)} sample ids")
        if self._single is not None:
            self._single.update(samples, dim=0, overwrite=overwrite)
            return
        if len(sample_ids) == 0:
            return
        state = self._mean if self._mean is not None else self._sum
        if state is not None and samples.shape[1:] != state.shape[1:]:
            raise ValueError(f"samples shape per sample {tuple(samples.shape[1:])} differs from this "
                             f"accumulator's {tuple(state.shape[1:])}")
        dtype = mean_dtype(samples.device)
        samples, overwrite = summable(samples, overwrite, dtype)
        settled, pending = sum(self._counts), sum(self._pending)
        if self.track_m2 and (self._pivot is None or self._pivot.dtype != samples.dtype or pending >= settled):
            # as Moments.update chooses its pivot: the running mean once the chunks since the last pivot
            # outnumber the samples before it
            self._settle()
            self._pivot = samples.mean(dim=0) if not any(self._counts) else self._merged()[1].to(samples.dtype)
        if self._sum is None:
            self._sum = samples.new_zeros((self.groups,) + tuple(samples.shape[1:]), dtype=dtype)
            self._sum_sq = torch.zeros_like(self._sum) if self.track_m2 else None
        if self.track_m2:
            centred = samples.sub_(self._pivot) if overwrite else samples - self._pivot
            self._add_rows(self._sum, centred, sample_ids.start)
            self._add_rows(self._sum_sq, centred.mul_(centred), sample_ids.start)  # ours: squared in place
        else:  # plain sums: a mean needs no centre
            self._add_rows(self._sum, samples, sample_ids.start)
        for group in range(self.groups):
            self._pending[group] += _in_group(sample_ids, group, self.unit_size, self.groups)
        self._read = None

    def _add_rows(self, sums: Tensor, rows: Tensor, first: int) -> None:
        """Add every row (sample ids from ``first``) to its group's row of ``sums`` (the groups' sums, stacked)."""
        size, groups = self.unit_size, self.groups
        period, n = size * groups, rows.shape[0]
        head = min(n, -first % period)  # rows before the first whole round
        rounds = (n - head) // period
        tail = head + rounds * period
        if rounds:  # whole rounds: row (round, group, offset), every group's rows at once
            whole = rows[head:tail].unflatten(0, (rounds, groups, size))
            sum_samples(sums, whole.sum(dim=2) if size > 1 else whole.squeeze(2), sums.dtype)
        for start, stop in ((0, head), (tail, n)):  # each within one round: its groups ascend, none twice
            while start < stop:
                group, offset = divmod(first + start, size)
                group %= groups
                units = (stop - start) // size if offset == 0 else 0
                if units:  # whole units, of consecutive groups: a slice of them
                    block = rows[start:start + units * size]
                    sums[group:group + units].add_(block.unflatten(0, (units, size)).sum(dim=1) if size > 1 else block)
                    start += units * size
                else:  # the part of a unit at an end
                    end = min(stop, start + size - offset)
                    sums[group].add_(rows[start:end].sum(dim=0))
                    start = end

    def _settle(self) -> None:
        """Merge the pending sums into the groups' means and M2 (Chan et al.'s update, every group at once).

        In place, and the sums' buffers are zeroed for the next chunks rather than made anew: at the stacked
        state's size, fresh buffers and temporaries fault their pages in on every read of a call.
        """
        if not any(self._pending):
            return
        new = self._counts_like(self._pending)
        mean = self._sum.div_(new.clamp(min=1))  # of the centred samples; a group with none pending: 0
        m2 = None if self._sum_sq is None else self._sum_sq.addcmul_(mean, mean * new, value=-1)
        if self._pivot is not None:
            mean.add_(self._pivot)
        if self._mean is None:  # the first samples: the sums become the state
            self._mean, self._m2, self._sum, self._sum_sq = mean, m2, None, None
        else:
            old = self._counts_like(self._counts)
            total = (old + new).clamp(min=1)
            shift = mean.sub_(self._mean)
            self._mean.addcmul_(shift, new / total)
            if m2 is not None:
                self._m2.add_(m2)
                self._m2.addcmul_(shift, torch.mul(shift, old * new / total, out=m2))
                m2.zero_()
            shift.zero_()
        self._counts = [old + new for old, new in zip(self._counts, self._pending)]
        self._pending = [0] * self.groups

    def _counts_like(self, counts: List[int]) -> Tensor:
        """Per-group counts as a tensor that broadcasts against the stacked state.

        On CUDA from pinned memory, without a host wait; elsewhere a plain copy: a non-blocking one of a pageable
        temporary may read it after it is freed (MPS: pytorch/pytorch#189690).
        """
        state = self._mean if self._mean is not None else self._sum
        values = torch.tensor([float(c) for c in counts], dtype=state.dtype)
        if state.device.type == "cuda":
            values = values.pin_memory().to(state.device, non_blocking=True)
        return values.to(state.device).view((-1,) + (1,) * (state.dim() - 1))

    def _merged(self) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Every group's count (a tensor), and the mean and M2 of all samples (Chan's merge of all groups).

        Kept until the next chunk: a check reads the total for the values and again for the standard errors.
        """
        if self._read is not None:
            return self._read
        self._settle()
        counts = self._counts_like(self._counts)
        count = sum(self._counts)
        mean = (self._mean * counts).sum(dim=0) / count
        m2 = None
        if self._m2 is not None:
            deviation = self._mean - mean
            m2 = self._m2.sum(dim=0) + (deviation * deviation * counts).sum(dim=0)
        self._read = (counts, mean, m2)
        return self._read

    def select(self, examples: Tensor) -> "GroupedMoments":
        """The groups' moments of some examples only."""
        part = GroupedMoments(self.groups, self.unit_size, self.track_m2, self.textbook_mean, self.collapsed_mean)
        if self._single is not None:
            part._single = self._single.select(examples)
            return part
        self._settle()
        part._counts = list(self._counts)
        if self._mean is not None:
            part._mean = self._mean[:, examples]
            part._m2 = None if self._m2 is None else self._m2[:, examples]
        return part

    def total(self) -> Moments:
        """All groups merged: the moments of every sample."""
        if self._single is not None:
            return self._single
        if not any(self._counts) and not any(self._pending):
            return Moments(track_m2=self.track_m2)
        _, mean, m2 = self._merged()
        return Moments._of(None, self.track_m2, sum(self._counts), mean, m2)

    def stderr(self, nt_type: str) -> Tuple[Tensor, int]:
        """The standard error of ``smooth(total, nt_type)`` and its degrees of freedom."""
        if nt_type == "smoothgrad" and self.textbook_mean:
            total = self.total()
            if total.m2 is not None and total.count > 1:
                return (total.m2.clamp(min=0) / (total.count * (total.count - 1))).sqrt(), total.count - 1
        filled = [group for group in range(self.groups) if self._counts[group] + self._pending[group]]
        if len(filled) < 2:
            raise ValueError("a standard error needs samples in at least two independent groups")
        if nt_type == "smoothgrad" and self.collapsed_mean:
            parts = self.parts
            return _collapsed([parts[group] for group in filled], sum(self._counts))
        # every group left out at once: the moments of the others (Chan's merge, inverted)
        counts, mean, m2 = self._merged()
        g, count = len(filled), sum(self._counts)
        # samples are dealt round-robin from sample 0, so the groups with samples are the first g
        rows = slice(0, g) if filled[-1] == g - 1 else torch.tensor(filled, device=mean.device)
        counts, means = counts[rows], self._mean[rows]
        rest = count - counts
        rest_mean = (mean * count - means * counts) / rest
        rest_m2 = None
        if m2 is not None:
            shift = means - rest_mean
            rest_m2 = (m2 - self._m2[rows] - shift * shift * (rest * counts / count)).clamp(min=0)
        leave_one_out = statistic(nt_type, rest_mean, rest_m2, rest)
        spread = leave_one_out - leave_one_out.mean(dim=0)
        return ((g - 1) / g * (spread * spread).sum(dim=0)).sqrt(), g - 1


def _in_group(samples: range, group: int, unit_size: int, groups: int) -> int:
    """How many of ``samples`` (consecutive ids) fall in ``group`` (sample ``k``: ``(k // unit_size) mod groups``).

    Examples
    --------
    >>> [_in_group(range(3, 14), group, 2, 3) for group in range(3)]
    [4, 3, 4]
    """
    period = unit_size * groups

    def before(k: int) -> int:  # ids 0 .. k − 1 in the group
        return k // period * unit_size + min(max(k % period - group * unit_size, 0), unit_size)

    return before(samples.stop) - before(samples.start)


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
