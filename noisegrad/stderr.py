"""Monte-Carlo standard errors of a smoothed attribution, from independent groups of samples, at no extra cost."""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from noisegrad.moments import Moments
from noisegrad.samplers import NoiseSampler
from noisegrad.smoothing import smooth

__all__ = ["GroupedMoments", "SmoothedAttribution", "relative_stderr"]

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]


class GroupedMoments:
    """Moments of the samples kept per independent group, so that a standard error can be estimated.

    The groups are the sampler's independent units (single i.i.d. samples,
    antithetic pairs, randomised QMC / LHS replicates), dealt round-robin into
    ``groups`` groups. The smoothed attribution is that of all groups merged;
    its standard error is the delete-one-group jackknife, which is valid for
    the mean (SmoothGrad) and for the smooth statistics SmoothGrad² and
    VarGrad alike. For the mean of i.i.d. samples, when M2 is tracked, it is
    the textbook ``√(M2 / (n (n − 1)))`` instead, with all ``n − 1`` degrees
    of freedom rather than ``groups − 1``. Memory: one mean and one M2 per
    group.

    Examples
    --------
    >>> from noisegrad.seeding import SampleSeeds
    >>> grouped = GroupedMoments(NoiseSampler("iid", SampleSeeds(0), 8), groups=4)
    >>> grouped.update(torch.arange(16.0).reshape(8, 2), range(8))
    >>> grouped.total().mean
    tensor([7., 8.], dtype=torch.float64)
    """

    def __init__(self, sampler: NoiseSampler, groups: int, track_m2: bool = True) -> None:
        self.sampler, self.groups = sampler, groups
        self.parts = [Moments(track_m2=track_m2) for _ in range(groups)]

    def update(self, samples: Tensor, sample_ids: range, overwrite: bool = False) -> None:
        """Merge a chunk (samples along dim 0, in the order of ``sample_ids``) into the groups.

        A group's rows of the chunk are strided slices (no index tensor, so
        nothing waits for the device); ``overwrite=True`` lets the groups
        centre them in place.
        """
        size = self.sampler.unit_size
        period = size * self.groups  # sample k is in group (k // size) mod groups
        for group, part in enumerate(self.parts):
            for offset in range(size):
                first = (group * size + offset - sample_ids.start) % period
                part.update(samples[first::period], dim=0, overwrite=overwrite)

    def select(self, examples: Tensor) -> "GroupedMoments":
        """The groups' moments of some examples only."""
        part = GroupedMoments(self.sampler, self.groups, self.parts[0].track_m2)
        part.parts = [p.select(examples) for p in self.parts]
        return part

    def total(self) -> Moments:
        """All groups merged: the moments of every sample."""
        total = Moments(track_m2=self.parts[0].track_m2)
        for part in self.parts:
            total.merge(part)
        return total

    def stderr(self, nt_type: str) -> Tensor:
        """Jackknife standard error of ``smooth(total, nt_type)``, deleting one group at a time."""
        total = self.total()
        filled = [part for part in self.parts if part.count]
        if len(filled) < 2:
            raise ValueError("a standard error needs samples in at least two independent groups")
        if nt_type == "smoothgrad" and self.sampler.kind == "iid" and total.m2 is not None:
            return (total.m2.clamp(min=0) / (total.count * (total.count - 1))).sqrt()
        leave_one_out = torch.stack([smooth(_without(total, part), nt_type) for part in filled])
        spread = leave_one_out - leave_one_out.mean(dim=0)
        g = len(filled)
        return ((g - 1) / g * (spread * spread).sum(dim=0)).sqrt()


def _without(total: Moments, part: Moments) -> Moments:
    """The moments of ``total`` with ``part``'s samples taken out (Chan's update, inverted)."""
    rest = Moments(track_m2=total.track_m2)
    rest.count = total.count - part.count
    rest.mean = (total.mean * total.count - part.mean * part.count) / rest.count
    if total.m2 is not None:
        shift = part.mean - rest.mean
        rest.m2 = (total.m2 - part.m2 - shift * shift * (rest.count * part.count / total.count)).clamp(min=0)
    return rest


def relative_stderr(stderr: Sequence[Tensor], attributions: Sequence[Tensor]) -> Tensor:
    """Per example, ‖standard error‖ / ‖attribution‖ over all elements of all attribution tensors.

    An all-zero attribution gives ``inf`` if its standard error is not zero
    (no relative accuracy is reached) and ``NaN`` if it is.
    """
    batch = attributions[0].shape[0]
    error = sum(s.reshape(batch, -1).double().pow(2).sum(dim=1) for s in stderr)
    size = sum(a.reshape(batch, -1).double().pow(2).sum(dim=1) for a in attributions)
    return (error / size).sqrt()


@dataclass
class SmoothedAttribution:
    """A smoothed attribution with its Monte-Carlo standard error.

    Attributes
    ----------
    attributions : Tensor or tuple of Tensor
        As ``NoiseTunnel.attribute`` returns them.
    stderr : Tensor or tuple of Tensor
        The standard error of every element, same shapes.
    relative_stderr : Tensor
        Per example, ``‖stderr‖ / ‖attributions‖`` (all tensors together), shape ``(batch,)``.
    nt_samples : int or Tensor
        Noisy samples used (per example in ``nt_samples="auto"`` mode).
    delta : Tensor, optional
        The averaged convergence delta per example, if it was asked for.
    """

    attributions: TensorOrTuple
    stderr: TensorOrTuple
    relative_stderr: Tensor
    nt_samples: Union[int, Tensor]
    delta: Optional[Tensor] = None


def as_list(value: TensorOrTuple) -> List[Tensor]:
    return list(value) if isinstance(value, tuple) else [value]
