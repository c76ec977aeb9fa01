"""noisegrad: noise smoothing (SmoothGrad, SmoothGrad², VarGrad) for any Captum attribution.

``noisegrad.viz`` (figures) is imported on first use, so ``import noisegrad``
loads no plotting code beyond what Captum itself imports.

Examples
--------
>>> import torch
>>> from captum.attr import Saliency
>>> import noisegrad
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
>>> nt = noisegrad.NoiseTunnel(Saliency(model))
>>> nt.attribute(torch.rand(2, 4), nt_type="vargrad", nt_samples=4,
...              stdevs=noisegrad.relative(0.15), target=0, seed=0).shape
torch.Size([2, 4])
"""

import importlib
from typing import Any

importlib.import_module("noisegrad._deprecated")  # keeps the renamed modules' old names importable
from noisegrad._layout import keep_contiguous
from noisegrad.config import SmoothingConfig
from noisegrad.datasets import DatasetAttributions, attribute_dataset
from noisegrad.estimators.joint_ig import joint_integrated_gradients
from noisegrad.explainers import Smoothed, SmoothGrad, SquareGrad, VarGrad
from noisegrad.frontends import smoothgrad, smoothgrad_sq, vargrad
from noisegrad.monitor import AttributionMonitor
from noisegrad.perturb.inputs import Relative, relative
from noisegrad.perturb.weight_spec import WeightNoiseSpec, weight_noise
from noisegrad.plan import plan_chunks
from noisegrad.reducers import reduce_channels, token_scores
from noisegrad.result import SmoothedAttribution
from noisegrad.sampling.seeding import SampleSeeds
from noisegrad.stats.moments import Moments
from noisegrad.stats.smoothing import NT_TYPES
from noisegrad.tunnel import NoiseTunnel

__version__ = "0.1.0"

__all__ = [
    "NoiseTunnel",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "relative",
    "Relative",
    "weight_noise",
    "WeightNoiseSpec",
    "Moments",
    "SampleSeeds",
    "plan_chunks",
    "keep_contiguous",
    "NT_TYPES",
    "joint_integrated_gradients",
    "SmoothedAttribution",
    "token_scores",
    "reduce_channels",
    "SmoothingConfig",
    "Smoothed",
    "SmoothGrad",
    "SquareGrad",
    "VarGrad",
    "attribute_dataset",
    "DatasetAttributions",
    "AttributionMonitor",
    "AttributionMonitorCallback",
    "viz",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "viz":  # figures are loaded on first use
        return importlib.import_module("noisegrad.viz")
    if name == "AttributionMonitorCallback":  # needs PyTorch Lightning: imported when asked for
        return importlib.import_module("noisegrad.monitor.lightning").AttributionMonitorCallback
    if name == "JointEstimate":  # one result type for both estimators; the old name for one release
        import warnings

        warnings.warn("noisegrad.JointEstimate is deprecated: the joint estimator returns a "
                      "noisegrad.SmoothedAttribution (relative_stderr is an attribute, not a method)",
                      DeprecationWarning, stacklevel=2)
        return SmoothedAttribution
    raise AttributeError(f"module 'noisegrad' has no attribute {name!r}")
