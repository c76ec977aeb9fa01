"""``nt_samples="auto"``: draw chunks until each input's relative standard error meets ``tol``."""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from noisegrad.smoothing import smooth
from noisegrad.stderr import GroupedMoments, relative_stderr

__all__ = ["ConvergenceRule"]


class ConvergenceRule:
    """Which examples have converged, what they converged to, and how far to go next.

    An example is done when ``‖stderr‖ / ‖attribution‖ ≤ tol`` (an exactly
    zero attribution with zero standard error counts as done) or when
    ``max_samples`` samples are reached. The first check comes after
    ``min_samples``; after that the next chunk runs to
    the sample count at which the closest example is projected to reach
    ``tol`` (the standard error falls as 1/√n), capped by the chunk size.
    Done examples are taken out of the batch, so they stop consuming compute.

    Examples
    --------
    >>> rule = ConvergenceRule(batch=3, tol=0.05, max_samples=100, min_samples=16)
    >>> rule.next_stop(start=0, chunk=64)  # the first check comes after min_samples
    16
    """

    def __init__(self, batch: int, tol: float, max_samples: int, min_samples: int) -> None:
        self.batch, self.tol, self.max_samples, self.min_samples = batch, tol, max_samples, min_samples
        self.projected = min_samples
        self.values: List[Optional[Tensor]] = []
        self.errors: List[Optional[Tensor]] = []
        self.used: Optional[Tensor] = None

    def next_stop(self, start: int, chunk: int) -> int:
        """The sample count the next chunk should end at."""
        target = max(self.projected, start + 1)
        return min(target, start + chunk, self.max_samples)

    def check(
        self, moments: Sequence[GroupedMoments], nt_type: str, examples: Tensor, count: int
    ) -> Tensor:
        """Record the examples (of ``examples``, the running ones) that are done; return the running ones' mask of done."""
        values = [smooth(m.total(), nt_type) for m in moments]
        errors = [m.stderr(nt_type) for m in moments]
        relative = relative_stderr(errors, values)
        settled = (relative <= self.tol) | torch.isnan(relative)  # 0 / 0: no attribution and no spread
        done = settled | (count >= self.max_samples)
        done_list = done.tolist()  # the one host synchronisation per chunk of this mode
        if any(done_list):
            self._record(values, errors, examples, done, count)
        running = relative[~done]
        if running.numel():
            worst_ratio = float(running.min()) / self.tol  # the closest one to converging sets the pace
            self.projected = math.ceil(count * worst_ratio**2)
        return done

    def _record(self, values: List[Tensor], errors: List[Tensor], examples: Tensor, done: Tensor, count: int) -> None:
        if not self.values:
            self.values = [v.new_zeros((self.batch,) + tuple(v.shape[1:])) for v in values]
            self.errors = [e.new_zeros((self.batch,) + tuple(e.shape[1:])) for e in errors]
            self.used = torch.zeros(self.batch, dtype=torch.long, device=examples.device)
        rows = examples[done]
        for store, value in zip(self.values, values):
            store.index_copy_(0, rows, value[done].to(store.dtype))
        for store, error in zip(self.errors, errors):
            store.index_copy_(0, rows, error[done].to(store.dtype))
        self.used.index_fill_(0, rows, count)

    def results(self, dtypes: Sequence[torch.dtype]) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...], Tensor]:
        """Attributions, standard errors (one per attribution tensor, in ``dtypes``) and samples used per example."""
        values = tuple(v.to(d) for v, d in zip(self.values, dtypes))
        errors = tuple(e.to(d) for e, d in zip(self.errors, dtypes))
        return values, errors, self.used
