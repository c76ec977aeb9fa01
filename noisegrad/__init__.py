"""noisegrad: noise smoothing (SmoothGrad, SmoothGrad², VarGrad) for any Captum attribution.

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

from noisegrad import _deprecated  # noqa: F401  (importing it keeps the renamed modules' old names working)
from noisegrad import viz
from noisegrad.frontends import smoothgrad, smoothgrad_sq, vargrad
from noisegrad.joint import JointEstimate, joint_integrated_gradients
from noisegrad.moments import Moments
from noisegrad.noise import Relative, relative
from noisegrad.plan import plan_chunks
from noisegrad.seeding import SampleSeeds
from noisegrad.smoothing import NT_TYPES
from noisegrad.stderr import SmoothedAttribution
from noisegrad.tunnel import NoiseTunnel

__version__ = "0.1.0"

__all__ = [
    "NoiseTunnel",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "relative",
    "Relative",
    "Moments",
    "SampleSeeds",
    "plan_chunks",
    "NT_TYPES",
    "joint_integrated_gradients",
    "JointEstimate",
    "SmoothedAttribution",
    "viz",
    "__version__",
]
