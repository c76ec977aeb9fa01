"""path_density="adaptive" under the conditions a call meets: out of memory in the pilot, a pilot that sees NaN,
every form of the call's arguments, two threads, and the pilot's place in the first chunk."""

import threading
import warnings

import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from torch import nn

from noisegrad import NoiseTunnel
from noisegrad.estimators.path_density import EDGES, PILOT_PER_BIN
from noisegrad.perturb.inputs import InputNoise

PILOT = (len(EDGES) - 1) * PILOT_PER_BIN
X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def layer_norm_first(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()


def adaptive(method, x=X, **kwargs):
    common = dict(nt_samples=6, stdevs=0.2, target=1, seed=3, joint=True, path_density="adaptive")
    return NoiseTunnel(method).attribute(x, **dict(common, **kwargs))


def test_the_pilot_runs_before_the_first_chunk_makes_its_noisy_rows(monkeypatch):
    """The pilot runs at the first chunk's size, which the plan fits in memory: it must not also hold that chunk's
    noisy rows, so those are made after it (a pilot beside them would need one more copy of the chunk's inputs)."""
    events = []
    rows = InputNoise.rows
    monkeypatch.setattr(InputNoise, "rows", lambda self, ids: events.append("rows") or rows(self, ids))
    model = layer_norm_first()
    model.register_forward_pre_hook(lambda module, args: events.append("forward"))
    adaptive(IntegratedGradients(model), nt_samples=4, nt_samples_batch_size=4)
    assert events == ["forward"] * (PILOT // 4) + ["rows", "forward"]
