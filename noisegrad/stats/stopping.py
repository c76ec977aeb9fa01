"""``nt_samples="auto"``: when each input's relative standard error meets ``tol``, and how far to go next."""

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from noisegrad.stats.grouped import relative_stderr

__all__ = ["StoppingRule", "LEAST_GROWTH"]

#: After a check at n samples, the next one comes at n × (1 + LEAST_GROWTH) or later.
LEAST_GROWTH = 1 / 8


class StoppingRule:
    """Which examples are done, what they ended at, and where the next check should come.

    An example is done when ``‖stderr‖ / ‖attribution‖ ≤ tol`` (an exactly
    zero attribution with zero standard error counts as converged) or when
    ``max_samples`` samples are reached, which counts as not converged. The
    first check comes after ``min_samples``; after that the next chunk runs to
    the sample count at which the closest example is projected to reach
    ``tol`` (the standard error falls as 1/√n), but at least
    :data:`LEAST_GROWTH` further: a batch whose examples converge one by one
    would otherwise check after every sample or two, and on a small model the
    checks and chunk set-up cost more than the gradients (an MLP at batch 64:
    40 checks for 114 samples). An example may so run up to 1/8 longer than
    its projection, never shorter. Chunks smaller than the way to that count
    do not check on the way (:meth:`due`), so the checks, and the counts
    examples stop at, do not depend on the chunk size or on out-of-memory
    halving; they can depend on the other examples of the batch, since the
    closest one sets the pace. The values, standard errors,
    degrees of freedom and sample counts of done examples are recorded here,
    so they can leave the batch and stop consuming compute. ``per_output``
    (``outputs=``: the last dimension of the attributions indexes outputs):
    every output of an example must reach ``tol``; the worst one sets the pace.
    ``unit``: checks come at multiples of it (whole Latin hypercube blocks),
    rounded up (and ``max_samples``, where the last unit may be partial).

    Examples
    --------
    >>> rule = StoppingRule(batch=3, tol=0.05, max_samples=100, min_samples=16)
    >>> rule.next_stop(start=0)  # the first check comes after min_samples
    16
    >>> values, errors = [torch.ones(3, 4)], [torch.full((3, 4), 0.051)]  # relative errors just above tol
    >>> rule.check(values, errors, dof=7, examples=torch.arange(3), count=16).tolist()
    [False, False, False]
    >>> rule.next_stop(start=16)  # projected to 17, but at least 1/8 further
    18
    """

    def __init__(self, batch: int, tol: float, max_samples: int, min_samples: int, per_output: bool = False,
                 unit: int = 1) -> None:
        self.batch, self.tol, self.max_samples, self.min_samples = batch, tol, max_samples, min_samples
        self.per_output, self.unit = per_output, unit
        self.projected = min_samples
        self.values: List[Tensor] = []
        self.errors: List[Tensor] = []
        self.used: Optional[Tensor] = None
        self.dof: Optional[Tensor] = None
        self.converged: Optional[Tensor] = None
        self.delta: Optional[Tensor] = None

    def next_stop(self, start: int) -> int:
        """The sample count the next check comes at (a chunk smaller than the way there ends sooner, unchecked)."""
        return min(max(self.projected, start + 1), self.max_samples)

    def due(self, count: int) -> bool:
        """Whether to check at ``count``: the planned stop is reached (a chunk smaller than the way there does not
        check early, so the checks, and the sample counts examples stop at, do not depend on the chunk size)."""
        return count >= min(self.projected, self.max_samples)

    def check(
        self, values: Sequence[Tensor], errors: Sequence[Tensor], dof: int, examples: Tensor, count: int,
        delta: Optional[Tensor] = None,
    ) -> Tensor:
        """Record the running examples (``examples``, rows of the call's batch) that are done; return their mask."""
        relative = relative_stderr(errors, values, per_output=self.per_output)
        batch = relative.shape[0]
        finite = torch.stack([torch.isfinite(v.reshape(batch, -1)).all(dim=1) for v in values]).all(dim=0)
        if self.per_output:  # the worst output of each example; one that is 0 / 0 counts as reached
            worst = torch.where(torch.isnan(relative), torch.zeros_like(relative), relative).amax(dim=1)
            relative = torch.where(finite, worst, torch.full_like(worst, float("nan")))
        # 0 / 0 (no attribution and no spread) is converged; NaN or infinite attributions never are
        settled = ((relative <= self.tol) | torch.isnan(relative)) & finite
        done = settled | (count >= self.max_samples)
        # the closest running example to converging sets the pace; its ratio comes to the host with the mask, in the
        # one host synchronisation per chunk of this mode
        closest = torch.where(done, torch.full_like(relative, float("inf")), relative).amin(dim=0, keepdim=True)
        *done_list, closest = torch.cat([done.to(relative.dtype), closest]).tolist()
        if any(done_list):
            self._record(values, errors, examples, done, settled, dof, count, delta)
        if not all(done_list):
            closest /= self.tol
            # an all-zero attribution with some spread (inf) or a NaN one: go on to max_samples in chunks
            projected = math.ceil(count * closest**2) if math.isfinite(closest) else self.max_samples
            projected = max(projected, math.ceil(count * (1 + LEAST_GROWTH)))
            self.projected = -(-projected // self.unit) * self.unit
        return done

    def _record(
        self, values: Sequence[Tensor], errors: Sequence[Tensor], examples: Tensor, done: Tensor,
        settled: Tensor, dof: int, count: int, delta: Optional[Tensor],
    ) -> None:
        if not self.values:
            self.values = [v.new_zeros((self.batch,) + tuple(v.shape[1:])) for v in values]
            self.errors = [e.new_zeros((self.batch,) + tuple(e.shape[1:])) for e in errors]
            device = examples.device
            self.used = torch.zeros(self.batch, dtype=torch.long, device=device)
            self.dof = torch.zeros(self.batch, dtype=torch.long, device=device)
            self.converged = torch.zeros(self.batch, dtype=torch.bool, device=device)
            self.delta = None if delta is None else delta.new_zeros((self.batch,) + tuple(delta.shape[1:]))
        rows = examples[done]
        for store, value in zip(self.values, values):
            store.index_copy_(0, rows, value[done].to(store.dtype))
        for store, error in zip(self.errors, errors):
            store.index_copy_(0, rows, error[done].to(store.dtype))
        self.used.index_fill_(0, rows, count)
        self.dof.index_fill_(0, rows, dof)
        self.converged.index_copy_(0, rows, settled[done])
        if delta is not None:
            self.delta.index_copy_(0, rows, delta[done])

    def results(self) -> Tuple[List[Tensor], List[Tensor], Tensor, Tensor, Tensor, Optional[Tensor]]:
        """Attributions, standard errors, samples used, degrees of freedom, converged and deltas, per example."""
        return self.values, self.errors, self.used, self.dof, self.converged, self.delta
