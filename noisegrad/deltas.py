"""Convergence deltas of the noisy copies: one mean per input, or Captum's per-copy layout."""

from typing import List, Optional

import torch
from torch import Tensor

from noisegrad.moments import accumulation_dtype

__all__ = ["ConvergenceDeltas", "DELTA_REDUCTIONS"]

DELTA_REDUCTIONS = ("mean", "none")


class ConvergenceDeltas:
    """Collects the wrapped method's deltas chunk by chunk.

    ``reduction="mean"`` keeps one float64 running sum per example and returns
    the mean over its noisy copies (and over any expansion the wrapped method
    adds itself, such as GradientShap's ``n_samples``): shape ``(batch,)``, what
    Captum's documentation promises. ``"none"`` returns every copy's delta in
    Captum's shape and order: chunk by chunk, example-major within a chunk.

    Examples
    --------
    >>> deltas = ConvergenceDeltas(batch=2, reduction="mean")
    >>> deltas.add(torch.tensor([1.0, 10.0, 3.0, 30.0]), n=2)  # rows: (sample, example)
    >>> deltas.result()
    tensor([ 2., 20.])
    """

    def __init__(self, batch: int, reduction: str) -> None:
        self.batch, self.reduction = batch, reduction
        self.parts: List[Tensor] = []
        self.total: Optional[Tensor] = None
        self.rows: Optional[Tensor] = None
        self.dtype: Optional[torch.dtype] = None

    def add(self, delta: Tensor, n: int, examples: Optional[Tensor] = None) -> None:
        """Add the deltas of a chunk of ``n`` samples, rows ordered (sample, example[, method's own]).

        ``examples``: which of the batch's examples the chunk holds (``"mean"`` only).
        """
        rows = self.batch if examples is None else len(examples)
        by_sample = torch.as_tensor(delta).detach().reshape(n, rows, -1)
        self.dtype = by_sample.dtype
        if self.reduction == "none":
            self.parts.append(by_sample.transpose(0, 1).reshape(-1))
            return
        chunk_sum = by_sample.sum(dim=(0, 2), dtype=accumulation_dtype(by_sample.dtype))
        if self.total is None:
            self.total = chunk_sum.new_zeros(self.batch)
            self.rows = chunk_sum.new_zeros(self.batch)
        if examples is None:
            self.total += chunk_sum
            self.rows += n * by_sample.shape[2]
        else:
            self.total.index_add_(0, examples.to(chunk_sum.device), chunk_sum)
            self.rows.index_add_(0, examples.to(chunk_sum.device), chunk_sum.new_full((rows,), n * by_sample.shape[2]))

    def result(self) -> Tensor:
        if self.reduction == "none":
            return torch.cat(self.parts, dim=0)
        return (self.total / self.rows).to(self.dtype)
