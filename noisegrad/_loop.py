"""The one loop: chunks of samples through an estimator into the statistics, until every example is done."""

from typing import Any, Callable, Optional

import torch

from noisegrad.plan import ChunkOutOfMemory, ChunkPlan
from noisegrad.stats.stopping import StoppingRule
from noisegrad.stats.tally import Tally

__all__ = ["run"]


def run(estimator: Any, plan: ChunkPlan, tally: Tally, nt_type: str, rule: Optional[StoppingRule] = None,
        progress: Optional[Callable[[int], Any]] = None) -> None:
    """Draw chunks from ``plan``, let ``estimator`` make them, merge them into ``tally``.

    A chunk that runs out of memory is retried at half the size (nothing of
    it was merged). With a stopping ``rule``, examples that are done are
    recorded by the rule and leave the batch: the estimator and the tally
    keep only the running ones, and the plan gives them as many more samples
    per chunk as keeps its noisy copies. ``progress`` is told the samples of
    each chunk merged.
    """
    device = estimator.perturbation.inputs[0].device
    running = torch.arange(estimator.perturbation.inputs[0].shape[0], device=device)
    start = 0
    while start < plan.limit:
        sample_ids = plan.next(start, rule.next_stop(start) if rule is not None else None)
        try:
            chunk = estimator.chunk(sample_ids)
        except ChunkOutOfMemory as error:
            plan.halve(sample_ids, device, error)
            continue
        tally.add(chunk, sample_ids)
        del chunk  # before the next chunk's rows are made
        start = sample_ids.stop
        if progress is not None:
            progress(len(sample_ids))  # samples per example drawn so far
        if rule is None or not rule.due(start):
            continue
        errors, dof = tally.stderrs(nt_type)
        done = rule.check(tally.values(nt_type), errors, dof, running, start, tally.delta())
        if bool(done.all()):
            return
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            tally.select(keep)
            estimator.select(keep)
            running = running[keep]
            plan.examples_left(len(keep))
