"""Running count, mean and sum of squared deviations: one object for chunks, groups, stopping and processes."""

import numbers
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["Moments", "accumulation_dtype", "mean_dtype", "summable", "sum_samples"]

#: Samples whose values and squares are summed in their own dtype before the sums move to the accumulation dtype.
_SQUARES_BLOCK = 8


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums of samples of ``dtype`` are accumulated in: ``dtype``, at least float32.

    Examples
    --------
    >>> accumulation_dtype(torch.bfloat16), accumulation_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.promote_types(dtype, torch.float32)


def mean_dtype(device: torch.device) -> torch.dtype:
    """float64, or float32 on Apple's MPS, which has no float64.

    The running mean is the centre every chunk is measured from: in float32 its
    rounding (relative 6e-8 of the mean) is felt by a variance whose spread is
    1e-4 of the mean (measured: 3e-5 relative error, against 2e-8 in float64).
    The running M2 is kept in the same dtype: in float32, merging many chunks
    lets its rounding grow with the number of samples.
    """
    return torch.float32 if device.type == "mps" else torch.float64


def sum_samples(total: Optional[Tensor], samples: Tensor, dtype: torch.dtype) -> Tensor:
    """``total`` plus the sum over dim 0 of ``samples`` (in place), or that sum in ``dtype`` when ``total`` is None.

    Blocks of ``_SQUARES_BLOCK`` samples are summed in their own dtype, the
    blocks in ``dtype``: one float32 sum over a large chunk would round by its
    length times the float32 epsilon (a device's reduction over the outer
    dimension adds the samples one after another), and a float64 sum of every
    sample costs a conversion each (several times slower on a CPU). A few
    reductions whatever the chunk's length: splitting dimension 0 is a view.

    Examples
    --------
    >>> sum_samples(None, torch.arange(20.0).view(10, 2), torch.float64)
    tensor([ 90., 100.], dtype=torch.float64)
    """
    n = samples.shape[0]
    if n <= _SQUARES_BLOCK:  # one block: one reduction
        part = samples.sum(dim=0)
        return part.to(dtype) if total is None else total.add_(part)
    whole = n - n % _SQUARES_BLOCK
    part = samples[:whole].unflatten(0, (-1, _SQUARES_BLOCK)).sum(dim=1).sum(dim=0, dtype=dtype)
    if whole < n:
        part.add_(samples[whole:].sum(dim=0))
    return part if total is None else total.add_(part)


def summable(samples: Tensor, overwrite: bool, dtype: torch.dtype) -> Tuple[Tensor, bool]:
    """``samples`` in a dtype their sums can be taken in, and whether that tensor is ours to overwrite.

    Half precision would round the chunk's own sums: float32. Integers and
    booleans: ``dtype`` (exact in float64 up to 2**53). Others as they are.
    """
    if samples.dtype in (torch.float16, torch.bfloat16):
        return samples.float(), True
    if not samples.is_floating_point():
        return samples.to(dtype), True
    return samples, overwrite


class Moments:
    """Count, mean and sum of squared deviations (M2) of samples that arrive in chunks.

    Chunks given to :meth:`update` are centred on a *pivot* (the first
    chunk's own mean, later the running mean) in their own dtype, and their
    sums and sums of squares are added up in the accumulation dtype: two
    additions of the state's size per chunk. Reading the state (``mean``,
    ``m2``, any other method) settles those sums into the mean and M2 with
    the pairwise update of Chan, Golub and LeVeque, which is also how other
    states are merged, and the next chunk is centred on the new running
    mean; so is the next chunk once the chunks since the last pivot
    outnumber the samples before it (a first chunk far from the rest is not
    the centre of all later ones). The variance is therefore never computed
    from raw ``E[a²] − E[a]²`` (which cancels catastrophically), is never
    negative, and memory does not grow with the number of samples: the
    state is a few tensors the size of a single sample. The same object
    serves the chunks of one call (:meth:`update`), independent groups and
    other runs (:meth:`merge`), examples leaving the batch (:meth:`select`),
    checkpoints (:meth:`state_dict`) and several processes
    (:meth:`all_reduce`).

    Parameters
    ----------
    dtype : torch.dtype, optional
        Accumulation dtype of the mean and M2. Default: float64
        (:func:`mean_dtype`; float32 on MPS). Each chunk is centred and
        squared in its own dtype (at least float32), so only the two
        sample-sized state tensors are wider.
    track_m2 : bool
        Keep the sum of squared deviations (needed for the variance, the mean
        of squares and the standard error). With ``False`` only the mean is
        accumulated and no squares are computed.

    References
    ----------
    B. P. Welford (1962), "Note on a method for calculating corrected sums of
    squares and products", Technometrics 4(3).
    T. F. Chan, G. H. Golub, R. J. LeVeque (1979), "Updating formulae and a
    pairwise algorithm for computing sample variances", Stanford CS-TR-79-773.

    Examples
    --------
    >>> samples = torch.arange(12.0).reshape(2, 6)  # 2 examples, 6 samples each
    >>> m = Moments()
    >>> m.update(samples[:, :4])
    >>> m.update(samples[:, 4:])
    >>> m.mean
    tensor([2.5000, 8.5000], dtype=torch.float64)
    >>> m.variance()
    tensor([2.9167, 2.9167], dtype=torch.float64)
    """

    def __init__(self, dtype: Optional[torch.dtype] = None, track_m2: bool = True) -> None:
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float64) or None, got {dtype!r}")
        self.dtype = dtype
        self.track_m2 = track_m2
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen."""
        self._settled = 0  # samples in _mean and _m2
        self._mean: Optional[Tensor] = None
        self._m2: Optional[Tensor] = None
        self._pending = 0  # samples in _sum and _sum_sq, not yet in _mean and _m2
        self._pivot: Optional[Tensor] = None  # what the pending samples were centred on (a chunk's dtype)
        self._sum: Optional[Tensor] = None
        self._sum_sq: Optional[Tensor] = None

    @classmethod
    def _of(cls, dtype: Optional[torch.dtype], track_m2: bool, count: int, mean: Optional[Tensor],
            m2: Optional[Tensor]) -> "Moments":
        moments = cls(dtype, track_m2)
        moments._settled, moments._mean, moments._m2 = count, mean, m2
        return moments

    @property
    def count(self) -> int:
        """The number of samples seen."""
        return self._settled + self._pending

    @property
    def mean(self) -> Optional[Tensor]:
        """The samples' mean (None before any sample)."""
        self._settle()
        return self._mean

    @property
    def m2(self) -> Optional[Tensor]:
        """The samples' sum of squared deviations from their mean (None before any sample or without M2)."""
        self._settle()
        return self._m2

    def update(self, samples: Tensor, dim: int = 1, overwrite: bool = False) -> None:
        """Add a chunk whose samples run along ``dim``.

        The state may be read (``mean``, ``variance()``, ``state_dict()``...)
        between any two chunks: the result is the same as reading it once at
        the end, to rounding.

        Parameters
        ----------
        samples : Tensor
            The chunk: the samples stacked along ``dim``. The other dimensions
            are the shape of one sample, which is the state's shape and must be
            the same in every chunk (a chunk of another shape is refused, never
            broadcast). Integer and boolean samples are accumulated as floats.
        dim : int
            The dimension the samples run along. The default, 1, is the layout
            ``(examples, samples, ...)`` of the tunnel's chunks, which keeps one
            mean per example; for a stream of samples stacked in rows (as
            ``x.mean(dim=0)`` reads them) pass ``dim=0``, and give a single
            sample as ``x.unsqueeze(0)``.
        overwrite : bool
            Centre the chunk in place (its values are then lost), which saves
            a temporary of the chunk's size.

        Examples
        --------
        >>> m = Moments()
        >>> for rows in torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0]]).split(2):
        ...     m.update(rows, dim=0)  # samples in rows: one mean per column
        >>> m.count, m.mean, m.variance(correction=1)
        (3, tensor([ 3., 20.], dtype=torch.float64), tensor([  4., 300.], dtype=torch.float64))
        """
        if not isinstance(samples, Tensor):
            raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
        if samples.is_complex():
            raise TypeError(f"samples must be real (floating, integer or bool), got {samples.dtype}: the moments of "
                            "complex values are not defined here; pass .real and .imag separately")
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
            raise TypeError(f"dim must be an int, got {dim!r} ({type(dim).__name__})")
        dim = int(dim)
        if not -samples.dim() <= dim < samples.dim():
            raise ValueError(
                f"dim={dim} is not a dimension of samples of shape {tuple(samples.shape)}: the samples must be "
                "stacked along dim (give a single sample as x.unsqueeze(0) with dim=0)")
        n_new = samples.shape[dim]
        samples = samples.movedim(dim, 0) if dim != 0 else samples
        self._check_shape(samples.shape[1:], "samples")
        if n_new == 0:
            return
        dtype = self.dtype or mean_dtype(samples.device)
        samples, overwrite = summable(samples, overwrite, dtype)
        if not self.track_m2:  # plain sums: no centre is needed for a mean
            self._sum = sum_samples(self._sum, samples, dtype)
            self._pending += n_new
            return
        if self._pivot is None or self._pivot.dtype != samples.dtype or self._pending >= self._settled:
            # Centred on the running mean (the first chunk: on its own mean), the values are small against their
            # spread and their mean is small against it too, so plain sums give the chunks' mean and M2 without
            # the cancellation E[a²] − E[a]² suffers on raw values. A new pivot whenever the pending samples
            # outnumber the settled ones: the pivot is then the mean of at least half the samples before the
            # chunk (not a first chunk of one sample far from the rest), at the cost of log2(chunks) merges. The
            # pivot is in the chunk's own dtype: subtracting a float64 one would convert every chunk to float64
            # and back. (torch.var_mean would centre each chunk on its own mean in one call, but reducing the
            # outer dimension it is ~100x slower than a sum.)
            self._settle()
            self._pivot = samples.mean(dim=0) if self._mean is None else self._mean.to(samples.dtype)
        centred = samples.sub_(self._pivot) if overwrite else samples - self._pivot  # ours: squared in place
        self._sum = sum_samples(self._sum, centred, dtype)
        self._sum_sq = sum_samples(self._sum_sq, centred.mul_(centred), dtype)
        self._pending += n_new

    def _check_shape(self, shape: torch.Size, what: str) -> None:
        """Refuse a sample shape other than the state's: in-place sums would broadcast it silently."""
        state = self._mean if self._mean is not None else self._sum
        if state is not None and shape != state.shape:
            raise ValueError(
                f"{what} shape per sample {tuple(shape)} differs from this accumulator's {tuple(state.shape)} "
                "(every chunk must hold samples of one shape; check update's dim)")

    def _settle(self) -> None:
        """Merge the pending sums into the mean and M2 (Chan et al.'s update); the next chunk gets a new pivot."""
        n_new = self._pending
        if n_new == 0:
            return
        mean = self._sum.div_(n_new)  # of the centred samples
        m2 = None if self._sum_sq is None else self._sum_sq.addcmul_(mean, mean, value=-n_new)
        if self._pivot is not None:
            mean.add_(self._pivot)
        self._pending, self._pivot, self._sum, self._sum_sq = 0, None, None, None
        self._merge(n_new, mean, m2, copy=False)

    def merge(self, other: "Moments") -> None:
        """Merge the state of another accumulator (another chunk, group, process or run)."""
        if other.track_m2 < self.track_m2:
            raise ValueError("cannot merge an accumulator without M2 into one that tracks M2")
        if other.count:
            self._check_shape(other.mean.shape, "merge: the other accumulator's")
            self._merge(other.count, other.mean, other.m2 if self.track_m2 else None)

    def _merge(self, n_new: int, mean: Tensor, m2: Optional[Tensor], copy: bool = True) -> None:
        """Chan et al.'s update with a part of ``n_new`` samples; ``copy=False``: its tensors are ours to keep."""
        self._settle()
        if self._settled == 0:
            dtype = self.dtype or mean_dtype(mean.device)
            self._settled, self._mean = n_new, mean.to(dtype, copy=copy)
            self._m2 = None if m2 is None else m2.to(dtype, copy=copy)
            return
        shift = mean.to(self._mean.dtype) - self._mean
        total = self._settled + n_new
        if self._m2 is not None:
            self._m2.add_(m2.to(self._m2.dtype)).add_(shift * shift, alpha=self._settled * n_new / total)
        self._mean.add_(shift, alpha=n_new / total)
        self._settled = total

    def select(self, examples: Any, dim: int = 0) -> "Moments":
        """The moments of some examples only: ``examples`` indexes the state's dimension ``dim``.

        An integer index gives views of the state: update either the part or this state afterwards, not both.
        """
        mean, m2 = self.mean, self.m2
        if mean is not None:
            if not -mean.dim() <= dim < mean.dim():
                raise ValueError(f"dim={dim} is not a dimension of this accumulator's state {tuple(mean.shape)}")
            dim %= mean.dim()  # (slice(None),) * -1 would index dimension 0
        index = (slice(None),) * dim + (examples,)
        return Moments._of(self.dtype, self.track_m2, self.count, None if mean is None else mean[index],
                           None if m2 is None else m2[index])

    def merged_over(self, dim: int) -> "Moments":
        """The moments of the parts this state holds along ``dim`` (``count`` samples each), merged into one.

        The mean of the parts' means, and the parts' M2 plus ``count`` times
        their means' squared deviations from it (Chan et al.'s merge of
        equal parts, exact).

        Examples
        --------
        >>> m = Moments()
        >>> m.update(torch.tensor([[1.0, 5.0], [3.0, 9.0]]), dim=0)  # two parts (columns), two samples each
        >>> merged = m.merged_over(0)
        >>> merged.count, merged.mean, merged.variance()
        (4, tensor(4.5000, dtype=torch.float64), tensor(8.7500, dtype=torch.float64))
        """
        if self.count == 0:
            return Moments(self.dtype, self.track_m2)
        mean, m2 = self.mean, self.m2
        merged_mean = mean.mean(dim=dim)
        merged_m2 = None
        if m2 is not None:
            deviation = mean - merged_mean.unsqueeze(dim)
            merged_m2 = m2.sum(dim=dim).add_((deviation * deviation).sum(dim=dim), alpha=self.count)
        return Moments._of(self.dtype, self.track_m2, self.count * mean.shape[dim], merged_mean, merged_m2)

    def without(self, part: "Moments") -> "Moments":
        """The moments of these samples with ``part``'s samples taken out (Chan's update, inverted).

        ``part``'s state may hold several parts along a leading dimension
        (each of ``part.count`` samples): the result then holds each one's
        complement.
        """
        rest = Moments(self.dtype, self.track_m2)
        if part.count == 0:  # nothing to take out (merge skips an empty part the same way)
            rest.merge(self)
            return rest
        if part.count == self.count:  # everything taken out: no mean to divide by zero for
            return rest
        count = self.count - part.count
        mean = (self.mean * self.count - part.mean * part.count) / count
        m2 = None
        if self.m2 is not None:
            shift = part.mean - mean
            m2 = (self.m2 - part.m2 - shift * shift * (count * part.count / self.count)).clamp(min=0)
        return Moments._of(self.dtype, self.track_m2, count, mean, m2)

    def state_dict(self) -> Dict[str, Any]:
        """A copy of the state as plain values and tensors (``torch.save``-able with ``weights_only=True``).

        The tensors are copies: later updates, which work in place, do not change a state taken earlier.
        """
        copy = lambda t: None if t is None else t.detach().clone()  # noqa: E731
        return {"count": self.count, "mean": copy(self.mean), "m2": copy(self.m2), "track_m2": self.track_m2}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        if bool(state["track_m2"]) != self.track_m2:
            raise ValueError(f"state has track_m2={state['track_m2']}, this accumulator {self.track_m2}")
        # Copies: updates merge in place, and must not reach the dict (or the accumulator) the state came from.
        mean, m2, count = state["mean"], state["m2"], int(state["count"])
        if count and mean is None:
            raise ValueError(f"state has count={count} but no mean")
        if count and self.track_m2 and m2 is None:
            raise ValueError("state has track_m2=True but no m2")
        if mean is not None and m2 is not None and m2.shape != mean.shape:
            raise ValueError(f"state has an m2 of shape {tuple(m2.shape)} and a mean of another, the mean's "
                             f"{tuple(mean.shape)}")
        self.reset()
        self._settled = count
        self._mean = None if mean is None else mean.clone()
        self._m2 = None if m2 is None else m2.clone()

    def all_reduce(self, group: Any = None) -> None:
        """Make every process's state the moments of all processes' samples (``torch.distributed``).

        Two sums across processes: the counts and count-weighted means give
        the global mean; each process's M2 plus ``count · (mean − global)²``
        summed gives the global M2 (exact, no cancellation). Every process
        must hold a state of the same shape.
        """
        import torch.distributed as dist

        if self.mean is None:
            raise ValueError("all_reduce needs samples on every process (call update first)")
        dtype = self.mean.dtype
        count = torch.tensor(float(self.count), dtype=dtype, device=self.mean.device)
        weighted = self.mean * self.count
        dist.all_reduce(count, group=group)
        dist.all_reduce(weighted, group=group)
        total = int(round(float(count)))
        mean = weighted / total
        if self.m2 is not None:
            deviation = self.mean - mean
            m2 = self.m2 + deviation * deviation * self.count
            dist.all_reduce(m2, group=group)
            self._m2 = m2
        self._settled, self._mean = total, mean

    def variance(self, correction: int = 0) -> Tensor:
        """Variance of the samples, dividing M2 by ``count - correction``."""
        if self.count == 0:
            raise ValueError("no samples yet: the variance needs at least one update")
        if self.m2 is None:
            raise ValueError("the variance needs Moments(track_m2=True)")
        # M2 is a sum of squares; only rounding could take it below zero.
        return self.m2.clamp(min=0) / (self.count - correction)

    def mean_of_squares(self) -> Tensor:
        """Mean of the squared samples, ``variance + mean²``, without cancellation."""
        return self.variance() + self.mean * self.mean
