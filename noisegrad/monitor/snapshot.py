"""One snapshot of a probe batch's smoothed attributions, and the numbers recorded from it."""

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from noisegrad.monitor.metrics import entropy, gini, mask_share, spearman
from noisegrad.result import SmoothedAttribution

__all__ = ["Snapshot", "summarise", "METRICS"]

#: The scalars of a snapshot, in order (each the mean over the probe examples where it is defined):
#: share of |attribution| on the masks (with masks; examples with an empty mask are left out), Gini and normalised entropy of |attribution|, Spearman's rank
#: correlation with the previous and the first snapshot, the relative standard error ‖SE‖/‖attribution‖, the mean
#: |convergence delta| (methods that have one), and the noisy samples per example.
#: ``abs_mean_delta`` is, per example, |the mean of its noisy copies' convergence deltas| (the completeness gap of
#: the smoothed map; copies' deltas of opposite signs cancel, so it is not their mean |delta|). ``nonfinite_share``
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
    """

    step: int
    result: SmoothedAttribution
    per_example: Dict[str, Tensor]
    seconds: float = 0.0

    @property
    def attributions(self) -> Union[Tensor, Tuple[Tensor, ...]]:
        return self.result.attributions

    @property
    def metrics(self) -> Dict[str, Optional[float]]:
        """Each metric's mean over the examples where it is defined (None where it is nowhere)."""
        return {name: _mean(values) for name, values in self.per_example.items()}

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
    """A :class:`Snapshot` of ``result``: its metrics, compared with the ``first`` and ``previous`` snapshots."""
    attributions = result.attributions
    if isinstance(attributions, list):
        raise TypeError("the monitor takes one layer's attributions (or one tuple of inputs), not a list of layers")
    batch = (attributions[0] if isinstance(attributions, tuple) else attributions).shape[0]
    nan = torch.full((batch,), math.nan, dtype=torch.float64)
    per_example: Dict[str, Tensor] = {}
    if masks is not None:
        per_example["mass_in_mask"] = mask_share(attributions, masks)
    per_example["gini"] = gini(attributions)
    per_example["entropy"] = entropy(attributions)
    per_example["spearman_previous"] = spearman(attributions, previous.attributions) if previous else nan
    per_example["spearman_first"] = spearman(attributions, first.attributions) if first else nan
    per_example["relative_stderr"] = result.relative_stderr.detach().double().cpu()
    if result.delta is not None:
        per_example["abs_mean_delta"] = result.delta.detach().double().abs().cpu()
    samples = result.nt_samples
    per_example["nt_samples"] = (samples.double().cpu() if isinstance(samples, Tensor)
                                 else torch.full((batch,), float(samples), dtype=torch.float64))
    per_example["nonfinite_share"] = _nonfinite_share(attributions)
    per_example = {name: values.cpu() for name, values in per_example.items()}
    return Snapshot(step, result, per_example)


def _mean(values: Tensor) -> Optional[float]:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else None


def _nonfinite_share(attributions: Union[Tensor, Tuple[Tensor, ...]]) -> Tensor:
    parts = attributions if isinstance(attributions, tuple) else (attributions,)
    finite = torch.cat([p.detach().isfinite().reshape(p.shape[0], -1) for p in parts], dim=1)
    return (~finite).double().mean(dim=1)
