"""Whole data sets: smoothed attributions into a folder of shards, resumable, across processes and machines.

* :func:`attribute_dataset` (:mod:`noisegrad.datasets.attribute`) — the run;
* :class:`DatasetAttributions` (:mod:`noisegrad.datasets.loader`) — its results by example index;
* ``_shard_file`` (the shard format), ``_manifest`` (manifest and journals), ``_ranks`` (torch.distributed),
  ``_batches`` (examples and batches), ``_explainer`` (the call per batch).

``docs/datasets.md`` describes the folder, resuming, and running under torchrun on one or many machines.
"""

from noisegrad.datasets.attribute import attribute_dataset
from noisegrad.datasets.loader import DatasetAttributions

__all__ = ["attribute_dataset", "DatasetAttributions"]
