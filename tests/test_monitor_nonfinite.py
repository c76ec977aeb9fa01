"""NaN and infinite attributions (a sqrt inside torch.where has NaN input gradients) never stop training: NaN in, NaN
out for that example, means over the others, figures and histograms of the finite values, and the share that is not
finite recorded."""

import json
import math

import pytest
import torch
from captum.attr import Saliency
from torch import nn

from noisegrad import AttributionMonitor
from noisegrad.monitor.metrics import entropy, gini, mask_share, spearman
from test_monitor_metrics import ref_entropy, ref_gini, ref_spearman

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_a_map_with_a_value_that_is_not_finite_has_no_metric_and_the_others_are_their_references(bad):
    maps = torch.tensor([[1.0, bad, 3.0, 0.5], [1.0, 2.0, 3.0, 0.5], [bad, bad, bad, bad]])
    other = torch.tensor([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, False, False, False]]).expand(3, 4)
    for values in (gini(maps), entropy(maps), spearman(maps, other), spearman(other, maps), mask_share(maps, mask)):
        assert math.isnan(values[0]) and math.isnan(values[2])
    assert gini(maps)[1].item() == pytest.approx(ref_gini([1.0, 2.0, 3.0, 0.5]), rel=1e-12)
    assert entropy(maps)[1].item() == pytest.approx(ref_entropy([1.0, 2.0, 3.0, 0.5]), rel=1e-12)
    assert spearman(maps, other)[1].item() == pytest.approx(ref_spearman([1, 2, 3, 0.5], [4, 3, 1, 2]), rel=1e-12)
    assert mask_share(maps, mask)[1].item() == pytest.approx(1.0 / 6.5, rel=1e-12)
