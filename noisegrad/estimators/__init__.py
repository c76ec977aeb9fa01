"""Estimators: how a chunk's rows are built and what each row contributes.

An estimator has ``chunk(sample_ids) -> Chunk`` (the contributions of those
samples of every running example, ``(n, batch, ...)`` per attribution tensor,
and their deltas), ``select(keep)`` for examples leaving the batch, and two
numbers the chunk planner reads: ``rows_per_copy`` (forward rows one sample
of one example costs) and ``splits_itself`` (0 if ``internal_batch_size``
cannot split those rows, else the fewest rows per copy a split forward
holds). The loop in :mod:`noisegrad._loop` does everything
else: chunk sizes and out-of-memory halving, statistics, standard errors and
stopping.

* :class:`~noisegrad.estimators.nested.NestedEstimator`: Captum's — the
  wrapped method attributes each noisy copy.
* :class:`~noisegrad.estimators.joint_ig.JointEstimator`: SmoothGrad × IG
  as one integral over (noise, path point), one gradient per sample.
"""
