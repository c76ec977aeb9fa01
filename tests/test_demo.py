"""The ``python -m noisegrad demo`` on the shipped CNN: figure, summary, standard errors, quality, CLI errors;
and the shipped weights themselves: loadable with weights_only, accurate, reproduced by the training script."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noisegrad.app import shapes
from noisegrad.app.cli import main
from noisegrad.app.demo import (
    METHODS, SHAPES, attribute_all, draw_figure, figure_size, make_shapes, mask_mass_fraction, run_demo,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "nested" / "out"  # created by the demo
    result = run_demo(out, samples=4, noise=0.15, seed=0, n_test=300, n_images=3, ig_steps=8, print_fn=None)
    return out, result


def test_generated_shapes_have_known_masks():
    x, y, m = make_shapes(64, torch.Generator().manual_seed(1))
    assert x.shape == m.shape == (64, 1, 16, 16) and m.dtype == torch.bool
    assert set(y.tolist()) <= set(range(len(SHAPES)))
    assert (m.sum(dim=(1, 2, 3)) == 9).all()  # every shape has 9 pixels: brightness does not give the class
    assert x[m].mean() > x[~m].mean() + 0.8  # the shape is bright on the noise


def test_mask_mass_of_a_uniform_map_is_the_mask_area():
    _, _, m = make_shapes(8, torch.Generator().manual_seed(2))
    assert mask_mass_fraction(torch.ones(m.shape), m) == pytest.approx(9 / 256)
    assert mask_mass_fraction(-m.double(), m) == pytest.approx(1.0)


def test_figure_is_written_with_one_row_per_image_and_real_content(small_demo):
    out, result = small_demo
    path = out / "comparison.png"
    assert result.figure_path == path and path.is_file()
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    inches_w, inches_h = figure_size(3)
    # within a pixel: matplotlib before 3.11.1 truncates 1.9 * 6 in * 100 dpi = 1139.99... to 1139 px
    assert abs(width - round(inches_w * 100)) <= 1 and abs(height - round(inches_h * 100)) <= 1
    rgb = pixels[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05 and len(np.unique(rgb, axis=0)) > 200  # images and colour maps, not a blank canvas


@pytest.fixture(scope="module")
def drawn():
    """The demo figure of 3 images, drawn but not saved, with what it was drawn from."""
    x, y, m = make_shapes(3, torch.Generator().manual_seed(4))
    rows = attribute_all(shapes.load_demo_model(), x, y, m, samples=4, noise=0.15, seed=0, ig_steps=4)
    fig = draw_figure(x, y, m, rows)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 * (1 + len(METHODS))  # one row per image: the input, then one panel per method
    return np.array(panels, dtype=object).reshape(3, 1 + len(METHODS)), m[:, 0].numpy(), rows


def test_every_panel_outlines_the_true_shape(drawn):
    from matplotlib.collections import LineCollection

    panels, masks, _ = drawn
    for i, row_of_panels in enumerate(panels):
        mask = np.pad(masks[i], 1)
        edges = int(np.abs(np.diff(mask.astype(int), axis=0)).sum() + np.abs(np.diff(mask.astype(int), axis=1)).sum())
        for ax in row_of_panels:
            outlines = [c for c in ax.collections if isinstance(c, LineCollection)]
            assert len(outlines) == 1, f"row {i}, {ax.get_title() or 'panel'}: no outline of the shape"
            segments = outlines[0].get_segments()
            assert len(segments) == edges
            for (x0, y0), (x1, y1) in segments:  # each segment lies between a shape pixel and a non-shape one
                r, c = (y0 + y1) / 2 + 1, (x0 + x1) / 2 + 1  # in the padded mask's pixel coordinates
                if x0 == x1:
                    sides = mask[int(r), int(c - 0.5)], mask[int(r), int(c + 0.5)]
                else:
                    sides = mask[int(r - 0.5), int(c)], mask[int(r + 0.5), int(c)]
                assert sides[0] != sides[1]


def test_every_map_column_has_a_colour_bar_whose_scale_fits_all_its_maps(drawn):
    panels, _, rows = drawn
    for j, row in enumerate(rows, start=1):
        images = [ax.images[0] for ax in panels[:, j]]
        bars = [image.colorbar for image in images if image.colorbar is not None]
        assert len(bars) == 1, f"{row.method}: {len(bars)} colour bars"
        assert "max |value|" in bars[0].ax.get_xlabel()  # the bar says what its numbers are
        signed = row.method in ("SmoothGrad", "IG + SmoothGrad")
        assert {image.get_clim() for image in images} == {(-1.0, 1.0) if signed else (0.0, 1.0)}
        for i, (ax, image) in enumerate(zip(panels[:, j], images)):
            # the map is drawn divided by its largest |value|, and that value is stated under it
            peak = float(row.attributions[i].abs().max())
            assert np.abs(image.get_array()).max() == pytest.approx(1.0)
            assert f"max {peak:.3g}" in ax.get_xlabel()


def test_summary_has_one_row_per_method(small_demo):
    out, result = small_demo
    with open(out / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(METHODS)
    for r in rows:
        assert float(r["time_s"]) >= 0 and 0 <= float(r["mask_mass"]) <= 1
        assert int(r["samples"]) == (1 if r["method"] == "Saliency" else 4)
        has_delta = r["method"] == "IG + SmoothGrad"
        assert (r["mean_abs_delta"] != "") == has_delta
        assert (r["rel_stderr"] == "") == (r["method"] == "Saliency")
    ig = rows[-1]
    assert math.isfinite(float(ig["mean_abs_delta"]))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [m["method"] for m in summary["methods"]] == list(METHODS)
    assert summary["options"]["samples"] == 4 and summary["mask_area_fraction"] == pytest.approx(9 / 256)
    assert "return_stderr" in summary["stderr"]  # says how the standard errors were computed


def test_smoothgrad_of_the_shipped_model_beats_a_uniform_map(small_demo):
    _, result = small_demo
    assert result.accuracy > 0.95
    mass = {r.method: r.mask_mass for r in result.rows}
    assert mass["SmoothGrad"] > result.mask_area
    assert mass["IG + SmoothGrad"] > result.mask_area


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--samples", "--noise", "--seed", "comparison.png"):
        assert option in text


def test_out_that_is_a_file_exits_with_2_and_names_it(tmp_path, capsys):
    not_a_folder = tmp_path / "taken.txt"
    not_a_folder.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(not_a_folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(not_a_folder) in err and "not a directory" in err
    assert not_a_folder.read_text() == "x"


def test_out_under_a_file_fails_from_the_command_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "sub"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "noisegrad", "demo", "--out", str(target)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert str(target) in proc.stderr and "Traceback" not in proc.stderr


def test_smoothgrad_stderr_is_the_textbook_one_from_the_vargrad_of_the_same_samples():
    """The table's SE of i.i.d. SmoothGrad is that of a mean of N samples: sqrt(VarGrad / (N - 1))."""
    from captum.attr import Saliency

    import noisegrad

    model = shapes.load_demo_model()
    x, y, m = make_shapes(3, torch.Generator().manual_seed(5))
    rows = {r.method: r for r in attribute_all(model, x, y, m, samples=4, noise=0.15, seed=0, ig_steps=4)}
    vargrad = noisegrad.NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="vargrad", nt_samples=4, nt_samples_batch_size=8, stdevs=noisegrad.relative(0.15), abs=False,
        seed=0, target=y.tolist(),
    )
    textbook = (vargrad.double() / (4 - 1)).sqrt().flatten(1).norm(dim=1)
    smoothgrad = rows["SmoothGrad"].attributions.double().flatten(1).norm(dim=1)
    assert rows["SmoothGrad"].rel_stderr == pytest.approx(float((textbook / smoothgrad).mean()), rel=1e-6)
    assert rows["Saliency"].rel_stderr is None
    assert all(0 < rows[name].rel_stderr < 2 for name in METHODS[1:])


def test_demo_loads_shipped_weights_and_does_not_train(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the demo must not train")

    monkeypatch.setattr(shapes, "train_cnn", no_training)
    monkeypatch.setattr(shapes, "train_demo_model", no_training)
    monkeypatch.setattr(torch.optim.Adam, "step", no_training)
    result = run_demo(tmp_path, samples=2, n_test=100, n_images=1, ig_steps=2, print_fn=None)
    assert result.accuracy > 0.95


def test_shipped_weights_load_with_weights_only_and_stay_small():
    assert shapes.WEIGHTS_PATH.is_file()
    assert shapes.WEIGHTS_PATH.stat().st_size < 200 * 1024
    payload = torch.load(shapes.WEIGHTS_PATH, weights_only=True)  # no pickled code
    assert set(payload) == {"format", "state_dict", "info"}
    assert payload["info"]["recipe"] == shapes.TRAINING


def test_shipped_weights_are_accurate_on_fresh_images():
    model = shapes.load_demo_model()
    x, y, _ = make_shapes(2000, shapes.test_generator(7))
    assert shapes.accuracy(model, x, y) > 0.98


def test_training_script_reproduces_a_model_as_accurate_as_the_shipped_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "cnn.pt"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train_demo_model.py"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    retrained, shipped = shapes.load_demo_model(out), shapes.load_demo_model()
    x, y, _ = make_shapes(2000, shapes.test_generator(11))
    acc_retrained, acc_shipped = shapes.accuracy(retrained, x, y), shapes.accuracy(shipped, x, y)
    assert acc_retrained > 0.98 and abs(acc_retrained - acc_shipped) < 0.01


def test_weights_option_rejects_a_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path), "--weights", str(tmp_path / "missing.pt")])
    assert exit_info.value.code == 2
    assert "missing.pt" in capsys.readouterr().err


class _FakeTerminal:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_draws_on_a_terminal_and_erases_itself():
    from noisegrad._progress import progress_bar

    term = _FakeTerminal()
    with progress_bar(4, "work", unit="step", stream=term) as bar:
        for _ in range(4):
            bar.update(1)
        bar.refresh()  # updates are drawn at most every 0.1 s
    assert "work:" in term.text and "4/4" in term.text
    assert term.text.endswith("\r")  # erased: the table printed next starts on a clean line


def test_demo_progress_goes_to_stderr_only_when_it_is_a_terminal(tmp_path, capsys, monkeypatch):
    term = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    run_demo(tmp_path / "a", samples=2, n_test=50, n_images=1, ig_steps=2, print_fn=None)
    assert "gradients per image:" in term.text
    term.text = ""
    assert main(["demo", "--out", str(tmp_path / "b"), "--samples", "2", "--images", "1", "--ig-steps", "2",
                 "--quiet"]) == 0
    assert term.text == ""  # --quiet: no bar
    out = capsys.readouterr().out
    assert "SmoothGrad" in out and "Loaded" not in out  # the table only
