"""Where the monitor records: a tag is a TensorBoard tag as given and a safe file name in a folder."""

import json

import pytest
import torch
from captum.attr import Saliency
from torch import nn

from noisegrad import AttributionMonitor
from noisegrad.monitor import FolderSink


@pytest.mark.parametrize("tag, file", [("probe/saliency", "probe_saliency"), ("../../escape", ".._.._escape"),
                                       ("a\\b c", "a_b_c")])
def test_a_tag_names_a_figure_file_inside_the_folder_and_nothing_else(tag, file, tmp_path):
    folder = tmp_path / "run"
    monitor = AttributionMonitor(Saliency(nn.Linear(4, 2)), torch.rand(2, 4), torch.tensor([0, 1]), every=1,
                                 figures_every=1, tag=tag, log_dir=folder)
    monitor.step(0)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "run/histograms.jsonl", f"run/maps/{file}_00000000.png", "run/metrics.jsonl"]
    assert json.loads((folder / "metrics.jsonl").read_text())["step"] == 0


def test_a_tag_with_control_characters_is_refused_when_the_monitor_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"tag must .* control characters, got 'a\\x00b'"):
        AttributionMonitor(Saliency(nn.Linear(4, 2)), torch.rand(2, 4), torch.tensor([0, 1]), tag="a\x00b")


def test_the_folder_sink_keeps_a_figure_name_inside_its_folder(tmp_path):
    import matplotlib.figure

    FolderSink(tmp_path).figure(3, "../up", matplotlib.figure.Figure())
    assert [p.name for p in (tmp_path / "maps").iterdir()] == [".._up_00000003.png"]


def test_a_wide_tabular_probe_is_drawn_with_each_examples_largest_features_only():
    from noisegrad.monitor.figures import TABULAR_FEATURES, snapshot_figure

    maps = torch.randn(8, 784, generator=torch.Generator().manual_seed(0))
    names = [f"px{i}" for i in range(784)]
    fig = snapshot_figure(maps, "tabular", feature_names=names)
    width, height = fig.get_size_inches()
    assert height <= 0.4 + 0.25 * TABULAR_FEATURES * 8 and TABULAR_FEATURES == 20
    for i, ax in enumerate(fig.axes):
        drawn = {label.get_text() for label in ax.get_yticklabels()}
        assert drawn == {names[j] for j in maps[i].abs().topk(TABULAR_FEATURES).indices.tolist()}


@pytest.mark.parametrize("features", [1, 2])
def test_a_tabular_probe_of_one_or_two_features_is_laid_out_without_a_warning(features, tmp_path):
    # a panel a quarter inch per bar was too small for matplotlib's layout, which warned at every figure drawn
    import warnings

    from noisegrad.monitor.figures import snapshot_figure

    maps = torch.randn(3, features, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snapshot_figure(maps, "tabular", feature_names=list("ab")[:features], title="step 0").savefig(tmp_path / "f.png")
