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


class SqrtWhere(nn.Module):
    """Trains fine, but its input gradient is NaN wherever a (noisy) pixel is <= 0: sqrt inside torch.where."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(72, 3)

    def forward(self, x):
        x = torch.where(x > 0, torch.sqrt(x), torch.zeros_like(x))
        return self.fc(self.conv(x).flatten(1))


def test_nan_maps_are_recorded_and_drawn_in_every_sink_without_stopping_training(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 6, 6) - 0.1, torch.tensor([0, 1])
    sinks = [Recorder()]
    writer = None
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tmp_path / "board"))
    except ImportError:  # pragma: no cover - tensorboard is a test extra
        pass
    monitor = AttributionMonitor(Saliency(SqrtWhere()), x, y, every=1, figures_every=1, log_dir=tmp_path / "folder",
                                 writer=writer, sinks=sinks)
    snap = monitor.step(0)
    values = snap.attributions
    finite = values.isfinite()
    assert not finite.all() and finite.any()  # the test needs both
    expected_share = (~finite).flatten(1).double().mean(1)
    torch.testing.assert_close(snap.per_example["nonfinite_share"], expected_share)
    assert monitor.history[0]["nonfinite_share"] == pytest.approx(expected_share.mean().item())
    row = json.loads((tmp_path / "folder" / "metrics.jsonl").read_text())
    assert row["nonfinite_share"] == pytest.approx(expected_share.mean().item())
    assert [p.name for p in (tmp_path / "folder" / "maps").iterdir()] == ["attribution_00000000.png"]
    histogram = json.loads((tmp_path / "folder" / "histograms.jsonl").read_text())
    assert sum(histogram["counts"]) == int(finite.sum())
    recorder = sinks[0]
    assert recorder.rows[0]["nonfinite_share"] == row["nonfinite_share"] and len(recorder.figures) == 1
    assert torch.equal(recorder.histograms[0], values[finite].flatten())
    if writer is not None:
        writer.close()


def test_a_map_with_no_finite_value_gets_no_histogram_in_any_sink(tmp_path):
    monitor = AttributionMonitor(Saliency(nn.Linear(4, 2)), torch.rand(2, 4), torch.tensor([0, 1]), every=1,
                                 figures_every=1, log_dir=tmp_path, sinks=[Recorder()])
    snap = monitor.step(0)
    snap.result.attributions.fill_(math.nan)
    monitor._record(snap)
    assert len(monitor.sinks[0].histograms) == 1  # the first snapshot's only
    assert len((tmp_path / "histograms.jsonl").read_text().splitlines()) == 1
    assert len(monitor.sinks[0].figures) == 2  # drawn, the values that are not finite as 0


class Recorder:
    def __init__(self) -> None:
        self.rows, self.figures, self.histograms = [], [], []

    def scalars(self, step, values):
        self.rows.append(dict(values))

    def figure(self, step, name, fig):
        self.figures.append(fig)

    def histogram(self, step, name, values):
        self.histograms.append(values)

    def flush(self):
        pass
