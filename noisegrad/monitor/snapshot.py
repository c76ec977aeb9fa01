"""One snapshot of a probe batch's smoothed attributions, and the numbers recorded from it."""

import dataclasses
import functools
import math
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from noisegrad.monitor.metrics import (average_ranks, entropy_of, gini_of_ascending, magnitudes, mask_columns,
                                       rank_correlation, share_on)
from noisegrad.result import SmoothedAttribution

__all__ = ["Snapshot", "summarise", "METRICS"]

#: The scalars of a snapshot, in order (each the mean over the probe examples where it is defined):
#: share of |attribution| on the masks (with masks; examples with an empty mask are left out), Gini and normalised entropy of |attribution|, Spearman's rank
#: correlation with the previous and the first snapshot, the relative standard error ‖SE‖/‖attribution‖, the mean
#: |convergence delta| (methods that have one), and the noisy samples per example.
#: ``abs_mean_delta`` is, per example, |the mean of its noisy copies' convergence deltas| (the completeness gap of
#: the smoothed map; copies' deltas of opposite signs cancel, so it is not their mean |delta|); with ``outputs=``
#: the mean of its outputs' |gaps| (those of two outputs do not cancel). ``nonfinite_share``
#: is the share of attribution values that are NaN or infinite (the metrics leave such maps out).
METRICS = ("mass_in_mask", "gini", "entropy", "spearman_previous", "spearman_first", "relative_stderr",
           "abs_mean_delta", "nt_samples", "nonfinite_share")


@dataclasses.dataclass
class Snapshot:
    """A probe batch's smoothed attributions at one training step, with per-example metrics.

    Attributes
    ----------
    step : int
    result : SmoothedAttribution
        What ``NoiseTunnel.attribute`` returned (standard errors, delta, ...);
        its ``config`` is None, the monitor's configuration is ``monitor.config``.
    per_example : dict of str to Tensor
        Each metric of :data:`METRICS` the snapshot has, ``(batch,)`` float64.
    seconds : float
        Time the snapshot took, up to recording it.
    ranks : tuple of Tensor, optional
        The maps' average ranks of ``|attribution|``, ``(batch, elements)``,
        and whether each map is finite, ``(batch,)``: what later snapshots'
        Spearman correlations compare with (kept so that the maps are ranked
        once; computed from the attributions when absent).
    """

    step: int
    result: SmoothedAttribution
    per_example: Dict[str, Tensor]
    seconds: float = 0.0
    ranks: Optional[Tuple[Tensor, Tensor]] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def attributions(self) -> Union[Tensor, Tuple[Tensor, ...]]:
        return self.result.attributions

    @functools.cached_property
    def metrics(self) -> Dict[str, Optional[float]]:
        """Each metric's mean over the examples where it is defined (None where it is nowhere)."""
        stacked = torch.stack(list(self.per_example.values())).double().cpu()
        defined = stacked.isfinite()
        counts = defined.sum(dim=1)
        means = torch.where(defined, stacked, 0.0).sum(dim=1) / counts.clamp_min(1)
        return {name: mean if count else None
                for name, mean, count in zip(self.per_example, means.tolist(), counts.tolist())}

    def row(self) -> Dict[str, Any]:
        """The record of this snapshot: ``step``, the metrics, ``seconds``."""
        return {"step": self.step, **self.metrics, "seconds": self.seconds}

    def __repr__(self) -> str:
        means = ", ".join(f"{name}={'None' if v is None else format(v, '.4g')}" for name, v in self.metrics.items())
        return f"Snapshot(step={self.step}, {means}, seconds={self.seconds:.3g})"

    def values(self) -> Tensor:
        """Every finite attribution value, flattened (for histograms; :data:`METRICS`' ``nonfinite_share`` counts
        the others)."""
        parts = self.attributions if isinstance(self.attributions, tuple) else (self.attributions,)
        values = torch.cat([p.detach().flatten() for p in parts])
        return values[values.isfinite()]


def summarise(
    result: SmoothedAttribution,
    step: int,
    masks: Optional[Tuple[Tensor, ...]],
    first: Optional[Snapshot],
    previous: Optional[Snapshot],
) -> Snapshot:
    """A :class:`Snapshot` of ``result``: its metrics, compared with the ``first`` and ``previous`` snapshots.

    The maps' magnitudes are computed, sorted and ranked once for all the
    metrics, on their device; the metrics reach the host in one transfer.
    """
    attributions = result.attributions
    if isinstance(attributions, list):
        raise TypeError("the monitor takes one layer's attributions (or one tuple of inputs), not a list of layers")
    values = magnitudes(attributions)
    finite_values = values.isfinite()
    finite = finite_values.all(dim=1)
    ascending, order = values.sort(dim=1, stable=True)
    ranks = average_ranks(ascending, order)
    nan = values.new_full((values.shape[0],), math.nan)

    def defined(metric: Tensor) -> Tensor:
        return torch.where(finite, metric, nan)

    per_example: Dict[str, Tensor] = {}
    if masks is not None:
        per_example["mass_in_mask"] = defined(share_on(values, mask_columns(masks, attributions)))
    per_example["gini"] = defined(gini_of_ascending(ascending))
    per_example["entropy"] = defined(entropy_of(values))
    per_example["spearman_previous"] = _compared(ranks, finite, previous) if previous else nan
    per_example["spearman_first"] = _compared(ranks, finite, first) if first else nan
    per_example["relative_stderr"] = _one_per_example(result.relative_stderr, values)
    if result.delta is not None:
        per_example["abs_mean_delta"] = _one_per_example(result.delta.abs(), values)  # outputs=: each gap's size
    samples = result.nt_samples
    per_example["nt_samples"] = (_one_per_example(samples, values) if isinstance(samples, Tensor)
                                 else values.new_full(nan.shape, float(samples)))
    per_example["nonfinite_share"] = (~finite_values).double().mean(dim=1)
    on_host = torch.stack(list(per_example.values())).cpu().unbind(0)  # one transfer
    return Snapshot(step, result, dict(zip(per_example, on_host)), ranks=(ranks, finite))


def _one_per_example(values: Tensor, like: Tensor) -> Tensor:
    """``(batch,)`` float64 on ``like``'s device: ``values`` itself, or with ``outputs=`` (``(batch, K)``) the mean
    over each example's outputs (so the metric's mean is that of all ``batch × K`` values, as before the stack)."""
    return values.detach().to(like).reshape(like.shape[0], -1).mean(dim=1)


def _compared(ranks: Tensor, finite: Tensor, other: Snapshot) -> Tensor:
    """Spearman's correlation of the maps ranked as ``ranks`` with ``other``'s, NaN where either is not finite."""
    if other.ranks is None:
        values = magnitudes(other.attributions)
        other.ranks = (average_ranks(*values.sort(dim=1, stable=True)), values.isfinite().all(dim=1))
    other_ranks, other_finite = other.ranks
    if other_ranks.shape != ranks.shape:
        raise ValueError(f"the maps to compare must have the same shapes, got {tuple(ranks.shape)} and "
                         f"{tuple(other_ranks.shape)} (examples × elements)")
    both = finite & other_finite.to(finite.device)
    return torch.where(both, rank_correlation(ranks, other_ranks.to(ranks.device)), math.nan)
