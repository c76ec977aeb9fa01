"""Watch what a model learns to look at while it trains, without changing the training.

:class:`AttributionMonitor` smooths the attributions of a fixed probe batch
every ``every`` steps and records maps, scalars (mass on the ground-truth
masks, concentration, rank similarity to the previous and first snapshots,
relative standard error, convergence delta) and histograms, in a folder
(:class:`FolderSink`), TensorBoard (:class:`TensorBoardSink`) or PyTorch
Lightning (:class:`AttributionMonitorCallback`, imported on first use).
"""

import importlib
from typing import Any

from noisegrad.monitor.metrics import entropy, gini, mask_share, spearman
from noisegrad.monitor.monitor import MONITOR_DEFAULTS, AttributionMonitor
from noisegrad.monitor.sinks import FolderSink, TensorBoardSink
from noisegrad.monitor.snapshot import METRICS, Snapshot

__all__ = [
    "AttributionMonitor",
    "AttributionMonitorCallback",
    "Snapshot",
    "FolderSink",
    "TensorBoardSink",
    "METRICS",
    "MONITOR_DEFAULTS",
    "mask_share",
    "gini",
    "entropy",
    "spearman",
]


def __getattr__(name: str) -> Any:
    if name == "AttributionMonitorCallback":  # needs PyTorch Lightning: imported when asked for
        return importlib.import_module("noisegrad.monitor.lightning").AttributionMonitorCallback
    raise AttributeError(f"module 'noisegrad.monitor' has no attribute {name!r}")
