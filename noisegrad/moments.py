"""Running mean and sum of squared deviations, merged chunk by chunk."""

from typing import Optional

import torch
from torch import Tensor

__all__ = ["Moments", "accumulation_dtype"]


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """The dtype statistics are accumulated in on ``device``.

    float64 wherever the device supports it (the accumulators are the size of
    one input batch, so the wider type costs next to nothing), float32 on
    Apple's MPS, which has no float64.

    Examples
    --------
    >>> accumulation_dtype(torch.device("cpu"))
    torch.float64
    """
    return torch.float32 if device.type == "mps" else torch.float64


class Moments:
    """Count, mean and sum of squared deviations (M2) of samples that arrive in chunks.

    Each chunk is centred on a fixed shift (the first chunk's mean), reduced
    on its own, and merged into the running state with the pairwise update of
    Chan, Golub and LeVeque, so the variance is never computed from raw
    ``E[a²] − E[a]²`` (which cancels catastrophically), is never negative, and
    memory does not grow with the number of samples.

    Parameters
    ----------
    dtype : torch.dtype, optional
        Accumulation dtype. Default: :func:`accumulation_dtype` of the first
        chunk's device.
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
        self.dtype = dtype
        self.track_m2 = track_m2
        self.count = 0
        self.mean: Optional[Tensor] = None
        self.m2: Optional[Tensor] = None
        self._shift: Optional[Tensor] = None

    def update(self, samples: Tensor, dim: int = 1, overwrite: bool = False) -> None:
        """Merge a chunk whose samples run along ``dim``.

        With ``overwrite=True`` the chunk is centred in place (its values are
        then lost), which saves a temporary of the chunk's size.
        """
        n_new = samples.shape[dim]
        if n_new == 0:
            return
        samples = samples.movedim(dim, 0)
        if samples.dtype in (torch.float16, torch.bfloat16):
            # Half precision would round the chunk statistics themselves.
            samples, overwrite = samples.float(), True
        dtype = self.dtype or accumulation_dtype(samples.device)
        if not self.track_m2:
            self._merge(n_new, samples.mean(dim=0).to(dtype), None)
            return
        if self._shift is None:
            self._shift = samples.mean(dim=0)
        # Centred on the first chunk's mean, the values are small against their
        # spread, so their plain sums carry the chunk's mean and M2 without the
        # cancellation that E[a²] − E[a]² suffers on raw values. (torch.var_mean
        # would do this in one call, but is ~100x slower reducing the outer dim.)
        centred = samples.sub_(self._shift) if overwrite else samples - self._shift
        mean = centred.sum(dim=0).to(dtype) / n_new
        # Squares of centred values have no cancellation to fear: summing them
        # in the chunk's own dtype is accurate and 5x faster than in float64.
        sum_sq = torch.zeros_like(centred[0])
        for sample in centred:
            sum_sq.addcmul_(sample, sample)
        m2 = sum_sq.to(dtype).sub_(mean * mean, alpha=n_new).clamp_(min=0)
        self._merge(n_new, mean + self._shift.to(dtype), m2)

    def merge(self, other: "Moments") -> None:
        """Merge the state of another accumulator (another chunk, process or run)."""
        if other.track_m2 < self.track_m2:
            raise ValueError("cannot merge an accumulator without M2 into one that tracks M2")
        if other.count:
            self._merge(other.count, other.mean, other.m2 if self.track_m2 else None)

    def _merge(self, n_new: int, mean: Tensor, m2: Optional[Tensor]) -> None:
        if self.count == 0:
            self.count, self.mean, self.m2 = n_new, mean.clone(), None if m2 is None else m2.clone()
            return
        total = self.count + n_new
        shift = mean - self.mean
        if self.m2 is not None:
            self.m2.add_(m2).add_(shift * shift, alpha=self.count * n_new / total)
        self.mean.add_(shift, alpha=n_new / total)
        self.count = total

    def variance(self, correction: int = 0) -> Tensor:
        """Variance of the samples, dividing M2 by ``count - correction``."""
        if self.m2 is None:
            raise ValueError("the variance needs Moments(track_m2=True)")
        return self.m2 / (self.count - correction)

    def mean_of_squares(self) -> Tensor:
        """Mean of the squared samples, ``variance + mean²``, without cancellation."""
        return self.variance() + self.mean * self.mean
