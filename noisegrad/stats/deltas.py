"""Convergence deltas in Captum's per-copy layout (``delta_reduction="none"``).

The default, one mean delta per input, is a statistic like any other and is
kept by :class:`noisegrad.stats.grouped.GroupedMoments`; this log only
reorders the wrapped method's per-copy deltas the way Captum returns them.
"""

from typing import List

import torch
from torch import Tensor

__all__ = ["DeltaLog", "DELTA_REDUCTIONS"]

DELTA_REDUCTIONS = ("mean", "none")


class DeltaLog:
    """Every copy's delta, chunk by chunk and example-major within a chunk, as Captum orders them.

    Examples
    --------
    >>> log = DeltaLog()
    >>> log.add(torch.tensor([1.0, 10.0, 3.0, 30.0]).reshape(2, 2, 1))  # (sample, example, method's own)
    >>> log.result()
    tensor([ 1.,  3., 10., 30.])
    """

    def __init__(self) -> None:
        self.parts: List[Tensor] = []

    def add(self, by_sample: Tensor) -> None:
        """Add a chunk's deltas, shaped ``(sample, example, method's own rows)``."""
        self.parts.append(by_sample.transpose(0, 1).reshape(-1))

    def result(self) -> Tensor:
        return torch.cat(self.parts, dim=0)
