"""The monitor through TensorBoard: values read back with TensorBoard's own event reader equal the monitor's, and
training is bit-identical with the writer.

TensorBoard is a test extra (``pip install -e '.[test]'``); the tests are skipped only where it is not installed.
"""

import pytest
from captum.attr import Saliency

from noisegrad import AttributionMonitor
from test_monitor import assert_identical, data, train

tensorboard = pytest.importorskip("tensorboard", reason="pip install -e '.[test]' installs tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    events.Reload()
    return events


def assert_scalars_equal_history(events, history, tag="attribution"):
    for name in ("mass_in_mask", "gini", "entropy", "spearman_previous", "spearman_first", "relative_stderr"):
        logged = {e.step: e.value for e in events.Scalars(f"{tag}/{name}")}
        expected = {row["step"]: row[name] for row in history if row.get(name) is not None}
        assert logged.keys() == expected.keys(), name
        for step, value in expected.items():
            assert logged[step] == pytest.approx(value, rel=1e-6), (name, step)  # stored as float32


def test_tensorboard_events_hold_the_monitors_values_and_training_is_bit_identical(tmp_path):
    x, y, masks = data(8)
    writer = SummaryWriter(str(tmp_path))
    monitored = train(monitor_for=lambda m: AttributionMonitor(Saliency(m), x, y, masks=masks, every=1,
                                                               figures_every=3, writer=writer))
    writer.close()
    assert_identical(train(), monitored)
    monitor = monitored[3]
    events = read_events(tmp_path)
    assert_scalars_equal_history(events, monitor.history)
    assert [e.step for e in events.Images("attribution/attribution")] == [0, 3]
    histograms = events.Histograms("attribution/values")
    assert [h.step for h in histograms] == [0, 1, 2, 3]
    last = histograms[-1].histogram_value
    values = monitor.last.attributions.double()
    assert last.num == values.numel()
    assert (last.min, last.max, last.sum) == pytest.approx((values.min().item(), values.max().item(),
                                                            values.sum().item()), rel=1e-6)
